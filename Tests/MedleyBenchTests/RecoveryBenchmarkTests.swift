import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

@testable import MedleyBench

@Suite("bench recovery: faults under medley launch, timed", .serialized)
struct RecoveryBenchmarkTests {
    /// A tiny job: 20 steps, a checkpoint every 5, the fault at step 13, no backoff.
    static func settings() -> RecoveryBenchmark.Settings {
        var settings = RecoveryBenchmark.Settings(program: TestSupport.medleyExecutable)
        settings.steps = 20
        settings.faultStep = 13
        settings.checkpointEvery = 5
        settings.backoff = 0
        settings.simSpeed = 0.2
        settings.model = "{layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}"
        settings.timeoutSeconds = 120
        return settings
    }

    @Test("a sim crash mid-run: detected, the spare takes over, the job finishes every step, and the figures add up")
    func crash() throws {
        var lines: [String] = []
        let report = try RecoveryBenchmark.measureKinds([try RecoveryBenchmark.kind(named: "crash")], settings: Self.settings()) { lines.append($0) }
        #expect(lines.count == 2, "\(lines)")
        #expect(report.baseline.finished && report.baseline.restarts == 0 && report.baseline.fault == nil)
        let row = try #require(report.kinds.first)
        #expect(row.kind == "crash" && row.injection == "fault=crash@step=13")
        #expect(row.finished, "\(row.outcome)")
        #expect(row.stepsDone == 20 && row.exitStatus == 0 && row.restarts == 1 && row.restarted && row.detected)
        let fault = try #require(row.fault)
        #expect(fault.detectedBy == "exited", "\(fault.detectionMessage ?? "")")
        #expect(fault.decisions.starts(with: ["evicted", "replaced", "restart"]), "\(fault.decisions)")
        let detection = try #require(fault.detectionSeconds), recovery = try #require(fault.recoverySeconds)
        let progress = try #require(fault.newProgressSeconds)
        #expect(detection >= 0 && recovery > detection && progress >= recovery)
        // Fault at step 13: steps 1…12 were done; the newest checkpoint is step 10, so 11 and 12 are recomputed.
        #expect(fault.lastStepBefore == 12 && fault.resumedFrom == 10 && fault.stepsRecomputed == 2, "\(fault)")
        #expect((fault.recomputeSeconds ?? -1) >= 0)
        let b = fault.breakdown
        #expect(b.backoff == 0 && (b.teardown ?? -1) >= 0 && (b.startup ?? -1) >= 0 && (b.firstStep ?? -1) > 0, "\(b)")
        // The parts add up to the recovery time (within the 10 ms the alerts are polled at).
        let sum = detection + (b.teardown ?? 0) + (b.backoff ?? 0) + (b.startup ?? 0) + (b.firstStep ?? 0)
        #expect(abs(sum - recovery) < 0.1, "\(b) vs \(recovery)")
        for r in [report.baseline, row] {
            #expect(r.effectiveTrainingTime > 0 && r.effectiveTrainingTime <= 1 && r.usefulStepSeconds <= r.wallSeconds)
        }
        #expect(row.wallSeconds > report.baseline.wallSeconds)
        let json = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(json.contains("\"recoverySeconds\"") && json.contains("\"effectiveTrainingTime\"") && json.contains("\"stepsRecomputed\""))
        // Nothing of the launches is left running.
        let left = ChildProcess.descendants(of: getpid()).filter {
            String(decoding: FileManager.default.contents(atPath: "/proc/\($0)/cmdline") ?? Data(), as: UTF8.self).contains("medley-bench-recovery")
        }
        #expect(left.isEmpty, "left running: \(left)")
    }

