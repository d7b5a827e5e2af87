import MedleyCore

/// A GPT built on one device: a ``ModelShape`` and the most sequences one pass takes there.
///
/// `seq` is both the number of learned positions (`wpe` rows) and the sequence length
/// activations are sized for; `maxBatch` is the largest batch a forward pass takes
/// (activations are allocated for it): a rank's largest share of the global batch, or a
/// pipeline's microbatch, never the global batch itself (that is ``JobSpec/Model/globalBatch``).
public struct ModelConfig: ShapedModel, Sendable, Hashable, Codable, CustomStringConvertible {
    /// The architecture (read straight through: `config.dim`).
    public var shape: ModelShape
    /// The most sequences one pass on this model takes (B).
    public var maxBatch: Int

    /// Creates a configuration (not validated: call `validate()` or let `GPT` do it).
    public init(layers: Int, dim: Int, heads: Int, seq: Int, maxBatch: Int, vocab: Int = 256) {
        shape = ModelShape(layers: layers, dim: dim, heads: heads, seq: seq, vocab: vocab)
        self.maxBatch = maxBatch
    }

    /// A model of `shape` sized for passes of up to `maxBatch` sequences.
    public init(_ shape: ModelShape, maxBatch: Int) {
        self.shape = shape
        self.maxBatch = maxBatch
    }

    // Flat in JSON: layers, dim, heads, seq, batch, vocab (as benchmark reports have always written it).
    public init(from decoder: Decoder) throws {
        (shape, maxBatch) = try ModelShape.decodeFlat(from: decoder)
    }

    public func encode(to encoder: Encoder) throws {
        try shape.encodeFlat(batch: maxBatch, to: encoder)
    }

    /// The small default model: 4 layers, 128 channels, 4 heads, 64 positions, batch 8, 256 tokens.
    public static let `default` = ModelConfig(layers: 4, dim: 128, heads: 4, seq: 64, maxBatch: 8)

    /// Throws a `MedleyError(.invalidArgument)` naming the first problem, if any: a size below
    /// 1, heads that do not divide dim, or a tensor past 2^31 elements (checked arithmetic:
    /// absurd sizes are an error, never an overflow).
    public func validate() throws {
        try shape.validate(batch: maxBatch, fieldPrefix: "model config: ", batchField: "batch")
    }

    /// Number of trainable parameters (the head is tied to `wte`, so it adds none).
    public var parameterCount: Int {
        ParameterLayout(config: self).count
    }

    /// `layers=… dim=… heads=… seq=… batch=… vocab=…`.
    public var description: String {
        "layers=\(shape.layers) dim=\(shape.dim) heads=\(shape.heads) seq=\(shape.seq) batch=\(maxBatch) vocab=\(shape.vocab)"
    }
}
