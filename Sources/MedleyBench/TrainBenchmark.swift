import Foundation
import MedleyComm
import MedleyCore
import MedleyTrain

/// Benchmarks of whole training jobs: what mixing chips costs, and how fast a straggler is absorbed.
///
/// Both run real jobs through ``TrainLauncher`` (real mpirun, real adapters) and read the step
/// records back; figures are medians over the steps after a warm-up, so one noisy step on a
/// shared host does not move them.
public enum TrainBenchmark {
    /// Where and how the jobs run.
    public struct Setup: Sendable {
        /// The `medley` executable the ranks run.
        public var program: String
        /// Steps per timed run.
        public var steps: Int
        /// Leading steps left out of the medians (caches, first exchange negotiation).
        public var skip: Int
        /// mpirun `--timeout` per run.
        public var timeoutSeconds: Int
        /// Show the runs' step lines while they go.
        public var verbose: Bool
        /// A file in which every run's sim chips keep their op costs (the sim option `costs`), so
        /// that a sim runs at the same speed in the mixed job and alone; nil: each run's sims
        /// learn their own, and a sim that never computes uncontended in the mixed job (its
        /// phases line up with the other ranks') rates itself slower there than alone.
        public var simCosts: String?

        /// A setup; see the properties.
        public init(
            program: String, steps: Int = 30, skip: Int = 5, timeoutSeconds: Int = 900, verbose: Bool = false,
            simCosts: String? = nil
        ) {
            self.program = program
            self.steps = steps
            self.skip = skip
            self.timeoutSeconds = timeoutSeconds
            self.verbose = verbose
            self.simCosts = simCosts
        }