    @Test("the analysis: recovery ends at the resumed attempt's first step, new progress at the first step past the fault, recomputed steps between")
    func analysis() {
        let t = 1_000_000.0
        func record(_ step: Int, _ at: Double) -> RecoveryBenchmark.ObservedRecord {
            .init(step: step, unixMillis: Int64(((t + at) * 1000).rounded()), stepMs: 100, loss: 1)
        }
        // Steps 1…7 a second apart, the fault at 7.5 (a sigkill during step 8); checkpoint 5; restart decided at 9.5 after a 1 s backoff.
        var records = (1...7).map { record($0, Double($0)) }
        records += [record(6, 12), record(7, 12.1), record(8, 12.2), record(9, 12.3)]
        let alerts = [
            RecoveryBenchmark.ObservedAlert(kind: "exited", message: "rank 1 …", rank: 1, unixSeconds: nil, seen: t + 7.6),
            RecoveryBenchmark.ObservedAlert(kind: "exited", message: "rank 0 …", rank: 0, unixSeconds: nil, seen: t + 8.6),
            RecoveryBenchmark.ObservedAlert(kind: "evicted", message: "recovery: …", rank: nil, unixSeconds: t + 9.5, seen: t + 9.5),
            RecoveryBenchmark.ObservedAlert(kind: "restart", message: "recovery: restart 1 on 2 chips in 1.0 s", rank: nil, unixSeconds: t + 9.5, seen: t + 9.5),
        ]
        let observed = RecoveryBenchmark.Observed(records: records, kept: [], alerts: alerts, lines: [], exitStatus: 0, startedAt: t, wallSeconds: 13)
        let f = RecoveryBenchmark.analyze(kind: "sigkill", rank: 1, step: 8, at: t + 7.5, until: nil, observed)
        #expect(f.step == 8 && f.detectedBy == "exited")
        #expect(abs((f.detectionSeconds ?? 0) - 0.1) < 1e-6)
        #expect(abs((f.recoverySeconds ?? 0) - 4.5) < 1e-6)  // step 6 again at 12
        #expect(abs((f.newProgressSeconds ?? 0) - 4.7) < 1e-6)  // step 8 at 12.2
        #expect(f.lastStepBefore == 7 && f.resumedFrom == 5 && f.stepsRecomputed == 2)
        #expect(abs((f.recomputeSeconds ?? 0) - 0.2) < 1e-9)
        #expect(f.decisions == ["evicted", "restart"])
        let b = f.breakdown
        #expect(abs((b.teardown ?? 0) - 1.9) < 1e-6 && b.backoff == 1)
        #expect(abs((b.startup ?? 0) - (12 - 0.1 - 9.5 - 1)) < 1e-6 && b.firstStep == 0.1)
        // A fault nothing noticed: no detection, no recovery.
        let quiet = RecoveryBenchmark.Observed(records: records.prefix(7).map { $0 }, kept: [], alerts: [], lines: [], exitStatus: 0, startedAt: t, wallSeconds: 8)
        let g = RecoveryBenchmark.analyze(kind: "corrupt", rank: 1, step: 4, at: t + 3, until: nil, quiet)
        #expect(g.detectedBy == nil && g.detectionSeconds == nil && g.recoverySeconds == nil && g.stepsRecomputed == nil)
    }

    @Test("bad flags get one line and a non-zero exit, before anything runs")
    func badFlags() throws {
        let cases: [([String], String)] = [
            (["--kinds", "bogus"], "--kinds: unknown fault kind 'bogus'; known: sigkill, sigstop, crash"),
            (["--kinds", "crash,,hang"], "--kinds: give fault kinds joined by commas"),
            (["--steps", "2"], "--steps must be 4 to 100000, got 2"),
            (["--fault-step", "5"], "--fault-step must be after the first checkpoint"),
            (["--fault-step", "21"], "--fault-step 21 follows a checkpoint step"),
            (["--heartbeat-timeout", "0"], "--heartbeat-timeout must be 0.5 to 600 s"),
            (["--backoff", "-1"], "--backoff must be 0 to 30 s"),
            (["--sim-speed", "2"], "--sim-speed must be 0.001 to 1"),
            (["--minutes", "0"], "--minutes must be more than 0"),
            (["--minutes", "1", "--fault-every", "1"], "--fault-every must be 5 to 86400 s"),
            (["--minutes", "1", "--soak-kinds", "flip"], "--soak-kinds: flip does not end in a restart today"),
            (["--json", "/proc/medley/recovery.json"], "--json /proc/medley/recovery.json"),
        ]
        for (flags, expected) in cases {
            let result = try TestSupport.medley(["bench", "recovery"] + flags, timeout: 60)
            #expect(result.status != 0, "\(flags)")
            #expect(result.output.contains(expected), "\(flags): \(result.output)")
            #expect(result.output.split(separator: "\n").filter { $0.hasPrefix("Error") }.count == 1, "\(flags): \(result.output)")
            #expect(!result.output.contains("baseline"), "\(flags) ran a job first: \(result.output)")
        }
    }

    @Test("the kinds table: every name is unique and found; a list parses in order")
    func kindsTable() throws {
        let names = RecoveryBenchmark.kinds.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(try RecoveryBenchmark.kinds(list: "hang,sigkill", flag: "--kinds").map(\.name) == ["hang", "sigkill"])
        #expect(try RecoveryBenchmark.kinds(list: "all", flag: "--kinds").count == names.count)
        #expect(RecoveryBenchmark.backoff(in: "recovery: restart 2 on 2 chips in 2.0 s") == 2)
        let d = RecoveryBenchmark.Distribution([3, 1, 2, .nan, 10])
        #expect(d.count == 4 && d.min == 1 && d.median == 2.5 && d.max == 10 && d.mean == 4)
    }
}
