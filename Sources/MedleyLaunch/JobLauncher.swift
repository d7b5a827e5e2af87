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
    /// How long the ranks get to stop by themselves at Ctrl-C or SIGTERM before they are signalled.
    public static let stopGraceSeconds = 1.5
    /// Fatal alerts this close to the first one are faults of their own; later ones are the
    /// job being ended because of it.
    public static let collateralWindow = 0.2

    /// The training launch (spec, steps, outputs, mpirun settings).
    public var launcher: TrainLauncher
    /// The run directory; nil: `runs/<job>-<UTC time>` under the current directory.
    public var runDirectory: String?
    /// Where the control channel listens (0: any free port).
    public var controlHost: String
    public var controlPort: Int
    /// How the ranks are judged, what runs for each alert, where metrics are served: the spec's
    /// `supervise:` section with the command line's overrides applied.
    public var supervise: JobSpec.Supervise
    /// How the console shows the job (a live display on a terminal, plain lines, quiet).
    public var mode: LaunchConsole.Mode

    public init(launcher: TrainLauncher, runDirectory: String? = nil, controlHost: String = "127.0.0.1", controlPort: Int = 0,
                supervise: JobSpec.Supervise? = nil, mode: LaunchConsole.Mode = .plain) {
        self.launcher = launcher
        self.runDirectory = runDirectory
        self.controlHost = controlHost
        self.controlPort = controlPort
        self.supervise = supervise ?? launcher.spec.supervise
        self.mode = mode
    }

    /// The run directory this launch writes to.
    public func resolvedRunDirectory(now: Date = Date()) -> String {
        if let runDirectory { return runDirectory }
        let stamp = ISO8601DateFormatter.string(from: now, timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withYear, .withMonth, .withDay, .withTime])
        return "runs/\(launcher.spec.name)-\(stamp)"
    }

    /// Steps the job runs.
    public var totalSteps: Int { launcher.steps ?? launcher.spec.train.steps }

    /// Runs the job to its end and returns the exit status; `write` receives what the user sees
    /// (text with its line breaks, and whether it is for standard error).
    public func run(program: String, write: @escaping @Sendable (String, _ isError: Bool) -> Void) throws -> Int32 {
        let launchedAt = Date()
        try supervise.validate()
        let directory = resolvedRunDirectory()
        var launcher = self.launcher
        // Checkpoints go in the run directory (set once it is made); a rerun in a run directory
        // that has some continues from them.
        let checkpoints = launcher.checkpointDirectory ?? directory + "/checkpoints"
        launcher.checkpointsLater = true
        var resumedHere = false
        if launcher.resumePath == nil, !CheckpointStore(directory: checkpoints).steps().isEmpty {
            launcher.resumePath = checkpoints
            resumedHere = true
        }
        let plan = try launcher.resolvePlan()
        try launcher.preflight(plan: plan)
        try Self.makeRunDirectory(directory)
        try launcher.spec.yamlString().write(toFile: directory + "/job.yaml", atomically: true, encoding: .utf8)
        if let plan { try plan.jsonData().write(to: URL(fileURLWithPath: directory + "/plan.json"), options: .atomic) }

        let console = LaunchConsole(mode: mode, logPath: directory + "/supervisor.log", write: write)
        defer { console.finish() }
        let hook = supervise.alertCommand.map {
            AlertHook(command: $0, timeoutSeconds: supervise.alertTimeout) { problem in console.alert(problem) }
        }
        // Faults: evict, take a spare or shrink, re-plan for the chips left (a job that runs a
        // plan), and restart from the newest checkpoint (plan-independent, so it loads onto any plan).
        var policy = RecoveryPolicy(
            configuration: .init(maxRestarts: launcher.spec.recovery.maxRestarts, minChips: launcher.spec.recovery.minChips,
                                 backoffSeconds: launcher.spec.recovery.backoff,
                                 stragglerCooldownSeconds: launcher.spec.recovery.stragglerCooldown),
            primaries: launcher.spec.rankCount, spares: launcher.spec.spareDevices.count)
        // The newest checkpoint also in shared memory (rank 0 writes it there first), so that a
        // restart has it even when the job ended while its disk copy was being written.
        let snapshot = Self.makeSnapshotDirectory(job: launcher.spec.name)
        defer { if let snapshot { try? FileManager.default.removeItem(atPath: snapshot) } }
        if let snapshot { launcher.environment[CheckpointStore.snapshotVariable] = snapshot }
        let original = launcher.spec
        var current = launcher
        var currentPlan = plan
        var attempt = 0
        while true {
            let result = try runAttempt(
                current, plan: currentPlan, program: program, directory: directory, checkpoints: checkpoints, console: console,
                hook: hook, launchedAt: launchedAt, resumedHere: resumedHere && attempt == 0, restarts: attempt,
                recoverable: !policy.isOver && policy.restarts < policy.configuration.maxRestarts,
                swapsSlowChips: policy.configuration.stragglerCooldownSeconds > 0 && policy.hasSpare(at: Date().timeIntervalSince(launchedAt)))
            // Finished, stopped on request (a signal to medley launch), or mpirun killed by hand:
            // nothing to recover from. (mpirun's own status may be 128 + a rank's signal.)
            let stopped = result.exit == 0 || result.exit == TrainLauncher.resumableExitStatus || result.interrupted
            if stopped {
                return try finish(result, directory: directory, console: console, policy: policy)
            }
            // A plan's ranks are the devices it uses, renumbered: the policy counts the spec's devices.
            let deviceOfRank = currentPlan.map { Array(Set($0.usedDevices)).sorted() } ?? Array(0..<current.spec.rankCount)
            let faults = result.faults.compactMap { fault -> RecoveryPolicy.RankFault? in
                guard deviceOfRank.indices.contains(fault.rank) else { return nil }
                var mapped = fault
                mapped.rank = deviceOfRank[fault.rank]
                return mapped
            }
            let at = Date().timeIntervalSince(launchedAt)
            if result.trainedSteps { _ = policy.handle(.progressed(at: at)) }
            var directives: [RecoveryPolicy.Directive]
            if let nonFinite = result.nonFinite, !faults.contains(where: { $0.kind != .slowdown }) {
                let rank = nonFinite.rank.flatMap { deviceOfRank.indices.contains($0) ? deviceOfRank[$0] : nil }
                directives = policy.handle(.nonFinite(rank: rank, message: nonFinite.message, at: at))
            } else {
                directives = policy.handle(.failed(faults: faults, reason: "mpirun exited with status \(result.exit)", at: at))
            }
            var restart: (chips: [RecoveryPolicy.Chip], number: Int, after: Double)?
            for directive in directives {
                let (line, json) = Self.describe(directive, original: original)
                console.alert(line)
                Self.append(json, to: directory + "/alerts.jsonl")
                if case let .restart(chips, number, after) = directive { restart = (chips, number, after) }
            }
            guard let restart else { return try finish(result, directory: directory, console: console, policy: policy) }
            // Both stores are read (and every tensor's checksum verified) once per restart.
            let source = CheckpointStore.newer(disk: checkpoints, memory: snapshot)
            if let newest = source?.step, newest >= totalSteps {
                // Ended after its last checkpoint (a fault as it finished): nothing is left to train.
                console.alert("recovery: the checkpoint of step \(newest), the last, is whole: the training is complete")
                var done = result
                done.exit = 0
                return try finish(done, directory: directory, console: console, policy: policy)
            }
            current.spec.devices = restart.chips.map { Self.device(of: $0, in: original) }
            current.resumePath = source?.path
            if let source, source.fromMemory {
                console.alert("recovery: resuming from the snapshot of step \(source.step) in memory (its disk copy was not whole when the job ended)")
            } else if source == nil {
                console.alert("recovery: no whole checkpoint yet; the restart trains from step 1")
            }
            if currentPlan != nil, current.spec.plan != JobSpec.automaticPlan {
                // A plan file names the chips it was made for: the new inventory needs a new plan.
                console.alert("recovery: the plan file \(current.spec.plan) was made for the old chips; planning anew (plan: auto) for the new ones")
                current.spec.plan = JobSpec.automaticPlan
            }
            do {
                currentPlan = try current.resolvePlan()
                try current.preflight(plan: currentPlan)
            } catch {
                console.alert("recovery: the restarted job cannot start: \(error); giving up")
                return try finish(result, directory: directory, console: console, policy: policy)
            }
            try current.spec.yamlString().write(toFile: directory + "/job.yaml", atomically: true, encoding: .utf8)
            if let currentPlan {
                try currentPlan.jsonData().write(to: URL(fileURLWithPath: directory + "/plan.json"), options: .atomic)
                console.line(currentPlan.table(), isError: false)
            }
            Thread.sleep(forTimeInterval: restart.after)
            attempt += 1
        }
    }

    /// One attempt's end: its summary shown and written.
    private func finish(_ result: Attempt, directory: String, console: LaunchConsole, policy: RecoveryPolicy? = nil) throws -> Int32 {
        for line in result.summary.lines { console.always(line) }
        if let policy, policy.restarts > 0 {
            let evicted = policy.evictions.map { "\($0.chip)" }.joined(separator: ", ")
            console.always("  recovered: \(policy.restarts) restart\(policy.restarts == 1 ? "" : "s"); evicted \(evicted.isEmpty ? "none" : evicted); the summary above is of the last attempt")
        }
        if result.exit == TrainLauncher.resumableExitStatus
            || (result.interrupted && !CheckpointStore(directory: directory + "/checkpoints").steps().isEmpty) {
            console.always("resumable: `medley launch --resume \(directory)` continues from its newest checkpoint")
        }
        try JobSummary.write(result.summary, to: directory + "/summary.json")
        return result.exit
    }

    /// The spec's device (one rank's worth) that `chip` stands for.
    static func device(of chip: RecoveryPolicy.Chip, in spec: JobSpec) -> JobSpec.Device {
        switch chip {
        case .primary(let n):
            let d = spec.rankDevices[n]
            return JobSpec.Device(adapter: d.adapter, options: d.options, cpus: d.cpus)
        case .spare(let n):
            return spec.spareDevices[n]
        }
    }

    /// A recovery decision as one line on screen and one JSON line in alerts.jsonl.
    static func describe(_ directive: RecoveryPolicy.Directive, original: JobSpec) -> (String, String) {
        func name(_ chip: RecoveryPolicy.Chip) -> String {
            let d = device(of: chip, in: original)
            return "\(chip) (\(d.adapter)\(d.options["name"].map { " \($0)" } ?? ""))"
        }
        let (kind, line): (String, String)
        switch directive {
        case let .evict(chip, reason): (kind, line) = ("evicted", "recovery: \(name(chip)) is evicted: \(reason)")
        case let .replace(evicted, spare): (kind, line) = ("replaced", "recovery: \(name(spare)) takes the rank of \(name(evicted))")
        case let .rejoin(chip): (kind, line) = ("rejoined", "recovery: \(name(chip))'s cooldown is over; it is a spare again")
        case let .shrink(removed): (kind, line) = ("shrunk", "recovery: no spare left; the job goes on without \(name(removed))")
        case let .restart(chips, number, after):
            (kind, line) = ("restart", "recovery: restart \(number) on \(chips.count) chip\(chips.count == 1 ? "" : "s") in \(after) s")
        case let .giveUp(reason): (kind, line) = ("gave_up", "recovery: giving up: \(reason)")
        case .finish: (kind, line) = ("finished", "recovery: finished")
        }
        let object: [String: Any] = ["kind": kind, "message": line, "unix_millis": Int(Date().timeIntervalSince1970 * 1000)]
        let json = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return (line, json)
    }

    /// What one attempt left: its exit, its summary and its fatal faults.
    struct Attempt {
        var exit: Int32
        var summary: JobSummary
        /// A non-finite loss or gradient every rank reported alike: the rank that computed it
        /// (nil: the averaged gradient) and the words.
        var nonFinite: (rank: Int?, message: String)?
        var faults: [RecoveryPolicy.RankFault]
        /// Ended by a signal to this process, or by mpirun being killed from outside.
        var interrupted = false
        /// Whether the attempt recorded any step (trained past the checkpoint it resumed from).
        var trainedSteps = false
    }

    /// Appends one line to a file (the attempt's own handle on alerts.jsonl is closed by then).
    static func append(_ line: String, to path: String) {
        guard let handle = FileHandle(forWritingAtPath: path) else { return }
        handle.seekToEndOfFile()
        handle.write(Data((line + "\n").utf8))
        try? handle.close()
    }

    /// One `mpirun` of the job under a fresh supervisor, control channel and status server.
    private func runAttempt(_ launcher: TrainLauncher, plan: Plan?, program: String, directory: String, checkpoints: String,
                            console: LaunchConsole, hook: AlertHook?, launchedAt: Date, resumedHere: Bool, restarts: Int,
                            recoverable: Bool, swapsSlowChips: Bool) throws -> Attempt {
        let ranks = plan.map { Set($0.usedDevices).count } ?? launcher.spec.rankCount
        let configuration = SupervisorConfiguration(
            ranks: ranks, heartbeatTimeout: supervise.heartbeatTimeout, stragglerFactor: supervise.stragglerFactor,
            stragglerSteps: supervise.stragglerSteps, helloTimeout: supervise.helloTimeout, slowdownFactor: supervise.slowdownFactor)
        let shell = try SupervisorShell(
            configuration: configuration,
            output: .init(alertLine: { console.alert($0) }, alertsPath: directory + "/alerts.jsonl", onAlert: { hook?.fire($0) }))
        let token = ControlToken.random()
        // The ranks run on this host: a connection from any other is not one of them. A job across
        // hosts: listen on every interface, tell the ranks this host's address on the job's network,
        // and take connections from this host and the job's hosts only.
        var listenHost = controlHost, advertisedHost = controlHost
        var allowed = ControlServer.localAddresses()
        if launcher.spec.isMultiHost {
            listenHost = "0.0.0.0"
            advertisedHost = ControlServer.advertisedAddress(interfaces: launcher.spec.network.interfaces)
            for host in Set(launcher.spec.devices.compactMap(\.host) + launcher.spec.spares.compactMap(\.host)) {
                allowed.formUnion(ControlServer.resolve(host))
            }
        }
        let server = try shell.start(host: listenHost, port: controlPort, token: token, allowedHosts: allowed)
        defer { shell.shutdown() }
        let jobName = launcher.spec.name, steps = totalSteps
        let statusServer = try (supervise.metricsPort == 0 ? nil : StatusServer(host: "0.0.0.0", port: supervise.metricsPort) {
            let elapsed = Date().timeIntervalSince(launchedAt)
            return shell.withSupervisor { StatusSnapshot(supervisor: $0, job: jobName, totalSteps: steps, at: shell.now, elapsed: elapsed, restarts: restarts) }
        })
        defer { statusServer?.shutdown() }
        if let statusServer {
            // On every interface, so a Prometheus elsewhere can scrape it; read-only.
            console.line("status page http://127.0.0.1:\(statusServer.port)/ (any interface), Prometheus metrics http://127.0.0.1:\(statusServer.port)/metrics", isError: false)
        }
        if resumedHere { console.line("\(directory) has checkpoints: this run continues from the newest that verifies", isError: false) }
        console.line("run directory \(directory); supervising \(ranks) rank\(ranks == 1 ? "" : "s") on \(advertisedHost):\(server.port)", isError: false)

        var job = launcher
        job.checkpointDirectory = checkpoints
        // A rank that hangs (silent: no progress for heartbeat_timeout) while the job can recover:
        // end this attempt now rather than wait for the others' step timeout. A chip that slowed
        // down, while a spare can take its place: end it to swap the chip out.
        let swapping = LockedFlag()
        if recoverable {
            job.abortReason = {
                shell.withSupervisor { supervisor in
                    if let hung = supervisor.alerts.first(where: { $0.kind == .silent && $0.rank != nil }) {
                        return "\(hung.message); restarting without it"
                    }
                    // Not once the last step is in: the job is ending anyway.
                    guard swapsSlowChips, (supervisor.lastRecordedStep ?? 0) < steps,
                          let slow = Self.slowedDown(supervisor.alerts).first else { return nil }
                    swapping.set()
                    return "\(slow.message); restarting with a spare in its place"
                }
            }
        }
        // Ctrl-C or SIGTERM: every rank is asked to stop at the next step they all reach, so the
        // step records, the timeline and the weights are written; a rank that cannot (hung) is
        // killed with the rest after the grace.
        job.askToStop = { signal in
            let name = [SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
            console.line("\(name): asking every rank to stop at the next step (a second one ends them at once)", isError: true)
            shell.handle(.requestCommand(ControlCommand(kind: .stop, reason: "medley launch got \(name)"), rank: nil, at: shell.now))
            return Self.stopGraceSeconds
        }
        job.environment[ControlEndpoint.addressVariable] = "\(advertisedHost):\(server.port)"
        job.environment[ControlEndpoint.tokenVariable] = ControlToken.hex(token)
        if job.logPath == nil { job.logPath = directory + "/steps.jsonl" }
        if job.timelinePath == nil { job.timelinePath = directory + "/timeline.json" }
        // Every rank's standard output and error, each in a file of its own (ranks/1/rank.N/).
        job.mpirunArguments += ["--output-filename", URL(fileURLWithPath: directory + "/ranks").standardizedFileURL.path]

        // SIGUSR1 to medley launch: every rank checkpoints after the next step they all reach.
        let previousUSR1 = signal(SIGUSR1, SIG_IGN)
        let checkpointSignal = DispatchSource.makeSignalSource(signal: SIGUSR1, queue: DispatchQueue(label: "medley.sigusr1"))
        checkpointSignal.setEventHandler {
            console.line("SIGUSR1: asking every rank for a checkpoint after the next step", isError: false)
            shell.handle(.requestCommand(ControlCommand(kind: .checkpointNow, reason: "SIGUSR1 to medley launch"), rank: nil, at: shell.now))
        }
        checkpointSignal.resume()
        defer {
            checkpointSignal.cancel()
            signal(SIGUSR1, previousUSR1)
        }

        let ending = LockedFlag()
        job.onOutcome = { outcome in if outcome.interruptedBy != nil || outcome.killedFromOutside != nil { ending.set() } }
        let display = DisplayTimer(console: console, shell: shell, job: launcher.spec.name, totalSteps: totalSteps, startedAt: launchedAt)
        display.start()
        defer { display.stop() }
        let started = Date()
        let cpuAtStart = processCPUSeconds()
        let exit = try job.run(program: program, resolvedPlan: plan) { line, isError in console.line(line, isError: isError) }
        shell.handle(.processExit(rank: nil, status: exit, signal: nil, at: shell.now))
        let cpu = processCPUSeconds() - cpuAtStart
        display.stop()
        console.detach()
        if let hook, !hook.drain(seconds: supervise.alertTimeout + 1) {
            console.alert("alert_command: some alerts were still being handled when the job ended")
        }

        let summary = shell.withSupervisor {
            JobSummary(supervisor: $0, status: exit, seconds: Date().timeIntervalSince(started),
                       firstStepSeconds: display.firstStepSeconds, supervisorCPUSeconds: cpu)
        }
        // The cause: the first fatal alert, and any within `collateralWindow` of it (faults at
        // once). Ranks that end after it are mpirun ending the job, not faults of their own.
        let fatal: [SupervisorAlert.Kind] = [.exited, .fault, .silent, .missingHello]
        var nonFinite: (rank: Int?, message: String)?
        let faults = shell.withSupervisor { supervisor -> [RecoveryPolicy.RankFault] in
            // Chips still slowed down at the end may be swapped for spares the failed ones leave.
            let slowed = Self.slowedDown(supervisor.alerts).map {
                RecoveryPolicy.RankFault(rank: $0.rank!, kind: $0.kind, message: $0.message)
            }
            // Ended here to swap a slowed chip: the ranks' exits are that ending.
            if swapping.isSet { return slowed }
            var candidates = supervisor.alerts.filter { $0.rank != nil && fatal.contains($0.kind) }
            // Silent corruption: the ranks report one verdict of a collective check naming the
            // chips to blame (docs/integrity.md); those are evicted, not the reporters.
            if let v = candidates.firstIndex(where: { !($0.suspects ?? []).isEmpty }) {
                return candidates[v].suspects!.map { RecoveryPolicy.RankFault(rank: $0, kind: .fault, message: candidates[v].message) }
            }
            // A failure every rank reports in the same words (a collective one, e.g. "rank 1
            // computed a non-finite loss") is nobody's own: it restarts the same chips from the
            // checkpoint (a roll-back) instead of evicting them all.
            func text(_ alert: SupervisorAlert) -> Substring {
                alert.message.range(of: "): ").map { alert.message[$0.upperBound...] } ?? Substring(alert.message)
            }
            var reporters: [Substring: Set<Int>] = [:]
            for alert in candidates where alert.kind == .fault { reporters[text(alert), default: []].insert(alert.rank!) }
            candidates.removeAll { $0.kind == .fault && (reporters[text($0)]?.count ?? 0) > 1 }
            let collective = reporters.filter { $0.value.count > 1 }.keys
            if candidates.allSatisfy({ $0.kind == .exited }) && !collective.isEmpty {
                if let text = collective.first(where: { $0.contains("non-finite") || $0.contains("not finite") }) {
                    nonFinite = (Self.rankNamed(inNonFinite: String(text)), String(text))
                }
                return slowed
            }
            // A rank's own words (a fault report, a hang) name the cause; the exits that follow
            // are the job ending. Only without any are exits the cause.
            var worded = candidates.filter { $0.kind != .exited }
            // A rank that went quiet altogether (no heartbeat: frozen or gone) is the cause of
            // the ranks that still beat but make no progress: they wait on it in a collective.
            let frozen = Set(worded.filter { $0.kind == .silent && supervisor.ranks.indices.contains($0.rank!)
                && supervisor.ranks[$0.rank!].silentSince != nil }.map { $0.rank! })
            if !frozen.isEmpty {
                worded.removeAll { $0.kind == .silent && !frozen.contains($0.rank!) }
            }
            if !worded.isEmpty { candidates = worded }
            guard let first = candidates.map(\.at).min() else { return slowed }
            var causes = candidates.filter { $0.at <= first + Self.collateralWindow }
            // A host that went quiet altogether (its link cut, the machine gone) silences all its
            // ranks, each when its own last heartbeat ages past the timeout: up to a heartbeat
            // apart, wider than the collateral window. Every frozen rank on the host of a frozen
            // cause is part of the same fault.
            func host(_ rank: Int) -> String? {
                supervisor.ranks.indices.contains(rank) ? supervisor.ranks[rank].hello?.host : nil
            }
            let quietHosts = Set(causes.compactMap { frozen.contains($0.rank!) ? host($0.rank!) : nil })
            for alert in worded where alert.kind == .silent && frozen.contains(alert.rank!) && !causes.contains(where: { $0.rank == alert.rank }) {
                if let h = host(alert.rank!), quietHosts.contains(h) { causes.append(alert) }
            }
            return causes.map {
                RecoveryPolicy.RankFault(rank: $0.rank!, kind: $0.kind, message: $0.message)
            } + slowed
        }
        return Attempt(exit: exit, summary: summary, nonFinite: nonFinite, faults: faults, interrupted: ending.isSet,
                       trainedSteps: shell.withSupervisor { $0.lastRecordedStep != nil })
    }

    /// The rank in "step N: rank R (…) computed a non-finite loss …" (the workers' words), if named.
    static func rankNamed(inNonFinite message: String) -> Int? {
        guard let range = message.range(of: #"rank [0-9]+ \([^)]*\) computed a non-finite loss"#, options: .regularExpression) else {
            return nil
        }
        return Int(message[range].dropFirst(5).prefix { $0.isNumber })
    }

    /// The `slowdown` alerts of ranks still slowed down (no `recovered` for that rank after it).
    static func slowedDown(_ alerts: [SupervisorAlert]) -> [SupervisorAlert] {
        var open: [Int: SupervisorAlert] = [:]
        for alert in alerts {
            guard let rank = alert.rank else { continue }
            if alert.kind == .slowdown { open[rank] = alert }
            if alert.kind == .recovered { open[rank] = nil }
        }
        return open.values.sorted { $0.at < $1.at }
    }

    /// A fresh directory in shared memory (/dev/shm) for rank 0's snapshots; nil where there is
    /// none to write (the disk checkpoints alone are used then).
    static func makeSnapshotDirectory(job: String) -> String? {
        let root = "/dev/shm"
        guard FileManager.default.isWritableFile(atPath: root) else { return nil }
        removeStaleSnapshots(in: root)
        let safe = String(job.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }.prefix(40))
        let path = "\(root)/medley-\(safe)-\(getpid())-\(UUID().uuidString.prefix(8))"
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
            return path
        } catch {
            return nil
        }
    }

    /// Removes the snapshot directories of launches that are gone (killed with SIGKILL, they
    /// could not remove their own): `medley-<job>-<pid>-<id>` whose pid no longer runs.
    static func removeStaleSnapshots(in root: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where name.hasPrefix("medley-") {
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = pid_t(parts[parts.count - 2]), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? FileManager.default.removeItem(atPath: root + "/" + name) }
        }
    }

    /// Creates the run directory (and its parents); one line when it cannot.
    public static func makeRunDirectory(_ path: String) throws {
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

/// A flag set once, read from any thread.
public final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public func set() { lock.withLock { value = true } }
    public var isSet: Bool { lock.withLock { value } }
}

