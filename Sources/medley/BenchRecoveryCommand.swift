import ArgumentParser
import Foundation
import MedleyBench
import MedleyCore
import MedleyTrain

/// `medley bench recovery`: faults injected into a small job under `medley launch`, timed.
struct BenchRecovery: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery",
        abstract: "Inject each fault kind into a small job under medley launch: detection, recovery, lost work, effective training time; or a soak.",
        discussion: """
            Each run is `medley launch` of a job on two sim chips of one speed (--sim-speed) with sim spares in a \
            temporary run directory. Per kind (--kinds), the fault comes at --fault-step on rank 1: a \
            signal to its process from outside (sigkill) or the sim's fault option (crash, error, hang, \
            nan, slow, corrupt). Reported per kind: detection (fault → first alert), recovery (fault → \
            the first step the resumed attempt completes), new progress (fault → first step beyond the \
            last one done before it), steps recomputed, whether the job finished, effective training \
            time (useful step time ÷ wall time), and where the recovery time went (detection, mpirun \
            teardown, backoff, startup, first step). With --minutes N: a soak instead, one job for N \
            minutes with faults of --soak-kinds at random steps (exponential gaps of mean --fault-every \
            seconds, from --seed), stopped by SIGTERM; effective training time, faults, restarts, the \
            detection and recovery distributions and what one fault per 3 hours implies.
            """)

    @Option(help: "Fault kinds, comma-separated, or 'all' (sigkill, sigstop, crash, error, hang, nan, slow, corrupt).")
    var kinds = "all"

    @Option(parsing: .unconditional, help: "Steps of each per-kind job.")
    var steps = 60

    @Option(parsing: .unconditional, help: "The step the fault comes at (per-kind jobs).")
    var faultStep = 25

    @Option(parsing: .unconditional, help: "train.checkpoint_every of the job (default 10; a soak: 20).")
    var checkpointEvery: Int?

    @Option(parsing: .unconditional, help: "supervise.heartbeat_timeout of the job, seconds.")
    var heartbeatTimeout = 2.0

    @Option(parsing: .unconditional, help: "recovery.backoff of the job, seconds (doubling per restart, at most 30).")
    var backoff = 1.0

    @Option(parsing: .unconditional, help: "recovery.max_restarts of the per-kind jobs.")
    var maxRestarts = 2

    @Option(parsing: .unconditional, help: "Speed of the sim chips (sets the step time).")
    var simSpeed = 0.03

    @Option(parsing: .unconditional, help: "Wall-clock limit of one per-kind launch, seconds.")
    var timeout = 240.0

    @Option(parsing: .unconditional, help: "Soak: run one job this many minutes with repeated random faults.")
    var minutes: Double?

    @Option(parsing: .unconditional, help: "Soak: mean seconds between faults.")
    var faultEvery = 60.0

    @Option(help: "Soak: seed of the fault plan.")
    var seed: UInt64 = 1

    @Option(help: "Soak: the kinds drawn from, comma-separated.")
    var soakKinds = "sigkill,sigstop,crash,error,hang"

    @Option(help: "Keep the run directories under this folder (default: temporary, removed).")
    var keepRuns: String?

    @Option(help: "Write the figures as JSON to this file (atomically).")
    var json: String?

    func run() throws {
        if let json { try OutputPaths.checkWritable(json, flag: "--json") }
        if let keepRuns {
            do {
                try FileManager.default.createDirectory(atPath: keepRuns, withIntermediateDirectories: true)
            } catch {
                throw MedleyError(.io, "--keep-runs \(keepRuns): cannot create it (\(error.localizedDescription))")
            }
        }
        var settings = RecoveryBenchmark.Settings(program: ChildProcess.currentExecutable)
        settings.steps = steps
        settings.faultStep = faultStep
        settings.checkpointEvery = checkpointEvery ?? 10
        settings.heartbeatTimeout = heartbeatTimeout
        settings.backoff = backoff
        settings.maxRestarts = maxRestarts
        settings.simSpeed = simSpeed
        settings.timeoutSeconds = timeout
        settings.keepRuns = keepRuns.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        try settings.validate()
        // Whatever the benchmark started goes when it is interrupted.
        let sources = [SIGINT, SIGTERM, SIGHUP].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                RecoveryBenchmark.killAllLaunches()
                FileHandle.standardError.write(Data("medley bench recovery: interrupted; every launch it started was ended\n".utf8))
                Foundation.exit(130)
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        if let minutes {
            let soak = RecoveryBenchmark.SoakSettings(
                minutes: minutes, faultEvery: faultEvery, seed: seed,
                kinds: try RecoveryBenchmark.kinds(list: soakKinds, flag: "--soak-kinds"), checkpointEvery: checkpointEvery ?? 20)
            try soak.validate()
            let report = try RecoveryBenchmark.soak(soak, settings: settings) { print("… " + $0) }
            Self.show(report)
            if let json { try JSONReport.write(report, to: json) }
        } else {
            let report = try RecoveryBenchmark.measureKinds(try RecoveryBenchmark.kinds(list: kinds, flag: "--kinds"), settings: settings) {
                print("… " + $0)
            }
            Self.show(report)
            if let json { try JSONReport.write(report, to: json) }
        }
    }

    static func seconds(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "-" }

    static func show(_ report: RecoveryBenchmark.KindsReport) {
        Swift.print(String(format: "job: %d steps, fault at step %d, checkpoint every %d, heartbeat_timeout %.1f s, backoff %.1f s; baseline %.2f s wall, effective %.3f, step %.1f ms",
                           report.steps, report.faultStep, report.checkpointEvery, report.heartbeatTimeoutSeconds, report.backoffSeconds,
                           report.baseline.wallSeconds, report.baseline.effectiveTrainingTime, report.baseline.medianStepMs))
        Swift.print("| kind | detected by | detection s | recovery s | new progress s | recomputed | finished | restarts | effective | teardown s | backoff s | startup s | first step s | outcome |")
        Swift.print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in report.kinds {
            let f = r.fault, b = f?.breakdown
            Swift.print("| \(r.kind) | \(f?.detectedBy ?? "not detected") | \(seconds(f?.detectionSeconds)) | \(seconds(f?.recoverySeconds)) | \(seconds(f?.newProgressSeconds)) | "
                        + "\(f?.stepsRecomputed.map(String.init) ?? "-") | \(r.finished ? "yes" : "no") (\(r.stepsDone)/\(report.steps)) | \(r.restarts) | "
                        + String(format: "%.3f", r.effectiveTrainingTime)
                        + " | \(seconds(b?.teardown)) | \(seconds(b?.backoff)) | \(seconds(b?.startup)) | \(seconds(b?.firstStep)) | \(r.outcome) |")
        }
    }

    static func show(_ r: RecoveryBenchmark.SoakReport) {
        func dist(_ d: RecoveryBenchmark.Distribution) -> String {
            "median \(seconds(d.median)), p90 \(seconds(d.p90)), min \(seconds(d.min)), max \(seconds(d.max)) (n \(d.count))"
        }
        Swift.print(String(format: "soak: %.1f min, a fault every %.0f s on average (seed ", r.minutes, r.faultEverySeconds)
                    + "\(r.seed)), kinds " + r.kinds.joined(separator: ","))
        Swift.print(String(format: "  wall %.1f s, useful step time %.1f s: effective training time %.4f", r.wallSeconds, r.usefulStepSeconds, r.effectiveTrainingTime))
        Swift.print("  faults \(r.faultsInjected) injected, \(r.faultsDetected) detected; \(r.restarts) restarts, \(r.evictions) evictions\(r.gaveUp ? ", gave up" : ""); \(r.stepsDone) steps; exit \(r.exitStatus)")
        Swift.print("  detection s: " + dist(r.detectionSeconds))
        Swift.print("  recovery s: " + dist(r.recoverySeconds))
        Swift.print("  new progress s: " + dist(r.newProgressSeconds))
        Swift.print("  steps recomputed: " + dist(r.stepsRecomputed))
        if let i = r.predictedAtSoakRate {
            Swift.print(String(format: "  model at the soak's own rate (a fault every %.0f s): %.4f (measured %.4f)", i.faultEverySeconds, i.effectiveTrainingTime, r.effectiveTrainingTime))
        }
        if let i = r.atOneFaultPer3Hours {
            Swift.print(String(format: "  at one fault per 3 hours: effective training time %.5f (faults alone %.5f; with every restart at the 30 s backoff cap %.5f): ",
                               i.effectiveTrainingTime, i.faultShareKept, i.effectiveTrainingTimeAtBackoffCap) + i.how)
        }
    }
}
