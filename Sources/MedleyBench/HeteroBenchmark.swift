import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import MedleyPlanner
import MedleyProfile
import MedleyTrain

/// `medley bench hetero`: what mixing chips of several vendors costs, in throughput and in
/// convergence, against the same chips training alone.
///
/// For every mix (the job, and with the built-in job also a mix of simulated chips only):
/// 1. **Shares.** The mixed job runs `calibrations` times with its rebalancer on; the shares it
///    settles on each time are kept (their stability), and the division by every rank's median speed
///    over all their timed steps (``pooledShares(_:globalBatch:)``) is pinned for every timed run.
/// 2. **Throughput rounds.** Each round runs every device entry alone (its shares of the mixed job
///    as its whole batch) one after another, then all of them alone at the same time (each its own
///    job on its own cores: the host as loaded as under the mixed job), then the mixed job.
///    E = mixed tokens/s ÷ Σ tokens/s alone, against both baselines; MFU of every run against
///    the chips' measured matmul peak; the host's foreign load during each run.
/// 3. **Where the time went.** Per rank of the mixed runs: compute, exchange, update, staging,
///    pipeline bubble, idle.
///
/// Then, for the first mix: **convergence** (the same seed, data order and global batch on one
/// chip alone, mixed in fp32, mixed with the sim chips in bf16; loss and validation curves and
/// their gaps), **prediction** (the planner's step time on the job's profiles against a measured
/// run of that plan, after the profiles' staleness check) and **the host's own share** (one
/// core's sgemm beside a busy neighbour, ``HostBenchmark``).
public enum HeteroBenchmark {
    /// How much to run.
    public struct Options: Sendable {
        /// Rounds of throughput runs per mix (E is their median).
        public var rounds: Int
        /// Calibrating runs of the mixed job, each settling its own shares.
        public var calibrations: Int
        /// Steps of each convergence run.
        public var convergenceSteps: Int
        /// Validation every this many steps in the convergence runs.
        public var evalEvery: Int
        /// The difference in foreign load (cores) between a round's baselines and its mixed job
        /// above which the round is flagged.
        public var loadTolerance: Double
        /// Seconds per pairing of the host benchmark (0: leave it out).
        public var hostSeconds: Double
        /// Whether to measure the planner's prediction.
        public var prediction: Bool
        /// Receives progress lines.
        public var progress: @Sendable (String) -> Void

        /// Options; the defaults are what `medley bench hetero` runs with no arguments.
        public init(
            rounds: Int = 5, calibrations: Int = 3, convergenceSteps: Int = 60, evalEvery: Int = 10,
            loadTolerance: Double = 0.25, hostSeconds: Double = 0.5, prediction: Bool = true,
            progress: @escaping @Sendable (String) -> Void = { _ in }
        ) {
            self.rounds = rounds
            self.calibrations = calibrations
            self.convergenceSteps = convergenceSteps
            self.evalEvery = evalEvery
            self.loadTolerance = loadTolerance
            self.hostSeconds = hostSeconds
            self.prediction = prediction
            self.progress = progress
        }

        /// Throws `invalidArgument` naming the first option out of range.
        public func validate(setup: TrainBenchmark.Setup) throws {
            guard setup.steps > setup.skip + 2 else {
                throw MedleyError(.invalidArgument, "--steps must exceed --skip by at least 3, got \(setup.steps) and \(setup.skip)")
            }
            guard rounds >= 1 else { throw MedleyError(.invalidArgument, "--rounds must be at least 1, got \(rounds)") }
            guard calibrations >= 1 else {
                throw MedleyError(.invalidArgument, "--calibrations must be at least 1, got \(calibrations)")
            }
            guard convergenceSteps >= 2 else {
                throw MedleyError(.invalidArgument, "--convergence-steps must be at least 2, got \(convergenceSteps)")
            }
            guard evalEvery >= 1 else { throw MedleyError(.invalidArgument, "--eval-every must be at least 1, got \(evalEvery)") }
            guard loadTolerance.isFinite, loadTolerance > 0 else {
                throw MedleyError(.invalidArgument, "--load-tolerance must be a positive number of cores, got \(loadTolerance)")
            }
            guard hostSeconds == 0 || (hostSeconds >= 0.05 && hostSeconds <= 60) else {
                throw MedleyError(.invalidArgument, "--host-seconds must be 0 (leave the host benchmark out) or from 0.05 to 60, got \(hostSeconds)")
            }
        }
    }

