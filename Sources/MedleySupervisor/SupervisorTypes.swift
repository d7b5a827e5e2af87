import MedleyControl

/// Something that happened, fed to ``Supervisor/handle(_:)`` by the shell that does the I/O.
///
/// Every event carries its time: seconds on a monotonic clock (the shell's choice of origin, the
/// same one as `Supervisor(startedAt:)`). The supervisor never reads a clock; it sees time only
/// through its events, and never lets it go backwards: an event stamped earlier than one it has
/// already seen (or with a time that is not finite) is taken to have happened at the latest time
/// seen.
public enum SupervisorEvent: Sendable, Hashable {
    /// A rank introduced itself (once per connection).
    case hello(ControlHello, at: Double)
    /// A rank's periodic sign of life and progress.
    case heartbeat(ControlHeartbeat, at: Double)
    /// A rank finished a step.
    case stepReport(ControlStepReport, at: Double)
    /// A rank reported a fault.
    case faultReport(ControlFaultReport, at: Double)
    /// The shell's timer (about 4 per second): when the timeouts are judged.
    case tick(at: Double)
    /// A process ended: a rank (by its rank) or, with `rank` nil, `mpirun` itself. `signal` is the
    /// signal that killed it, if one did (then `status` is whatever the shell has, usually 128 + signal).
    case processExit(rank: Int?, status: Int32, signal: Int32?, at: Double)

    /// The status of a ``processExit(rank:status:signal:at:)`` whose process was seen to be gone
    /// but whose exit status could not be known (it is not the shell's child).
    public static let unknownExitStatus: Int32 = -1
    /// The shell dropped a frame before it became a message (wrong token, garbage, oversized,
    /// a peer outside the job); counted by reason in ``Supervisor/droppedFrames``.
    case droppedFrame(reason: String, peer: String, at: Double)
    /// The user (or the shell on their behalf: Ctrl-C, SIGTERM) asks that a command go to one rank,
    /// or with `rank` nil to every rank that has said hello and not exited.
    case requestCommand(ControlCommand, rank: Int?, at: Double)

    /// When it happened, as stamped by the shell.
    public var at: Double {
        switch self {
        case let .hello(_, at), let .heartbeat(_, at), let .stepReport(_, at), let .faultReport(_, at), let .tick(at),
             let .processExit(_, _, _, at), let .droppedFrame(_, _, at), let .requestCommand(_, _, at):
            return at
        }
    }
}

/// Something the supervisor wants said about the job: one line on screen, one record in
/// `alerts.jsonl`, and the spec's `alert_command` run with it as JSON.
public struct SupervisorAlert: Sendable, Hashable, Codable {
    /// What the alert is about.
    public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
        /// A rank that said hello has sent nothing for longer than `heartbeatTimeout` (hung or gone),
        /// or whose heartbeats say it has made no progress for that long (hung inside a call).
        case silent
        /// A rank reported a fault (``ControlFaultReport``). Fatal to the outcome.
        case fault
        /// A rank's process exited with a non-zero status or was killed by a signal. Fatal to the outcome.
        case exited
        /// A rank's compute time has exceeded `stragglerFactor` × the other ranks' median
        /// for `stragglerSteps` recorded steps in a row.
        case straggler
        /// A rank's compute time per sequence has exceeded `slowdownFactor` × its own at the start
        /// of the attempt for `stragglerSteps` recorded steps in a row: its chip slowed down.
        case slowdown
        /// A step was recorded with a loss that is not finite: the ranks skipped its batch
        /// (`recovery.on_nan: skip_batch`; without it they stop instead and report a fault).
        case skipped
        /// A rank did not say hello within `helloTimeout` of the start.
        case missingHello
        /// A hello that cannot be who it says: for a rank outside the job, or for a rank whose first
        /// process (another pid or host) is still alive.
        case impostor
        /// The end of a `silent`, `straggler` or `slowdown` episode, or a new process that took over a rank
        /// that was silent or had exited.
        case recovered
    }

    public var kind: Kind
    /// The rank it is about (for an impostor, the rank its hello claimed; nil if none applies).
    public var rank: Int?
    /// The rank's chip, adapter and host, as its hello gave them (nil before a hello).
    public var chip: String?
    public var adapter: String?
    public var host: String?
    /// The rank's last step known to the supervisor (from a report, heartbeat or fault), if any.
    public var step: Int?
    /// When the supervisor raised it (the event's time).
    public var at: Double
    /// One line naming the rank, chip, adapter and host, what happened and what it means, e.g.
    /// `rank 2 (sim acme-x1 on host1, pid 123): no heartbeat for 10.2 s (heartbeat_timeout 10 s); it is hung or gone`.
    public var message: String
    /// For a `fault` whose report blames other ranks (silent corruption found by a collective
    /// check): the ranks it names; nil otherwise.
    public var suspects: [Int]?

    public init(kind: Kind, rank: Int?, chip: String?, adapter: String?, host: String?, step: Int?, at: Double,
                message: String) {
        self.kind = kind
        self.rank = rank
        self.chip = chip
        self.adapter = adapter
        self.host = host
        self.step = step
        self.at = at
        self.message = message
    }

    /// Whether the alert makes the job's outcome `failed` even when `mpirun` exits 0 (fault, exited).
    public var isFatal: Bool { kind == .fault || kind == .exited }
}

