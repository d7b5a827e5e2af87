import Foundation
import MedleyAdapters
import MedleyCore
import MedleyTrain

/// Everything `medley bench hetero` measured: `report.json` is this, `report.md` is
/// ``markdown()``, and the charts are drawn from the JSON by `benchmarks/plot-hetero.py`.
public struct HeteroReport: Codable, Sendable {
    /// When the benchmark started (ISO 8601).
    public var date: String
    public var machine: MachineInfo
    /// Steps per timed run and the leading steps left out of the medians.
    public var steps: Int
    public var skip: Int
    public var mixes: [MixResult]
    public var convergence: Convergence?
    public var prediction: Prediction?
    /// `medley bench host`'s pairings, briefly (nil when left out).
    public var host: HostBenchmark.Result?
    /// Everything a reader should not miss: rounds under unlike loads, a prediction off by more
    /// than 10 %, a convergence gap above 1e-4 in fp32.
    public var flags: [String]
    /// Wall seconds of the whole benchmark.
    public var wallSeconds: Double
    /// The host's load over the whole benchmark.
    public var load: HostLoad?

    enum CodingKeys: String, CodingKey {
        case date, machine, steps, skip, mixes, convergence, prediction, host, flags, load
        case wallSeconds = "wall_seconds"
    }

    /// One round of one mix.
    public struct Round: Codable, Sendable {
        public var round: Int
        public var mixedTokensPerS: Double
        public var mixedStepMs: Double
        /// Every device entry alone, one after another.
        public var groups: [TrainBenchmark.GroupResult]
        /// Every device entry alone, all at the same time.
        public var concurrentGroups: [TrainBenchmark.GroupResult]
        public var aloneTokensPerSSum: Double
        public var concurrentTokensPerSSum: Double
        /// mixed ÷ Σ alone one at a time.
        public var efficiency: Double
        /// mixed ÷ Σ alone all at once: the headline (the same host load as the mixed job).
        public var concurrentEfficiency: Double
        /// Model FLOP/s ÷ Σ the chips' measured peaks, of the mixed run and of each group.
        public var mixedMFU: Double
        public var aloneMFU: [Double]
        public var concurrentMFU: [Double]
        /// The host's load during the baselines (mean of the one-at-a-time runs), all at once, mixed.
        public var aloneLoad: HostLoad
        public var concurrentLoad: HostLoad
        public var mixedLoad: HostLoad
        /// Set when the baselines ran under another foreign load than the mixed job.
        public var flag: String?

        enum CodingKeys: String, CodingKey {
            case round, groups, efficiency, flag
            case mixedTokensPerS = "mixed_tokens_per_s", mixedStepMs = "mixed_step_ms"
            case concurrentGroups = "concurrent_groups", aloneTokensPerSSum = "alone_tokens_per_s_sum"
            case concurrentTokensPerSSum = "concurrent_tokens_per_s_sum", concurrentEfficiency = "concurrent_efficiency"
            case mixedMFU = "mixed_mfu", aloneMFU = "alone_mfu", concurrentMFU = "concurrent_mfu"
            case aloneLoad = "alone_load", concurrentLoad = "concurrent_load", mixedLoad = "mixed_load"
        }
    }

    /// Medians over the mixed runs' timed steps of where one rank's step went (milliseconds).
    /// Staging (host↔device copies for the exchange and the gather) is inside exchange + update;
    /// `communication` is exchange + update − staging, and `other` the step's remainder.
    public struct RankTime: Codable, Sendable {
        public var rank: Int
        public var chip: String
        public var share: Int
        public var peakGflops: Double
        public var stepMs: Double
        public var computeMs: Double
        public var exchangeMs: Double
        public var updateMs: Double
        public var stagingMs: Double
        public var bubbleMs: Double
        public var idleMs: Double
        public var communicationMs: Double
        public var otherMs: Double

        enum CodingKeys: String, CodingKey {
            case rank, chip, share
            case peakGflops = "peak_gflops", stepMs = "step_ms", computeMs = "compute_ms", exchangeMs = "exchange_ms"
            case updateMs = "update_ms", stagingMs = "staging_ms", bubbleMs = "bubble_ms", idleMs = "idle_ms"
            case communicationMs = "communication_ms", otherMs = "other_ms"
        }

        /// Rank `rank`'s medians over `steps`. A data-parallel step has no pipeline bubble; a
        /// pipeline rank's bubble is its pipeline time less its compute.
        static func of(rank: Int, label: String, share: Int, peakGflops: Double, steps: [StepRecord]) -> RankTime {
            func m(_ value: (StepRecord) -> Double) -> Double { TrainBenchmark.median(steps.map(value)) }
            let step = m(\.stepMs)
            let compute = m { $0.computeMs[rank] }
            let exchange = m { $0.exchangeMs[rank] }
            let update = m { $0.updateMs[rank] }
            let staging = m { $0.stagingMs?[rank] ?? 0 }
            let bubble = m { r in r.pipelineMs.map { max(0, $0[rank] - r.computeMs[rank]) } ?? 0 }
            let idle = m { $0.idleMs[rank] }
            let communication = max(0, exchange + update - staging)
            return RankTime(
                rank: rank, chip: label, share: share, peakGflops: peakGflops, stepMs: step, computeMs: compute, exchangeMs: exchange,
                updateMs: update, stagingMs: staging, bubbleMs: bubble, idleMs: idle, communicationMs: communication,
                otherMs: max(0, step - compute - communication - staging - bubble - idle))
        }
    }

