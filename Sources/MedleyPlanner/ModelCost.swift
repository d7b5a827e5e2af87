/// What each layer of the model costs, whatever chip runs it: the planner's view of the model.
///
/// The planner cuts the model into contiguous ranges of *planning layers*:
/// index 0 is the embedding (token + position tables), 1...L are the
/// transformer blocks, L + 1 is the head (final LayerNorm, the output matmul
/// tied to the token table, and the loss). A pipeline stage holds a range
/// `first..<end` of these indices.
public struct ModelCost: Codable, Sendable, Hashable {
    /// One planning layer.
    public struct Layer: Codable, Sendable, Hashable {
        /// Which kind of layer this is; a profile times each kind once.
        public enum Kind: String, Codable, Sendable, Hashable, CaseIterable {
            case embedding, block, head
        }
        public var kind: Kind
        /// Trainable floats this layer owns. The head's count includes the token
        /// table it is tied to (`tiedParameters` of them): a stage holding the
        /// head but not the embedding keeps its own copy of that table.
        public var parameters: Int
        /// Of `parameters`, the floats shared with the embedding (the tied token table).
        public var tiedParameters: Int
        /// Device bytes of activations this layer keeps per sequence of a microbatch,
        /// between its forward and its backward. (Their gradients, which a stage holds
        /// for one microbatch at a time, are added by ``StepTimeModel``.)
        public var activationBytesPerSequence: Int
        /// Bytes this layer hands to the next one per sequence (the residual
        /// stream, `seq × dim` floats): what crosses a stage boundary after it.
        public var outputBytesPerSequence: Int

        public init(
            kind: Kind, parameters: Int, tiedParameters: Int = 0, activationBytesPerSequence: Int,
            outputBytesPerSequence: Int
        ) {
            self.kind = kind
            self.parameters = parameters
            self.tiedParameters = tiedParameters
            self.activationBytesPerSequence = activationBytesPerSequence
            self.outputBytesPerSequence = outputBytesPerSequence
        }
    }

    /// Planning layers in order: embedding, blocks, head.
    public var layers: [Layer]
    /// Tokens per sequence.
    public var seq: Int
    /// Device bytes per parameter for its value, gradient and AdamW's two
    /// moments (4 floats: 16).
    public var bytesPerParameter: Int

    public init(layers: [Layer], seq: Int, bytesPerParameter: Int = 16) {
        self.layers = layers
        self.seq = seq
        self.bytesPerParameter = bytesPerParameter
    }

    /// Number of transformer blocks (planning layers minus embedding and head).
    public var blockCount: Int { layers.count - 2 }
}
