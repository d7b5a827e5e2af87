import Foundation
import MedleyCore
import MedleyTrain

/// `medley bench recovery`: faults injected into a small job under the real `medley launch`
/// (a child process of the built `medley`, in a temporary run directory), timed from what the
/// run leaves: the step records (`steps.jsonl`, each stamped `unix_millis` by rank 0 when the
/// step ended), the alerts (`alerts.jsonl`) and the launch's log (`supervisor.log`), the last two
/// stamped with the wall-clock time this process first saw each line (polled every 10 ms).
///
/// Times, per fault (all wall clock, seconds from the fault):
/// - **fault**: a SIGKILL from outside: when this process sent it; a sim fault at step N: when
///   step N began, i.e. when rank 0 recorded step N − 1 (`unix_millis`; the job has no eval and
///   the fault step follows no checkpoint step, so nothing runs between the two).
/// - **detection**: the first alert that is not a recovery decision (`exited`, `fault`, `silent`,
///   `straggler`, `missing_hello` or any kind added later).
/// - **recovery**: the first step the resumed attempt completes (whatever its number: the step
///   after the checkpoint it resumed from). The recomputed steps that follow are lost work, not
///   recovery time; **to new progress** is fault → the first step beyond the last one done
///   before the fault (recovery + recomputation).
/// - **lost work**: steps recomputed (the last step done before the fault − the checkpoint
///   step resumed from) and their step time.
/// - **breakdown** of recovery: detection; teardown (detection → the launcher's first recovery
///   decision, written once the failed attempt's mpirun has exited); backoff (the `restart`
///   decision's delay); startup (restart decision + backoff → the first resumed step begins:
///   mpirun start, MPI init, adapters, the checkpoint found, verified and loaded); first step
///   (that step's own time).
public enum RecoveryBenchmark {
    // MARK: Fault kinds

    /// One kind of fault and how it is injected. Add a row to ``kinds`` for a new kind.
    public struct FaultKind: Sendable {
        public enum Injection: Sendable, Equatable {
            /// A signal to a rank's process from outside (its pid found under `medley launch` in /proc).
            case signal(Int32)
            /// The sim adapter's `fault=VALUE@step=N` option on the chip.
            case sim(String)
        }

        public var name: String
        public var injection: Injection
        /// Whether a job is expected to go on after it by a restart (the soak draws from these).
        public var restarts: Bool
        /// What the fault stands for.
        public var about: String

        public init(name: String, injection: Injection, restarts: Bool, about: String) {
            self.name = name
            self.injection = injection
            self.restarts = restarts
            self.about = about
        }
    }

    /// Every kind the benchmark knows, in its table's order.
    public static let kinds: [FaultKind] = [
        FaultKind(name: "sigkill", injection: .signal(SIGKILL), restarts: true, about: "SIGKILL of the rank's process from outside (a node lost)"),
        FaultKind(name: "sigstop", injection: .signal(SIGSTOP), restarts: true, about: "SIGSTOP of the rank's process from outside (a node that freezes: no heartbeats)"),
        FaultKind(name: "crash", injection: .sim("crash"), restarts: true, about: "the sim process dies (_exit 77) at the step"),
        FaultKind(name: "error", injection: .sim("error"), restarts: true, about: "the sim reports device lost from the step on"),
        FaultKind(name: "hang", injection: .sim("hang"), restarts: true, about: "the sim never returns from step_begin (heartbeats go on)"),
        FaultKind(name: "nan", injection: .sim("nan"), restarts: true, about: "the sim's next op writes NaN (the option stays in the spec: it comes back after the roll-back, and the chip is evicted then)"),
        FaultKind(name: "slow", injection: .sim("slow:4"), restarts: true, about: "the sim becomes 4x slower (a slowdown: swapped for a spare)"),
        FaultKind(name: "corrupt", injection: .sim("corrupt"), restarts: true, about: "the sim flips one exponent bit of every op's first output from the step on (a defective chip: silent corruption)"),
        FaultKind(name: "flip", injection: .sim("flip"), restarts: false, about: "the sim flips one exponent bit of one output, once (a one-shot upset: averaged into every replica, not detectable after the fact)"),
    ]

