/// Re-divides the global batch while a job runs, so a chip that slows down mid-run gets
/// less work without a restart.
///
/// A pure state machine: the worker feeds it each step's measurements (``record(step:measurements:)``)
/// and gets back a ``Directive``; it reads no clock and sends nothing. Every rank must feed it the
/// same measurements (gathered from all ranks) so every rank reaches the same directive.
///
/// Measurements are collected in windows of ``Configuration/every`` steps. At the end of a window
/// each rank's throughput estimate becomes the **median** of its per-step throughputs
/// (`samples / compute time`) in the window; the median ignores a one-step hiccup, and a rank
/// whose speed changed is fully re-estimated after one window in which it ran slow for more than
/// half the steps. Then ``ShareAllocator`` divides the batch by the estimates, and the new shares are
/// adopted only if they differ and the predicted step time (the slowest rank's
/// `share / throughput`) drops by more than ``Configuration/minimumImprovement``: hysteresis, so
/// shares do not flap on noise.
///
/// A rank with no samples in a window keeps its previous estimate. A rank never measured (share 0
/// from the start, no initial estimate) is assumed as fast as the slowest measured rank.
public struct Rebalancer: Sendable, Equatable {
    /// How often and how eagerly to re-divide.
    public struct Configuration: Sendable, Equatable {
        /// Samples (sequences) in the global batch.
        public var globalBatch: Int
        /// Steps per measurement window; shares may change only at the end of one. 0 = never.
        public var every: Int
        /// The least relative drop in predicted step time worth a re-division (0.02 = 2 %).
        public var minimumImprovement: Double
        /// Per rank, the most samples it can hold, or `nil` for no limit; empty means no caps.
        public var caps: [Int?]
        /// Per rank, a short name used in messages; empty for none.
        public var labels: [String]

        /// A configuration; see the properties for the meaning of each value.
        public init(
            globalBatch: Int, every: Int, minimumImprovement: Double = 0.02, caps: [Int?] = [], labels: [String] = []
        ) {
            self.globalBatch = globalBatch
            self.every = every
            self.minimumImprovement = minimumImprovement
            self.caps = caps
            self.labels = labels
        }
    }

    /// What one rank did in one step.
    public struct StepMeasurement: Sendable, Equatable {
        /// Milliseconds the rank spent computing its slice (forward and backward, not waiting on others).
        public var computeMilliseconds: Double
        /// Samples (sequences) in its slice.
        public var samples: Int

        /// A measurement of `samples` sequences computed in `computeMilliseconds`.
        public init(computeMilliseconds: Double, samples: Int) {
            self.computeMilliseconds = computeMilliseconds
            self.samples = samples
        }
    }

    /// A change of shares, with the numbers that justified it.
    public struct Reshard: Sendable, Equatable {
        /// The step whose measurement closed the window; the new shares apply from the next step.
        public var step: Int
        /// The shares in force until now.
        public var previousShares: [Int]
        /// The shares to use from step `step + 1`.
        public var shares: [Int]
        /// Estimated samples per second of each rank.
        public var throughputs: [Double]
        /// Predicted compute milliseconds of a step under the previous shares.
        public var previousStepMilliseconds: Double
        /// Predicted compute milliseconds of a step under the new shares.
        public var stepMilliseconds: Double
    }

    /// What the worker should do after a step.
    public enum Directive: Sendable, Equatable {
        /// Keep the current shares.
        case keep
        /// Use new shares from the next step on.
        case reshard(Reshard)
    }

    /// The configuration this rebalancer runs with.
    public let configuration: Configuration
    /// The shares currently in force.
    public private(set) var shares: [Int]
    /// Per rank, the estimated samples per second, or `nil` before the rank was first measured.
    public private(set) var throughputs: [Double?]

    private var window: [[Double]]
    private var stepsInWindow = 0