/// One step of the job, recorded once every rank has reported it.
///
/// The job-wide numbers (loss, tokens/s, validation loss) come from the lowest rank that has them
/// (every rank knows them; rank 0 normally); `stepMs` is the slowest rank's (the step ends when
/// the last rank is done). Numbers are as the ranks reported them, NaN and infinity included.
public struct SupervisorStep: Sendable, Hashable, Codable {
    /// One rank's part of the step.
    public struct Rank: Sendable, Hashable, Codable {
        public var rank: Int
        /// Sequences of the global batch it trained on.
        public var share: Int
        public var stepMs: Double
        public var computeMs: Double
        public var idleMs: Double
        public var exchangeMs: Double

        public init(rank: Int, share: Int, stepMs: Double, computeMs: Double, idleMs: Double, exchangeMs: Double) {
            self.rank = rank
            self.share = share
            self.stepMs = stepMs
            self.computeMs = computeMs
            self.idleMs = idleMs
            self.exchangeMs = exchangeMs
        }
    }

    public var step: Int
    public var loss: Double
    public var validationLoss: Double?
    public var tokensPerSecond: Double
    public var stepMs: Double
    /// One row per rank, in rank order.
    public var ranks: [Rank]
    /// When the last report of the step arrived.
    public var at: Double

    public init(step: Int, loss: Double, validationLoss: Double?, tokensPerSecond: Double, stepMs: Double, ranks: [Rank],
                at: Double) {
        self.step = step
        self.loss = loss
        self.validationLoss = validationLoss
        self.tokensPerSecond = tokensPerSecond
        self.stepMs = stepMs
        self.ranks = ranks
        self.at = at
    }
}

/// How the job ended, given with ``SupervisorDirective/stop(_:)`` when `mpirun` exits.
public struct SupervisorOutcome: Sendable, Hashable, Codable {
    public enum Result: String, Sendable, Hashable, Codable {
        /// `mpirun` exited 0 and no fatal alert (fault, exited) was raised.
        case finished
        /// Anything else.
        case failed
        /// The ranks were asked to stop (a `stop` command to every rank, at Ctrl-C or SIGTERM)
        /// and `mpirun` ended without a fatal alert: the job did not finish, and can resume.
        case stopped
    }

    public var result: Result
    /// One line: for `failed`, the first fatal alert's message, or else what `mpirun`'s exit was;
    /// for `finished`, a summary.
    public var reason: String
    /// `mpirun`'s exit status, and the signal that killed it, if one did.
    public var exitStatus: Int32
    public var signal: Int32?
    /// The last step recorded (nil if none was).
    public var lastStep: Int?
    /// The alerts raised during the job (the last ``Supervisor/historyLimit`` of them), and how many there were in all.
    public var alerts: [SupervisorAlert]
    public var alertCount: Int
    /// When `mpirun` exited.
    public var at: Double