    /// The kind called `name`; one line naming the known ones when there is none.
    public static func kind(named name: String) throws -> FaultKind {
        guard let kind = kinds.first(where: { $0.name == name }) else {
            throw MedleyError(.invalidArgument, "unknown fault kind '\(name)'; known: \(kinds.map(\.name).joined(separator: ", "))")
        }
        return kind
    }

    /// A comma-separated list of kinds ("all": every kind).
    public static func kinds(list: String, flag: String) throws -> [FaultKind] {
        if list == "all" { return kinds }
        let names = list.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, !names.contains("") else {
            throw MedleyError(.invalidArgument, "\(flag): give fault kinds joined by commas (\(kinds.map(\.name).joined(separator: ", "))) or 'all', got '\(list)'")
        }
        return try names.map { name in
            do { return try kind(named: name) } catch let error as MedleyError { throw MedleyError(.invalidArgument, "\(flag): \(error.message)") }
        }
    }

    // MARK: Settings

    /// The job and the launch every run shares.
    public struct Settings: Sendable {
        /// The `medley` executable that is launched.
        public var program: String
        /// Steps of each per-kind job, the step its fault comes at, and the checkpoint interval.
        public var steps = 60
        public var faultStep = 25
        public var checkpointEvery = 10
        /// `supervise.heartbeat_timeout` and `recovery.backoff` of the job.
        public var heartbeatTimeout = 2.0
        public var backoff = 1.0
        /// `recovery.max_restarts` of the per-kind jobs.
        public var maxRestarts = 2
        /// The sim chips' speed (their step time sets the job's).
        public var simSpeed = 0.03
        /// Model of the job: `{layers, dim, heads, seq, batch}`.
        public var model = "{layers: 1, dim: 32, heads: 2, seq: 16, batch: 8}"
        /// Wall-clock limit of one launch, seconds (mpirun's --timeout, and this process's wait).
        public var timeoutSeconds = 240.0
        /// Keep the run directories (under this folder) instead of deleting them.
        public var keepRuns: String?

        public init(program: String) { self.program = program }

        /// One line naming the first bad setting.
        public func validate() throws {
            func fail(_ text: String) -> MedleyError { MedleyError(.invalidArgument, text) }
            guard (4...100_000).contains(steps) else { throw fail("--steps must be 4 to 100000, got \(steps)") }
            guard (1..<steps).contains(checkpointEvery) else { throw fail("--checkpoint-every must be 1 to --steps − 1 (\(steps - 1)), got \(checkpointEvery)") }
            guard faultStep > checkpointEvery && faultStep < steps else {
                throw fail("--fault-step must be after the first checkpoint (> --checkpoint-every \(checkpointEvery)) and before the last step (< --steps \(steps)), got \(faultStep)")
            }
            guard (faultStep - 1) % checkpointEvery != 0 else {
                throw fail("--fault-step \(faultStep) follows a checkpoint step; pick one that does not, so the step before it is the fault's start")
            }
            guard heartbeatTimeout >= 0.5 && heartbeatTimeout <= 600 else { throw fail("--heartbeat-timeout must be 0.5 to 600 s, got \(heartbeatTimeout)") }
            guard backoff >= 0 && backoff <= 30 else { throw fail("--backoff must be 0 to 30 s, got \(backoff)") }
            guard (1...100).contains(maxRestarts) else { throw fail("--max-restarts must be 1 to 100, got \(maxRestarts)") }
            guard simSpeed >= 0.001 && simSpeed <= 1 else { throw fail("--sim-speed must be 0.001 to 1, got \(simSpeed)") }
            guard timeoutSeconds >= 10 && timeoutSeconds <= 86_400 else { throw fail("--timeout must be 10 to 86400 s, got \(timeoutSeconds)") }
        }
    }

