import Foundation

/// The learning rate of every step: a pure function of the step number.
///
/// Both kinds start with a linear warmup: step `s < warmupSteps` (steps count from 0) uses
/// `peak · (s + 1) / warmupSteps`. After it:
/// - `constant` stays at `peak`;
/// - `cosine` falls from `peak` to `minimum` along half a cosine over the remaining
///   `totalSteps − warmupSteps` steps, and stays at `minimum` from `totalSteps` on.
public struct LearningRateSchedule: Sendable, Equatable {
    /// The shape after warmup.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// The peak rate throughout.
        case constant
        /// Half a cosine from the peak rate down to the minimum.
        case cosine
    }

    /// The shape after warmup.
    public var kind: Kind
    /// The rate at the end of warmup (the job's `lr`).
    public var peak: Double
    /// The rate a cosine schedule ends at (the job's `min_lr`).
    public var minimum: Double
    /// Steps of linear warmup (0 = none).
    public var warmupSteps: Int
    /// Steps in the run.
    public var totalSteps: Int

    /// A schedule; see the properties for the meaning of each value.
    public init(kind: Kind, peak: Double, minimum: Double = 0, warmupSteps: Int = 0, totalSteps: Int) {
        self.kind = kind
        self.peak = peak
        self.minimum = minimum
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    /// The learning rate of step `step` (0-based).
    public func rate(atStep step: Int) -> Double {
        if step < warmupSteps {
            return peak * Double(max(step, 0) + 1) / Double(warmupSteps)
        }
        switch kind {
        case .constant:
            return peak
        case .cosine:
            let decaySteps = max(totalSteps - warmupSteps, 1)
            let progress = min(Double(step - warmupSteps) / Double(decaySteps), 1)
            return minimum + 0.5 * (1 + cos(Double.pi * progress)) * (peak - minimum)
        }
    }
}
