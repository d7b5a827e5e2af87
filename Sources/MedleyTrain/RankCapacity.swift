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

    /// The model shape a rank builds: the job's model with `batch` = the rank's largest share.
    public static func modelConfig(_ model: JobSpec.Model, batch: Int) -> ModelConfig {
        ModelConfig(layers: model.layers, dim: model.dim, heads: model.heads, seq: model.seq, batch: batch, vocab: model.vocab)
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
        let available = Int(clamping: memoryBytes) - fixed - headroomBytes - Int(clamping: memoryBytes / 100)
        guard available > 0, perSequence > 0 else { return 0 }
        return min(available / perSequence, model.batch)
    }

    /// One line explaining a device that cannot hold even one sequence.
    public static func tooSmall(label: String, memoryBytes: UInt64, model: JobSpec.Model) -> String {
        let (fixed, perSequence) = GPT.memoryModel(config: modelConfig(model, batch: 1))
        let need = fixed + perSequence + headroomBytes
        return "\(label) has \(ByteCount.describe(memoryBytes)) of memory but the model needs \(ByteCount.describe(UInt64(need))) for one sequence (\(ByteCount.describe(UInt64(fixed))) fixed + \(ByteCount.describe(UInt64(perSequence))) per sequence); give it more memory or shrink the model"
    }
}
