import Foundation

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
/// adopted only when all of these hold, so shares do not wander on a shared host's noise:
///
/// 1. they differ from the shares in force;
/// 2. the predicted step time (the slowest rank's `share / throughput`) drops by more than
///    ``Configuration/minimumImprovement`` (hysteresis);
/// 3. the drop is larger than the measurement's noise: each rank's estimate carries the standard
///    error of a median of n samples, `1.2533 · σ / √n`, with the rank's relative spread σ from the
///    median absolute deviation (`1.4826 · MAD / median`, robust to a hiccup) pooled (root mean
///    square) over its last ``noiseWindows`` windows, since five samples alone guess it poorly.
///    The proposal must still win when every estimate is moved ``Configuration/noiseMultiplier``
///    standard errors against it: the current shares timed with every rank that much faster, the
///    proposed ones with every rank that much slower. (Checking only the bottleneck's error is not
///    enough: choosing the best division for noisy estimates finds an apparent gain of a few
///    standard errors in pure noise, and shares wandered 8/4/2 → 9/3/2 → 7/5/2.)
/// 4. with ``Configuration/totalSteps`` known, the drop over the steps left repays
///    ``Configuration/changeCostMilliseconds`` (by default one step at the current shares).
///
/// Every window's decision and its reason are kept in ``lastDecision`` (and a change's in
/// ``Reshard/reason``), so a log can say why shares moved or stayed.
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
        /// How many standard errors each estimate is moved against a proposal before it must still
        /// win (2: each estimate about 95 % sure); 0 ignores the noise.
        public var noiseMultiplier: Double
        /// The steps the run has in all (steps are numbered up to it), or nil when unknown: then
        /// no change has to pay for itself.
        public var totalSteps: Int?
        /// What a change of shares costs, in milliseconds (the step after a re-division runs on
        /// cold buffers and a new data slice); nil: one predicted step at the current shares.
        public var changeCostMilliseconds: Double?

        /// A configuration; see the properties for the meaning of each value.
        public init(
            globalBatch: Int, every: Int, minimumImprovement: Double = 0.02, caps: [Int?] = [], labels: [String] = [],
            noiseMultiplier: Double = 2, totalSteps: Int? = nil, changeCostMilliseconds: Double? = nil
        ) {
            self.globalBatch = globalBatch
            self.every = every
            self.minimumImprovement = minimumImprovement
            self.caps = caps
            self.labels = labels
            self.noiseMultiplier = noiseMultiplier
            self.totalSteps = totalSteps
            self.changeCostMilliseconds = changeCostMilliseconds
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
        /// The part of the predicted drop `previousStepMilliseconds - stepMilliseconds` the
        /// measurement's noise could explain (the drop exceeded it).
        public var noiseMilliseconds: Double = 0
        /// Why the change was made, in one line (the drop, its noise, the payback).
        public var reason: String = ""
    }

    /// One window's decision: whether the shares changed and why.
    public struct Decision: Sendable, Equatable {
        /// The step that closed the window.
        public var step: Int
        /// Whether new shares were adopted.
        public var changed: Bool
        /// The shares the estimates call for (equal to the ones in force when nothing better exists).
        public var proposedShares: [Int]
        /// Predicted compute milliseconds of a step under the shares in force before the decision.
        public var currentStepMilliseconds: Double
        /// Predicted compute milliseconds of a step under ``proposedShares``.
        public var proposedStepMilliseconds: Double
        /// The part of the predicted drop the measurement's noise could explain: the current
        /// shares' time with every estimate ``Configuration/noiseMultiplier`` standard errors
        /// faster subtracted from the nominal, plus the proposal's with every one that much
        /// slower less the nominal.
        public var noiseMilliseconds: Double
        /// One line: why the shares changed or stayed.
        public var reason: String
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
    /// Per rank, the relative standard error of its estimate (0 until a window gave it 2 samples).
    public private(set) var relativeErrors: [Double]
    /// Per rank, the relative spreads (σ / median) of its last ``noiseWindows`` windows.
    private var spreads: [[Double]]
    /// Windows a rank's relative spread is pooled over.
    public static let noiseWindows = 8
    /// The decision of the last window closed, nil before the first.
    public private(set) var lastDecision: Decision?

    private var window: [[Double]]
    private var stepsInWindow = 0

    /// A rebalancer starting from `shares`, with optional initial throughput estimates (samples per second).
    ///
    /// Throws `invalidArgument` when the shares do not sum to the global batch, a share is negative,
    /// `every` is negative, `minimumImprovement` is outside [0, 1), `noiseMultiplier` or
    /// `changeCostMilliseconds` is negative or not finite, `totalSteps` is negative, or list
    /// lengths differ.
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
        guard configuration.noiseMultiplier.isFinite, configuration.noiseMultiplier >= 0 else {
            throw MedleyError(
                .invalidArgument, "noise multiplier must be a finite number of 0 or more, got \(configuration.noiseMultiplier)")
        }
        if let cost = configuration.changeCostMilliseconds, !(cost.isFinite && cost >= 0) {
            throw MedleyError(.invalidArgument, "change cost must be a finite number of milliseconds, 0 or more, got \(cost)")
        }
        if let total = configuration.totalSteps, total < 0 {
            throw MedleyError(.invalidArgument, "total steps must be at least 0, got \(total)")
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
        self.relativeErrors = Array(repeating: 0, count: ranks)
        self.spreads = Array(repeating: [], count: ranks)
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
            let median = Self.median(window[rank])
            throughputs[rank] = median
            if window[rank].count >= 2 {
                spreads[rank].append(Self.relativeSpread(window[rank]))
                if spreads[rank].count > Self.noiseWindows { spreads[rank].removeFirst() }
                let pooled = (spreads[rank].reduce(0) { $0 + $1 * $1 } / Double(spreads[rank].count)).squareRoot()
                relativeErrors[rank] = 1.2533 * pooled / Double(window[rank].count).squareRoot()
            }
        }
        window = Array(repeating: [], count: shares.count)
        stepsInWindow = 0

        let known = throughputs.compactMap { $0 }
        guard let slowest = known.min() else { return .keep }
        let estimates = throughputs.map { $0 ?? slowest }
        let proposed = try ShareAllocator.shares(
            globalBatch: configuration.globalBatch, throughputs: estimates, caps: configuration.caps,
            labels: configuration.labels)
        let before = ShareAllocator.predictedStepTime(shares: shares, throughputs: estimates) * 1000
        let after = ShareAllocator.predictedStepTime(shares: proposed, throughputs: estimates) * 1000
        let noise = Self.noise(
            current: shares, proposed: proposed, throughputs: estimates, relativeErrors: relativeErrors,
            multiplier: configuration.noiseMultiplier)
        let verdict = Self.judge(
            before: before, after: after, noise: noise, unchanged: proposed == shares, step: step,
            configuration: configuration)
        lastDecision = Decision(
            step: step, changed: verdict.change, proposedShares: proposed, currentStepMilliseconds: before,
            proposedStepMilliseconds: after, noiseMilliseconds: noise, reason: verdict.reason)
        guard verdict.change else { return .keep }
        let reshard = Reshard(
            step: step, previousShares: shares, shares: proposed, throughputs: estimates,
            previousStepMilliseconds: before, stepMilliseconds: after, noiseMilliseconds: noise,
            reason: verdict.reason)
        shares = proposed
        return .reshard(reshard)
    }

    /// How much of a predicted drop from `current` to `proposed` shares the noise could explain,
    /// in milliseconds: `(T(current) − T(current, every rank k·SE faster)) + (T(proposed, every rank
    /// k·SE slower) − T(proposed))`, with `T` the predicted step time, SE each rank's
    /// `relativeErrors` and k the `multiplier`. A drop larger than this survives every estimate
    /// moved k standard errors against the change.
    public static func noise(
        current: [Int], proposed: [Int], throughputs: [Double], relativeErrors: [Double], multiplier: Double
    ) -> Double {
        func time(_ shares: [Int], _ sign: Double) -> Double {
            let moved = throughputs.indices.map { throughputs[$0] * max(0.05, 1 + sign * multiplier * relativeErrors[$0]) }
            return ShareAllocator.predictedStepTime(shares: shares, throughputs: moved) * 1000
        }
        let before = ShareAllocator.predictedStepTime(shares: current, throughputs: throughputs) * 1000
        let after = ShareAllocator.predictedStepTime(shares: proposed, throughputs: throughputs) * 1000
        return (before - time(current, 1)) + (time(proposed, -1) - after)
    }

    /// Whether a proposal that predicts `after` ms against `before` ms (of which drop `noise` ms
    /// could be the measurement's noise, see ``noise(current:proposed:throughputs:relativeErrors:multiplier:)``)
    /// is worth adopting after `step`, and why, in one line: the pure rule the type's summary
    /// lists, shared with anything else that must decide the same way (the train benchmark's
    /// settled shares).
    public static func judge(
        before: Double, after: Double, noise: Double, unchanged: Bool, step: Int, configuration: Configuration
    ) -> (change: Bool, reason: String) {
        if unchanged { return (false, "the measured speeds call for the shares in force") }
        let drop = before - after
        let percent = before > 0 ? drop / before * 100 : 0
        let predicted = String(format: "predicted step %.1f -> %.1f ms (%+.1f %%)", before, after, -percent)
        if !(after < before * (1 - configuration.minimumImprovement)) {
            return (
                false,
                predicted
                    + String(format: ": under the %.0f %% worth re-dividing for", configuration.minimumImprovement * 100)
            )
        }
        if drop <= noise {
            return (
                false,
                predicted
                    + String(
                        format: ": within the measurement's noise (%.1f ms at %g standard errors)", noise,
                        configuration.noiseMultiplier)
            )
        }
        var reason =
            predicted
            + String(format: ", beyond the noise (%.1f ms) and the %.0f %% minimum", noise, configuration.minimumImprovement * 100)
        if let total = configuration.totalSteps {
            let remaining = max(0, total - step)
            let cost = configuration.changeCostMilliseconds ?? before
            let gain = drop * Double(remaining)
            if gain <= cost {
                return (
                    false,
                    predicted
                        + String(
                            format: ": %.1f ms over the %d steps left does not repay the change (%.1f ms)", gain, remaining,
                            cost)
                )
            }
            reason += String(format: "; repays the change (%.1f ms) with %.1f ms over %d steps left", cost, gain, remaining)
        }
        return (true, reason)
    }

    /// The standard error of the median of `values` (at least 2), from their median absolute
    /// deviation: a normal spread's σ is `1.4826 · MAD`, and a median of n samples is off by about
    /// `1.2533 · σ / √n`. Robust to a one-step hiccup, which a standard deviation is not.
    public static func standardErrorOfMedian(_ values: [Double]) -> Double {
        guard values.count >= 2 else { return 0 }
        let center = median(values)
        let mad = median(values.map { abs($0 - center) })
        return 1.2533 * 1.4826 * mad / Double(values.count).squareRoot()
    }

    /// The relative spread of `values` (at least 2, median above 0): `1.4826 · MAD / median`.
    static func relativeSpread(_ values: [Double]) -> Double {
        let center = median(values)
        guard center > 0 else { return 0 }
        return 1.4826 * median(values.map { abs($0 - center) }) / center
    }

    /// How a rank is named in messages.
    private func name(_ rank: Int) -> String {
        configuration.labels.isEmpty ? "rank \(rank)" : "rank \(rank) \(configuration.labels[rank])"
    }

    /// The median of a non-empty list (mean of the middle two for an even count).
    public static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}