    // MARK: Results

    /// Where one fault's recovery time went, seconds.
    public struct Breakdown: Codable, Sendable {
        public var detection: Double?
        /// Detection → the first recovery decision (the failed attempt's mpirun has exited).
        public var teardown: Double?
        /// The restart decision's delay (`recovery.backoff`, doubling per restart).
        public var backoff: Double?
        /// Restart decision + backoff → the first resumed step begins (mpirun, MPI init, adapters,
        /// the checkpoint found, verified and loaded, the ranks' hellos).
        public var startup: Double?
        /// The first resumed step's own time (rank 0's `step_ms`).
        public var firstStep: Double?
        /// Restart decision + backoff → when this process saw rank 0's "resuming from …" line (the
        /// checkpoint loaded), as forwarded by mpirun and the launcher (tens of ms late).
        public var resumeLineSeen: Double?
    }

    /// One fault and what followed it.
    public struct FaultFigures: Codable, Sendable {
        public var kind: String
        public var rank: Int?
        /// The step the fault came at (a SIGKILL: the step in flight).
        public var step: Int
        /// Unix milliseconds of the fault.
        public var faultUnixMillis: Int64
        /// The first alert after it (kind and message), if any.
        public var detectedBy: String?
        public var detectionMessage: String?
        public var detectionSeconds: Double?
        /// The launcher's decisions after it (`evicted`, `replaced`, `restart`, `gave_up`, …).
        public var decisions: [String]
        /// Fault → the first step of the resumed attempt.
        public var recoverySeconds: Double?
        /// Fault → the first step beyond the last one done before the fault.
        public var newProgressSeconds: Double?
        /// The last step done before the fault, and the checkpoint step the restart resumed from.
        public var lastStepBefore: Int?
        public var resumedFrom: Int?
        public var stepsRecomputed: Int?
        /// Step time of the recomputed steps (their second run), seconds.
        public var recomputeSeconds: Double?
        public var breakdown: Breakdown
    }

    /// One per-kind run.
    public struct KindResult: Codable, Sendable {
        public var kind: String
        public var about: String
        public var injection: String
        /// Whether any alert followed the fault, and whether the job went on by a restart.
        public var detected: Bool
        public var restarted: Bool
        public var fault: FaultFigures?
        /// Whether the job completed every step, and how it exited.
        public var finished: Bool
        public var stepsDone: Int
        public var exitStatus: Int32
        public var restarts: Int
        public var wallSeconds: Double
        /// Σ step time of the steps kept (each step once) ÷ wall time of the launch.
        public var usefulStepSeconds: Double
        public var effectiveTrainingTime: Double
        /// What happened, in words.
        public var outcome: String
        /// Loss at the last step (corruption shows as a drift).
        public var finalLoss: Double?
        /// Median step time of the steps kept, ms.
        public var medianStepMs: Double
        /// Seconds the newest checkpoint took to find, verify and load in the benchmark's process
        /// after the run (what a restart's startup spends on it, about).
        public var checkpointLoadSeconds: Double?
        public var runDirectory: String?
    }

    /// The per-kind table, with the job it ran and the fault-free baseline.
    public struct KindsReport: Codable, Sendable {
        public var job: String
        public var heartbeatTimeoutSeconds: Double
        public var backoffSeconds: Double
        public var steps: Int
        public var faultStep: Int
        public var checkpointEvery: Int
        /// The same job without a fault.
        public var baseline: KindResult
        public var kinds: [KindResult]
    }

    // MARK: Per-kind runs

