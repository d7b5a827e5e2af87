import MedleyCore
import Testing

/// A corpus of `count` bytes whose byte `i` is `i % 251` (so windows are easy to check).
func countingDataset(_ count: Int) throws -> ByteDataset {
    try ByteDataset(bytes: (0..<count).map { UInt8($0 % 251) }, name: "counting-\(count)")
}

@Suite struct TrainValidationSplitTests {
    @Test func cutsContiguouslyByBytes() throws {
        let split = try TrainValidationSplit(dataset: try countingDataset(1000), sequenceLength: 8, validationFraction: 0.1)
        #expect(split.trainBytes == 0..<900)
        #expect(split.validationBytes == 900..<1000)
        // Windows of 9 bytes every 8 bytes.
        #expect(split.trainExampleCount == (900 - 9) / 8 + 1)
        #expect(split.validationExampleCount == (100 - 9) / 8 + 1)
        let lastTrain = split.trainOffset(split.trainExampleCount - 1)
        #expect(lastTrain + 9 <= 900)
        #expect(split.validationOffset(0) == 900)
        #expect(split.validationOffset(split.validationExampleCount - 1) + 9 <= 1000)
    }

    @Test func targetsAreTheTokensShiftedByOne() throws {
        let split = try TrainValidationSplit(dataset: try countingDataset(300), sequenceLength: 5, validationFraction: 0)
        var tokens: [Int32] = []
        var targets: [Int32] = []
        split.appendExample(at: split.trainOffset(3), tokens: &tokens, targets: &targets)
        #expect(tokens == [15, 16, 17, 18, 19])
        #expect(targets == [16, 17, 18, 19, 20])
        #expect(split.validationExampleCount == 0)
        #expect(split.validationBytes.isEmpty)
    }

    @Test func strideCanOverlapWindows() throws {
        let split = try TrainValidationSplit(
            dataset: try countingDataset(20), sequenceLength: 4, validationFraction: 0, stride: 1)
        #expect(split.trainExampleCount == 16)
        #expect(split.trainOffset(15) == 15)
    }

    @Test func tooShortCorporaNameThePathAndSizes() throws {
        expectMedleyError(.invalidArgument, "counting-10", "10 bytes", "65") {
            _ = try TrainValidationSplit(dataset: try countingDataset(10), sequenceLength: 64)
        }
        expectMedleyError(.invalidArgument, "training part", "60 of 100", "65") {
            _ = try TrainValidationSplit(dataset: try countingDataset(100), sequenceLength: 64, validationFraction: 0.4)
        }
        expectMedleyError(.invalidArgument, "validation part", "10 of 100", "validation_fraction") {
            _ = try TrainValidationSplit(dataset: try countingDataset(100), sequenceLength: 16, validationFraction: 0.1)
        }
        // Exactly one window fits.
        let one = try TrainValidationSplit(dataset: try countingDataset(65), sequenceLength: 64, validationFraction: 0)
        #expect(one.trainExampleCount == 1)
    }

    @Test func badParametersAreRejected() throws {
        let data = try countingDataset(100)
        expectMedleyError(.invalidArgument, "sequence length") { _ = try TrainValidationSplit(dataset: data, sequenceLength: 0) }
        expectMedleyError(.invalidArgument, "stride") {
            _ = try TrainValidationSplit(dataset: data, sequenceLength: 4, stride: 0)
        }
        for bad in [-0.1, 1.0, Double.nan] {
            expectMedleyError(.invalidArgument, "validation fraction") {
                _ = try TrainValidationSplit(dataset: data, sequenceLength: 4, validationFraction: bad)
            }
        }
    }
}

@Suite struct EpochOrderTests {
    @Test func isAPermutationThatDependsOnSeedAndEpoch() {
        let order = EpochOrder.permutation(count: 500, seed: 7, epoch: 0)
        #expect(order.sorted() == Array(0..<500))
        #expect(order != Array(0..<500))
        #expect(EpochOrder.permutation(count: 500, seed: 7, epoch: 0) == order)
        #expect(EpochOrder.permutation(count: 500, seed: 7, epoch: 1) != order)
        #expect(EpochOrder.permutation(count: 500, seed: 8, epoch: 0) != order)
        // Epoch e+1 of seed s is not epoch e of seed s+1.
        #expect(EpochOrder.permutation(count: 500, seed: 7, epoch: 1) != EpochOrder.permutation(count: 500, seed: 8, epoch: 0))
        #expect(EpochOrder.permutation(count: 0, seed: 1, epoch: 0).isEmpty)
        #expect(EpochOrder.permutation(count: 1, seed: 1, epoch: 3) == [0])
    }
}