/// Redraws the live display twice a second and notes when the first step was recorded.
final class DisplayTimer: @unchecked Sendable {
    private let console: LaunchConsole
    private let shell: SupervisorShell
    private let job: String
    private let totalSteps: Int
    private let startedAt: Date
    private var timer: DispatchSourceTimer?
    private let lock = NSLock()
    private var first: Double?
    /// Timer ticks (on the timer's queue only).
    private var ticks = 0

    init(console: LaunchConsole, shell: SupervisorShell, job: String, totalSteps: Int, startedAt: Date) {
        self.console = console
        self.shell = shell
        self.job = job
        self.totalSteps = totalSteps
        self.startedAt = startedAt
    }

    /// Seconds from `medley launch`'s start to the first recorded step (nil if none was).
    var firstStepSeconds: Double? { lock.withLock { first } }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "medley.display"))
        timer.schedule(deadline: .now() + 0.1, repeating: 0.1)
        timer.setEventHandler { [weak self] in
            guard let self else { return }
            self.ticks += 1
            self.noteFirstStep()
            if self.ticks % 5 == 0 { self.draw() }
        }
        timer.resume()
        self.timer = timer
    }

    /// Stops the timer and draws the last frame (once: a second call does nothing).
    func stop() {
        guard timer != nil else { return }
        timer?.cancel()
        timer = nil
        noteFirstStep()
        draw()
    }

    private func noteFirstStep() {
        guard lock.withLock({ first == nil }), shell.withSupervisor({ !$0.steps.isEmpty }) else { return }
        // The record's own time is when its last report arrived (on the shell's clock).
        let recordedAt = shell.withSupervisor { $0.steps.first?.at } ?? shell.now
        let shellAge = shell.now
        let seconds = Date().timeIntervalSince(startedAt) - (shellAge - recordedAt)
        lock.withLock { first = seconds }
    }

    private func draw() {
        guard console.mode == .live else { return }
        let elapsed = Date().timeIntervalSince(startedAt)
        let lines = shell.withSupervisor {
            LaunchDisplay.lines(supervisor: $0, job: job, totalSteps: totalSteps, elapsed: elapsed, now: shell.now,
                                width: LaunchConsole.terminalWidth)
        }
        console.draw(lines)
    }
}