    /// A job to mix, named for the report.
    public struct Mix: Sendable {
        public var name: String
        public var spec: JobSpec
        public init(name: String, spec: JobSpec) {
            self.name = name
            self.spec = spec
        }
    }

    /// The mixes `medley bench hetero` measures with no JOB: the cpu chip with two sims, and
    /// three sims of different vendors, speeds and memory (whose speed is kept in CPU time, so
    /// they do not drift with the host: Medley's own cost alone).
    public static var defaultMixes: [Mix] {
        [Mix(name: "cpu + sim", spec: parse(defaultJobYAML, "the built-in hetero job")),
         Mix(name: "sims only", spec: parse(simOnlyJobYAML, "the built-in sims-only hetero job"))]
    }

    static func parse(_ yaml: String, _ source: String) -> JobSpec {
        do { return try JobSpec.parse(yaml: yaml, source: source) } catch {
            preconditionFailure("\(source) does not parse: \(error)")
        }
    }

    /// The built-in job's devices on a bigger model and batch: one sequence is 1/32 of the slowest
    /// chip's work (shares 128/64/32 at the rated speeds), and a step is long enough that launching and
    /// exchanging are small in it.
    public static let defaultJobYAML = """
        # medley bench hetero's built-in job: a cpu chip on core 0, two sims (cpu kernels, rated at
        # 0.5 and 0.25 of one uncontended core) sharing core 1.
        name: hetero-cpu-sim
        model:
          layers: 2
          dim: 128
          heads: 4
          seq: 32
          batch: 224
        data:
          path: /usr/share/games/fortunes
          validation_fraction: 0.1
          seed: 1
        train:
          steps: 60
          lr: 0.001
          lr_schedule: cosine
          warmup_steps: 5
          min_lr: 0.0001
          weight_decay: 0.1
          grad_clip: 1.0
          rebalance_every: 5
          seed: 1
        devices:
          - adapter: cpu
            cpus: [0]
          - adapter: sim
            cpus: [1]
            options:
              vendor: Acme
              name: acme-x1
              kernels: cpu
              speed: 0.5
          - adapter: sim
            cpus: [1]
            options:
              vendor: Borealis
              name: borealis-b2
              kernels: cpu
              speed: 0.25

        """

    /// Three sims of three vendors, speeds and memory sizes.
    public static let simOnlyJobYAML = """
        # medley bench hetero's sims-only job: Medley's own cost, with chips whose speed is CPU time.
        name: hetero-sims
        model:
          layers: 2
          dim: 128
          heads: 4
          seq: 32
          batch: 224
        data:
          path: /usr/share/games/fortunes
          validation_fraction: 0.1
          seed: 1
        train:
          steps: 60
          lr: 0.001
          warmup_steps: 5
          rebalance_every: 5
          seed: 1
        devices:
          - adapter: sim
            cpus: [0]
            options:
              vendor: Acme
              name: acme-x1
              kernels: cpu
              speed: 0.5
              memory: 4GiB
          - adapter: sim
            cpus: [1]
            options:
              vendor: Borealis
              name: borealis-b2
              kernels: cpu
              speed: 0.25
              memory: 2GiB
          - adapter: sim
            cpus: [1]
            options:
              vendor: Cirrus
              name: cirrus-c1
              kernels: cpu
              speed: 0.125
              memory: 1GiB

        """

    // MARK: Running

    /// Measures every mix and, on the first, convergence, prediction and the host.
    public static func run(mixes: [Mix], setup: TrainBenchmark.Setup, options: Options) throws -> HeteroReport {
        try options.validate(setup: setup)
        guard !mixes.isEmpty else { throw MedleyError(.invalidArgument, "no job to measure") }
        let started = Date()
        let clock = ContinuousClock.now
        let before = HostLoad.start()
        var report = HeteroReport(
            date: ISO8601DateFormatter().string(from: started), machine: MachineInfo.current(devices: mixes.flatMap(\.spec.devices)),
            steps: setup.steps, skip: setup.skip, mixes: [], convergence: nil, prediction: nil, host: nil, flags: [],
            wallSeconds: 0, load: nil)
        for mix in mixes {
            report.mixes.append(try measure(mix, setup: setup, options: options))
        }
        let first = mixes[0]
        let shares = report.mixes[0].shares
        report.convergence = try convergence(first.spec, shares: shares, setup: setup, options: options)
        if options.prediction {
            report.prediction = try prediction(first.spec, setup: setup, options: options)
        }
        if options.hostSeconds > 0 {
            options.progress("the host's own share: one core's sgemm beside its busy neighbour (bench host)")
            report.host = try HostBenchmark.measure(cpu: 0, neighbour: 1, size: 512, seconds: options.hostSeconds, rounds: 3) { _ in }
        }
        report.flags = report.mixes.flatMap(\.flags) + (report.convergence?.flags ?? []) + (report.prediction?.flags ?? [])
        report.load = before.finish()
        report.wallSeconds = Double((ContinuousClock.now - clock).components.seconds)
        return report
    }

