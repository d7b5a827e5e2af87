import MedleyCore
import MedleyModel

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
        return "\(label) has \(Bytes.format(memoryBytes)) of memory but the model needs \(Bytes.format(UInt64(need))) for one sequence (\(Bytes.format(UInt64(fixed))) fixed + \(Bytes.format(UInt64(perSequence))) per sequence); give it more memory or shrink the model"
    }
}

/// Byte counts for people.
enum Bytes {
    static func format(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: value < 10 ? "%.2f" : "%.1f", value) + " " + units[unit]
    }
}
