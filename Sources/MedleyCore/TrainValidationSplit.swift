/// A corpus cut into a training part and a validation part, and the examples in each.
///
/// The cut is **contiguous by bytes**: the first `1 − validationFraction` of the corpus
/// (rounded to a whole byte) is for training, the rest for validation. No example window
/// crosses the cut, so no validation byte is ever a training target. Cutting by bytes
/// rather than by document keeps the fraction exact whatever the file sizes are (the
/// fortunes corpus has files from 1 KiB to 400 KiB).
///
/// An example is a window of `sequenceLength + 1` bytes at an offset: its tokens are
/// `bytes[o ..< o+T]` and its targets `bytes[o+1 ..< o+T+1]` (next-byte prediction).
/// Offsets step by `stride` (default `T`, so the tokens of successive windows do not
/// overlap) from the start of each part.
public struct TrainValidationSplit: Sendable, Equatable {
    /// The split corpus.
    public let dataset: ByteDataset
    /// Tokens per example (`T`, the model's `seq`).
    public let sequenceLength: Int
    /// Share of the corpus kept for validation, in [0, 1).
    public let validationFraction: Double
    /// Bytes between the offsets of two successive examples.
    public let stride: Int
    /// The bytes of the training part.
    public let trainBytes: Range<Int>
    /// The bytes of the validation part (empty when `validationFraction` is 0).
    public let validationBytes: Range<Int>

    /// Splits `dataset` for examples of `sequenceLength` tokens.
    ///
    /// Throws `invalidArgument` when a size is not positive, the fraction is outside [0, 1),
    /// or a part is shorter than one example (`sequenceLength + 1` bytes); the message names
    /// the path and the sizes.
    public init(
        dataset: ByteDataset, sequenceLength: Int, validationFraction: Double = 0.1, stride: Int? = nil
    ) throws {
        guard sequenceLength > 0 else {
            throw MedleyError(.invalidArgument, "sequence length must be positive, got \(sequenceLength)")
        }
        let stride = stride ?? sequenceLength
        guard stride > 0 else {
            throw MedleyError(.invalidArgument, "example stride must be positive, got \(stride)")
        }
        guard validationFraction.isFinite, validationFraction >= 0, validationFraction < 1 else {
            throw MedleyError(
                .invalidArgument,
                "validation fraction must be in [0, 1), got \(validationFraction); 0.1 keeps a tenth of the data for validation"
            )
        }
        let window = sequenceLength + 1
        let total = dataset.count
        guard total >= window else {
            throw MedleyError(
                .invalidArgument,
                "data \(dataset.path) has \(total) bytes, fewer than one example of seq + 1 = \(window) bytes; use a larger corpus or a smaller model.seq"
            )
        }
        let validationCount = Int((Double(total) * validationFraction).rounded())
        let cut = total - validationCount
        guard cut >= window else {
            throw MedleyError(
                .invalidArgument,
                "data \(dataset.path): the training part has \(cut) of \(total) bytes, fewer than one example of seq + 1 = \(window) bytes; lower data.validation_fraction (\(validationFraction)) or use a larger corpus"
            )
        }
        if validationCount > 0, validationCount < window {
            throw MedleyError(
                .invalidArgument,
                "data \(dataset.path): the validation part has \(validationCount) of \(total) bytes, fewer than one example of seq + 1 = \(window) bytes; raise data.validation_fraction (\(validationFraction)), or set it to 0 to skip validation"
            )
        }
        self.dataset = dataset
        self.sequenceLength = sequenceLength
        self.validationFraction = validationFraction
        self.stride = stride
        self.trainBytes = 0..<cut
        self.validationBytes = cut..<total
    }

    /// Number of training examples (windows that fit in the training part).
    public var trainExampleCount: Int { Self.windows(in: trainBytes, length: sequenceLength + 1, stride: stride) }
    /// Number of validation examples (0 when there is no validation part).
    public var validationExampleCount: Int {
        Self.windows(in: validationBytes, length: sequenceLength + 1, stride: stride)
    }

    /// Byte offset of training example `index` (in corpus order, before shuffling).
    public func trainOffset(_ index: Int) -> Int {
        precondition(index >= 0 && index < trainExampleCount, "training example \(index) of \(trainExampleCount)")
        return trainBytes.lowerBound + index * stride
    }

    /// Byte offset of validation example `index`.
    public func validationOffset(_ index: Int) -> Int {
        precondition(
            index >= 0 && index < validationExampleCount, "validation example \(index) of \(validationExampleCount)")
        return validationBytes.lowerBound + index * stride
    }

    /// Appends the example at byte `offset` to `tokens` and `targets`, one `Int32` per byte.
    public func appendExample(at offset: Int, tokens: inout [Int32], targets: inout [Int32]) {
        let bytes = dataset.bytes
        precondition(offset >= 0 && offset + sequenceLength + 1 <= bytes.count, "example at \(offset)")
        for i in offset..<(offset + sequenceLength) {
            tokens.append(Int32(bytes[i]))
            targets.append(Int32(bytes[i + 1]))
        }
    }

    /// Number of windows of `length` bytes at `stride` steps from the start of `range`.
    private static func windows(in range: Range<Int>, length: Int, stride: Int) -> Int {
        range.count < length ? 0 : (range.count - length) / stride + 1
    }
}

/// The order in which an epoch visits the training examples: a Fisher–Yates shuffle
/// driven by ``SeededGenerator``, so the same seed and epoch give the same order on
/// every rank and every run.
public enum EpochOrder {
    /// A permutation of `0..<count` for `epoch` of a run seeded with `seed`.
    ///
    /// Each epoch draws from its own generator, seeded with `seed` mixed with the epoch
    /// number (a plain `seed + epoch` would make epoch `e + 1` of seed `s` equal epoch `e`
    /// of seed `s + 1`, and SplitMix64 streams of nearby seeds overlap).
    public static func permutation(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        precondition(count >= 0 && epoch >= 0)
        var order = Array(0..<count)
        var rng = SeededGenerator(seed: epochSeed(seed: seed, epoch: epoch))
        var i = count - 1
        while i > 0 {
            order.swapAt(i, rng.below(i + 1))
            i -= 1
        }
        return order
    }

    /// The generator seed of `epoch`: `seed` XOR a SplitMix64 hash of the epoch number.
    public static func epochSeed(seed: UInt64, epoch: Int) -> UInt64 {
        var hash = SeededGenerator(seed: UInt64(epoch) ^ 0x6D65_646C_6579_0000)  // "medley"
        return seed ^ hash.next()
    }
}