    /// One run's step records and the host's load while it ran.
    struct Measured {
        var records: [StepRecord]
        var load: HostLoad
    }

    static func timed(_ job: JobSpec, steps: Int, schedule: SharesSchedule, setup: TrainBenchmark.Setup) throws -> Measured {
        let sampler = HostLoad.start()
        let records = try TrainBenchmark.run(job, steps: steps, schedule: schedule, setup: setup)
        return Measured(records: records, load: sampler.finish())
    }

    /// Shares, throughput rounds and time breakdown of one mix.
    static func measure(_ mix: Mix, setup: TrainBenchmark.Setup, options: Options) throws -> HeteroReport.MixResult {
        let spec = mix.spec
        let say = options.progress
        // 1. Shares: the division each calibrating run settles on; the most frequent one is pinned.
        var calibration = spec
        calibration.train.evalEvery = 0
        calibration.train.rebalanceEvery = max(calibration.train.rebalanceEvery, 5)
        var settled: [[Int]] = []
        var calibrationSteps: [StepRecord] = []
        for k in 1...options.calibrations {
            say("\(mix.name): calibrating shares \(k)/\(options.calibrations)")
            let records = try TrainBenchmark.run(calibration, steps: max(setup.steps, 15), schedule: SharesSchedule(), setup: setup)
            settled.append(try TrainBenchmark.settledShares(records, globalBatch: spec.model.globalBatch))
            calibrationSteps += records.dropFirst(setup.skip)
            say("\(mix.name): calibration \(k) settled on \(text(settled.last!))")
        }
        let shares = try pooledShares(calibrationSteps, globalBatch: spec.model.globalBatch) ?? consensus(settled, globalBatch: spec.model.globalBatch)
        var fixed = spec
        fixed.train.evalEvery = 0
        fixed.train.rebalanceEvery = 0
        let (alone, empty) = TrainBenchmark.aloneJobs(spec: spec, fixed: fixed, shares: shares, progress: say)
        let peaks = try spec.devices.map { try peakGflops($0, model: spec.model, setup: setup) }
        let rankPeaks = spec.rankDevices.map { peaks[$0.entry] }
        let groupPeaks = spec.devices.indices.map { entry in
            zip(spec.rankDevices, rankPeaks).filter { $0.0.entry == entry }.reduce(0) { $0 + $1.1 }
        }
        let flopsPerToken = modelFlopsPerToken(spec.model)

        // 2. Rounds.
        var rounds: [HeteroReport.Round] = []
        var mixedSteps: [StepRecord] = []
        for round in 1...options.rounds {
            var separate: [[StepRecord]] = []
            var separateLoads: [HostLoad] = []
            for a in alone {
                say("\(mix.name) round \(round): alone: \(a.group.device), batch \(a.job.model.globalBatch)")
                let m = try timed(a.job, steps: setup.steps, schedule: a.schedule, setup: setup)
                separate.append(m.records)
                separateLoads.append(m.load)
            }
            let apart = TrainBenchmark.measureGroups(alone, empty: empty, records: separate, rankCount: spec.rankCount, skip: setup.skip)
            say("\(mix.name) round \(round): every group alone, all at the same time")
            let sampler = HostLoad.start()
            let concurrentRecords = try TrainBenchmark.runConcurrently(alone.map { ($0.job, $0.schedule) }, steps: setup.steps, setup: setup)
            let concurrentLoad = sampler.finish()
            let together = TrainBenchmark.measureGroups(
                alone, empty: empty, records: concurrentRecords, rankCount: spec.rankCount, skip: setup.skip)
            say("\(mix.name) round \(round): mixed job, shares \(text(shares))")
            let mixed = try timed(fixed, steps: setup.steps, schedule: SharesSchedule(pinning: shares), setup: setup)
            let timedSteps = Array(mixed.records.dropFirst(setup.skip))
            mixedSteps += timedSteps
            let mixedRate = TrainBenchmark.median(timedSteps.map(\.tokensPerS))
            let sum = apart.groups.reduce(0) { $0 + $1.tokensPerS }
            let concurrentSum = together.groups.reduce(0) { $0 + $1.tokensPerS }
            func mfu(_ tokensPerS: Double, _ peak: Double) -> Double { peak > 0 ? tokensPerS * flopsPerToken / (peak * 1e9) : 0 }
            let aloneLoad = HostLoad.mean(separateLoads) ?? mixed.load
            var r = HeteroReport.Round(
                round: round, mixedTokensPerS: mixedRate, mixedStepMs: TrainBenchmark.median(timedSteps.map(\.stepMs)),
                groups: apart.groups, concurrentGroups: together.groups, aloneTokensPerSSum: sum,
                concurrentTokensPerSSum: concurrentSum, efficiency: sum > 0 ? mixedRate / sum : 0,
                concurrentEfficiency: concurrentSum > 0 ? mixedRate / concurrentSum : 0,
                mixedMFU: mfu(mixedRate, rankPeaks.reduce(0, +)),
                aloneMFU: apart.groups.map { mfu($0.tokensPerS, groupPeaks[$0.entry]) },
                concurrentMFU: together.groups.map { mfu($0.tokensPerS, groupPeaks[$0.entry]) },
                aloneLoad: aloneLoad, concurrentLoad: concurrentLoad, mixedLoad: mixed.load, flag: nil)
            let difference = max(abs(aloneLoad.foreignCores - mixed.load.foreignCores), abs(concurrentLoad.foreignCores - mixed.load.foreignCores))
            if difference > options.loadTolerance {
                r.flag = String(
                    format: "%@ round %d: other work used %.2f cores during the baselines one at a time, %.2f all at once and %.2f during the mixed job (tolerance %.2f): this round compares unlike loads",
                    mix.name, round, aloneLoad.foreignCores, concurrentLoad.foreignCores, mixed.load.foreignCores, options.loadTolerance)
            }
            say(String(format: "%@ round %d: E = %.4f one at a time, %.4f all at once; other work %.2f cores", mix.name, round,
                       r.efficiency, r.concurrentEfficiency, mixed.load.foreignCores))
            rounds.append(r)
        }

        // 3. Where the time went, per rank, over every mixed run's timed steps.
        let labels = spec.rankDevices.map { d -> String in
            let device = spec.devices[d.entry]
            return device.options["name"] ?? device.adapter
        }
        let breakdown = spec.rankDevices.indices.map { r in
            HeteroReport.RankTime.of(rank: r, label: labels[r], share: shares[r], peakGflops: rankPeaks[r], steps: mixedSteps)
        }
        let e = rounds.map(\.efficiency)
        let c = rounds.map(\.concurrentEfficiency)
        let mfus = rounds.map(\.mixedMFU)
        return HeteroReport.MixResult(
            name: mix.name, job: spec.name, devices: spec.devices.map(TrainBenchmark.describe), entryNames: spec.devices.map { $0.options["name"] ?? $0.adapter }, ranks: labels, shares: shares,
            calibrations: settled, sharesStable: Set(settled).count == 1, peakGflops: rankPeaks, flopsPerToken: flopsPerToken,
            rounds: rounds, efficiency: TrainBenchmark.median(e), efficiencyMin: e.min()!, efficiencyMax: e.max()!,
            concurrentEfficiency: TrainBenchmark.median(c), concurrentEfficiencyMin: c.min()!,
            concurrentEfficiencyMax: c.max()!, mixedMFU: TrainBenchmark.median(mfus), breakdown: breakdown,
            flags: rounds.compactMap(\.flag))
    }

