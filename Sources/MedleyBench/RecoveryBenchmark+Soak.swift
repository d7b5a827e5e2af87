import Foundation
import MedleyCore

extension RecoveryBenchmark {
    /// Count, least, median, 90th percentile, most and mean of a set of figures.
    public struct Distribution: Codable, Sendable {
        public var count: Int
        public var min: Double?
        public var median: Double?
        public var p90: Double?
        public var max: Double?
        public var mean: Double?

        public init(_ values: [Double]) {
            let sorted = values.filter(\.isFinite).sorted()
            count = sorted.count
            guard !sorted.isEmpty else { return }
            func at(_ q: Double) -> Double { sorted[Swift.min(sorted.count - 1, Int((q * Double(sorted.count - 1)).rounded()))] }
            min = sorted.first
            median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
            p90 = at(0.9)
            max = sorted.last
            mean = sorted.reduce(0, +) / Double(sorted.count)
        }
    }

    /// A soak's settings beyond the job's.
    public struct SoakSettings: Sendable {
        public var minutes: Double
        /// Mean seconds between faults (exponential gaps, so faults arrive as a Poisson process).
        public var faultEvery: Double
        public var seed: UInt64
        /// The kinds drawn from (each fault: one at random).
        public var kinds: [FaultKind]
        public var checkpointEvery: Int

        public init(minutes: Double, faultEvery: Double, seed: UInt64, kinds: [FaultKind], checkpointEvery: Int = 20) {
            self.minutes = minutes
            self.faultEvery = faultEvery
            self.seed = seed
            self.kinds = kinds
            self.checkpointEvery = checkpointEvery
        }

        public func validate() throws {
            func fail(_ text: String) -> MedleyError { MedleyError(.invalidArgument, text) }
            guard minutes > 0 && minutes <= 24 * 60 else { throw fail("--minutes must be more than 0 and at most 1440, got \(minutes)") }
            guard faultEvery >= 5 && faultEvery <= 86_400 else { throw fail("--fault-every must be 5 to 86400 s, got \(faultEvery)") }
            guard !kinds.isEmpty else { throw fail("--soak-kinds: give at least one fault kind") }
            if let kind = kinds.first(where: { !$0.restarts }) {
                throw fail("--soak-kinds: \(kind.name) does not end in a restart today (\(kind.about)); the soak draws from faults that do: \(RecoveryBenchmark.kinds.filter(\.restarts).map(\.name).joined(separator: ", "))")
            }
            guard (2...10_000).contains(checkpointEvery) else { throw fail("--checkpoint-every must be 2 to 10000, got \(checkpointEvery)") }
        }
    }

    /// A fault the soak planned: its kind, the step it comes at, and (a signal) the rank.
    public struct PlannedFault: Codable, Sendable {
        public var kind: String
        public var step: Int
        public var rank: Int?
    }

    /// What one fault per `faultEverySeconds` would leave, from the soak's per-fault cost.
    public struct Implication: Codable, Sendable {
        public var faultEverySeconds: Double
        /// Steady efficiency × (1 − per-fault cost ÷ interval).
        public var effectiveTrainingTime: Double
        /// 1 − per-fault cost ÷ interval (the faults' share alone).
        public var faultShareKept: Double
        /// The same with every restart waiting the policy's 30 s backoff cap (a long run's backoff).
        public var effectiveTrainingTimeAtBackoffCap: Double
        public var how: String
    }

    public struct SoakReport: Codable, Sendable {
        public var minutes: Double
        public var faultEverySeconds: Double
        public var seed: UInt64
        public var kinds: [String]
        public var heartbeatTimeoutSeconds: Double
        public var backoffSeconds: Double
        public var checkpointEvery: Int
        public var job: String
        /// A fault-free calibration run: its wall seconds per step (steps 11 to 150), which set the planned faults' steps.
        public var calibrationStepSeconds: Double
        public var planned: [PlannedFault]
        public var faults: [FaultFigures]
        public var faultsInjected: Int
        public var faultsDetected: Int
        public var restarts: Int
        public var evictions: Int
        public var gaveUp: Bool
        public var stepsDone: Int
        public var exitStatus: Int32
        public var wallSeconds: Double
        public var usefulStepSeconds: Double
        public var effectiveTrainingTime: Double
        public var detectionSeconds: Distribution
        public var recoverySeconds: Distribution
        public var newProgressSeconds: Distribution
        public var stepsRecomputed: Distribution
        /// Per-fault cost, mean over the faults that recovered: the wall time from the fault to
        /// the first step beyond the last one done before it (detection, restart, recomputation),
        /// or to the next fault if that came first, less the step time of steps kept that were
        /// done in that window, plus the step time of the steps before the fault that were thrown
        /// away (recomputed).
        public var perFaultCostSeconds: Double?
        /// useful ÷ (wall − Σ per-fault cost): the job's efficiency between faults.
        public var steadyEfficiency: Double?
        /// The same model at the soak's own rate (a check against the measured figure) and at one fault per 3 hours.
        public var predictedAtSoakRate: Implication?
        public var atOneFaultPer3Hours: Implication?
    }

