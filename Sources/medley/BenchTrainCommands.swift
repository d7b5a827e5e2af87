import ArgumentParser
import Foundation
import MedleyBench
import MedleyControl
import MedleyCore
import MedleyPlanner
import MedleyProfile
import MedleyTrain

/// `medley bench mixed`: heterogeneous efficiency of a job.
struct BenchMixed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mixed",
        abstract: "Heterogeneous efficiency: tokens/s of the mixed job / sum of each chip group training alone.",
        discussion: """
            Runs JOB (or the built-in job) once to let it settle its shares, then in each round: \
            each device entry alone with the same per-chip work (its shares as its whole batch), \
            one after another; every entry alone, all at the same time as separate jobs; and the \
            job with those shares pinned. E = mixed tokens/s / sum of the groups' tokens/s, \
            from medians over the steps after --skip, against both baselines: all at once has the \
            host's shared caches and memory as loaded as the mixed job has them. Also reports each \
            rank's idle, exchange and update share of the step.
            """)

    @OptionGroup var common: TrainBenchOptions

    @Option(help: "Steps per timed run.")
    var steps = 30

    @Option(help: "Rounds of (each group alone in turn, every group alone at once, mixed); E is their median.")
    var rounds = 3

    func run() throws {
        let result = try TrainBenchmark.efficiency(spec: try common.spec(), setup: try common.setup(steps: steps), rounds: rounds) {
            print("… " + $0)
        }
        for (index, round) in result.rounds.enumerated() {
            print("round \(index + 1):")
            print(String(format: "  mixed: %.0f tokens/s (step %.1f ms), shares ", round.mixedTokensPerS, round.mixedStepMs)
                  + result.shares.map(String.init).joined(separator: "/"))
            for (group, together) in zip(round.groups, round.concurrentGroups) {
                print(String(format: "  alone: %.0f tokens/s (step %.1f ms), all at once: %.0f tokens/s (step %.1f ms)  ",
                             group.tokensPerS, group.stepMs, together.tokensPerS, together.stepMs) + group.device)
            }
            print(String(format: "  E = %.4f (%.0f / %.0f tokens/s) one at a time; %.4f (%.0f / %.0f) all at once", round.efficiency,
                         round.mixedTokensPerS, round.aloneTokensPerSSum, round.concurrentEfficiency, round.mixedTokensPerS,
                         round.concurrentTokensPerSSum))
            for r in result.shares.indices {
                print(String(format: "  rank %d: compute %.1f ms (alone %.1f, all at once %.1f), idle %.1f %%, exchange %.1f %%, update %.1f %% of the step",
                             r, round.computeMs[r], round.aloneComputeMs[r], round.concurrentComputeMs[r], 100 * round.idleFraction[r],
                             100 * round.exchangeFraction[r], 100 * round.updateFraction[r]))
            }
        }
        print(String(format: "E = %.4f against each group alone one at a time (median of %d rounds; %.4f to %.4f)", result.efficiency,
                     result.rounds.count, result.efficiencyMin, result.efficiencyMax))
        print(String(format: "E = %.4f against every group alone all at once (median of %d rounds; %.4f to %.4f)",
                     result.concurrentEfficiency, result.rounds.count, result.concurrentEfficiencyMin, result.concurrentEfficiencyMax))
        try common.write(result)
    }
}