    /// A rebalancer starting from `shares`, with optional initial throughput estimates (samples per second).
    ///
    /// Throws `invalidArgument` when the shares do not sum to the global batch, a share is negative,
    /// `every` is negative, `minimumImprovement` is outside [0, 1), or list lengths differ.
    public init(configuration: Configuration, shares: [Int], throughputs: [Double]? = nil) throws {
        let ranks = shares.count
        guard ranks > 0 else { throw MedleyError(.invalidArgument, "a rebalancer needs at least one rank") }
        guard shares.allSatisfy({ $0 >= 0 }), shares.reduce(0, +) == configuration.globalBatch else {
            throw MedleyError(
                .invalidArgument,
                "shares \(shares) must be at least 0 each and sum to the global batch \(configuration.globalBatch)"
            )
        }
        guard configuration.every >= 0 else {
            throw MedleyError(
                .invalidArgument, "rebalance interval must be at least 0 (0 = never), got \(configuration.every)")
        }
        guard configuration.minimumImprovement >= 0, configuration.minimumImprovement < 1 else {
            throw MedleyError(
                .invalidArgument,
                "minimum improvement must be in [0, 1), got \(configuration.minimumImprovement)")
        }
        guard configuration.caps.isEmpty || configuration.caps.count == ranks,
            configuration.labels.isEmpty || configuration.labels.count == ranks
        else {
            throw MedleyError(.invalidArgument, "caps and labels must list all \(ranks) ranks or none")
        }
        if let throughputs {
            guard throughputs.count == ranks, throughputs.allSatisfy({ $0.isFinite && $0 > 0 }) else {
                throw MedleyError(
                    .invalidArgument,
                    "initial throughputs \(throughputs) must be \(ranks) finite numbers greater than 0")
            }
        }
        self.configuration = configuration
        self.shares = shares
        self.throughputs = throughputs.map { $0.map(Optional.some) } ?? Array(repeating: nil, count: ranks)
        self.window = Array(repeating: [], count: ranks)
    }

    /// Records one step's measurements (one per rank, in rank order) and says whether to re-divide.
    ///
    /// Throws `invalidArgument` for a wrong number of measurements, a negative sample count, or a
    /// rank with samples whose compute time is not a finite positive number; the state is then
    /// unchanged.
    public mutating func record(step: Int, measurements: [StepMeasurement]) throws -> Directive {
        guard measurements.count == shares.count else {
            throw MedleyError(
                .invalidArgument, "step \(step): \(measurements.count) measurements for \(shares.count) ranks")
        }
        for (rank, m) in measurements.enumerated() {
            guard m.samples >= 0 else {
                throw MedleyError(.invalidArgument, "step \(step): \(name(rank)) reports \(m.samples) samples")
            }
            if m.samples > 0, !(m.computeMilliseconds.isFinite && m.computeMilliseconds > 0) {
                throw MedleyError(
                    .invalidArgument,
                    "step \(step): \(name(rank)) reports \(m.computeMilliseconds) ms for \(m.samples) samples; a compute time must be a finite number greater than 0"
                )
            }
        }
        guard configuration.every > 0 else { return .keep }
        for (rank, m) in measurements.enumerated() where m.samples > 0 {
            window[rank].append(Double(m.samples) * 1000 / m.computeMilliseconds)
        }
        stepsInWindow += 1
        guard stepsInWindow >= configuration.every else { return .keep }
        return try closeWindow(step: step)
    }

    /// Ends the window: updates the estimates and decides.
    private mutating func closeWindow(step: Int) throws -> Directive {
        for rank in window.indices where !window[rank].isEmpty {
            throughputs[rank] = Self.median(window[rank])
        }
        window = Array(repeating: [], count: shares.count)
        stepsInWindow = 0

        let known = throughputs.compactMap { $0 }
        guard let slowest = known.min() else { return .keep }
        let estimates = throughputs.map { $0 ?? slowest }
        let proposed = try ShareAllocator.shares(
            globalBatch: configuration.globalBatch, throughputs: estimates, caps: configuration.caps,
            labels: configuration.labels)
        guard proposed != shares else { return .keep }
        let before = ShareAllocator.predictedStepTime(shares: shares, throughputs: estimates) * 1000
        let after = ShareAllocator.predictedStepTime(shares: proposed, throughputs: estimates) * 1000
        guard after < before * (1 - configuration.minimumImprovement) else { return .keep }
        let reshard = Reshard(
            step: step, previousShares: shares, shares: proposed, throughputs: estimates,
            previousStepMilliseconds: before, stepMilliseconds: after)
        shares = proposed
        return .reshard(reshard)
    }

    /// How a rank is named in messages.
    private func name(_ rank: Int) -> String {
        configuration.labels.isEmpty ? "rank \(rank)" : "rank \(rank) \(configuration.labels[rank])"
    }

    /// The median of a non-empty list (mean of the middle two for an even count).
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}