    /// The soak: one long job under `medley launch`, faults planned from `soak.seed`, stopped by
    /// SIGTERM after `soak.minutes`.
    public static func soak(_ soak: SoakSettings, settings: Settings, progress: (String) -> Void) throws -> SoakReport {
        try settings.validate()
        try soak.validate()
        // Calibration: the job's pace without faults.
        let calibration = try LaunchRun(
            yaml: jobYAML(settings: settings, steps: 150, checkpointEvery: soak.checkpointEvery, rank1Fault: nil, spares: [], maxRestarts: 1,
                          simRank0: true),
            settings: settings, label: "calibration")
        defer { calibration.cleanUp() }
        let calibrated = try calibration.run(deadline: settings.timeoutSeconds) { _ in }
        // The pace: wall time per step over the steps after the first 10 (checkpoints and the
        // records' own cost included), which is what turns a time into a step.
        let settled = calibrated.kept.dropFirst(10)
        guard calibrated.exitStatus == 0, let firstSteady = settled.first, let lastSteady = settled.last, lastSteady.step > firstSteady.step else {
            throw MedleyError(.io, "the calibration job did not run (exit \(calibrated.exitStatus)); see a run kept with --keep-runs")
        }
        let stepSeconds = (lastSteady.seconds - firstSteady.seconds) / Double(lastSteady.step - firstSteady.step)
        progress(String(format: "calibration: %.1f ms a step (wall, over steps 11 to 150)", stepSeconds * 1000))

        // The plan: exponential gaps of mean faultEvery, in steps at the calibrated pace; each at
        // least a checkpoint interval and two steps after the last, never right after a checkpoint step.
        var rng = SeededGenerator(seed: soak.seed)
        let expectedSteps = Int(soak.minutes * 60 / stepSeconds)
        var planned: [PlannedFault] = []
        var step = 0
        while planned.count < 95 {
            let u = Double(rng.next() >> 11) / Double(1 << 53)
            let gap = -soak.faultEvery * log(1 - u)
            step += Swift.max(soak.checkpointEvery + 2, Int(gap / stepSeconds))
            if (step - 1) % soak.checkpointEvery == 0 { step += 1 }
            guard step < expectedSteps * 2 else { break }
            let kind = soak.kinds[rng.below(soak.kinds.count)]
            let rank: Int? = { if case .signal = kind.injection { return rng.below(2) } else { return nil } }()
            planned.append(PlannedFault(kind: kind.name, step: step, rank: rank))
        }
        // Every chip is the same sim (a spare runs at the pace the plan was made for). Sim faults
        // ride on the chips: rank 1 carries the first; the spare that takes the evicted chip's rank
        // carries the next, and so on (a signal's slot carries none); two spare spares.
        func simFault(_ index: Int) -> String? {
            guard index < planned.count, case .sim(let value) = (try? kind(named: planned[index].kind))?.injection else { return nil }
            return "\(value)@step=\(planned[index].step)"
        }
        let spares = (0..<(planned.count + 2)).map { simFault($0 + 1) }
        let totalSteps = Swift.max(expectedSteps * 3 + 100, (planned.last?.step ?? 0) + 100)
        let yaml = jobYAML(settings: settings, steps: totalSteps, checkpointEvery: soak.checkpointEvery, rank1Fault: simFault(0),
                           spares: spares, maxRestarts: Swift.min(100, planned.count + 2), simRank0: true)
        progress("planned \(planned.count) faults over about \(expectedSteps) steps: "
                 + planned.prefix(12).map { "\($0.kind)@\($0.step)" }.joined(separator: ", ") + (planned.count > 12 ? ", …" : ""))

        let run = try LaunchRun(yaml: yaml, settings: settings, label: "soak")
        defer { run.cleanUp() }
        var next = 0
        var armedAfter = 0.0  // records count for the next fault only after the restart that followed the last one
        var injected: [(index: Int, at: Double, rank: Int?)] = []
        var lastReport = Date()
        let observed = try run.run(deadline: soak.minutes * 60 + 300, stopAfter: soak.minutes * 60) { run in
            if Date().timeIntervalSince(lastReport) > 30 {
                lastReport = Date()
                let restarts = run.alerts.filter { $0.kind == "restart" }.count
                progress("\(Int(Date().timeIntervalSince1970 - (run.records.first?.seconds ?? Date().timeIntervalSince1970))) s: step \(run.records.last?.step ?? 0), \(injected.count) faults, \(restarts) restarts")
            }
            guard next < planned.count else { return }
            if let last = injected.last {
                // Armed again once a restart after the last fault has been decided, or, when none
                // comes within heartbeat_timeout + 15 s (a sim fault whose chip had been evicted
                // with another before its step never fires), from then on.
                if armedAfter <= last.at {
                    if let restart = run.alerts.last(where: { $0.kind == "restart" && ($0.unixSeconds ?? 0) > last.at }) {
                        armedAfter = restart.unixSeconds ?? restart.seen
                    } else if Date().timeIntervalSince1970 - last.at > settings.heartbeatTimeout + 15 {
                        armedAfter = Date().timeIntervalSince1970
                    } else {
                        return
                    }
                }
            }
            let fault = planned[next]
            guard let reached = run.records.last(where: { $0.seconds > armedAfter && $0.step >= fault.step - 1 }) else { return }
            let kind = try? kind(named: fault.kind)
            if case .signal(let signal)? = kind?.injection {
                guard let pid = run.rankPid(fault.rank ?? 1) else { return }
                kill(pid, signal)
                injected.append((next, Date().timeIntervalSince1970, fault.rank))
            } else {
                // The sim fires it by itself when step `fault.step` begins: when rank 0 recorded the step before.
                injected.append((next, reached.seconds, 1))
            }
            progress("fault \(injected.count): \(fault.kind) at step \(fault.step)\(fault.rank.map { " on rank \($0)" } ?? "")")
            next += 1
        }

        var faults: [FaultFigures] = []
        for (i, fault) in injected.enumerated() {
            let until = i + 1 < injected.count ? injected[i + 1].at : nil
            var figures = analyze(kind: planned[fault.index].kind, rank: fault.rank, step: planned[fault.index].step, at: fault.at, until: until, observed)
            // A sim fault's rank is the one its alert names.
            if case .sim = (try? kind(named: figures.kind))?.injection, let rank = observed.alerts.first(where: { $0.kind == figures.detectedBy && $0.seen >= fault.at - 0.05 })?.rank {
                figures.rank = rank
            }
            faults.append(figures)
        }
        // A fault's cost: the wall time from it to new progress (or to the next fault, if that
        // comes first), less the step time of the steps kept that were done in it (a rank that
        // went on for a while after the fault, say), so overlapping faults are not counted twice.
        // Plus the step time of the steps done before it that were thrown away (recomputed).
        let keptSet = Set(observed.kept)
        var costs: [Double] = []
        for (i, fault) in injected.enumerated() {
            guard let progress = faults[i].newProgressSeconds else { continue }
            let end = Swift.min(fault.at + progress, i + 1 < injected.count ? injected[i + 1].at : .infinity)
            let kept = observed.kept.filter { $0.seconds > fault.at && $0.seconds <= end }.map { $0.stepMs / 1000 }.reduce(0, +)
            let previous = i > 0 ? injected[i - 1].at : 0
            let discarded = observed.records.filter { !keptSet.contains($0) && $0.seconds > previous && $0.seconds <= fault.at }
                .map { $0.stepMs / 1000 }.reduce(0, +)
            costs.append(Swift.max(0, end - fault.at - kept + discarded))
        }
        let recovered = faults.compactMap(\.newProgressSeconds)
        let perFault = costs.isEmpty ? nil : costs.reduce(0, +) / Double(costs.count)
        let useful = observed.usefulSeconds, wall = observed.wallSeconds
        let steady = perFault.map { _ in useful / Swift.max(1e-9, wall - costs.reduce(0, +)) }
        let meanBackoff = Distribution(faults.compactMap(\.breakdown.backoff)).mean ?? 0
        func implication(_ interval: Double) -> Implication? {
            guard let perFault, let steady else { return nil }
            let kept = 1 - perFault / interval
            return Implication(
                faultEverySeconds: interval, effectiveTrainingTime: steady * kept, faultShareKept: kept,
                effectiveTrainingTimeAtBackoffCap: steady * (1 - (perFault - meanBackoff + 30) / interval),
                how: String(format: "steady efficiency %.4f (useful ÷ (wall − Σ per-fault cost)) × (1 − per-fault cost %.2f s ÷ %.0f s)",
                            steady, perFault, interval))
        }
        return SoakReport(
            minutes: soak.minutes, faultEverySeconds: soak.faultEvery, seed: soak.seed, kinds: soak.kinds.map(\.name),
            heartbeatTimeoutSeconds: settings.heartbeatTimeout, backoffSeconds: settings.backoff, checkpointEvery: soak.checkpointEvery,
            job: yaml, calibrationStepSeconds: stepSeconds, planned: planned, faults: faults, faultsInjected: faults.count,
            faultsDetected: faults.filter { $0.detectedBy != nil }.count, restarts: observed.alerts.filter { $0.kind == "restart" }.count,
            evictions: observed.alerts.filter { $0.kind == "evicted" }.count, gaveUp: observed.alerts.contains { $0.kind == "gave_up" },
            stepsDone: observed.kept.count, exitStatus: observed.exitStatus, wallSeconds: wall, usefulStepSeconds: useful,
            effectiveTrainingTime: useful / Swift.max(wall, 1e-9), detectionSeconds: Distribution(faults.compactMap(\.detectionSeconds)),
            recoverySeconds: Distribution(faults.compactMap(\.recoverySeconds)), newProgressSeconds: Distribution(recovered),
            stepsRecomputed: Distribution(faults.compactMap(\.stepsRecomputed).map(Double.init)), perFaultCostSeconds: perFault,
            steadyEfficiency: steady, predictedAtSoakRate: faults.isEmpty ? nil : implication(wall / Double(faults.count)), atOneFaultPer3Hours: implication(3 * 3600))
    }
}