    /// The job's YAML: two sim chips of one speed (rank 0 on the reference adapter without
    /// `simRank0`), rank 1 with `fault` (if any), sim spares after.
    static func jobYAML(settings: Settings, steps: Int, checkpointEvery: Int, rank1Fault: String?, spares: [String?],
                        maxRestarts: Int, simRank0: Bool = true) -> String {
        func sim(_ name: String, _ vendor: String, _ fault: String?) -> String {
            "  - adapter: sim\n    options: {vendor: \(vendor), name: \(name), speed: \(settings.simSpeed)\(fault.map { ", fault: '\($0)'" } ?? "")}\n"
        }
        var yaml = """
            name: bench-recovery
            model: \(settings.model)
            train: {steps: \(steps), eval_every: 0, checkpoint_every: \(checkpointEvery), rebalance_every: 0}
            devices:

            """
        yaml += simRank0 ? sim("steady", "Acme", nil) : "  - adapter: reference\n"
        yaml += sim("victim", "Acme", rank1Fault)
        if !spares.isEmpty {
            yaml += "spares:\n"
            for (index, fault) in spares.enumerated() { yaml += sim("spare-\(index + 1)", "Borealis", fault) }
        }
        yaml += "recovery: {max_restarts: \(maxRestarts), min_chips: 1, backoff: \(settings.backoff)}\n"
        yaml += "supervise: {heartbeat_timeout: \(settings.heartbeatTimeout)}\n"
        return yaml
    }

    /// Runs the baseline and every kind in `kinds`; `progress` gets a line per run.
    public static func measureKinds(_ kinds: [FaultKind], settings: Settings, progress: (String) -> Void) throws -> KindsReport {
        try settings.validate()
        guard !kinds.isEmpty else { throw MedleyError(.invalidArgument, "--kinds: give at least one fault kind") }
        let baseline = try runKind(nil, settings: settings)
        progress(String(format: "baseline: %d steps in %.2f s, effective %.3f", baseline.stepsDone, baseline.wallSeconds, baseline.effectiveTrainingTime))
        guard baseline.finished else {
            throw MedleyError(.io, "the fault-free job did not finish (exit \(baseline.exitStatus)): \(baseline.outcome)")
        }
        var results: [KindResult] = []
        for kind in kinds {
            let result = try runKind(kind, settings: settings)
            progress(line(result))
            results.append(result)
        }
        return KindsReport(
            job: jobYAML(settings: settings, steps: settings.steps, checkpointEvery: settings.checkpointEvery, rank1Fault: "KIND@step=\(settings.faultStep)",
                         spares: [nil], maxRestarts: settings.maxRestarts),
            heartbeatTimeoutSeconds: settings.heartbeatTimeout, backoffSeconds: settings.backoff, steps: settings.steps,
            faultStep: settings.faultStep, checkpointEvery: settings.checkpointEvery, baseline: baseline, kinds: results)
    }

    /// One row as a line on screen.
    public static func line(_ r: KindResult) -> String {
        func s(_ value: Double?) -> String { value.map { String(format: "%.2f s", $0) } ?? "-" }
        let f = r.fault
        return "\(r.kind): detected \(r.detected ? "by \(f?.detectedBy ?? "?") in \(s(f?.detectionSeconds))" : "no"), "
            + "recovery \(s(f?.recoverySeconds)), new progress \(s(f?.newProgressSeconds)), recomputed \(f?.stepsRecomputed.map(String.init) ?? "-") steps, "
            + "\(r.finished ? "finished" : "not finished") (\(r.stepsDone) steps, exit \(r.exitStatus), \(r.restarts) restart\(r.restarts == 1 ? "" : "s")), "
            + String(format: "effective %.3f", r.effectiveTrainingTime)
    }

