import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor
import NIOConcurrencyHelpers

/// The thin shell around the pure ``Supervisor``: it feeds it events (from the control
/// channel, a timer, and the rank processes it can see) and carries out its directives:
/// alerts go to the screen and to `alerts.jsonl` in the run directory, commands go to the
/// rank's connection, a stop is remembered as the job's outcome. All the judging is the
/// state machine's; everything here is I/O.
public final class SupervisorShell: @unchecked Sendable {
    /// Where the shell writes and what it shows.
    public struct Output: Sendable {
        /// Receives every alert's line (the screen).
        public var alertLine: @Sendable (String) -> Void
        /// `alerts.jsonl` (one JSON object per alert), if any.
        public var alertsPath: String?
        /// Receives every alert after its line is shown and its record written (the `alert_command` hook).
        public var onAlert: (@Sendable (SupervisorAlert) -> Void)?

        public init(alertLine: @escaping @Sendable (String) -> Void, alertsPath: String? = nil,
                    onAlert: (@Sendable (SupervisorAlert) -> Void)? = nil) {
            self.alertLine = alertLine
            self.alertsPath = alertsPath
            self.onAlert = onAlert
        }
    }

    private let state: NIOLockedValueBox<Supervisor>
    private let output: Output
    private let started = DispatchTime.now().uptimeNanoseconds
    private var server: ControlServer?
    private var timer: DispatchSourceTimer?
    private let outcomeBox = NIOLockedValueBox<SupervisorOutcome?>(nil)
    private let alertsFile: FileHandle?

    /// A shell for a job of `configuration.ranks` ranks; `start` begins listening.
    public init(configuration: SupervisorConfiguration, output: Output) throws {
        try configuration.validate()
        state = NIOLockedValueBox(Supervisor(configuration: configuration, startedAt: 0))
        self.output = output
        if let path = output.alertsPath {
            // Appended to: a restarted attempt, or a resumed run, keeps the earlier alerts.
            if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
            guard let handle = FileHandle(forWritingAtPath: path) else {
                throw MedleyError(.io, "cannot create \(path); pick a writable --run-dir")
            }
            handle.seekToEndOfFile()
            alertsFile = handle
        } else {
            alertsFile = nil
        }
    }

    /// Seconds since the shell was made (the supervisor's clock).
    public var now: Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }

    /// Listens for the ranks on `host:port` with `token` (connections from outside `allowedHosts`,
    /// when given, are dropped and counted) and starts the timer (4 ticks a second).
    public func start(host: String = "127.0.0.1", port: Int = 0, token: [UInt8], allowedHosts: Set<String>? = nil) throws -> ControlServer {
        let server = try ControlServer(
            host: host, port: port, token: token, allowedHosts: allowedHosts, clock: { [weak self] in self?.now ?? 0 },
            onEvent: { [weak self] in self?.handle($0) },
            onDisconnect: { [weak self] rank in self?.watchAfterDisconnect(rank: rank) })
        self.server = server
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "medley.supervisor.tick"))
        timer.schedule(deadline: .now() + 0.25, repeating: 0.25)
        timer.setEventHandler { [weak self] in self?.tick() }
        timer.resume()
        self.timer = timer
        return server
    }

    /// Events handled so far (every frame, drop, tick and exit).
    public var eventsHandled: Int { state.withLockedValue { _ in handledCount } }
    private var handledCount = 0

    /// One event in, its directives carried out.
    public func handle(_ event: SupervisorEvent) {
        let directives = state.withLockedValue { supervisor in
            handledCount += 1
            return supervisor.handle(event)
        }
        for directive in directives { carryOut(directive) }
    }

    /// The timer: a tick for the state machine, and a look at the ranks' processes.
    private func tick() {
        let at = now
        handle(.tick(at: at))
        // A rank whose process is gone (SIGKILL, a crash) says nothing: see it here. The ranks
        // run on this host (multi-host placement is later work), so their pids are ours to check.
        let gone = state.withLockedValue { supervisor in
            supervisor.ranks.enumerated().compactMap { rank, view -> Int? in
                guard let pid = view.hello?.pid, !view.hasExited else { return nil }
                // Only whether it exists (no /proc read): a zombie's connection has closed, and
                // the disconnect watch looks closer.
                return kill(pid, 0) != 0 && errno == ESRCH ? rank : nil
            }
        }
        for rank in gone { handle(.processExit(rank: rank, status: SupervisorEvent.unknownExitStatus, signal: nil, at: at)) }
    }

    /// A rank's connection closed: look at its process at once, and for a second after (the
    /// kernel and mpirun may take a moment to reap it), so a killed rank is named before
    /// mpirun's own exit ends the job.
    private func watchAfterDisconnect(rank: Int) {
        guard let pid = state.withLockedValue({ $0.ranks.indices.contains(rank) ? $0.ranks[rank].hello?.pid : nil }) else { return }
        DispatchQueue.global().async { [weak self] in
            for _ in 0..<50 {
                guard let self else { return }
                if Self.isGone(pid) {
                    let running = self.state.withLockedValue { !$0.ranks[rank].hasExited }
                    if running { self.handle(.processExit(rank: rank, status: SupervisorEvent.unknownExitStatus, signal: nil, at: self.now)) }
                    return
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
    }

    /// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
    static func isGone(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return true }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else {
            return false
        }
        return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
    }

    private func carryOut(_ directive: SupervisorDirective) {
        switch directive {
        case .alert(let alert):
            output.alertLine(alert.message)
            if let alertsFile, let json = try? JSONEncoder.sortedLine(alert) { alertsFile.write(Data((json + "\n").utf8)) }
            output.onAlert?(alert)
        case .record:
            break
        case .command(let rank, let command):
            server?.send(command, to: rank)
        case .stop(let outcome):
            outcomeBox.withLockedValue { $0 = $0 ?? outcome }
        }
    }

    /// The outcome, once the supervisor has stopped.
    public var outcome: SupervisorOutcome? { outcomeBox.withLockedValue { $0 } }

    /// A look at the state machine (for the display and the summary).
    public func withSupervisor<T>(_ body: (Supervisor) -> T) -> T { state.withLockedValue { body($0) } }

    /// Stops the timer and the listener; closes alerts.jsonl.
    public func shutdown() {
        timer?.cancel()
        timer = nil
        server?.shutdown()
        server = nil
        try? alertsFile?.close()
    }
}

extension JSONEncoder {
    /// `value` as one line of JSON with sorted keys.
    static func sortedLine<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
