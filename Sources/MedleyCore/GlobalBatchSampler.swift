/// Sequences of tokens and their targets, packed row by row: what one rank feeds its model.
public struct TokenBatch: Sendable, Equatable {
    /// Number of sequences (rows).
    public var sequences: Int
    /// Tokens per sequence (`T`).
    public var sequenceLength: Int
    /// `sequences × sequenceLength` input bytes as `Int32`, row-major.
    public var tokens: [Int32]
    /// The byte that follows each token, laid out like `tokens`.
    public var targets: [Int32]
    /// The examples the rows are, in order (indices into the sampler's part of the corpus).
    public var examples: [Int] = []

    /// An empty batch of `sequenceLength`-token rows with room for `sequences` rows.
    public init(reserving sequences: Int, sequenceLength: Int) {
        self.sequences = 0
        self.sequenceLength = sequenceLength
        self.tokens = []
        self.targets = []
        tokens.reserveCapacity(sequences * sequenceLength)
        targets.reserveCapacity(sequences * sequenceLength)
    }

    /// Number of tokens (`sequences × sequenceLength`).
    public var tokenCount: Int { tokens.count }
}

/// Hands every rank its exact slice of every global batch.
///
/// The training examples are visited in an endless stream of epochs, each in the
/// order ``EpochOrder`` gives for `seed` and the epoch number. Global batch `s` is
/// positions `s·B ..< (s+1)·B` of that stream (`B` = `globalBatch`), so a batch may
/// straddle two epochs. Rank `r` with integer shares `shares` (summing to `B`) gets
/// the contiguous run `Σ_{i<r} shares_i ..< + shares_r` of the batch: concatenating
/// all ranks' slices in rank order gives exactly the batch one machine would train on,
/// whatever the shares (zeros included).
///
/// The type is a value; it caches the order of the last epoch it used, which is why
/// the sampling methods are `mutating`. Results never depend on the cache.
public struct GlobalBatchSampler: Sendable {
    /// The corpus and its examples.
    public let split: TrainValidationSplit
    /// Sequences in one global batch (`B`).
    public let globalBatch: Int
    /// Seed of the epoch orders.
    public let seed: UInt64

    private var cachedEpoch = -1
    private var cachedOrder: [Int] = []

    /// A sampler of `globalBatch`-sequence batches from the training part of `split`.
    ///
    /// Throws `invalidArgument` when `globalBatch` is not positive.
    public init(split: TrainValidationSplit, globalBatch: Int, seed: UInt64) throws {
        guard globalBatch > 0 else {
            throw MedleyError(.invalidArgument, "global batch must be positive, got \(globalBatch)")
        }
        self.split = split
        self.globalBatch = globalBatch
        self.seed = seed
    }

    /// Number of training examples in one epoch.
    public var examplesPerEpoch: Int { split.trainExampleCount }

    /// The epoch that step `step`'s first example belongs to.
    public func epoch(ofStep step: Int) -> Int { step * globalBatch / examplesPerEpoch }

    /// The rows of the batch that rank `rank` gets under `shares`: `Σ_{i<rank} shares_i ..< + shares_rank`.
    ///
    /// Throws `invalidArgument` when a share is negative or `rank` is not a rank of `shares`.
    public static func sliceRange(shares: [Int], rank: Int) throws -> Range<Int> {
        guard rank >= 0, rank < shares.count else {
            throw MedleyError(.invalidArgument, "rank \(rank) is not one of the \(shares.count) ranks that have shares")
        }
        if let bad = shares.firstIndex(where: { $0 < 0 }) {
            throw MedleyError(.invalidArgument, "rank \(bad) has a negative share (\(shares[bad])); shares are samples, at least 0")
        }
        let start = shares[..<rank].reduce(0, +)
        return start..<(start + shares[rank])
    }

    /// Training example indices (into ``TrainValidationSplit/trainOffset(_:)``) of global batch `step`.
    public mutating func exampleIndices(step: Int) -> [Int] {
        exampleIndices(step: step, rows: 0..<globalBatch)
    }

    /// The whole global batch of `step`: what a single machine would train on.
    public mutating func globalBatch(step: Int) -> TokenBatch {
        batch(indices: exampleIndices(step: step), offset: split.trainOffset)
    }

    /// Rank `rank`'s slice of global batch `step` under `shares`: `shares[rank]` sequences.
    ///
    /// Throws `invalidArgument` when `step` is negative, a share is negative, the shares do not
    /// sum to the global batch, or `rank` is out of range.
    public mutating func slice(step: Int, shares: [Int], rank: Int) throws -> TokenBatch {
        guard step >= 0 else { throw MedleyError(.invalidArgument, "step must be at least 0, got \(step)") }
        let rows = try checkedRange(shares: shares, rank: rank)
        return batch(indices: exampleIndices(step: step, rows: rows), offset: split.trainOffset)
    }

    /// Rank `rank`'s slice of validation batch `index` under `shares`.
    ///
    /// Validation batches walk the validation examples in corpus order (no shuffle) and wrap
    /// around at the end, so batch `index` is the same on every run. Throws `invalidArgument`
    /// when there are no validation examples, or for the reasons ``slice(step:shares:rank:)`` does.
    public func validationSlice(index: Int, shares: [Int], rank: Int) throws -> TokenBatch {
        let count = split.validationExampleCount
        guard count > 0 else {
            throw MedleyError(
                .invalidArgument,
                "data \(split.dataset.path) has no validation examples (validation_fraction \(split.validationFraction)); raise data.validation_fraction or set train.eval_every to 0"
            )
        }
        guard index >= 0 else { throw MedleyError(.invalidArgument, "validation batch must be at least 0, got \(index)") }
        let rows = try checkedRange(shares: shares, rank: rank)
        let indices = rows.map { (index * globalBatch + $0) % count }
        return batch(indices: indices, offset: split.validationOffset)
    }

    /// The slice range of `rank`, after checking that `shares` cover the global batch exactly.
    private func checkedRange(shares: [Int], rank: Int) throws -> Range<Int> {
        let range = try Self.sliceRange(shares: shares, rank: rank)
        let total = shares.reduce(0, +)
        guard total == globalBatch else {
            throw MedleyError(
                .invalidArgument,
                "shares \(shares) sum to \(total), not the global batch of \(globalBatch) sequences"
            )
        }
        return range
    }

    /// Example indices at positions `step·B + rows` of the epoch stream.
    private mutating func exampleIndices(step: Int, rows: Range<Int>) -> [Int] {
        let perEpoch = examplesPerEpoch
        return rows.map { row in
            let position = step * globalBatch + row
            let epoch = position / perEpoch
            if epoch != cachedEpoch {
                cachedOrder = EpochOrder.permutation(count: perEpoch, seed: seed, epoch: epoch)
                cachedEpoch = epoch
            }
            return cachedOrder[position % perEpoch]
        }
    }

    /// The examples `indices`, located by `offset`, packed into a batch.
    private func batch(indices: [Int], offset: (Int) -> Int) -> TokenBatch {
        var batch = TokenBatch(reserving: indices.count, sequenceLength: split.sequenceLength)
        for index in indices {
            split.appendExample(at: offset(index), tokens: &batch.tokens, targets: &batch.targets)
        }
        batch.sequences = indices.count
        batch.examples = indices
        return batch
    }
}