    /// One job: `kind` (nil: none) on rank 1 at `settings.faultStep`.
    static func runKind(_ kind: FaultKind?, settings: Settings) throws -> KindResult {
        var rank1Fault: String?
        if case .sim(let value)? = kind?.injection { rank1Fault = "\(value)@step=\(settings.faultStep)" }
        let yaml = jobYAML(settings: settings, steps: settings.steps, checkpointEvery: settings.checkpointEvery, rank1Fault: rank1Fault,
                           spares: kind == nil ? [] : [nil], maxRestarts: settings.maxRestarts)
        let run = try LaunchRun(yaml: yaml, settings: settings, label: kind?.name ?? "baseline")
        defer { run.cleanUp() }
        var injected: (at: Double, step: Int, rank: Int)?
        let observed = try run.run(deadline: settings.timeoutSeconds) { run in
            // A signal: when step faultStep − 1 is recorded, to rank 1's process (found as soon as
            // the job trains, so the signal goes at once).
            guard injected == nil, case .signal(let signal)? = kind?.injection, !run.records.isEmpty, let pid = run.rankPid(1),
                  run.records.contains(where: { $0.step >= settings.faultStep - 1 })
            else { return }
            kill(pid, signal)
            injected = (Date().timeIntervalSince1970, settings.faultStep, 1)
        }
        var fault: FaultFigures?
        if let kind {
            let time: Double? = injected?.at ?? observed.records.first(where: { $0.step == settings.faultStep - 1 }).map { Double($0.unixMillis) / 1000 }
            if let time {
                fault = analyze(kind: kind.name, rank: 1, step: settings.faultStep, at: time, until: nil, observed)
            }
        }
        // How long the newest checkpoint takes to find, verify and load in this process (a share of a restart's startup).
        let loadStarted = Date()
        let checkpointLoad = (try? CheckpointStore.resolve(run.runDirectory + "/checkpoints")) != nil ? Date().timeIntervalSince(loadStarted) : nil
        let times = observed.kept.map(\.stepMs).sorted()
        let finished = observed.exitStatus == 0 && observed.kept.count == settings.steps
        let restarts = observed.alerts.filter { $0.kind == "restart" }.count
        var outcome: String
        if kind == nil {
            outcome = finished ? "finished" : "did not finish"
        } else if fault?.detectedBy == nil {
            outcome = finished ? "not detected; the job finished as if nothing happened" : "not detected; the job did not finish"
        } else if restarts == 0 {
            outcome = "detected (\(fault?.detectedBy ?? "?")), no restart; the job \(finished ? "finished" : "did not finish")"
        } else {
            let gaveUp = observed.alerts.contains { $0.kind == "gave_up" }
            outcome = "detected (\(fault?.detectedBy ?? "?")), \(restarts) restart\(restarts == 1 ? "" : "s")"
                + (fault?.decisions.contains("evicted") == true ? " after an eviction" : " on the same chips (roll-back)")
                + (finished ? "; finished every step" : gaveUp ? "; gave up (max_restarts)" : "; did not finish")
        }
        return KindResult(
            kind: kind?.name ?? "none", about: kind?.about ?? "no fault", injection: kind.map { describe($0.injection, step: settings.faultStep) } ?? "none",
            detected: fault?.detectedBy != nil, restarted: restarts > 0, fault: fault, finished: finished, stepsDone: observed.kept.count,
            exitStatus: observed.exitStatus, restarts: restarts, wallSeconds: observed.wallSeconds, usefulStepSeconds: observed.usefulSeconds,
            effectiveTrainingTime: observed.usefulSeconds / max(observed.wallSeconds, 1e-9), outcome: outcome,
            finalLoss: observed.kept.last?.loss, medianStepMs: times.isEmpty ? 0 : times[times.count / 2],
            checkpointLoadSeconds: checkpointLoad, runDirectory: settings.keepRuns == nil ? nil : run.directory)
    }

    static func describe(_ injection: FaultKind.Injection, step: Int) -> String {
        switch injection {
        case .signal(let s): return "signal \(s) to the rank's pid when step \(step - 1) is recorded"
        case .sim(let value): return "fault=\(value)@step=\(step)"
        }
    }

    // MARK: Analysis

