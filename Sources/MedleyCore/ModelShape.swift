/// The shape of a GPT-2 style decoder, without any batch: depth, width, heads, context and
/// vocabulary. The one shape type Medley has: a job's model (``JobSpec/Model``: a shape and a
/// global batch) and a model built on one device (`ModelConfig`: a shape and the most
/// sequences one pass takes there) both carry one, and read its fields through it.
public struct ModelShape: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Transformer blocks (L).
    public var layers: Int
    /// Channels of the residual stream, the embedding size (C).
    public var dim: Int
    /// Attention heads per block (NH); must divide `dim`.
    public var heads: Int
    /// Tokens per sequence and learned positions (T).
    public var seq: Int
    /// Vocabulary size (V); Medley's jobs are byte-level (256).
    public var vocab: Int

    /// A shape; the defaults are the small model of the built-in job.
    public init(layers: Int = 2, dim: Int = 64, heads: Int = 4, seq: Int = 64, vocab: Int = 256) {
        self.layers = layers
        self.dim = dim
        self.heads = heads
        self.seq = seq
        self.vocab = vocab
    }

    /// Channels per head (`dim / heads`).
    public var headSize: Int { dim / heads }

    /// `layers=… dim=… heads=… seq=… vocab=…`.
    public var description: String { "layers=\(layers) dim=\(dim) heads=\(heads) seq=\(seq) vocab=\(vocab)" }
}

/// A type that carries a ``ModelShape`` and reads its fields straight through
/// (`model.dim` for `model.shape.dim`): ``JobSpec/Model`` and `ModelConfig`.
@dynamicMemberLookup
public protocol ShapedModel {
    /// The architecture.
    var shape: ModelShape { get set }
}

extension ShapedModel {
    /// The shape's fields, read and written through the model.
    public subscript<T>(dynamicMember keyPath: WritableKeyPath<ModelShape, T>) -> T {
        get { shape[keyPath: keyPath] }
        set { shape[keyPath: keyPath] = newValue }
    }
}

extension ModelShape {
    /// The keys of a shape written flat beside a batch, as a job spec's `model:` section and
    /// benchmark reports write it: layers, dim, heads, seq, batch, vocab.
    enum FlatKeys: String, CodingKey { case layers, dim, heads, seq, batch, vocab }

    /// Reads a shape and the batch written flat beside it (``encodeFlat(batch:to:)``).
    public static func decodeFlat(from decoder: Decoder) throws -> (shape: ModelShape, batch: Int) {
        let c = try decoder.container(keyedBy: FlatKeys.self)
        let shape = ModelShape(
            layers: try c.decode(Int.self, forKey: .layers), dim: try c.decode(Int.self, forKey: .dim),
            heads: try c.decode(Int.self, forKey: .heads), seq: try c.decode(Int.self, forKey: .seq),
            vocab: try c.decode(Int.self, forKey: .vocab))
        return (shape, try c.decode(Int.self, forKey: .batch))
    }

    /// Writes the shape's fields and `batch` side by side, flat.
    public func encodeFlat(batch: Int, to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: FlatKeys.self)
        try c.encode(layers, forKey: .layers)
        try c.encode(dim, forKey: .dim)
        try c.encode(heads, forKey: .heads)
        try c.encode(seq, forKey: .seq)
        try c.encode(batch, forKey: .batch)
        try c.encode(vocab, forKey: .vocab)
    }

    /// The largest value any one size may take (layers, dim, heads, seq, vocab, batch).
    public static let maxSize = 1 << 20
    /// The most elements one tensor may have: kernels index with 32-bit integers and token ids are i32.
    public static let maxTensorElements = Int(Int32.max)

    /// Checks the shape for passes of `batch` sequences: every size at least 1 and at most
    /// ``maxSize``, heads dividing dim, and no tensor of the model past ``maxTensorElements``.
    /// Every product is computed with overflow checks, so absurd sizes are one error line
    /// naming the field (`fieldPrefix` + name, e.g. "model.dim"), never a trap.
    public func validate(batch: Int, fieldPrefix: String, batchField: String = "batch") throws {
        let fields: [(String, Int)] = [
            ("layers", layers), ("dim", dim), ("heads", heads), ("seq", seq), (batchField, batch), ("vocab", vocab),
        ]
        for (name, value) in fields where value < 1 {
            throw MedleyError(.invalidArgument, "\(fieldPrefix)\(name) must be at least 1, got \(value)")
        }
        if let (name, value) = fields.first(where: { $0.1 > Self.maxSize }) {
            throw MedleyError(
                .invalidArgument,
                "\(fieldPrefix)\(name) \(value) is too large: at most \(Self.maxSize) (a tensor would exceed 2^31 elements)")
        }
        guard dim % heads == 0 else {
            throw MedleyError(
                .invalidArgument,
                "\(fieldPrefix)dim \(dim) is not a multiple of heads \(heads) (each head needs dim/heads channels)")
        }
        // The largest tensors: activations (batch·seq·max(4·dim, vocab)), a block's MLP weight
        // (4·dim·dim), the token table (vocab·dim) and attention scores (batch·heads·seq·seq).
        let widest: (String, Int) = 4 * dim >= vocab ? ("dim", dim) : ("vocab", vocab)
        let tensors: [(String, [(String, Int)], Int)] = [
            ("activations", [(batchField, batch), ("seq", seq), widest], widest.0 == "dim" ? 4 : 1),
            ("an MLP weight", [("dim", dim), ("dim", dim)], 4),
            ("the token table", [("vocab", vocab), ("dim", dim)], 1),
            ("attention scores", [(batchField, batch), ("heads", heads), ("seq", seq), ("seq", seq)], 1),
        ]
        for (tensor, factors, scale) in tensors {
            try Self.checkedProduct(factors, limit: Self.maxTensorElements / scale, what: tensor, fieldPrefix: fieldPrefix)
        }
    }

    /// The product of `factors`, or an error naming the factor at which it passed `limit`
    /// (or overflowed): "model.seq: with it, activations would have more than 2147483647 elements".
    @discardableResult
    public static func checkedProduct(
        _ factors: [(field: String, value: Int)], limit: Int = Int.max, what: String, fieldPrefix: String
    ) throws -> Int {
        var product = 1
        for (field, value) in factors {
            let (next, overflow) = product.multipliedReportingOverflow(by: value)
            guard !overflow, next <= limit else {
                throw MedleyError(
                    .invalidArgument,
                    "\(fieldPrefix)\(field) \(value) is too large: with it, \(what) would pass 2^31 elements; shrink the model")
            }
            product = next
        }
        return product
    }
}
