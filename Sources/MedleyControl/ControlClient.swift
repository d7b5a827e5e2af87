import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The rank's side. Never throws into training and never blocks it: a background thread connects
/// (retrying every `retrySeconds`), sends Hello on every (re)connect, sends a Heartbeat every
/// `heartbeatSeconds` built from the latest `update(...)` state, drains a bounded queue of
/// step/fault reports (drop oldest when full, count drops), and reads Commands from the supervisor
/// into a queue.
///
/// The training thread only ever takes a lock for a few instructions and writes one byte to a
/// non-blocking pipe; every socket call happens on the background thread. Reports queued while the
/// supervisor is unreachable go out after the next connect (the newest `queueLimit` of them).
/// Frames that were handed to a connection that then broke are lost (the channel watches; it is
/// not on the correctness path).
public final class ControlClient: @unchecked Sendable {
    public let endpoint: ControlEndpoint
    public let hello: ControlHello
    private let heartbeatSeconds: Double
    private let batchSeconds: Double
    /// When the background thread last moved reports into the output (its own).
    private var lastMove = 0.0
    private let retrySeconds: Double
    private let queueLimit: Int
    /// Commands kept until taken; the oldest go first.
    private static let commandLimit = 64
    /// Bytes buffered for the socket before the background thread stops moving reports into it.
    private static let outputLimit = 64 * 1024

    private let lock = NSLock()
    // Guarded by `lock`.
    private var step = 0
    private var loss: Double?
    private var tokensPerSecond: Double?
    private var deviceMemoryUsedBytes: UInt64 = 0
    private var health: ControlHealth = .idle
    private var queue: [ControlMessage] = []
    private var commands: [ControlCommand] = []
    private var connected = false
    private var dropped = 0
    private var started = false
    private var stopRequested = false
    private var stopDeadline = 0.0
    private var threadDone = false

    private let done = NSCondition()
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// `batchSeconds`: step reports wait up to this long to go out together (a fast job's many
    /// small reports become one write, and one wake-up of the supervisor, per batch); fault
    /// reports go at once.
    public init(endpoint: ControlEndpoint, hello: ControlHello, heartbeatSeconds: Double = 1, retrySeconds: Double = 2,
                queueLimit: Int = 256, batchSeconds: Double = 0.1, progress: (@Sendable () -> Double)? = nil) {
        self.progress = progress
        self.batchSeconds = batchSeconds.isFinite && batchSeconds > 0 ? min(batchSeconds, 1) : 0
        self.endpoint = endpoint
        self.hello = hello
        self.heartbeatSeconds = heartbeatSeconds.isFinite && heartbeatSeconds > 0 ? max(0.01, heartbeatSeconds) : 1
        self.retrySeconds = retrySeconds.isFinite && retrySeconds > 0 ? max(0.01, retrySeconds) : 2
        self.queueLimit = max(1, queueLimit)
        (wakeRead, wakeWrite) = ControlSocket.wakePipe()
    }

    deinit {
        if wakeRead >= 0 { close(wakeRead) }
        if wakeWrite >= 0 { close(wakeWrite) }
    }

    /// Starts the background thread (once; later calls do nothing).
    public func start() {
        lock.lock()
        let go = !started && !stopRequested
        started = true
        lock.unlock()
        guard go else { return }
        let thread = Thread { [self] in
            self.run()
        }
        thread.name = "medley-control"
        thread.start()
    }

    /// The state the next heartbeats carry.
    public func update(step: Int, loss: Double?, tokensPerSecond: Double?, deviceMemoryUsedBytes: UInt64, health: ControlHealth) {
        lock.lock()
        self.step = step
        self.loss = loss
        self.tokensPerSecond = tokensPerSecond
        self.deviceMemoryUsedBytes = deviceMemoryUsedBytes
        self.health = health
        lock.unlock()
    }

    public func report(_ step: ControlStepReport) { enqueue(.stepReport(step)) }

    public func report(_ fault: ControlFaultReport) { enqueue(.faultReport(fault)) }

    /// The commands received since the last call, oldest first.
    public func takeCommands() -> [ControlCommand] {
        lock.lock()
        defer { lock.unlock() }
        let out = commands
        commands = []
        return out
    }