/// `medley bench straggler`: recovery after one chip slows down.
struct BenchStraggler: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "straggler",
        abstract: "Slow one sim chip mid-run and measure how much throughput the re-division recovers.",
        discussion: """
            Injects `fault: slow:FACTOR@step=AT` into rank --rank (a sim chip) of JOB and trains \
            --steps steps with the job's rebalance_every. Reports tokens/s before, while slowed and \
            after the batch is re-divided, against the best a perfect re-division could reach: \
            before x (1 - the chip's lost share of the job's throughput). Target: recovery >= 0.90.
            """)

    @OptionGroup var common: TrainBenchOptions

    @Option(help: "The rank to slow down (a sim chip).")
    var rank = 1

    @Option(help: "How many times slower it becomes.")
    var factor = 4.0

    @Option(help: "The step it slows down at.")
    var at = 15

    @Option(help: "Steps to run.")
    var steps = 45

    func run() throws {
        let r = try TrainBenchmark.straggler(
            spec: try common.spec(), rank: rank, factor: factor, at: at, setup: try common.setup(steps: steps)
        ) { print("… " + $0) }
        let shares = { (s: [Int]) in s.map(String.init).joined(separator: "/") }
        print(String(format: "before: %.0f tokens/s (shares ", r.beforeTokensPerS) + shares(r.sharesBefore) + ")")
        print(String(format: "slowed: %.0f tokens/s", r.slowedTokensPerS))
        print(String(format: "after:  %.0f tokens/s (shares ", r.afterTokensPerS) + shares(r.sharesAfter)
              + ", re-divided after step " + (r.reshardStep.map(String.init) ?? "never") + ")")
        print(String(format: "capacity left %.3f -> expected %.0f tokens/s; recovery %.3f", r.capacityLeft,
                     r.expectedTokensPerS, r.recovery))
        try common.write(r)
    }
}

/// What `medley bench mixed` and `medley bench straggler` share: the job, the runs, the output.
struct TrainBenchOptions: ParsableArguments {
    @Argument(help: "A YAML job spec; leave out for the built-in mixed job.")
    var job: String?

    @Option(help: "Leading steps left out of the medians.")
    var skip = 5

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    @Option(help: "mpirun --timeout per run, seconds.")
    var timeout = 900

    @Flag(help: "Show the runs' output.")
    var verbose = false

    @Option(
        name: .customLong("sim-costs"),
        help: ArgumentHelp(
            "File in which the sim chips of every run keep their op costs, so a sim runs at one speed in every run (default: sim-costs in Medley's cache directory); 'off': each run learns its own.",
            valueName: "path|off"))
    var simCosts: String?

    /// The job: the spec at `job`, or the built-in one.
    func spec() throws -> JobSpec { try JobSpec.load(path: job) }

    /// Runs of `steps` steps of this executable. Creates the sim cost file's directory.
    func setup(steps: Int) throws -> TrainBenchmark.Setup {
        var costs: String?
        switch simCosts {
        case "off": costs = nil
        case let path?:
            guard !path.isEmpty, !path.contains(",") else {
                throw MedleyError(.invalidArgument, "--sim-costs '\(path)': give a file path without commas, or 'off'")
            }
            costs = path
        case nil: costs = ProfileCache.cacheRoot() + "/sim-costs"
        }
        if let costs {
            let directory = URL(fileURLWithPath: costs).deletingLastPathComponent().path
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw MedleyError(.io, "--sim-costs: cannot create the directory \(directory): \(error.localizedDescription)")
            }
        }
        return TrainBenchmark.Setup(
            program: ChildProcess.currentExecutable, steps: steps, skip: skip, timeoutSeconds: timeout, verbose: verbose,
            simCosts: costs)
    }

    /// Writes `value` as pretty JSON to `json`, atomically, when asked.
    func write<T: Encodable>(_ value: T) throws {
        guard let json else { return }
        try JSONReport.write(value, to: json)
    }
}

