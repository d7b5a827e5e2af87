import MedleyCore

/// How a job runs: data-parallel replicas, each a pipeline of stages holding
/// contiguous ranges of planning layers (see ``ModelCost``) on chosen devices.
/// Replicas need not be alike.
public struct Plan: Codable, Sendable, Hashable {
    /// One pipeline stage: a device and the planning layers it holds.
    public struct Stage: Codable, Sendable, Hashable {
        /// Index of the device in the inventory (its rank in the job).
        public var device: Int
        /// The device's chip type key (``DeviceProfile/chip``).
        public var chip: String
        /// First planning layer held (0 = embedding).
        public var firstLayer: Int
        /// One past the last planning layer held.
        public var endLayer: Int
        /// Predicted forward and backward milliseconds for one microbatch, the
        /// backward including the send of the activation gradient to the previous
        /// stage, the forward the send of its output to the next.
        public var forwardMs: Double
        public var backwardMs: Double
        /// Predicted device bytes used at peak, and what is left of the device's memory.
        public var memoryBytes: Int
        public var freeBytes: Int

        public var layers: Range<Int> { firstLayer..<endLayer }

        public init(
            device: Int, chip: String, firstLayer: Int, endLayer: Int, forwardMs: Double, backwardMs: Double,
            memoryBytes: Int, freeBytes: Int
        ) {
            self.device = device
            self.chip = chip
            self.firstLayer = firstLayer
            self.endLayer = endLayer
            self.forwardMs = forwardMs
            self.backwardMs = backwardMs
            self.memoryBytes = memoryBytes
            self.freeBytes = freeBytes
        }
    }

    /// One pipeline replica.
    public struct Replica: Codable, Sendable, Hashable {
        public var stages: [Stage]
        /// Sequences of each global batch this replica trains on.
        public var samples: Int
        /// Microbatches its samples are cut into (1F1B needs at least as many as stages to fill the pipe).
        public var microbatches: Int

        public init(stages: [Stage], samples: Int, microbatches: Int) {
            self.stages = stages
            self.samples = samples
            self.microbatches = microbatches
        }
    }

    /// A device the plan does not use, and why.
    public struct LeftOut: Codable, Sendable, Hashable {
        public var device: Int
        public var chip: String
        public var reason: String

        public init(device: Int, chip: String, reason: String) {
            self.device = device
            self.chip = chip
            self.reason = reason
        }
    }

    /// What the plan is predicted to achieve.
    public struct Prediction: Codable, Sendable, Hashable {
        /// One training step: the slowest replica's pipeline time plus the gradient exchange and the optimizer.
        public var stepMs: Double
        public var computeMs: Double
        public var exchangeMs: Double
        public var optimizerMs: Double
        /// The slowest replica's pipeline bubble as a fraction of its pipeline time.
        public var bubbleFraction: Double
        public var tokensPerSecond: Double
        /// Σ over chip types of what that type's devices would train alone (homogeneous).
        public var homogeneousTokensPerSecond: Double
        /// tokensPerSecond ÷ homogeneousTokensPerSecond.
        public var efficiency: Double

        public init(
            stepMs: Double, computeMs: Double, exchangeMs: Double, optimizerMs: Double, bubbleFraction: Double,
            tokensPerSecond: Double, homogeneousTokensPerSecond: Double, efficiency: Double
        ) {
            self.stepMs = stepMs
            self.computeMs = computeMs
            self.exchangeMs = exchangeMs
            self.optimizerMs = optimizerMs
            self.bubbleFraction = bubbleFraction
            self.tokensPerSecond = tokensPerSecond
            self.homogeneousTokensPerSecond = homogeneousTokensPerSecond
            self.efficiency = efficiency
        }
    }

    /// Always "1F1B" for now.
    public var schedule: String
    /// Extra microbatches each stage runs ahead of the next one, beyond what 1F1B needs
    /// (see ``inFlight(stagesAfter:microbatches:slack:)``). 0 is textbook 1F1B, where every hand-over
    /// between neighbours is on the critical path and any jitter in one stage stalls the
    /// other; 1 gives every link one microbatch of slack for one more microbatch of
    /// activations held. A plan file without it is plain 1F1B (0).
    public var slack: Int
    /// Sequences per global batch and per microbatch.
    public var globalBatch: Int
    public var microbatchSize: Int
    public var replicas: [Replica]
    public var leftOut: [LeftOut]
    public var prediction: Prediction

    public init(
        schedule: String = "1F1B", slack: Int = Plan.defaultSlack, globalBatch: Int, microbatchSize: Int, replicas: [Replica],
        leftOut: [LeftOut], prediction: Prediction
    ) {
        self.schedule = schedule
        self.slack = slack
        self.globalBatch = globalBatch
        self.microbatchSize = microbatchSize
        self.replicas = replicas
        self.leftOut = leftOut
        self.prediction = prediction
    }

    /// The slack plans get unless a job asks otherwise (`train.pipeline_slack`).
    public static let defaultSlack = JobSpec.Training.defaultPipelineSlack
    /// The most slack a plan may ask for.
    public static let maxSlack = JobSpec.Training.maxPipelineSlack

    /// Microbatches a stage keeps in flight when `stagesAfter` stages follow it in its pipeline
    /// and it runs `microbatches` of them: r·(1 + slack) + 1 for r stages after it, at most m.
    /// It depends only on the stages after, not on the depth (the planner's searches rely on that).
    public static func inFlight(stagesAfter r: Int, microbatches m: Int, slack: Int) -> Int {
        max(1, min(r * (1 + slack) + 1, m))
    }

    /// Forwards a stage runs before its first backward: every microbatch it keeps in flight but one.
    public static func warmupForwards(stagesAfter r: Int, microbatches m: Int, slack: Int) -> Int {
        min(r * (1 + slack), m)
    }

    enum CodingKeys: String, CodingKey {
        case schedule, slack, globalBatch, microbatchSize, replicas, leftOut, prediction
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schedule = try c.decode(String.self, forKey: .schedule)
        slack = try c.decodeIfPresent(Int.self, forKey: .slack) ?? 0
        globalBatch = try c.decode(Int.self, forKey: .globalBatch)
        microbatchSize = try c.decode(Int.self, forKey: .microbatchSize)
        replicas = try c.decode([Replica].self, forKey: .replicas)
        leftOut = try c.decode([LeftOut].self, forKey: .leftOut)
        prediction = try c.decode(Prediction.self, forKey: .prediction)
    }
}