    /// Sends what is queued (waiting at most `timeoutSeconds`) and closes; call at the end of the job
    /// and before reporting a fatal fault's exit. Returns within about `flushTimeoutSeconds` + 0.5 s.
    public func stop(flushTimeoutSeconds: Double = 1) {
        let timeout = flushTimeoutSeconds.isFinite ? max(0, flushTimeoutSeconds) : 1
        lock.lock()
        let wasStarted = started
        let already = stopRequested
        if !already {
            stopRequested = true
            stopDeadline = ControlSocket.now() + timeout
        }
        let deadline = stopDeadline
        lock.unlock()
        guard wasStarted else { return }
        wake()
        done.lock()
        let until = Date(timeIntervalSinceNow: max(0, deadline - ControlSocket.now()) + 0.5)
        while !threadDone {
            if !done.wait(until: until) { break }
        }
        done.unlock()
    }

    public var isConnected: Bool {
        lock.lock()
        defer { lock.unlock() }
        return connected
    }

    /// Reports dropped because the queue was full.
    public var droppedReports: Int {
        lock.lock()
        defer { lock.unlock() }
        return dropped
    }

    // MARK: Training thread side

    private func enqueue(_ message: ControlMessage) {
        lock.lock()
        if stopRequested {
            lock.unlock()
            return
        }
        // The first report of a batch, or a fault, wakes the thread; the rest ride along.
        var urgent = queue.isEmpty || batchSeconds == 0
        if case .faultReport = message { urgent = true }
        queue.append(message)
        if queue.count > queueLimit {
            queue.removeFirst(queue.count - queueLimit)
            dropped += 1
        }
        lock.unlock()
        if urgent { wake() }
    }

    private func wake() {
        guard wakeWrite >= 0 else { return }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    /// Seconds since the rank last made progress, read for every heartbeat (``ControlHeartbeat/secondsSinceProgress``).
    private let progress: (@Sendable () -> Double)?

    // MARK: Background thread

    private var fd: Int32 = -1
    private var output: [UInt8] = []
    private var outputOffset = 0
    private var decoder = ControlFrameDecoder(token: [])

    private func heartbeatFrame() -> [UInt8] {
        lock.lock()
        let beat = ControlHeartbeat(rank: hello.rank, step: step, loss: loss, tokensPerSecond: tokensPerSecond,
                                    deviceMemoryUsedBytes: deviceMemoryUsedBytes, health: health,
                                    secondsSinceProgress: progress?())
        lock.unlock()
        return ControlWire.encode(.heartbeat(beat), token: endpoint.token)
    }

    private func setConnected(_ value: Bool) {
        lock.lock()
        connected = value
        lock.unlock()
    }

    private func stopState() -> (requested: Bool, deadline: Double) {
        lock.lock()
        defer { lock.unlock() }
        return (stopRequested, stopDeadline)
    }

    /// Connects within `timeout`; a stop request cuts the attempt short unless `duringStop`.
    private func tryConnect(timeout: Double, duringStop: Bool = false) -> Bool {
        let s = ControlSocket.connect(host: endpoint.host, port: endpoint.port, timeout: timeout, wake: wakeRead,
                                      abort: { [self] in !duringStop && stopState().requested })
        guard s >= 0 else { return false }
        fd = s
        output = ControlWire.encode(.hello(hello), token: endpoint.token)
        outputOffset = 0
        decoder = ControlFrameDecoder(token: endpoint.token)
        setConnected(true)
        return true
    }

    private func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        output = []
        outputOffset = 0
        setConnected(false)
    }

    /// Moves queued reports into the output buffer while it has room.
    private func moveQueued(all: Bool = false) {
        lock.lock()
        var taken: [ControlMessage] = []
        var room = Self.outputLimit - (output.count - outputOffset)
        while !queue.isEmpty, all || room > 0 {
            let m = queue.removeFirst()
            taken.append(m)
            room -= 256  // an estimate: reports are small
        }
        lock.unlock()
        for m in taken { output += ControlWire.encode(m, token: endpoint.token) }
    }

    private func compactOutput() {
        if outputOffset == output.count {
            output.removeAll(keepingCapacity: true)
            outputOffset = 0
        } else if outputOffset > 64 * 1024 {
            output.removeFirst(outputOffset)
            outputOffset = 0
        }
    }

