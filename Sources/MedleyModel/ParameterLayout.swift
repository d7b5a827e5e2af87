import MedleyCore

/// Where every parameter tensor of a `GPT` lives inside the one flat parameter
/// buffer (and, at the same offsets, inside the gradient and AdamW m/v buffers).
///
/// Tensors are addressed by global name, so data-parallel exchange and
/// checkpoints can name a tensor independently of the device it lives on:
///
/// ```
/// wte [V,C]  wpe [T,C]
/// h.<l>.ln1.w [C]  h.<l>.ln1.b [C]
/// h.<l>.attn.qkv.w [3C,C]  h.<l>.attn.qkv.b [3C]
/// h.<l>.attn.proj.w [C,C]  h.<l>.attn.proj.b [C]
/// h.<l>.ln2.w [C]  h.<l>.ln2.b [C]
/// h.<l>.mlp.fc.w [4C,C]  h.<l>.mlp.fc.b [4C]
/// h.<l>.mlp.proj.w [C,4C]  h.<l>.mlp.proj.b [C]
/// lnf.w [C]  lnf.b [C]
/// ```
///
/// Tensors are packed back to back in that order, with no padding.
public struct ParameterLayout: Sendable, Hashable {
    /// One named tensor of the layout.
    public struct Entry: Sendable, Hashable {
        /// Global name, e.g. `h.0.attn.qkv.w`.
        public var name: String
        /// Dimensions, outermost first.
        public var shape: [Int]
        /// Offset in elements (floats) from the start of the flat buffer.
        public var offset: Int

        /// Number of elements.
        public var count: Int { shape.reduce(1, *) }
        /// Whether AdamW applies weight decay: 2-D tensors (embeddings and matmul weights) only.
        public var decays: Bool { shape.count == 2 }
        /// Elements `offset ..< offset + count`.
        public var range: Range<Int> { offset..<(offset + count) }
    }

    /// Every tensor, in buffer order.
    public let entries: [Entry]
    /// Total number of elements.
    public let count: Int
    private let index: [String: Int]

    /// The layout of a model with `config` (not validated).
    public init(config: ModelConfig) {
        self.init(config: config, stage: nil)
    }

    /// The layout of the tensors one pipeline stage holds: the planning layers `stage`
    /// (0 = embedding, 1...L = blocks, L + 1 = head; nil = all of them), in the same order
    /// and under the same names as the whole model's layout. A stage holding the head keeps
    /// `wte` (the head is tied to it) even without the embedding.
    public init(config: ModelConfig, stage: Range<Int>?) {
        let stage = stage ?? 0..<(config.layers + 2)
        let embedding = stage.contains(0), head = stage.contains(config.layers + 1)
        let c = config.dim
        var shapes: [(String, [Int])] = []
        if embedding || head { shapes.append(("wte", [config.vocab, c])) }
        if embedding { shapes.append(("wpe", [config.seq, c])) }
        for l in 0..<config.layers where stage.contains(l + 1) {
            let p = "h.\(l)."
            shapes += [
                (p + "ln1.w", [c]), (p + "ln1.b", [c]),
                (p + "attn.qkv.w", [3 * c, c]), (p + "attn.qkv.b", [3 * c]),
                (p + "attn.proj.w", [c, c]), (p + "attn.proj.b", [c]),
                (p + "ln2.w", [c]), (p + "ln2.b", [c]),
                (p + "mlp.fc.w", [4 * c, c]), (p + "mlp.fc.b", [4 * c]),
                (p + "mlp.proj.w", [c, 4 * c]), (p + "mlp.proj.b", [c]),
            ]
        }
        if head { shapes += [("lnf.w", [c]), ("lnf.b", [c])] }
        var offset = 0
        var entries: [Entry] = []
        for (name, shape) in shapes {
            let entry = Entry(name: name, shape: shape, offset: offset)
            entries.append(entry)
            offset += entry.count
        }
        self.entries = entries
        self.count = offset
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    /// The tensor called `name`, or nil.
    public subscript(name: String) -> Entry? {
        index[name].map { entries[$0] }
    }

    /// The tensor called `name`; throws `.notFound` naming it when absent.
    public func entry(_ name: String) throws -> Entry {
        guard let entry = self[name] else {
            throw MedleyError(.notFound, "parameter '\(name)' is not in the model's layout")
        }
        return entry
    }

    /// Maximal runs of adjacent tensors that share the same weight-decay rule,
    /// as element ranges: what one `adamw_update` launch can cover.
    public var decayGroups: [(range: Range<Int>, decays: Bool)] {
        var groups: [(range: Range<Int>, decays: Bool)] = []
        for entry in entries {
            if let last = groups.last, last.decays == entry.decays, last.range.upperBound == entry.offset {
                groups[groups.count - 1].range = last.range.lowerBound..<entry.range.upperBound
            } else {
                groups.append((entry.range, entry.decays))
            }
        }
        return groups
    }
}