/// `medley bench bubble`: the measured 1F1B bubble against (p − 1)/(m + p − 1).
struct BenchBubble: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bubble",
        abstract: "Run the job's devices as one pipeline at several microbatch counts; measured bubble vs 1F1B theory.",
        discussion: """
            Device i of JOB is stage i; --cuts gives the first planning layer of stages 1, 2, … \
            (0 = embedding, 1…L = blocks, L+1 = head). For each microbatch count m (dividing the \
            global batch) and each --slack (extra microbatches each stage runs ahead; 0 = textbook \
            1F1B) the job trains --steps steps; the bubble of a stage is 1 − its compute time ÷ \
            the pipeline's length (the longest rank's 1F1B schedule), medians over the steps after \
            --skip. The busiest stage's bubble (the stage that sets the pace) and the mean over the \
            stages are compared with (p − 1)/(m + p − 1); the stage imbalance (busiest stage's \
            compute ÷ the mean) says how far the split is from the balanced case the formula describes.
            """)

    @OptionGroup var common: TrainBenchOptions

    @Option(help: "First planning layer of each stage after the first, comma-separated.")
    var cuts: String

    @Option(help: "Microbatch counts, comma-separated.")
    var microbatches = "1,2,4,8"

    @Option(help: "Schedule slacks to compare, comma-separated (0 = textbook 1F1B); default: the job's train.pipeline_slack.")
    var slack: String?

    @Option(help: "Steps per run.")
    var steps = 12

    func run() throws {
        func list(_ text: String, _ name: String) throws -> [Int] {
            let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
                throw MedleyError(.invalidArgument, "\(name): expected comma-separated whole numbers, got '\(text)'")
            }
            return values.map { $0! }
        }
        let result = try TrainBenchmark.bubble(
            spec: try common.spec(), cuts: try list(cuts, "--cuts"), microbatches: try list(microbatches, "--microbatches"),
            slacks: try slack.map { try list($0, "--slack") }, setup: try common.setup(steps: steps)) { print("… " + $0) }
        print("stages (planning layers): " + result.stages.map { "\($0[0])..<\($0[1])" }.joined(separator: ", "))
        print("| slack | m | microbatch | step ms | tokens/s | busiest stage's bubble | mean of stages | (p-1)/(m+p-1) | per stage | stage imbalance |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in result.rows {
            print(String(format: "| %d | %d | %d | %.1f | %.0f | %.3f | %.3f | %.3f | ", row.slack, row.microbatches, row.microbatchSize, row.stepMs,
                         row.tokensPerS, row.bottleneckBubble, row.measuredBubble, row.theoreticalBubble)
                  + row.idleFraction.map { String(format: "%.3f", $0) }.joined(separator: " / ")
                  + String(format: " | %.3f |", row.stageImbalance))
        }
        try common.write(result)
    }
}

/// `medley bench predict`: the planner's predicted step time against a run of its plan.
struct BenchPredict: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Plan JOB from its chips' profiles, train the plan, and compare the measured step time with the prediction.",
        discussion: """
            Profiles the job's chips (or reads the cache), runs the planner as `plan: auto` would, \
            trains --steps steps of that plan and reports the median measured step time after \
            --skip against the plan's predicted step time, --rounds times.
            """)

    @OptionGroup var common: TrainBenchOptions

    @Option(help: "Steps per run.")
    var steps = 15

    @Option(help: "Runs of the same plan; the ratio is reported for each.")
    var rounds = 3

    @Flag(help: "Measure the profiles again instead of reading the cache.")
    var refresh = false

    func run() throws {
        let spec = try common.spec()
        var options = JobProfiles.Options.atLaunch
        options.refresh = refresh
        let profiles = try JobProfiles.load(spec: spec, options: options)
        let plan = try profiles.plan(
            globalBatch: spec.model.globalBatch, options: Planner.Options(slack: spec.train.pipelineSlack))
        print(profiles.probeTable())
        print(plan.table())
        let setup = try common.setup(steps: steps)
        var results: [TrainBenchmark.PredictionResult] = []
        for round in 1...max(1, rounds) {
            let result = try TrainBenchmark.prediction(spec: spec, plan: plan, setup: setup)
            print(String(format: "round %d: measured %.1f ms per step, predicted %.1f ms: measured / predicted = %.3f",
                         round, result.measuredStepMs, result.predictedStepMs, result.ratio))
            results.append(result)
        }
        try common.write(results)
    }
}

