import Foundation
import MedleyControl
import MedleyCore
import MedleyLaunch
import MedleySupervisor

/// What supervising costs: the `medley launch` supervisor (its SwiftNIO control server, its
/// state machine, its timer) fed by N fake workers on loopback, each saying hello, then sending
/// a heartbeat and a step report every period, as a real rank does.
///
/// The fake workers run in a process of their own (``FakeWorkers``, started as
/// `medley bench fake-workers`), so the CPU time measured with `getrusage(RUSAGE_SELF)` over the
/// timed window is the supervisor's alone. The result says whether it kept up: every worker
/// heard from within the window, no silent alert, the steps recorded, and the worst heartbeat age.
public enum SupervisorBenchmark {
    public struct Result: Codable, Sendable {
        public var workers: Int
        /// Seconds between one worker's heartbeats (and step reports).
        public var periodSeconds: Double
        public var seconds: Double
        /// The supervisor's CPU time (user + system) over the window, and as a share of one core.
        public var cpuSeconds: Double
        public var cpuPercentOfOneCore: Double
        /// Frames the supervisor took per second over the window.
        public var eventsPerSecond: Double
        /// Steps recorded in the window (each needs every worker's report).
        public var stepsRecorded: Int
        /// Alerts raised in the window (silent, straggler, …): 0 when the supervisor keeps up.
        public var alerts: Int
        /// Frames dropped (any reason) in the window.
        public var droppedFrames: Int
        /// The largest heartbeat age over the workers at the end of the window, seconds.
        public var maxHeartbeatAgeSeconds: Double
        /// Seconds from the fake workers' start until every one had said hello.
        public var allHelloSeconds: Double
        /// The benchmark process's resident memory at the end (MiB).
        public var residentMiB: Double
    }