    /// What one fault at `at` (Unix seconds) on `rank` led to, from the observations up to `until`
    /// (the next fault) or the end.
    static func analyze(kind: String, rank: Int?, step: Int, at: Double, until: Double?, _ o: Observed) -> FaultFigures {
        var signalled = false
        if case .signal? = (try? Self.kind(named: kind))?.injection { signalled = true }
        let end = until ?? .infinity
        let window = { (t: Double) in t >= at - 0.05 && t < end }
        let detection = o.alerts.first { !Self.decisionKinds.contains($0.kind) && !Self.benignKinds.contains($0.kind) && window($0.seen) }
        let detectedAt = detection?.seen
        let decisions = o.alerts.filter { Self.decisionKinds.contains($0.kind) && $0.unixSeconds.map(window) == true && $0.unixSeconds! >= (detectedAt ?? at) - 0.05 }
        let restart = decisions.first { $0.kind == "restart" }
        let restartAt = restart?.unixSeconds
        let backoff = restart.flatMap { Self.backoff(in: $0.message) }
        // The last step done before the fault: the last record written before it was detected.
        let before = o.records.last { Double($0.unixMillis) / 1000 <= (detectedAt ?? at) }
        let resumeLine = restartAt.flatMap { r in o.lines.first { $0.seen >= r && $0.seen < end && $0.text.contains("resuming from ") } }
        let first = restartAt.flatMap { r in o.records.first { Double($0.unixMillis) / 1000 > r && Double($0.unixMillis) / 1000 < end } }
        let lastBefore = before?.step
        let newProgress = restartAt.flatMap { r in
            o.records.first { Double($0.unixMillis) / 1000 > r && Double($0.unixMillis) / 1000 < end && $0.step > (lastBefore ?? 0) }
        }
        let resumedFrom = first.map { $0.step - 1 }
        var recomputed: Int?, recomputeSeconds: Double?
        if let lastBefore, let resumedFrom, let restartAt {
            recomputed = max(0, lastBefore - resumedFrom)
            recomputeSeconds = o.records.filter { Double($0.unixMillis) / 1000 > restartAt && Double($0.unixMillis) / 1000 < end && $0.step <= lastBefore }
                .map { $0.stepMs / 1000 }.reduce(0, +)
        }
        let firstAt = first.map { Double($0.unixMillis) / 1000 }
        // A signal's step is the one in flight when it came.
        let faultStep = signalled ? (o.records.last { $0.seconds <= at }?.step ?? 0) + 1 : step
        var breakdown = Breakdown()
        breakdown.detection = detectedAt.map { $0 - at }
        if let detectedAt, let decided = decisions.first?.unixSeconds { breakdown.teardown = decided - detectedAt }
        breakdown.backoff = backoff
        if let restartAt, let first, let firstAt {
            // The first step's own time is rank 0's; everything before its start is startup.
            breakdown.firstStep = first.stepMs / 1000
            breakdown.startup = firstAt - first.stepMs / 1000 - restartAt - (backoff ?? 0)
        }
        breakdown.resumeLineSeen = resumeLine.flatMap { line in restartAt.map { line.seen - $0 - (backoff ?? 0) } }
        return FaultFigures(
            kind: kind, rank: rank, step: faultStep, faultUnixMillis: Int64((at * 1000).rounded()), detectedBy: detection?.kind,
            detectionMessage: detection?.message, detectionSeconds: detectedAt.map { $0 - at }, decisions: decisions.map(\.kind),
            recoverySeconds: firstAt.map { $0 - at }, newProgressSeconds: newProgress.map { Double($0.unixMillis) / 1000 - at },
            lastStepBefore: lastBefore, resumedFrom: resumedFrom, stepsRecomputed: recomputed, recomputeSeconds: recomputeSeconds,
            breakdown: breakdown)
    }

    /// Alert kinds that are the launcher's recovery decisions, and those that are not faults.
    static let decisionKinds: Set<String> = ["evicted", "replaced", "shrunk", "restart", "gave_up", "finished"]
    static let benignKinds: Set<String> = ["recovered", "impostor"]

    /// The delay of a `restart` decision: "recovery: restart N on K chips in X s".
    static func backoff(in message: String) -> Double? {
        guard let range = message.range(of: " in ", options: .backwards) else { return nil }
        return Double(message[range.upperBound...].split(separator: " ").first ?? "")
    }
}