    /// The convergence runs: one chip alone with the whole batch, the mix in fp32, the mix with
    /// its sim chips in bf16.
    static func convergence(
        _ spec: JobSpec, shares: [Int], setup: TrainBenchmark.Setup, options: Options
    ) throws -> HeteroReport.Convergence {
        var base = spec
        base.train.evalEvery = options.evalEvery
        base.train.rebalanceEvery = 0
        let steps = options.convergenceSteps
        // The homogeneous reference: the first device entry, one rank, the whole global batch.
        var homogeneous = base
        homogeneous.name = spec.name + "-homogeneous"
        var reference = spec.devices[0]
        reference.count = 1
        homogeneous.devices = [reference]
        options.progress("convergence: \(TrainBenchmark.describe(reference)) alone with the whole batch of \(spec.model.globalBatch), \(steps) steps")
        let h = try TrainBenchmark.run(homogeneous, steps: steps, schedule: SharesSchedule(pinning: [spec.model.globalBatch]), setup: setup)
        options.progress("convergence: the mix in fp32, shares \(text(shares))")
        let m = try TrainBenchmark.run(base, steps: steps, schedule: SharesSchedule(pinning: shares), setup: setup)
        var runs = [
            HeteroReport.Curve(name: "homogeneous (\(TrainBenchmark.describe(reference)))", precision: "fp32", records: h),
            HeteroReport.Curve(name: "mixed fp32", precision: "fp32", records: m),
        ]
        var flags: [String] = []
        if spec.devices.contains(where: { AdapterName.isSim($0.adapter) }) {
            var bf16 = base
            bf16.name = spec.name + "-bf16"
            for i in bf16.devices.indices where AdapterName.isSim(bf16.devices[i].adapter) {
                bf16.devices[i].options["precision"] = "bf16"
            }
            options.progress("convergence: the mix with its sim chips in bf16")
            let b = try TrainBenchmark.run(bf16, steps: steps, schedule: SharesSchedule(pinning: shares), setup: setup)
            runs.append(HeteroReport.Curve(name: "mixed, sims in bf16", precision: "bf16 (sims)", records: b))
        } else {
            flags.append("convergence: the job has no sim chip, so no bf16 run was made")
        }
        return HeteroReport.Convergence.compare(runs, steps: steps, evalEvery: options.evalEvery, flags: flags)
    }

