import MedleyCore
import Testing

@Suite struct GlobalBatchSamplerTests {
    /// 37 training examples of 4 tokens: batches of 8 straddle epochs now and then.
    func makeSampler(batch: Int = 8, seed: UInt64 = 42) throws -> GlobalBatchSampler {
        let split = try TrainValidationSplit(dataset: try countingDataset(205), sequenceLength: 4, validationFraction: 0.2)
        #expect(split.trainExampleCount == 40)
        return try GlobalBatchSampler(split: split, globalBatch: batch, seed: seed)
    }

    /// Random shares of `total` among `ranks`, zeros likely.
    func randomShares(_ total: Int, ranks: Int, rng: inout SeededGenerator) -> [Int] {
        var shares = Array(repeating: 0, count: ranks)
        for _ in 0..<total { shares[rng.below(ranks) % max(1, rng.below(ranks) + 1)] += 1 }
        return shares
    }

    @Test func slicesConcatenateToTheGlobalBatch() throws {
        var sampler = try makeSampler()
        var rng = SeededGenerator(seed: 5)
        let fixed: [[Int]] = [[8], [0, 8], [8, 0, 0], [3, 0, 5], [1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 2, 0, 6, 0]]
        for step in 0..<30 {
            let whole = sampler.globalBatch(step: step)
            #expect(whole.sequences == 8 && whole.tokens.count == 32 && whole.targets.count == 32)
            let shareLists = fixed + (0..<5).map { _ in randomShares(8, ranks: 1 + rng.below(6), rng: &rng) }
            for shares in shareLists {
                var tokens: [Int32] = []
                var targets: [Int32] = []
                for rank in shares.indices {
                    let slice = try sampler.slice(step: step, shares: shares, rank: rank)
                    #expect(slice.sequences == shares[rank])
                    #expect(slice.tokens.count == shares[rank] * 4)
                    tokens += slice.tokens
                    targets += slice.targets
                }
                #expect(tokens == whole.tokens, "step \(step) shares \(shares)")
                #expect(targets == whole.targets, "step \(step) shares \(shares)")
            }
        }
    }

    @Test func deterministicAcrossCallsAndInstances() throws {
        var a = try makeSampler()
        var b = try makeSampler()
        let forward = (0..<12).map { a.globalBatch(step: $0) }
        let backward = (0..<12).reversed().map { b.globalBatch(step: $0) }.reversed()
        #expect(forward == Array(backward))
        #expect(try a.slice(step: 3, shares: [2, 6], rank: 1) == (try b.slice(step: 3, shares: [2, 6], rank: 1)))
        var other = try makeSampler(seed: 43)
        #expect(other.globalBatch(step: 0) != forward[0])
    }

    @Test func everyEpochVisitsEveryExampleOnceInANewOrder() throws {
        var sampler = try makeSampler(batch: 8)
        // 40 examples, 8 per batch: epoch 0 is steps 0..<5, epoch 1 steps 5..<10.
        let epoch0 = (0..<5).flatMap { sampler.exampleIndices(step: $0) }
        let epoch1 = (5..<10).flatMap { sampler.exampleIndices(step: $0) }
        #expect(epoch0.sorted() == Array(0..<40))
        #expect(epoch1.sorted() == Array(0..<40))
        #expect(epoch0 != epoch1)
        #expect(epoch0 == EpochOrder.permutation(count: 40, seed: 42, epoch: 0))
        #expect(sampler.epoch(ofStep: 5) == 1)
    }

    @Test func aBatchCanStraddleEpochsAndExceedOne() throws {
        var sampler = try makeSampler(batch: 12)
        // Step 3 is positions 36..<48: the last 4 of epoch 0, the first 8 of epoch 1.
        let indices = sampler.exampleIndices(step: 3)
        let e0 = EpochOrder.permutation(count: 40, seed: 42, epoch: 0)
        let e1 = EpochOrder.permutation(count: 40, seed: 42, epoch: 1)
        #expect(indices == Array(e0[36..<40]) + Array(e1[0..<8]))
        var huge = try makeSampler(batch: 100)
        #expect(huge.globalBatch(step: 1).sequences == 100)
    }

    @Test func badSharesAreRejected() throws {
        var sampler = try makeSampler()
        expectMedleyError(.invalidArgument, "sum to 7", "8") { _ = try sampler.slice(step: 0, shares: [3, 4], rank: 0) }
        expectMedleyError(.invalidArgument, "negative") { _ = try sampler.slice(step: 0, shares: [9, -1], rank: 0) }
        expectMedleyError(.invalidArgument, "rank 2") { _ = try sampler.slice(step: 0, shares: [4, 4], rank: 2) }
        expectMedleyError(.invalidArgument, "step") { _ = try sampler.slice(step: -1, shares: [8], rank: 0) }
        let split = sampler.split
        expectMedleyError(.invalidArgument, "global batch") { _ = try GlobalBatchSampler(split: split, globalBatch: 0, seed: 1) }
    }

    @Test func validationSlicesWalkInOrderAndConcatenate() throws {
        let sampler = try makeSampler()
        let split = sampler.split
        #expect(split.validationExampleCount == 10)
        let whole = try sampler.validationSlice(index: 1, shares: [8], rank: 0)
        var expected = TokenBatch(reserving: 8, sequenceLength: 4)
        for i in 8..<16 {
            split.appendExample(at: split.validationOffset(i % 10), tokens: &expected.tokens, targets: &expected.targets)
        }
        #expect(whole.tokens == expected.tokens && whole.targets == expected.targets)
        let parts = try (0..<3).map { try sampler.validationSlice(index: 1, shares: [5, 0, 3], rank: $0) }
        #expect(parts.flatMap(\.tokens) == whole.tokens)

        let noValidation = try TrainValidationSplit(dataset: try countingDataset(200), sequenceLength: 4, validationFraction: 0)
        let trainOnly = try GlobalBatchSampler(split: noValidation, globalBatch: 4, seed: 1)
        expectMedleyError(.invalidArgument, "no validation examples", "eval_every") {
            _ = try trainOnly.validationSlice(index: 0, shares: [4], rank: 0)
        }
    }

    @Test func sliceRangeIsThePrefixSum() throws {
        #expect(try GlobalBatchSampler.sliceRange(shares: [3, 0, 5, 2], rank: 0) == 0..<3)
        #expect(try GlobalBatchSampler.sliceRange(shares: [3, 0, 5, 2], rank: 1) == 3..<3)
        #expect(try GlobalBatchSampler.sliceRange(shares: [3, 0, 5, 2], rank: 2) == 3..<8)
        #expect(try GlobalBatchSampler.sliceRange(shares: [3, 0, 5, 2], rank: 3) == 8..<10)
    }
}