/// `medley bench host`: how much one core loses while its neighbour works.
struct BenchHost: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "Time sgemm and memset on one core while the core beside it idles, spins, streams memory or runs sgemm.",
        discussion: """
            On one thread pinned to --cpu, plain OpenBLAS sgemm (compute-bound, GFLOP/s) and memset \
            over 256 MiB (memory-bound, GB/s), each for --seconds while a thread pinned to \
            --neighbour does nothing, spins in registers, memsets 256 MiB over and over, or runs the \
            same sgemm. Every pairing runs once in each of --rounds rounds, in a rotated order; each \
            figure is its median ratio to the idle run of the same round. Sim chips compute their \
            real results on a host core, so on one host a mixed job's cpu chip works beside a busy \
            core and the cpu chip alone does not: this is what the host takes from `bench mixed`'s \
            E against the groups run one at a time (benchmarks/training.md).
            """)

    @Option(help: "The CPU that is timed.")
    var cpu = 0

    @Option(help: "The CPU beside it that carries the load.")
    var neighbour = 1

    @Option(help: "Seconds each pairing of work and load is timed for, per round.")
    var seconds = 2.0

    @Option(help: "Rounds; each pairing's ratio to idle is the median over them.")
    var rounds = 5

    @Option(help: "Side of the square sgemm.")
    var size = 512

    @Option(help: "Write the result as JSON to this file.")
    var json: String?

    func run() throws {
        let result = try HostBenchmark.measure(
            cpu: cpu, neighbour: neighbour, size: size, seconds: seconds, rounds: rounds) { print("… " + $0) }
        print("CPU \(cpu) beside CPU \(neighbour): median of \(result.rounds.count) rounds, ratio to the neighbour idle (range)")
        for p in result.pairings {
            let name = "\(p.work.rawValue) beside \(p.load.rawValue)".padding(toLength: 22, withPad: " ", startingAt: 0)
            print("  " + name + String(format: "%7.1f ", p.rate) + p.unit.padding(toLength: 8, withPad: " ", startingAt: 0)
                  + String(format: "%.3f (%.3f to %.3f)", p.ratio, p.ratioMin, p.ratioMax))
        }
        guard let json else { return }
        try JSONReport.write(result, to: json)
    }
}

/// `medley bench supervisor`: the supervisor's CPU and whether it keeps up, fed by fake workers.
struct BenchSupervisor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervisor",
        abstract: "Time the medley launch supervisor's CPU while N fake workers heart-beat to it on loopback.",
        discussion: """
            For each --workers count, starts that many fake ranks in a process of their own \
            (`medley bench fake-workers`), each saying hello and then sending a heartbeat and a step \
            report every --period seconds, spread over the period. Once every one has said hello, \
            times --seconds of supervising: the supervisor's CPU (user + system, this process only) as \
            a share of one core, the frames it took per second, the steps it recorded, the alerts it \
            raised (0 when it keeps up) and the worst heartbeat age at the end.
            """)

    @Option(help: "Fake worker counts, comma-separated.")
    var workers = "2,8,100,1000"

    @Option(help: "Seconds between one worker's heartbeats (and step reports).")
    var period = 1.0

    @Option(help: "Seconds each count is timed for.")
    var seconds = 20.0

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    func run() throws {
        let counts = try workers.split(separator: ",").map { text -> Int in
            guard let n = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw MedleyError(.invalidArgument, "--workers must be whole numbers joined by commas, got \(workers)")
            }
            return n
        }
        if let json { try OutputPaths.checkWritable(json, flag: "--json") }
        var results: [SupervisorBenchmark.Result] = []
        print("workers  period  cpu % of one core  frames/s  steps  alerts  dropped  worst beat age  all hello  RSS")
        for count in counts {
            let r = try SupervisorBenchmark.measure(workers: count, period: period, seconds: seconds, program: ChildProcess.currentExecutable)
            results.append(r)
            print(String(format: "%7d  %5.2fs  %17.3f  %8.0f  %5d  %6d  %7d  %12.2f s  %7.2f s  %.0f MiB",
                         r.workers, r.periodSeconds, r.cpuPercentOfOneCore, r.eventsPerSecond, r.stepsRecorded, r.alerts,
                         r.droppedFrames, r.maxHeartbeatAgeSeconds, r.allHelloSeconds, r.residentMiB))
        }
        if let json { try JSONReport.write(results, to: json) }
    }
}

/// `medley bench fake-workers`: the fake ranks of `bench supervisor` (started by it).
struct BenchFakeWorkers: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-workers", abstract: "Fake ranks for `medley bench supervisor` (started by it).", shouldDisplay: false)

    @Option var address: String
    @Option var token: String
    @Option var workers: Int
    @Option var period: Double
    @Option var seconds: Double

    func run() throws {
        guard let bytes = ControlToken.parse(hex: token) else { throw MedleyError(.invalidArgument, "--token must be 32 hex digits") }
        try FakeWorkers.run(address: address, token: bytes, workers: workers, period: period, seconds: seconds)
    }
}