        /// What the ranks' environment gains: `costs=` appended to `MEDLEY_SIM_OPTIONS` (after
        /// whatever `environment` already sets there; a job's own device options still win).
        public func rankEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
            guard let simCosts else { return [:] }
            let current = environment["MEDLEY_SIM_OPTIONS"].flatMap { $0.isEmpty ? nil : $0 }
            return ["MEDLEY_SIM_OPTIONS": (current.map { $0 + "," } ?? "") + "costs=" + simCosts]
        }
    }

    /// One device entry training alone with the work it had in the mixed job.
    public struct GroupResult: Codable, Sendable {
        /// Index in the job's `devices`.
        public var entry: Int
        /// Adapter and options, for the reader.
        public var device: String
        /// Its ranks' shares in the mixed job (its whole batch when alone).
        public var shares: [Int]
        /// Median tokens/s alone.
        public var tokensPerS: Double
        /// Median step milliseconds alone.
        public var stepMs: Double

        enum CodingKeys: String, CodingKey {
            case entry, device, shares
            case tokensPerS = "tokens_per_s"
            case stepMs = "step_ms"
        }
    }

    /// One round of the efficiency benchmark: the mixed job, then every group alone.
    public struct EfficiencyRound: Codable, Sendable {
        /// Median tokens/s of the mixed job.
        public var mixedTokensPerS: Double
        /// Median step milliseconds of the mixed job.
        public var mixedStepMs: Double
        /// Every group alone.
        public var groups: [GroupResult]
        /// Σ of the groups' tokens/s.
        public var aloneTokensPerSSum: Double
        /// mixed ÷ Σ alone (the groups run one after another, each on an otherwise idle host).
        public var efficiency: Double
        /// Every group alone, all groups at the same time (each its own job, on its own cores).
        public var concurrentGroups: [GroupResult]
        /// Σ of the concurrent groups' tokens/s.
        public var concurrentTokensPerSSum: Double
        /// mixed ÷ Σ concurrent alone: the same host load as the mixed job, so only what
        /// coordinating the chips costs (waiting, exchange, update, whole-sequence shares).
        public var concurrentEfficiency: Double
        /// Per rank of the mixed job: median share of the step spent waiting for the others.
        public var idleFraction: [Double]
        /// Per rank: median share of the step spent in the gradient exchange.
        public var exchangeFraction: [Double]
        /// Per rank: median share of the step spent in the sharded update and parameter gather.
        public var updateFraction: [Double]
        /// Per rank: median compute milliseconds in the mixed job.
        public var computeMs: [Double]
        /// Per rank: median compute milliseconds of the same work when its group ran alone.
        public var aloneComputeMs: [Double]
        /// Per rank: the same when all groups ran alone at the same time.
        public var concurrentComputeMs: [Double]

        enum CodingKeys: String, CodingKey {
            case groups, efficiency
            case concurrentGroups = "concurrent_groups"
            case concurrentTokensPerSSum = "concurrent_tokens_per_s_sum"
            case concurrentEfficiency = "concurrent_efficiency"
            case concurrentComputeMs = "concurrent_compute_ms"
            case mixedTokensPerS = "mixed_tokens_per_s"
            case mixedStepMs = "mixed_step_ms"
            case aloneTokensPerSSum = "alone_tokens_per_s_sum"
            case idleFraction = "idle_fraction"
            case exchangeFraction = "exchange_fraction"
            case updateFraction = "update_fraction"
            case computeMs = "compute_ms"
            case aloneComputeMs = "alone_compute_ms"
        }
    }

    /// Heterogeneous efficiency: E = tokens/s of the mixed job ÷ Σ tokens/s of each group alone.
    public struct EfficiencyResult: Codable, Sendable {
        /// The job's name.
        public var job: String
        /// Shares every run used (measured by a first, calibrating run of the mixed job).
        public var shares: [Int]
        /// Median E over the rounds (groups alone one after another).
        public var efficiency: Double
        /// Lowest and highest E of a round.
        public var efficiencyMin: Double
        public var efficiencyMax: Double
        /// Median E over the rounds against the groups alone at the same time, and its range.
        public var concurrentEfficiency: Double
        public var concurrentEfficiencyMin: Double
        public var concurrentEfficiencyMax: Double
        /// Every round.
        public var rounds: [EfficiencyRound]
        /// Steps timed per run, and leading steps left out.
        public var steps: Int
        public var skip: Int

        enum CodingKeys: String, CodingKey {
            case job, shares, efficiency, rounds, steps, skip
            case efficiencyMin = "efficiency_min"
            case efficiencyMax = "efficiency_max"
            case concurrentEfficiency = "concurrent_efficiency"
            case concurrentEfficiencyMin = "concurrent_efficiency_min"
            case concurrentEfficiencyMax = "concurrent_efficiency_max"
        }
    }

    /// Measures ``EfficiencyResult`` for `spec` over `rounds` rounds (runs alternate, so a change in
    /// the host's load hits the mixed and the alone runs alike). `progress` gets one line per run.
    public static func efficiency(
        spec: JobSpec, setup: Setup, rounds: Int = 3, progress: (String) -> Void
    ) throws -> EfficiencyResult {
        guard setup.steps > setup.skip + 2 else {
            throw MedleyError(.invalidArgument, "--steps must exceed --skip by at least 3, got \(setup.steps) and \(setup.skip)")
        }
        guard rounds >= 1 else { throw MedleyError(.invalidArgument, "--rounds must be at least 1, got \(rounds)") }
        // Calibrate: let the job measure and rebalance itself, keep the shares it settles on.
        progress("calibrating shares on the mixed job (\(spec.rankCount) ranks)")
        var calibration = spec
        calibration.train.evalEvery = 0
        calibration.train.rebalanceEvery = max(calibration.train.rebalanceEvery, 5)
        let calibrated = try run(calibration, steps: max(setup.steps / 2, 15), schedule: SharesSchedule(), setup: setup)
        let shares = try settledShares(calibrated, globalBatch: spec.model.globalBatch)
        let pinned = SharesSchedule(pinning: shares)
        var fixed = spec
        fixed.train.evalEvery = 0
        fixed.train.rebalanceEvery = 0

        let (alone, empty) = aloneJobs(spec: spec, fixed: fixed, shares: shares, progress: progress)
        func measure(_ records: [[StepRecord]]) -> (groups: [GroupResult], compute: [Double]) {
            measureGroups(alone, empty: empty, records: records, rankCount: spec.rankCount, skip: setup.skip)
        }

        // Each round runs the groups one at a time first: with a shared sim cost file
        // (setup.simCosts) their uncontended launches settle every op's cost before the
        // all-at-once and mixed runs of the round use it.
        var results: [EfficiencyRound] = []
        for round in 1...rounds {
            var separate: [[StepRecord]] = []
            for a in alone {
                progress("round \(round): alone: \(a.group.device), batch \(a.job.model.globalBatch)")
                separate.append(try run(a.job, steps: setup.steps, schedule: a.schedule, setup: setup))
            }
            let apart = measure(separate)
            progress("round \(round): every group alone, all at the same time")
            let together = measure(try runConcurrently(alone.map { ($0.job, $0.schedule) }, steps: setup.steps, setup: setup))
            progress("round \(round): mixed job, shares \(shares.map(String.init).joined(separator: "/"))")
            let mixed = Array(try run(fixed, steps: setup.steps, schedule: pinned, setup: setup).dropFirst(setup.skip))
            let sum = apart.groups.reduce(0) { $0 + $1.tokensPerS }
            let concurrentSum = together.groups.reduce(0) { $0 + $1.tokensPerS }
            let mixedRate = median(mixed.map(\.tokensPerS))
            func fraction(_ values: KeyPath<StepRecord, [Double]>) -> [Double] {
                (0..<spec.rankCount).map { r in median(mixed.map { $0[keyPath: values][r] / $0.stepMs }) }
            }
            let result = EfficiencyRound(
                mixedTokensPerS: mixedRate, mixedStepMs: median(mixed.map(\.stepMs)), groups: apart.groups,
                aloneTokensPerSSum: sum, efficiency: sum > 0 ? mixedRate / sum : 0, concurrentGroups: together.groups,
                concurrentTokensPerSSum: concurrentSum, concurrentEfficiency: concurrentSum > 0 ? mixedRate / concurrentSum : 0,
                idleFraction: fraction(\.idleMs), exchangeFraction: fraction(\.exchangeMs), updateFraction: fraction(\.updateMs),
                computeMs: (0..<spec.rankCount).map { r in median(mixed.map { $0.computeMs[r] }) }, aloneComputeMs: apart.compute,
                concurrentComputeMs: together.compute)
            progress(String(format: "round %d: E = %.4f against the groups one at a time, %.4f against them all at once", round,
                            result.efficiency, result.concurrentEfficiency))
            results.append(result)
        }
        let values = results.map(\.efficiency)
        let concurrent = results.map(\.concurrentEfficiency)
        return EfficiencyResult(
            job: spec.name, shares: shares, efficiency: median(values), efficiencyMin: values.min()!,
            efficiencyMax: values.max()!, concurrentEfficiency: median(concurrent), concurrentEfficiencyMin: concurrent.min()!,
            concurrentEfficiencyMax: concurrent.max()!, rounds: results, steps: setup.steps, skip: setup.skip)
    }

    /// How far throughput recovers after one chip slows down mid-run.
    public struct StragglerResult: Codable, Sendable {
        /// The job's name.
        public var job: String
        /// The rank that was slowed, and by how much, from which step.
        public var rank: Int
        public var factor: Double
        public var slowFromStep: Int
        /// Re-measure window (`train.rebalance_every`).
        public var rebalanceEvery: Int
        /// Median tokens/s before the slow-down.
        public var beforeTokensPerS: Double
        /// Median tokens/s while slowed, before the batch was re-divided.
        public var slowedTokensPerS: Double
        /// Median tokens/s after the re-division.
        public var afterTokensPerS: Double
        /// The step whose end re-divided the batch (nil if it never did).
        public var reshardStep: Int?
        /// Shares before and after.
        public var sharesBefore: [Int]
        public var sharesAfter: [Int]
        /// The job's capacity left: (Σ throughput − the slowed chip's lost part) ÷ Σ throughput.
        public var capacityLeft: Double
        /// before × capacityLeft: the best a perfect re-division could reach.
        public var expectedTokensPerS: Double
        /// after ÷ expected (target ≥ 0.90).
        public var recovery: Double

        enum CodingKeys: String, CodingKey {
            case job, rank, factor, recovery
            case slowFromStep = "slow_from_step"
            case rebalanceEvery = "rebalance_every"
            case beforeTokensPerS = "before_tokens_per_s"
            case slowedTokensPerS = "slowed_tokens_per_s"
            case afterTokensPerS = "after_tokens_per_s"
            case reshardStep = "reshard_step"
            case sharesBefore = "shares_before"
            case sharesAfter = "shares_after"
            case capacityLeft = "capacity_left"
            case expectedTokensPerS = "expected_tokens_per_s"
        }
    }

    /// Runs `spec` with rank `rank` (a `sim` chip) slowed `factor`× from step `at`, and measures the recovery.
    public static func straggler(
        spec: JobSpec, rank: Int, factor: Double, at step: Int, setup: Setup, progress: (String) -> Void
    ) throws -> StragglerResult {
        let ranks = spec.rankDevices
        guard ranks.indices.contains(rank) else {
            throw MedleyError(.invalidArgument, "--rank \(rank): the job has ranks 0 to \(ranks.count - 1)")
        }
        let entry = ranks[rank].entry
        guard spec.devices[entry].count == 1, AdapterName.isSim(spec.devices[entry].adapter) else {
            throw MedleyError(
                .invalidArgument,
                "--rank \(rank): the straggler must be a sim chip listed alone (count 1) so a slow fault can be injected; rank \(rank) is \(spec.devices[entry].adapter)")
        }
        guard factor > 1, factor.isFinite else { throw MedleyError(.invalidArgument, "--factor must be above 1, got \(factor)") }
        let every = spec.train.rebalanceEvery
        guard every > 0 else {
            throw MedleyError(.invalidArgument, "train.rebalance_every is 0: the job never re-measures, so nothing can recover")
        }
        guard step > setup.skip + 2, setup.steps >= step + 3 * every else {
            throw MedleyError(
                .invalidArgument,
                "--at \(step) must come after the --skip \(setup.skip) warm-up steps and at least 3 re-measure windows (\(3 * every) steps) before --steps \(setup.steps)")
        }
        var job = spec
        job.train.evalEvery = 0
        var options = job.devices[entry].options
        let fault = "slow:\(factor)@step=\(step)"
        options["fault"] = options["fault"].map { $0 + ";" + fault } ?? fault
        job.devices[entry].options = options
        progress("\(spec.name): rank \(rank) slowed \(factor)x from step \(step), re-measured every \(every) steps")
        let records = try run(job, steps: setup.steps, schedule: SharesSchedule(), setup: setup)

        // Throughput estimates in force just before the slow-down: the last re-division before it,
        // or the warm-up's (step 1's record).
        guard let estimate = records.last(where: { $0.step < step && $0.throughputs != nil })?.throughputs else {
            throw MedleyError(.internalError, "no throughput estimates were logged before step \(step)")
        }
        let total = estimate.reduce(0, +)
        let capacityLeft = (total - estimate[rank] * (1 - 1 / factor)) / total
        let reshard = records.first { $0.step >= step && $0.nextShares != nil && $0.nextShares![rank] < $0.shares[rank] }
        // Steady windows: after any early re-division settles, before the fault; after the reshard.
        let lastChangeBefore = records.last { $0.step < step - 1 && $0.nextShares != nil }?.step ?? 0
        let before = records.filter { $0.step > max(setup.skip, lastChangeBefore + 1) && $0.step < step }
        let slowed = records.filter { $0.step >= step && $0.step <= (reshard?.step ?? Int.max) }
        let after = reshard.map { r in records.filter { $0.step > r.step + 1 } } ?? []
        let beforeRate = median(before.map(\.tokensPerS))
        let afterRate = after.isEmpty ? 0 : median(after.map(\.tokensPerS))
        return StragglerResult(
            job: spec.name, rank: rank, factor: factor, slowFromStep: step, rebalanceEvery: every,
            beforeTokensPerS: beforeRate, slowedTokensPerS: median(slowed.map(\.tokensPerS)), afterTokensPerS: afterRate,
            reshardStep: reshard?.step, sharesBefore: before.last?.shares ?? [], sharesAfter: after.last?.shares ?? [],
            capacityLeft: capacityLeft, expectedTokensPerS: beforeRate * capacityLeft,
            recovery: afterRate / (beforeRate * capacityLeft))
    }

    // MARK: Helpers

    /// One device entry of a mixed job set up to train alone, with its ranks' shares of the
    /// mixed job as its whole batch (so each chip does the same work as in the mixed job).
    struct AloneJob {
        var group: GroupResult
        /// The mixed job's ranks this entry's ranks stand for, in order.
        var members: [Int]
        var job: JobSpec
        var schedule: SharesSchedule
    }

    /// A device entry as its adapter and its options sorted by key (`sim kernels=cpu speed=0.5`).
    static func describe(_ device: JobSpec.Device) -> String {
        ([device.adapter] + device.options.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: " ")
    }

    /// Every device entry of `spec` alone (built from `fixed`, the mixed job as it is timed), and
    /// the entries whose shares are below their rank count (counted as 0 tokens/s alone).
    static func aloneJobs(
        spec: JobSpec, fixed: JobSpec, shares: [Int], progress: (String) -> Void
    ) -> (runnable: [AloneJob], empty: [GroupResult]) {
        var alone: [AloneJob] = []
        var empty: [GroupResult] = []
        for (entry, device) in spec.devices.enumerated() {
            let members = spec.rankDevices.filter { $0.entry == entry }.map(\.rank)
            let groupShares = members.map { shares[$0] }
            let batch = groupShares.reduce(0, +)
            let description = describe(device)
            let group = GroupResult(entry: entry, device: description, shares: groupShares, tokensPerS: 0, stepMs: 0)
            guard batch >= device.count else {
                progress("\(description): share \(batch) is below its \(device.count) rank(s); counted as 0 tokens/s alone")
                empty.append(group)
                continue
            }
            var job = fixed
            job.name = "\(spec.name)-alone-\(entry)"
            job.devices = [device]
            job.model.globalBatch = batch
            alone.append(AloneJob(group: group, members: members, job: job, schedule: SharesSchedule(pinning: groupShares)))
        }
        return (alone, empty)
    }

    /// Each alone group's median tokens/s and step time from its runs' records (the steps after
    /// `skip`), sorted by entry with the `empty` groups, and each mixed-job rank's median compute
    /// milliseconds when its group ran alone.
    static func measureGroups(
        _ alone: [AloneJob], empty: [GroupResult], records: [[StepRecord]], rankCount: Int, skip: Int
    ) -> (groups: [GroupResult], compute: [Double]) {
        var compute = [Double](repeating: 0, count: rankCount)
        var groups = empty
        for (a, all) in zip(alone, records) {
            let timed = Array(all.dropFirst(skip))
            for (i, rank) in a.members.enumerated() { compute[rank] = median(timed.map { $0.computeMs[i] }) }
            var group = a.group
            group.tokensPerS = median(timed.map(\.tokensPerS))
            group.stepMs = median(timed.map(\.stepMs))
            groups.append(group)
        }
        return (groups.sorted { $0.entry < $1.entry }, compute)
    }

    /// Runs `spec` for `steps` steps quietly and returns its step records.
    static func run(_ spec: JobSpec, steps: Int, schedule: SharesSchedule, setup: Setup) throws -> [StepRecord] {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("medley-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let log = directory.appendingPathComponent("steps.jsonl").path
        let launcher = TrainLauncher(
            spec: spec, steps: steps, logPath: log, schedule: schedule, timeoutSeconds: setup.timeoutSeconds,
            verbose: false, environment: setup.rankEnvironment())
        var errors: [String] = []
        let status = try launcher.run(program: setup.program) { line, isError in
            if isError { errors.append(line) }
            if setup.verbose || isError { FileHandle.standardError.write(Data(("  " + line + "\n").utf8)) }
        }
        guard status == 0 else {
            throw MedleyError(.internalError, "the benchmark job \(spec.name) failed: \(errors.first { !$0.hasPrefix("warning:") } ?? "exit status \(status)")")
        }
        let records = try StepRecord.read(jsonLines: String(contentsOfFile: log, encoding: .utf8))
        guard records.count == steps else {
            throw MedleyError(.internalError, "the benchmark job \(spec.name) logged \(records.count) of \(steps) steps")
        }
        return records
    }

    /// The division the calibrating run's measurements call for: the shares it ended on, unless
    /// re-dividing by each rank's median throughput over the steps run with them (at least 3;
    /// otherwise the final shares stand) is significantly better, by the running job's own rule
    /// (``Rebalancer/judge(before:after:noise:unchanged:step:configuration:)``): a predicted
    /// drop above 2 % that survives every median moved 2 standard errors against it. Recomputing without that rule
    /// made a shared host's noise move the shares from run to run (7/5/2, 9/3/2, 8/4/2).
    static func settledShares(_ records: [StepRecord], globalBatch: Int) throws -> [Int] {
        let last = records.last!
        let final = last.nextShares ?? last.shares
        let settled = records.reversed().prefix { $0.shares == final && $0.nextShares == nil }
        guard settled.count >= 3 else { return final }
        var relativeErrors = [Double](repeating: 0, count: final.count)
        let throughputs = final.indices.map { r -> Double in
            let rates = settled.compactMap { $0.shares[r] > 0 && $0.computeMs[r] > 0 ? Double($0.shares[r]) * 1000 / $0.computeMs[r] : nil }
            guard !rates.isEmpty else { return 0 }
            let typical = median(rates)
            relativeErrors[r] = Rebalancer.standardErrorOfMedian(rates) / typical
            return typical
        }
        guard let slowest = throughputs.filter({ $0 > 0 }).min() else { return final }
        let estimates = throughputs.map { $0 > 0 ? $0 : slowest }
        let proposed = try ShareAllocator.shares(globalBatch: globalBatch, throughputs: estimates)
        let before = ShareAllocator.predictedStepTime(shares: final, throughputs: estimates) * 1000
        let after = ShareAllocator.predictedStepTime(shares: proposed, throughputs: estimates) * 1000
        let configuration = Rebalancer.Configuration(globalBatch: globalBatch, every: 1)
        let noise = Rebalancer.noise(
            current: final, proposed: proposed, throughputs: estimates, relativeErrors: relativeErrors,
            multiplier: configuration.noiseMultiplier)
        let verdict = Rebalancer.judge(
            before: before, after: after, noise: noise,
            unchanged: proposed == final, step: last.step,
            configuration: configuration)
        return verdict.change ? proposed : final
    }

    /// Runs every job at the same time (each its own mpirun) and returns their records in order.
    static func runConcurrently(_ jobs: [(JobSpec, SharesSchedule)], steps: Int, setup: Setup) throws -> [[StepRecord]] {
        final class Outcomes: @unchecked Sendable {
            let lock = NSLock()
            var results: [Result<[StepRecord], any Error>?]
            init(count: Int) { results = Array(repeating: nil, count: count) }
        }
        let outcomes = Outcomes(count: jobs.count)
        let group = DispatchGroup()
        for (index, (job, schedule)) in jobs.enumerated() {
            group.enter()
            let thread = Thread {
                let result = Result { try run(job, steps: steps, schedule: schedule, setup: setup) }
                outcomes.lock.lock()
                outcomes.results[index] = result
                outcomes.lock.unlock()
                group.leave()
            }
            thread.start()
        }
        group.wait()
        return try outcomes.results.map { try $0!.get() }
    }

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// Recognising adapters by the name a job gives them.
enum AdapterName {
    /// Whether `adapter` names the sim adapter (by name or by its library's file name).
    static func isSim(_ adapter: String) -> Bool {
        adapter == "sim" || URL(fileURLWithPath: adapter).lastPathComponent.hasPrefix("libmedley-adapter-sim")
    }
}