    /// The planner's step time for the job's profiles against a measured run of that plan.
    static func prediction(_ spec: JobSpec, setup: TrainBenchmark.Setup, options: Options) throws -> HeteroReport.Prediction {
        options.progress("prediction: loading the job's profiles (measured where the cache has none)")
        var profileOptions = JobProfiles.Options()
        profileOptions.program = setup.program
        profileOptions.progress = options.progress
        profileOptions.warn = { options.progress("warning: " + $0) }
        let profiles = try JobProfiles.load(spec: spec, options: profileOptions)
        let plan = try profiles.plan(globalBatch: spec.model.globalBatch, options: Planner.Options(slack: spec.train.pipelineSlack))
        options.progress("prediction: running the plan (\(plan.schedule), predicted \(String(format: "%.1f", plan.prediction.stepMs)) ms a step)")
        let records = try TrainBenchmark.runPlan(spec, plan: plan, setup: setup)
        let timed = Array(records.dropFirst(setup.skip))
        let measured = TrainBenchmark.median(timed.map(\.stepMs))
        let p = plan.prediction
        let ratio = p.stepMs > 0 ? measured / p.stepMs : 0
        var flags: [String] = []
        for chip in profiles.chips where chip.staleness?.stale == true {
            flags.append("prediction: the cached profile of \(chip.type.key) was stale (its probe moved past the threshold)"
                         + (chip.staleness?.remeasured == true ? " and was measured again" : "; it was kept"))
        }
        if abs(ratio - 1) > 0.10 {
            flags.append(String(format: "prediction: the measured step (%.1f ms) is %.2fx the planner's %.1f ms, outside 10 %%", measured, ratio, p.stepMs))
        }
        return HeteroReport.Prediction(
            schedule: plan.schedule, predictedStepMs: p.stepMs, predictedComputeMs: p.computeMs, predictedExchangeMs: p.exchangeMs,
            predictedOptimizerMs: p.optimizerMs, predictedBubbleFraction: p.bubbleFraction, measuredStepMs: measured,
            measuredComputeMs: TrainBenchmark.median(timed.map { $0.computeMs.max() ?? 0 }), ratio: ratio,
            profiles: profiles.chips.map {
                HeteroReport.ProfileUse(
                    chip: $0.type.key, cached: $0.cached, measuredUnixMillis: $0.measuredUnixMillis, layerRatio: $0.staleness?.layerRatio,
                    hostRatio: $0.staleness?.hostRatio, stale: $0.staleness?.stale, remeasured: $0.staleness?.remeasured)
            },
            flags: flags)
    }