    public init(result: Result, reason: String, exitStatus: Int32, signal: Int32?, lastStep: Int?, alerts: [SupervisorAlert],
                alertCount: Int, at: Double) {
        self.result = result
        self.reason = reason
        self.exitStatus = exitStatus
        self.signal = signal
        self.lastStep = lastStep
        self.alerts = alerts
        self.alertCount = alertCount
        self.at = at
    }
}

/// What the supervisor asks its shell to do, in order.
public enum SupervisorDirective: Sendable, Hashable {
    /// Say it: the screen, `alerts.jsonl`, `alert_command`.
    case alert(SupervisorAlert)
    /// Write the step to the run directory and the metrics.
    case record(SupervisorStep)
    /// Send the command to the rank over the control channel.
    case command(rank: Int, ControlCommand)
    /// The job is over: print the summary, write `summary.json`, exit (0 if finished).
    case stop(SupervisorOutcome)
}

/// What the supervisor knows of one rank (for the display, the metrics and the status page).
public struct RankView: Sendable, Hashable {
    /// Where a rank stands. Precedence, highest first: exited, silent, failed, alive, waiting.
    public enum Status: Sendable, Hashable {
        /// No hello yet.
        case waiting
        /// Said hello and heard from within `heartbeatTimeout`.
        case alive
        /// Said hello, then nothing for longer than `heartbeatTimeout` (an open silent episode).
        case silent
        /// Its process ended (status 0 is a normal end).
        case exited(status: Int32, signal: Int32?)
        /// Said hello and reported a fault since.
        case failed
    }

    public var rank: Int
    /// Its hello (nil until one arrives) and when the accepted one arrived.
    public var hello: ControlHello?
    public var helloAt: Double?
    /// When any accepted frame (hello, heartbeat, step or fault report) last came from it.
    public var lastHeardAt: Double?
    /// Its last heartbeat and when it came.
    public var lastHeartbeat: ControlHeartbeat?
    public var lastHeartbeatAt: Double?
    /// Its last accepted step report.
    public var lastStepReport: ControlStepReport?
    /// Its faults (count and the last), since its hello.
    public var faultCount: Int = 0
    public var lastFault: ControlFaultReport?
    /// Since when it has been silent (an open silent episode), if it is.
    public var silentSince: Double?
    /// Since when it has made no progress while still heart-beating (an open stalled episode: its
    /// beats say it is stuck inside one call), if it has.
    public var stalledSince: Double?
    /// Its exit, once its process ended.
    public var exitStatus: Int32?
    public var exitSignal: Int32?
    /// Recorded steps in a row on which it was above `stragglerFactor` × the others' median, and
    /// whether a straggler episode is open (its alert raised).
    public var consecutiveStragglerSteps: Int = 0
    public var isStraggler: Bool = false
    /// Its compute ms per sequence on its first judged steps (after the first recorded one, a
    /// warm-up), their median once there are enough: what it is judged against for a slowdown.
    public var startMsPerSequence: [Double] = []
    public var judgedSlowdownSteps = 0
    public var baselineMsPerSequence: Double?
    /// Recorded steps in a row above `slowdownFactor` × the baseline, and whether a slowdown
    /// episode is open.
    public var consecutiveSlowSteps: Int = 0
    public var isSlow: Bool = false
    /// Whether its missing hello was reported.
    public var missingHelloReported: Bool = false

    public init(rank: Int) { self.rank = rank }

    public var status: Status {
        if let exitStatus { return .exited(status: exitStatus, signal: exitSignal) }
        if silentSince != nil || stalledSince != nil { return .silent }
        if hello == nil { return .waiting }
        if faultCount > 0 { return .failed }
        return .alive
    }

    /// Whether its process has ended.
    public var hasExited: Bool { exitStatus != nil }

    /// The last step known from it (report, heartbeat or fault, whichever is highest).
    public var lastKnownStep: Int? {
        [lastStepReport?.step, lastHeartbeat?.step, lastFault?.step].compactMap { $0 }.max()
    }
}
