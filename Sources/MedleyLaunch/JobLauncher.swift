import Foundation
import MedleyControl
import MedleyCore
import MedleyPlanner
import MedleySupervisor
import MedleyTrain

/// `medley launch`: the job under a supervisor. It makes the run directory, opens the control
/// channel (a TCP listener with a fresh random token), starts the job through ``TrainLauncher``
/// with the channel's address and token in every rank's environment, lets the ``Supervisor``
/// judge what the ranks report (alerts on screen and in `alerts.jsonl`), and ends with a
/// summary (`summary.json`).
public struct JobLauncher {
    /// The training launch (spec, steps, outputs, mpirun settings).
    public var launcher: TrainLauncher
    /// The run directory; nil: `runs/<job>-<UTC time>` under the current directory.
    public var runDirectory: String?
    /// Where the control channel listens (0: any free port).
    public var controlHost: String
    public var controlPort: Int
    /// How the supervisor judges the ranks (its `ranks` is set from the job).
    public var heartbeatTimeout: Double

    public init(launcher: TrainLauncher, runDirectory: String? = nil, controlHost: String = "127.0.0.1", controlPort: Int = 0,
                heartbeatTimeout: Double = 10) {
        self.launcher = launcher
        self.runDirectory = runDirectory
        self.controlHost = controlHost
        self.controlPort = controlPort
        self.heartbeatTimeout = heartbeatTimeout
    }

    /// The run directory this launch writes to.
    public func resolvedRunDirectory(now: Date = Date()) -> String {
        if let runDirectory { return runDirectory }
        let stamp = ISO8601DateFormatter.string(from: now, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withYear, .withMonth, .withDay, .withTime])
        return "runs/\(launcher.spec.name)-\(stamp)"
    }

    /// Runs the job to its end and returns the exit status; `print` receives what the user sees.
    public func run(program: String, print: @escaping @Sendable (String, _ isError: Bool) -> Void) throws -> Int32 {
        let plan = try launcher.resolvePlan()
        try launcher.preflight(plan: plan)
        let directory = resolvedRunDirectory()
        try Self.makeRunDirectory(directory)
        try launcher.spec.yamlString().write(toFile: directory + "/job.yaml", atomically: true, encoding: .utf8)
        if let plan { try plan.jsonData().write(to: URL(fileURLWithPath: directory + "/plan.json"), options: .atomic) }

        let ranks = plan.map { Set($0.usedDevices).count } ?? launcher.spec.rankCount
        let shell = try SupervisorShell(
            configuration: SupervisorConfiguration(ranks: ranks, heartbeatTimeout: heartbeatTimeout),
            output: .init(alertLine: { print("alert: " + $0, true) }, alertsPath: directory + "/alerts.jsonl"))
        let token = ControlToken.random()
        let server = try shell.start(host: controlHost, port: controlPort, token: token)
        defer { shell.shutdown() }
        print("run directory \(directory); supervising \(ranks) rank\(ranks == 1 ? "" : "s") on \(controlHost):\(server.port)", false)

        var job = launcher
        job.environment[ControlEndpoint.addressVariable] = "\(controlHost):\(server.port)"
        job.environment[ControlEndpoint.tokenVariable] = ControlToken.hex(token)
        if job.logPath == nil { job.logPath = directory + "/steps.jsonl" }
        let started = Date()
        let status = try job.run(program: program, resolvedPlan: plan, print: print)
        shell.handle(.processExit(rank: nil, status: status, signal: nil, at: shell.now))

        let summary = shell.withSupervisor { JobSummary(supervisor: $0, status: status, seconds: Date().timeIntervalSince(started)) }
        for line in summary.lines { print(line, false) }
        try JobSummary.write(summary, to: directory + "/summary.json")
        return status
    }

    /// Creates the run directory (and its parents); one line when it cannot.
    static func makeRunDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(.io, "cannot create the run directory \(path) (\(error.localizedDescription)); pick a writable --run-dir")
        }
        guard FileManager.default.isWritableFile(atPath: path) else {
            throw MedleyError(.io, "the run directory \(path) is not writable; pick a writable --run-dir")
        }
    }
}