/// `medley bench launch`: what `medley launch` adds to a job: time to the first step, wall time
/// against `medley train` of the same job in the same run, and the supervisor's CPU.
struct BenchLaunch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Time medley launch against medley train on the same job: first step, wall time, supervisor CPU.",
        discussion: """
            Each round runs `medley train JOB` and then `medley launch JOB --quiet` (into a temporary \
            run directory), alternating which goes first, and reads the launch's summary.json: seconds \
            from the start of `medley launch` to its first recorded step, and the CPU the launch \
            process used while the job ran, as a share of one core. Reports medians over --rounds.
            """)

    @Argument(help: "A YAML job spec; leave out for the built-in mixed job.")
    var job: String?

    @Option(help: "Rounds; each figure is the median over them.")
    var rounds = 3

    @Option(parsing: .unconditional, help: "Steps per run (default the job's train.steps).")
    var steps: Int?

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    struct Result: Codable {
        var rounds: Int
        var trainSeconds: [Double]
        var launchSeconds: [Double]
        var firstStepSeconds: [Double]
        var supervisorCPUPercent: [Double]
        var medianTrainSeconds: Double
        var medianLaunchSeconds: Double
        /// Median over rounds of launch wall ÷ train wall (1.0: supervision costs nothing).
        var medianLaunchOverTrain: Double
        var medianFirstStepSeconds: Double
        var medianSupervisorCPUPercent: Double
    }

    func run() throws {
        guard rounds >= 1 else { throw MedleyError(.invalidArgument, "--rounds must be at least 1, got \(rounds)") }
        if let json { try OutputPaths.checkWritable(json, flag: "--json") }
        let program = ChildProcess.currentExecutable
        let jobArguments = (job.map { [$0] } ?? []) + (steps.map { ["--steps", "\($0)"] } ?? [])
        var train: [Double] = [], launch: [Double] = [], first: [Double] = [], cpu: [Double] = [], ratios: [Double] = []
        for round in 0..<rounds {
            let directory = NSTemporaryDirectory() + "medley-bench-launch-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: directory) }
            func runTrain() throws -> Double {
                let out = try ChildProcess.run(program, ["train"] + jobArguments, timeoutSeconds: 3600, mergeOutput: true)
                guard out.status == 0 else { throw MedleyError(.io, "medley train failed: \(out.output.suffix(300))") }
                return out.seconds
            }
            func runLaunch() throws -> Double {
                let out = try ChildProcess.run(program, ["launch"] + jobArguments + ["--quiet", "--run-dir", directory],
                                               timeoutSeconds: 3600, mergeOutput: true)
                guard out.status == 0 else { throw MedleyError(.io, "medley launch failed: \(out.output.suffix(300))") }
                return out.seconds
            }
            var t = 0.0, l = 0.0
            if round % 2 == 0 { t = try runTrain(); l = try runLaunch() } else { l = try runLaunch(); t = try runTrain() }
            let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/summary.json"))) as? [String: Any]
            train.append(t)
            launch.append(l)
            ratios.append(l / t)
            first.append(summary?["firstStepSeconds"] as? Double ?? .nan)
            cpu.append(summary?["supervisorCPUPercent"] as? Double ?? .nan)
            print(String(format: "round %d: train %.2f s, launch %.2f s (%.3f×), first step %.2f s after launch, supervisor CPU %.2f%% of one core",
                         round + 1, t, l, l / t, first.last!, cpu.last!))
        }
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let result = Result(rounds: rounds, trainSeconds: train, launchSeconds: launch, firstStepSeconds: first,
                            supervisorCPUPercent: cpu, medianTrainSeconds: median(train), medianLaunchSeconds: median(launch),
                            medianLaunchOverTrain: median(ratios), medianFirstStepSeconds: median(first),
                            medianSupervisorCPUPercent: median(cpu))
        print(String(format: "median of %d: train %.2f s, launch %.2f s (%.3f×), first step %.2f s, supervisor CPU %.2f%% of one core",
                     rounds, result.medianTrainSeconds, result.medianLaunchSeconds, result.medianLaunchOverTrain,
                     result.medianFirstStepSeconds, result.medianSupervisorCPUPercent))
        if let json { try JSONReport.write(result, to: json) }
    }
}