    /// Runs one configuration: `workers` fake workers beating every `period` s, timed for `seconds`.
    /// `program` is the `medley` executable (the fake workers are `program bench fake-workers …`).
    public static func measure(workers: Int, period: Double, seconds: Double, program: String) throws -> Result {
        guard (1...10_000).contains(workers) else { throw MedleyError(.invalidArgument, "--workers must be 1 to 10000, got \(workers)") }
        guard period >= 0.05 && period <= 10 else { throw MedleyError(.invalidArgument, "--period must be 0.05 to 10 s, got \(period)") }
        guard seconds >= 1 && seconds <= 3600 else { throw MedleyError(.invalidArgument, "--seconds must be 1 to 3600, got \(seconds)") }
        FileLimits.raise(atLeast: workers + 64)
        let shell = try SupervisorShell(
            configuration: SupervisorConfiguration(ranks: workers, heartbeatTimeout: max(10, 5 * period), stragglerFactor: 2,
                                                   stragglerSteps: 5, helloTimeout: 120),
            output: .init(alertLine: { _ in }))
        let token = ControlToken.random()
        let server = try shell.start(port: 0, token: token)
        defer { shell.shutdown() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = ["bench", "fake-workers", "--address", "127.0.0.1:\(server.port)", "--token", ControlToken.hex(token),
                             "--workers", "\(workers)", "--period", "\(period)", "--seconds", "\(seconds + 70)"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        let launched = Date()
        while shell.withSupervisor({ $0.ranks.contains { $0.hello == nil } }) {
            guard Date().timeIntervalSince(launched) < 60, process.isRunning else {
                let missing = shell.withSupervisor { $0.ranks.filter { $0.hello == nil }.count }
                throw MedleyError(.timeout, "\(missing) of \(workers) fake workers did not say hello within 60 s")
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        let allHello = Date().timeIntervalSince(launched)
        // Let the first reports settle, then time a window.
        Thread.sleep(forTimeInterval: min(3, 2 * period))
        let before = shell.withSupervisor { (alerts: $0.alertCount, steps: $0.steps.count, dropped: $0.droppedFrames.values.reduce(0, +)) }
        let eventsBefore = shell.eventsHandled
        let cpuBefore = processCPUSeconds()
        let start = Date()
        Thread.sleep(forTimeInterval: seconds)
        let cpuAfter = processCPUSeconds()
        let wall = Date().timeIntervalSince(start)
        let eventsAfter = shell.eventsHandled
        let now = shell.now
        let after = shell.withSupervisor { supervisor in
            (alerts: supervisor.alertCount, steps: supervisor.steps.count, dropped: supervisor.droppedFrames.values.reduce(0, +),
             age: supervisor.ranks.indices.compactMap { supervisor.heartbeatAge(rank: $0, at: now) }.max() ?? .infinity)
        }
        let cpu = cpuAfter - cpuBefore
        return Result(
            workers: workers, periodSeconds: period, seconds: wall, cpuSeconds: cpu, cpuPercentOfOneCore: 100 * cpu / wall,
            eventsPerSecond: Double(eventsAfter - eventsBefore) / wall, stepsRecorded: after.steps - before.steps,
            alerts: after.alerts - before.alerts, droppedFrames: after.dropped - before.dropped, maxHeartbeatAgeSeconds: after.age,
            allHelloSeconds: allHello, residentMiB: Self.residentMiB())
    }

    /// This process's resident set (VmRSS), MiB; 0 where /proc cannot tell.
    static func residentMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        else { return 0 }
        return kib / 1024
    }
}


/// The open-file limit, raised for a benchmark that holds a socket per worker.
enum FileLimits {
    static func raise(atLeast wanted: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(wanted) else { return }
        limit.rlim_cur = min(limit.rlim_max, rlim_t(wanted))
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Many fake ranks in one process and one thread: each connects to the supervisor, says hello,
/// then every `period` seconds sends a heartbeat and a step report, spread evenly over the period.
public enum FakeWorkers {
    /// Runs until `seconds` have passed (or the supervisor goes away). Returns the frames sent.
    @discardableResult
    public static func run(address: String, token: [UInt8], workers: Int, period: Double, seconds: Double) throws -> Int {
        guard let (host, port) = ControlEndpoint.parseAddress(address), host.contains(".") || host == "localhost" else {
            throw MedleyError(.invalidArgument, "--address must be IPV4:PORT, got \(address)")
        }
        let endpoint = ControlEndpoint(host: host, port: port, token: token)
        FileLimits.raise(atLeast: workers + 64)
        signal(SIGPIPE, SIG_IGN)
        let hostName = ProcessInfo.processInfo.hostName
        let pid = getpid()
        var sockets: [Int32] = []
        for rank in 0..<workers {
            let fd = try connect(endpoint)
            sockets.append(fd)
            let hello = ControlHello(rank: rank, adapter: "fake", vendor: "Medley", chip: "fake-\(rank)", host: hostName, pid: pid,
                                     memoryBytes: 1 << 30)
            send(fd, ControlWire.encode(.hello(hello), token: token))
        }
        let start = Date()
        var sent = workers
        var round = 0
        while Date().timeIntervalSince(start) < seconds {
            round += 1
            let roundStart = start.addingTimeInterval(Double(round - 1) * period)
            for rank in 0..<workers {
                let due = roundStart.addingTimeInterval(period * Double(rank) / Double(workers))
                let wait = due.timeIntervalSinceNow
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
                let beat = ControlHeartbeat(rank: rank, step: round, loss: 2.5, tokensPerSecond: 1000,
                                            deviceMemoryUsedBytes: 1 << 20, health: .ok, secondsSinceProgress: 0.01)
                let report = ControlStepReport(rank: rank, step: round, loss: 2.5, tokensPerSecond: 1000, stepMs: 1000 * period,
                                               computeMs: 900 * period, idleMs: 50 * period, exchangeMs: 50 * period, share: 1)
                guard send(sockets[rank], ControlWire.encode(.heartbeat(beat), token: token) + ControlWire.encode(.stepReport(report), token: token))
                else { return sent }
                sent += 2
            }
        }
        for fd in sockets { close(fd) }
        return sent
    }

    private static func connect(_ endpoint: ControlEndpoint) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MedleyError(.io, "socket() failed: errno \(errno); raise the open-file limit") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(endpoint.port).bigEndian)
        address.sin_addr.s_addr = inet_addr(endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw MedleyError(.io, "cannot connect to the supervisor at \(endpoint.host):\(endpoint.port): errno \(errno)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Sends all of `bytes`; false when the connection is gone.
    @discardableResult
    private static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
}
