import MedleyCore
import MedleyModel
import MedleyPlanner

/// How many sequences of a global batch fit in one device's memory.
///
/// The model on a rank allocates a fixed part (parameters, gradients, both AdamW moments)
/// and a part per sequence of its largest share (activations, their gradients, tokens and
/// targets); see `GPT.memoryModel(config:)`. A rank is built for the most sequences it may
/// ever be given, `min(capacity, global batch)`, so re-dividing the batch never allocates.
public enum RankCapacity {
    /// Bytes kept free on every device for what the model does not count (alignment, scratch).
    public static let headroomBytes = 1 << 20

    /// The model a rank builds: the job's shape, sized for passes of `batch` sequences (the
    /// rank's largest share, or the plan's microbatch).
    public static func modelConfig(_ model: JobSpec.Model, batch: Int) -> ModelConfig {
        ModelConfig(model.shape, maxBatch: batch)
    }

    /// Device bytes a stage of `plan` holding `layers` allocates with `inFlight` microbatches
    /// of activations (``GPT/deviceBytes(config:stage:activationSequences:)``).
    public static func stageBytes(_ model: JobSpec.Model, plan: Plan, layers: Range<Int>, inFlight: Int) -> Int {
        GPT.deviceBytes(
            config: modelConfig(model, batch: plan.microbatchSize), stage: layers, activationSequences: plan.microbatchSize * inFlight)
    }

    /// The most sequences a device with `memoryBytes` can hold, at most the global batch; 0 when
    /// not even the fixed part fits.
    public static func sequences(memoryBytes: UInt64, model: JobSpec.Model) -> Int {
        let (fixed, perSequence) = GPT.memoryModel(config: modelConfig(model, batch: 1))
        let memory = Int(clamping: memoryBytes)
        let reserved = fixed.saturatingAdd(headroomBytes).saturatingAdd(memory / 100)
        guard perSequence > 0, reserved < memory else { return 0 }
        return min((memory - reserved) / perSequence, model.globalBatch)
    }

    /// One line explaining a device that cannot hold even one sequence.
    public static func tooSmall(label: String, memoryBytes: UInt64, model: JobSpec.Model) -> String {
        let (fixed, perSequence) = GPT.memoryModel(config: modelConfig(model, batch: 1))
        let need = fixed.saturatingAdd(perSequence).saturatingAdd(headroomBytes)
        return "\(label) has \(ByteCount.describe(memoryBytes)) of memory but the model needs \(ByteCount.describe(UInt64(need))) for one sequence (\(ByteCount.describe(UInt64(fixed))) fixed + \(ByteCount.describe(UInt64(perSequence))) per sequence); give it more memory or shrink the model"
    }
}

extension Int {
    /// `self + other`, or `Int.max` where that overflows (a size too large for any device).
    func saturatingAdd(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? Int.max : Int.min) : sum
    }
}