    // MARK: Figures

    /// Nominal training FLOPs per token of the GPT: 6 per parameter (forward and backward) plus
    /// attention's 6 · layers · seq · dim (the same count as `medley adapter bench`'s model row).
    public static func modelFlopsPerToken(_ model: JobSpec.Model) -> Double {
        let config = RankCapacity.modelConfig(model, batch: 1)
        return 6 * Double(config.parameterCount) + 6 * Double(model.layers) * Double(model.seq) * Double(model.dim)
    }

    /// A chip's peak: GFLOP/s of the model's largest matmul forward on it (median of 5 after 2
    /// untimed), measured in this process on a thread pinned to the entry's `cpus` (as its rank
    /// would be), with the options the job gives it.
    static func peakGflops(_ device: JobSpec.Device, model: JobSpec.Model, setup: TrainBenchmark.Setup) throws -> Double {
        final class Outcome: @unchecked Sendable {
            var result: Result<Double, any Error> = .success(0)
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            outcome.result = Result {
                if !device.cpus.isEmpty { try CPUAffinity.pinCurrentThread(to: device.cpus) }
                let library = try AdapterLibrary.load(device.adapter)
                var options = device.options.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                if AdapterName.isSim(device.adapter), let costs = setup.simCosts, device.options["costs"] == nil {
                    options.append(("costs", costs))
                }
                let chip = try library.openDevice(0, options: options)
                let config = RankCapacity.modelConfig(model, batch: max(1, model.globalBatch / max(1, device.count)))
                let cases = try BenchCase.all(config: config, device: chip, seed: 1).filter { $0.op == "matmul_forward" }
                guard let largest = cases.max(by: { $0.flops < $1.flops }) else { return 0 }
                for _ in 0..<2 { try largest.launch() }
                var times: [Double] = []
                for _ in 0..<5 {
                    let t0 = monotonicSeconds()
                    try largest.launch()
                    times.append(monotonicSeconds() - t0)
                }
                return largest.flops / (TrainBenchmark.median(times) * 1e9)
            }
        }
        thread.start()
        done.wait()
        return try outcome.result.get()
    }

    static func text(_ shares: [Int]) -> String { shares.map(String.init).joined(separator: "/") }

    /// The division by every rank's median speed (sequences per second of compute) over all the
    /// calibrations' timed steps together: three runs' worth of samples, so one run's noise does
    /// not decide the pinned shares. Nil when a rank was never measured.
    static func pooledShares(_ steps: [StepRecord], globalBatch: Int) throws -> [Int]? {
        guard let ranks = steps.first?.shares.count else { return nil }
        var speeds: [Double] = []
        for r in 0..<ranks {
            let rates = steps.compactMap { $0.shares[r] > 0 && $0.computeMs[r] > 0 ? Double($0.shares[r]) * 1000 / $0.computeMs[r] : nil }
            guard !rates.isEmpty else { return nil }
            speeds.append(TrainBenchmark.median(rates))
        }
        return try ShareAllocator.shares(globalBatch: globalBatch, throughputs: speeds)
    }

    /// The division the calibrations agree on (used when a rank went unmeasured): one that more than half of them settled on, else
    /// each rank's median share, with the rounding left over given to the ranks with the largest
    /// shares (so the sum stays the global batch).
    static func consensus(_ divisions: [[Int]], globalBatch: Int) -> [Int] {
        if let majority = divisions.first(where: { d in divisions.filter { $0 == d }.count * 2 > divisions.count }) {
            return majority
        }
        var shares = divisions[0].indices.map { r in Int(TrainBenchmark.median(divisions.map { Double($0[r]) }).rounded()) }
        var left = globalBatch - shares.reduce(0, +)
        let order = shares.indices.sorted { shares[$0] > shares[$1] }
        var k = 0
        while left != 0 {
            let r = order[k % order.count]
            if left > 0 || shares[r] > 0 {
                shares[r] += left > 0 ? 1 : -1
                left += left > 0 ? -1 : 1
            }
            k += 1
        }
        return shares
    }
}
