/// What crosses the control channel between a job's ranks and its supervisor (`medley launch`).
///
/// The channel watches the job; it is never on the correctness path: a rank that cannot reach
/// its supervisor keeps training. On the wire every message travels in a length-prefixed
/// protobuf-c frame that carries the job's token (see `ControlWire`); these are the Swift
/// values on either side.

/// A rank introducing itself, once per connection.
public struct ControlHello: Sendable, Hashable, Codable {
    /// The rank in the job (0-based).
    public var rank: Int
    /// The adapter's name, e.g. "sim".
    public var adapter: String
    /// The device's vendor and name, as it describes itself.
    public var vendor: String
    public var chip: String
    /// The host the rank runs on, and its process.
    public var host: String
    public var pid: Int32
    /// The device's memory.
    public var memoryBytes: UInt64

    public init(rank: Int, adapter: String, vendor: String, chip: String, host: String, pid: Int32, memoryBytes: UInt64) {
        self.rank = rank
        self.adapter = adapter
        self.vendor = vendor
        self.chip = chip
        self.host = host
        self.pid = pid
        self.memoryBytes = memoryBytes
    }
}

/// How a rank says it is.
public enum ControlHealth: Int, Sendable, Hashable, Codable, CaseIterable {
    /// Training normally.
    case ok = 1
    /// Starting up (before its first step) or finishing (after its last).
    case idle = 2
    /// Alive but in trouble (it has reported a fault).
    case failing = 3
    /// Its last step is done and its reports are sent: the connection closes next, normally.
    case finished = 4
}

/// Liveness and progress, sent every second by a thread that keeps beating while the rank
/// computes (so a long step is not a silent rank).
public struct ControlHeartbeat: Sendable, Hashable, Codable {
    public var rank: Int
    /// The last step the rank finished (0 before the first).
    public var step: Int
    /// Its last training loss and tokens/s, when it has them.
    public var loss: Double?
    public var tokensPerSecond: Double?
    /// Device memory in use.
    public var deviceMemoryUsedBytes: UInt64
    public var health: ControlHealth
    /// Seconds since the rank last made progress (a device call returned, or a wait on other
    /// ranks polled), when it knows: a beat from a rank stuck inside one call still arrives, and
    /// says so here.
    public var secondsSinceProgress: Double?

    public init(rank: Int, step: Int, loss: Double? = nil, tokensPerSecond: Double? = nil, deviceMemoryUsedBytes: UInt64 = 0,
                health: ControlHealth = .ok, secondsSinceProgress: Double? = nil) {
        self.secondsSinceProgress = secondsSinceProgress
        self.rank = rank
        self.step = step
        self.loss = loss
        self.tokensPerSecond = tokensPerSecond
        self.deviceMemoryUsedBytes = deviceMemoryUsedBytes
        self.health = health
    }
}

/// One finished step, as the rank saw it.
public struct ControlStepReport: Sendable, Hashable, Codable {
    public var rank: Int
    public var step: Int
    /// The job's training loss of the step (every rank knows it) and its tokens/s.
    public var loss: Double
    public var tokensPerSecond: Double
    /// Milliseconds of the whole step, and of this rank's compute, idle wait and exchange.
    public var stepMs: Double
    public var computeMs: Double
    public var idleMs: Double
    public var exchangeMs: Double
    /// Sequences of the global batch this rank trained on.
    public var share: Int
    /// The validation loss, on steps that evaluate.
    public var validationLoss: Double?

    public init(rank: Int, step: Int, loss: Double, tokensPerSecond: Double, stepMs: Double, computeMs: Double, idleMs: Double,
                exchangeMs: Double, share: Int, validationLoss: Double? = nil) {
        self.rank = rank
        self.step = step
        self.loss = loss
        self.tokensPerSecond = tokensPerSecond
        self.stepMs = stepMs
        self.computeMs = computeMs
        self.idleMs = idleMs
        self.exchangeMs = exchangeMs
        self.share = share
        self.validationLoss = validationLoss
    }
}

/// What went wrong on a rank, as it reports it before it stops (or while it can).
public enum ControlFaultKind: Int, Sendable, Hashable, Codable, CaseIterable {
    /// An adapter call failed (device lost, the sim's `error` fault, …).
    case adapterError = 1
    /// A loss or gradient that is not finite.
    case nonFinite = 2
    /// The device ran out of memory.
    case outOfMemory = 3
    /// A wait on another rank ran out of time.
    case timeout = 4
    /// Anything else.
    case other = 5
    /// Silent data corruption found by Medley's integrity checks; ``ControlFaultReport/suspects`` names the chips.
    case corruption = 6
}

/// A fault, with the words the rank has for it.
public struct ControlFaultReport: Sendable, Hashable, Codable {
    public var rank: Int
    /// The step it happened in (0 before the first).
    public var step: Int
    public var kind: ControlFaultKind
    /// One line: the adapter's error text, or Medley's.
    public var message: String
    /// The ranks the report blames (a collective check's verdict, the same on every rank);
    /// empty: the reporter itself, or nobody in particular.
    public var suspects: [Int]

    public init(rank: Int, step: Int, kind: ControlFaultKind, message: String, suspects: [Int] = []) {
        self.rank = rank
        self.step = step
        self.kind = kind
        self.message = message
        self.suspects = suspects
    }
}

/// What the supervisor may ask of a rank.
public enum ControlCommandKind: Int, Sendable, Hashable, Codable, CaseIterable {
    /// Write a checkpoint at the next step boundary.
    case checkpointNow = 1
    /// Stop at the next step boundary.
    case stop = 2
}

/// A command from the supervisor to one rank.
public struct ControlCommand: Sendable, Hashable, Codable {
    public var kind: ControlCommandKind
    /// Why, in a few words (shown in the rank's log).
    public var reason: String

    public init(kind: ControlCommandKind, reason: String) {
        self.kind = kind
        self.reason = reason
    }
}

/// Any one message of the channel.
public enum ControlMessage: Sendable, Hashable {
    case hello(ControlHello)
    case heartbeat(ControlHeartbeat)
    case stepReport(ControlStepReport)
    case faultReport(ControlFaultReport)
    case command(ControlCommand)
}
