import MedleyCore

/// The shape of a GPT-2 style decoder: depth, width, heads, context and batch.
///
/// `seq` is both the number of learned positions (`wpe` rows) and the sequence
/// length activations are sized for; `batch` is the largest batch a forward
/// pass takes (activations are allocated for it).
public struct ModelConfig: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Number of transformer blocks (L).
    public var layers: Int
    /// Channels of the residual stream (C).
    public var dim: Int
    /// Attention heads (NH); `dim` must be a multiple of it.
    public var heads: Int
    /// Sequence length and number of learned positions (T).
    public var seq: Int
    /// Largest batch (B).
    public var batch: Int
    /// Vocabulary size (V); byte-level by default.
    public var vocab: Int

    /// Creates a configuration (not validated: call `validate()` or let `GPT` do it).
    public init(layers: Int, dim: Int, heads: Int, seq: Int, batch: Int, vocab: Int = 256) {
        self.layers = layers
        self.dim = dim
        self.heads = heads
        self.seq = seq
        self.batch = batch
        self.vocab = vocab
    }

    /// The small default model: 4 layers, 128 channels, 4 heads, 64 positions, batch 8, 256 tokens.
    public static let `default` = ModelConfig(layers: 4, dim: 128, heads: 4, seq: 64, batch: 8)

    /// Channels per head (`dim / heads`).
    public var headSize: Int { dim / heads }

    /// Throws a `MedleyError(.invalidArgument)` naming the first problem, if any.
    public func validate() throws {
        let fields: [(String, Int)] = [
            ("layers", layers), ("dim", dim), ("heads", heads), ("seq", seq), ("batch", batch), ("vocab", vocab),
        ]
        for (name, value) in fields where value < 1 {
            throw MedleyError(.invalidArgument, "model config: \(name) must be at least 1, got \(value)")
        }
        guard dim % heads == 0 else {
            throw MedleyError(
                .invalidArgument,
                "model config: dim \(dim) is not a multiple of heads \(heads) (each head needs dim/heads channels)")
        }
        // Keep every tensor's element count comfortably inside Int32 and the
        // token ids inside Int32 (targets and tokens are i32 on the device).
        let largest = [batch * seq * max(4 * dim, vocab), 4 * dim * dim, vocab * dim, batch * heads * seq * seq]
        if fields.contains(where: { $0.1 > 1 << 20 }) || largest.contains(where: { $0 > Int(Int32.max) }) {
            throw MedleyError(.invalidArgument, "model config: \(self) is too large (a tensor would exceed 2^31 elements)")
        }
    }

    /// Number of trainable parameters (the head is tied to `wte`, so it adds none).
    public var parameterCount: Int {
        ParameterLayout(config: self).count
    }

    /// `layers=… dim=… heads=… seq=… batch=… vocab=…`.
    public var description: String {
        "layers=\(layers) dim=\(dim) heads=\(heads) seq=\(seq) batch=\(batch) vocab=\(vocab)"
    }
}
