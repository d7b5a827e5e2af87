import Foundation
import MedleyComm
import MedleyCore
import MedleyTrain
import MedleyPlanner

extension TrainBenchmark {
    /// One microbatch count of the bubble benchmark.
    public struct BubbleRow: Codable, Sendable {
        /// Microbatches per step (m) and sequences per microbatch.
        public var microbatches: Int
        public var microbatchSize: Int
        /// The schedule's slack (``Plan/slack``; 0 = textbook 1F1B).
        public var slack: Int
        /// Median step milliseconds and tokens/s.
        public var stepMs: Double
        public var tokensPerS: Double
        /// Per rank: median over the timed steps of 1 − compute ÷ the pipeline's length (the
        /// longest rank's schedule): the share of the pipeline the stage spends not computing.
        public var idleFraction: [Double]
        /// Mean of `idleFraction` over the stages: the measured bubble.
        public var measuredBubble: Double
        /// `idleFraction` of the stage that computes longest, the one that sets the pipeline's
        /// pace: the bubble the schedule costs in throughput. A faster stage idles more than
        /// this by the stages' imbalance, which is the split's cost, not the schedule's.
        public var bottleneckBubble: Double
        /// The stages' median compute milliseconds per step, and the largest ÷ their mean
        /// (1 when the split is balanced, the case (p − 1)/(m + p − 1) describes).
        public var stageComputeMs: [Double]
        public var stageImbalance: Double
        /// (p − 1) / (m + p − 1).
        public var theoreticalBubble: Double

        enum CodingKeys: String, CodingKey {
            case microbatches, slack
            case microbatchSize = "microbatch_size"
            case stepMs = "step_ms"
            case tokensPerS = "tokens_per_s"
            case idleFraction = "idle_fraction"
            case measuredBubble = "measured_bubble"
            case bottleneckBubble = "bottleneck_bubble"
            case stageComputeMs = "stage_compute_ms"
            case stageImbalance = "stage_imbalance"
            case theoreticalBubble = "theoretical_bubble"
        }
    }

    /// The bubble benchmark: one pipeline over the job's devices, at several microbatch counts.
    public struct BubbleResult: Codable, Sendable {
        public var job: String
        /// Each stage's planning layers, `first..<end` as [first, end].
        public var stages: [[Int]]
        public var rows: [BubbleRow]
        public var steps: Int
        public var skip: Int
    }

    /// Runs `spec`'s devices as ONE pipeline (device i is stage i; `cuts` are the first planning
    /// layer of stages 1, 2, …) with each microbatch count in `microbatches` (each must divide
    /// the global batch) and each schedule slack in `slacks` (nil: the job's
    /// `train.pipeline_slack`), and compares the measured bubble with 1F1B's (p − 1)/(m + p − 1).
    public static func bubble(
        spec: JobSpec, cuts: [Int], microbatches: [Int], slacks: [Int]? = nil, setup: Setup, progress: (String) -> Void
    ) throws -> BubbleResult {
        let p = spec.rankCount
        let layers = spec.model.layers + 2
        let bounds = [0] + cuts + [layers]
        guard cuts.count == p - 1, zip(bounds, bounds.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw MedleyError(
                .invalidArgument,
                "--cuts: \(p) devices need \(p - 1) increasing cut points strictly inside 0..<\(layers), got \(cuts)")
        }
        let ranges = zip(bounds, bounds.dropFirst()).map { $0..<$1 }
        var rows: [BubbleRow] = []
        for slack in slacks ?? [spec.train.pipelineSlack] {
            guard slack >= 0 && slack <= Plan.maxSlack else {
                throw MedleyError(.invalidArgument, "--slack: \(slack) is outside 0...\(Plan.maxSlack)")
            }
            for m in microbatches {
                guard m >= 1, spec.model.globalBatch % m == 0 else {
                    throw MedleyError(.invalidArgument, "--microbatches: \(m) does not divide the global batch \(spec.model.globalBatch)")
                }
                let plan = Plan.manual(
                    globalBatch: spec.model.globalBatch, microbatchSize: spec.model.globalBatch / m,
                    replicas: [(spec.model.globalBatch, ranges.enumerated().map { ($0.offset, $0.element) })], slack: slack)
                let records = try runPlan(spec, plan: plan, setup: setup)
                let timed = Array(records.dropFirst(setup.skip))
                let idle = (0..<p).map { r in
                    median(timed.map { 1 - $0.computeMs[r] / max($0.pipelineMs?.max() ?? 0, 1e-9) })
                }
                let compute = (0..<p).map { r in median(timed.map { $0.computeMs[r] }) }
                let busiest = compute.indices.max { compute[$0] < compute[$1] }!
                let row = BubbleRow(
                    microbatches: m, microbatchSize: spec.model.globalBatch / m, slack: slack, stepMs: median(timed.map(\.stepMs)),
                    tokensPerS: median(timed.map(\.tokensPerS)), idleFraction: idle,
                    measuredBubble: idle.reduce(0, +) / Double(p), bottleneckBubble: idle[busiest], stageComputeMs: compute,
                    stageImbalance: compute[busiest] / (compute.reduce(0, +) / Double(p)),
                    theoreticalBubble: Double(p - 1) / Double(m + p - 1))
                progress(String(format: "slack %d, m = %d: bubble %.3f (mean of stages), %.3f (busiest stage), %.3f in theory; step %.1f ms",
                                slack, m, row.measuredBubble, row.bottleneckBubble, row.theoreticalBubble, row.stepMs))
                rows.append(row)
            }
        }
        return BubbleResult(job: spec.name, stages: ranges.map { [$0.lowerBound, $0.upperBound] }, rows: rows,
                            steps: setup.steps, skip: setup.skip)
    }

    /// The planner's prediction against a run of its plan.
    public struct PredictionResult: Codable, Sendable {
        public var job: String
        public var plan: Plan
        public var predictedStepMs: Double
        public var measuredStepMs: Double
        /// measured ÷ predicted.
        public var ratio: Double
        public var steps: Int
        public var skip: Int

        enum CodingKeys: String, CodingKey {
            case job, plan, ratio, steps, skip
            case predictedStepMs = "predicted_step_ms"
            case measuredStepMs = "measured_step_ms"
        }
    }

    /// Runs `plan` on `spec` and compares the median step time with the plan's prediction.
    public static func prediction(spec: JobSpec, plan: Plan, setup: Setup) throws -> PredictionResult {
        let records = try runPlan(spec, plan: plan, setup: setup)
        let measured = median(records.dropFirst(setup.skip).map(\.stepMs))
        let predicted = plan.prediction.stepMs
        return PredictionResult(
            job: spec.name, plan: plan, predictedStepMs: predicted, measuredStepMs: measured,
            ratio: predicted > 0 ? measured / predicted : .nan, steps: setup.steps, skip: setup.skip)
    }

    /// Trains `spec` with `plan` (written to a temporary plan file) and returns its records.
    static func runPlan(_ spec: JobSpec, plan: Plan, setup: Setup) throws -> [StepRecord] {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("medley-bench-plan-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("plan.json")
        try plan.jsonData().write(to: file, options: .atomic)
        var job = spec
        job.plan = file.path
        job.train.evalEvery = 0
        return try run(job, steps: setup.steps, schedule: SharesSchedule(), setup: setup)
    }
}