    /// One mix: its shares, its rounds, its medians.
    public struct MixResult: Codable, Sendable {
        public var name: String
        public var job: String
        /// Each device entry, as adapter and options.
        public var devices: [String]
        /// Each device entry's chip name (its `name` option, else its adapter).
        public var entryNames: [String]
        /// Each rank's chip name.
        public var ranks: [String]
        /// The pinned shares (the division the calibrations settled on most often).
        public var shares: [Int]
        /// What each calibrating run settled on, and whether they all agreed.
        public var calibrations: [[Int]]
        public var sharesStable: Bool
        /// Each rank's measured matmul peak, GFLOP/s, and the model's training FLOPs per token.
        public var peakGflops: [Double]
        public var flopsPerToken: Double
        public var rounds: [Round]
        /// Medians over the rounds, and their ranges.
        public var efficiency: Double
        public var efficiencyMin: Double
        public var efficiencyMax: Double
        public var concurrentEfficiency: Double
        public var concurrentEfficiencyMin: Double
        public var concurrentEfficiencyMax: Double
        public var mixedMFU: Double
        /// Per rank, where the mixed job's step went.
        public var breakdown: [RankTime]
        public var flags: [String]

        enum CodingKeys: String, CodingKey {
            case name, job, devices, ranks, shares, calibrations, rounds, efficiency, breakdown, flags
            case entryNames = "entry_names", sharesStable = "shares_stable", peakGflops = "peak_gflops", flopsPerToken = "flops_per_token"
            case efficiencyMin = "efficiency_min", efficiencyMax = "efficiency_max"
            case concurrentEfficiency = "concurrent_efficiency", concurrentEfficiencyMin = "concurrent_efficiency_min"
            case concurrentEfficiencyMax = "concurrent_efficiency_max", mixedMFU = "mixed_mfu"
        }
    }

    /// One training run's loss curve.
    public struct Curve: Codable, Sendable {
        public var name: String
        public var precision: String
        /// Training loss of every step (step 1 first).
        public var loss: [Double]
        /// Validation loss at the steps it was measured.
        public var valSteps: [Int]
        public var valLoss: [Double]
        /// Training milliseconds up to the end of each step (the sum of step times: launch left out).
        public var wallMs: [Double]
        /// The first step whose smoothed loss reached the target, and the training time to it.
        public var stepsToTarget: Int?
        public var msToTarget: Double?
        /// The largest |loss − homogeneous loss| ÷ homogeneous loss over the steps (0 for the reference).
        public var maxRelativeGap: Double
        /// |final validation loss − homogeneous| ÷ homogeneous.
        public var finalValidationGap: Double

        enum CodingKeys: String, CodingKey {
            case name, precision, loss
            case valSteps = "val_steps", valLoss = "val_loss", wallMs = "wall_ms", stepsToTarget = "steps_to_target"
            case msToTarget = "ms_to_target", maxRelativeGap = "max_relative_gap", finalValidationGap = "final_validation_gap"
        }

        init(name: String, precision: String, records: [StepRecord]) {
            self.name = name
            self.precision = precision
            loss = records.map(\.loss)
            let evaluated = records.filter { $0.valLoss != nil }
            valSteps = evaluated.map(\.step)
            valLoss = evaluated.map { $0.valLoss! }
            var total = 0.0
            wallMs = records.map { total += $0.stepMs; return total }
            maxRelativeGap = 0
            finalValidationGap = 0
        }
    }

    /// Mixed against homogeneous training on the same data, seed and batch.
    public struct Convergence: Codable, Sendable {
        public var steps: Int
        public var evalEvery: Int
        /// The target: the homogeneous run's smoothed loss at 3/4 of the steps.
        public var targetLoss: Double
        /// Steps in the moving mean that smooths each curve before the target is looked for.
        public var smoothing: Int
        /// The homogeneous reference first.
        public var runs: [Curve]
        public var flags: [String]

        enum CodingKeys: String, CodingKey {
            case steps, runs, flags, smoothing
            case evalEvery = "eval_every", targetLoss = "target_loss"
        }