    /// Sends what the socket takes; false when the connection broke.
    private func flushSome() -> Bool {
        while outputOffset < output.count {
            guard let n = ControlSocket.sendSome(fd, output, from: outputOffset) else { return false }
            if n == 0 { break }
            outputOffset += n
        }
        compactOutput()
        return true
    }

    /// Reads what arrived; false when the connection ended or the stream is poisoned.
    private func readSome() -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buf.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                while let r = decoder.next() {
                    if case .message(.command(let c)) = r {
                        lock.lock()
                        commands.append(c)
                        if commands.count > Self.commandLimit { commands.removeFirst(commands.count - Self.commandLimit) }
                        lock.unlock()
                    }
                }
                if decoder.isPoisoned { return false }
                if n < buf.count { return true }
                continue
            }
            if n == 0 { return false }
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR
        }
    }

    private func run() {
        var nextAttempt = ControlSocket.now()
        var nextBeat = 0.0
        while !stopState().requested {
            let now = ControlSocket.now()
            if fd < 0 {
                if now < nextAttempt {
                    waitForWake(seconds: nextAttempt - now)
                    continue
                }
                if tryConnect(timeout: min(retrySeconds, 5)) {
                    output += heartbeatFrame()
                    nextBeat = ControlSocket.now() + heartbeatSeconds
                } else {
                    nextAttempt = ControlSocket.now() + retrySeconds
                    continue
                }
            }
            // Reports go out a batch at a time (a fault at once).
            var batchDue = Double.infinity
            if queueIsNonEmpty() {
                let due = lastMove + batchSeconds
                if ControlSocket.now() >= due || queueHoldsFault() {
                    if output.count - outputOffset < Self.outputLimit {
                        moveQueued()
                        lastMove = ControlSocket.now()
                    }
                } else {
                    batchDue = due
                }
            }
            if ControlSocket.now() >= nextBeat {
                if output.count - outputOffset < Self.outputLimit { output += heartbeatFrame() }
                nextBeat += heartbeatSeconds
                if nextBeat <= ControlSocket.now() { nextBeat = ControlSocket.now() + heartbeatSeconds }  // late: no burst
            }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN) | (outputOffset < output.count ? Int16(POLLOUT) : 0), revents: 0),
                       pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let n = poll(&fds, 2, ControlSocket.pollMillis(min(nextBeat, batchDue) - ControlSocket.now()))
            if n < 0 { continue }
            if fds[1].revents != 0 { ControlSocket.drain(wakeRead) }
            var alive = true
            if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { alive = readSome() }
            if alive { alive = flushSome() }
            if !alive {
                disconnect()
                nextAttempt = ControlSocket.now()  // one immediate retry, then every retrySeconds
            }
        }
        finish(deadline: stopState().deadline)
        done.lock()
        threadDone = true
        done.broadcast()
        done.unlock()
    }

    private func waitForWake(seconds: Double) {
        var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        if poll(&fds, 1, ControlSocket.pollMillis(seconds)) > 0 { ControlSocket.drain(wakeRead) }
    }

    /// Sends the queue and a last heartbeat within the deadline, then closes.
    private func finish(deadline: Double) {
        ControlSocket.drain(wakeRead)
        if fd < 0 {
            let left = deadline - ControlSocket.now()
            guard left > 0.01, queueIsNonEmpty() else { return }
            guard tryConnect(timeout: left, duringStop: true) else { return }
        }
        moveQueued(all: true)
        output += heartbeatFrame()
        while outputOffset < output.count, ControlSocket.now() < deadline {
            guard flushSome() else { disconnect(); return }
            if outputOffset == output.count { break }
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            _ = poll(&fds, 1, ControlSocket.pollMillis(min(0.05, deadline - ControlSocket.now())))
        }
        // Half-close and read to the peer's end (briefly), so unread input does not turn close into a reset.
        _ = shutdown(fd, Int32(SHUT_WR))
        let lingerUntil = min(deadline, ControlSocket.now() + 0.2)
        while ControlSocket.now() < lingerUntil {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
            if poll(&fds, 1, ControlSocket.pollMillis(lingerUntil - ControlSocket.now())) <= 0 { break }
            if !readSome() { break }
        }
        disconnect()
    }

    private func queueHoldsFault() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return queue.contains { if case .faultReport = $0 { true } else { false } }
    }

    private func queueIsNonEmpty() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return !queue.isEmpty
    }
}