        /// Gaps and targets of `runs` against the first.
        static func compare(_ runs: [Curve], steps: Int, evalEvery: Int, flags: [String]) -> Convergence {
            let smoothing = 5
            func smoothed(_ loss: [Double]) -> [Double] {
                loss.indices.map { i in
                    let window = loss[max(0, i - smoothing + 1)...i]
                    return window.reduce(0, +) / Double(window.count)
                }
            }
            let reference = runs[0]
            let target = smoothed(reference.loss)[max(0, steps * 3 / 4 - 1)]
            var flags = flags
            let curves = runs.map { run -> Curve in
                var c = run
                c.maxRelativeGap = zip(c.loss, reference.loss).map { abs($0 - $1) / max(abs($1), 1e-12) }.max() ?? 0
                if let last = c.valLoss.last, let ref = reference.valLoss.last {
                    c.finalValidationGap = abs(last - ref) / max(abs(ref), 1e-12)
                }
                if let i = smoothed(c.loss).firstIndex(where: { $0 <= target }) {
                    c.stepsToTarget = i + 1
                    c.msToTarget = c.wallMs[i]
                }
                if c.precision == "fp32", c.maxRelativeGap > 1e-4 {
                    flags.append(String(format: "convergence: %@ is %.2e from the homogeneous loss at its worst step, above 1e-4", c.name, c.maxRelativeGap))
                }
                return c
            }
            return Convergence(steps: steps, evalEvery: evalEvery, targetLoss: target, smoothing: smoothing, runs: curves, flags: flags)
        }
    }

    /// A profile the prediction used.
    public struct ProfileUse: Codable, Sendable {
        public var chip: String
        public var cached: Bool
        public var measuredUnixMillis: UInt64
        /// The staleness probe of a cached profile: the chip's layer and the host's sgemm now ÷
        /// stored (nil when the profile was measured by this run or the check was off), and
        /// whether it was judged stale and measured again.
        public var layerRatio: Double?
        public var hostRatio: Double?
        public var stale: Bool?
        public var remeasured: Bool?
        enum CodingKeys: String, CodingKey {
            case chip, cached, stale, remeasured
            case measuredUnixMillis = "measured_unix_millis", layerRatio = "layer_ratio", hostRatio = "host_ratio"
        }
    }

    /// The planner's predicted step against a measured run of its plan.
    public struct Prediction: Codable, Sendable {
        public var schedule: String
        public var predictedStepMs: Double
        public var predictedComputeMs: Double
        public var predictedExchangeMs: Double
        public var predictedOptimizerMs: Double
        public var predictedBubbleFraction: Double
        public var measuredStepMs: Double
        /// The slowest rank's median compute milliseconds.
        public var measuredComputeMs: Double
        /// measured ÷ predicted.
        public var ratio: Double
        public var profiles: [ProfileUse]
        public var flags: [String]

        enum CodingKeys: String, CodingKey {
            case schedule, ratio, profiles, flags
            case predictedStepMs = "predicted_step_ms", predictedComputeMs = "predicted_compute_ms"
            case predictedExchangeMs = "predicted_exchange_ms", predictedOptimizerMs = "predicted_optimizer_ms"
            case predictedBubbleFraction = "predicted_bubble_fraction", measuredStepMs = "measured_step_ms"
            case measuredComputeMs = "measured_compute_ms"
        }
    }
}

/// The machine a report was measured on.
public struct MachineInfo: Codable, Sendable {
    public var host: String
    public var cpuModel: String
    public var cores: Int
    public var memoryGiB: Double
    public var kernel: String
    public var mpi: String
    /// Each adapter the jobs use, with the version its library reports.
    public var adapters: [String: String]

    enum CodingKeys: String, CodingKey {
        case host, cores, kernel, mpi, adapters
        case cpuModel = "cpu_model", memoryGiB = "memory_gib"
    }

    /// This machine, with the versions of the adapters `devices` name.
    public static func current(devices: [JobSpec.Device]) -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        let kib = meminfo.split(separator: "\n").first { $0.hasPrefix("MemTotal:") }
            .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Double($0) } } ?? 0
        var name = utsname()
        uname(&name)
        func field<T>(_ value: inout T) -> String {
            withUnsafeBytes(of: &value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
        var adapters: [String: String] = [:]
        for device in devices where adapters[device.adapter] == nil {
            adapters[device.adapter] = (try? AdapterLibrary.load(device.adapter)).map { "\($0.info.name) \($0.info.version)" } ?? "not loadable"
        }
        return MachineInfo(
            host: ProcessInfo.processInfo.hostName, cpuModel: model, cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryGiB: kib / 1_048_576, kernel: field(&name.sysname) + " " + field(&name.release), mpi: mpiVersion(),
            adapters: adapters)
    }

    /// The first line of `mpirun --version`, or "unknown".
    static func mpiVersion() -> String {
        guard let outcome = try? ChildProcess.run("/usr/bin/env", ["mpirun", "--version"], timeoutSeconds: 30),
              outcome.status == 0, let first = outcome.stdout.split(separator: "\n").first
        else { return "unknown" }
        return String(first)
    }
}
