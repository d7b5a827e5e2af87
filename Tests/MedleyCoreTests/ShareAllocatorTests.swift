import MedleyCore
import Testing

@Suite struct ShareAllocatorTests {
    @Test func proportionalAndExact() throws {
        #expect(try ShareAllocator.shares(globalBatch: 14, throughputs: [4, 2, 1]) == [8, 4, 2])
        #expect(try ShareAllocator.shares(globalBatch: 12, throughputs: [1000, 1000, 1000]) == [4, 4, 4])
        // 10 · (0.5, 0.3, 0.2) = (5, 3, 2).
        #expect(try ShareAllocator.shares(globalBatch: 10, throughputs: [50, 30, 20]) == [5, 3, 2])
        // 7 · (1/3 each) = 2.33…: one leftover, to rank 0 by the tie rule.
        #expect(try ShareAllocator.shares(globalBatch: 7, throughputs: [1, 1, 1]) == [3, 2, 2])
        #expect(try ShareAllocator.shares(globalBatch: 8, throughputs: [1, 1, 1]) == [3, 3, 2])
        // Largest remainder: 10 · (0.46, 0.34, 0.2) = 4.6, 3.4, 2 → 5, 3, 2.
        #expect(try ShareAllocator.shares(globalBatch: 10, throughputs: [46, 34, 20]) == [5, 3, 2])
        #expect(try ShareAllocator.shares(globalBatch: 0, throughputs: [1, 2]) == [0, 0])
    }

    @Test func aVerySlowRankMayGetNothing() throws {
        #expect(try ShareAllocator.shares(globalBatch: 12, throughputs: [100, 100, 0.01]) == [6, 6, 0])
    }

    @Test func randomInputsSumExactlyAndGiveTheShortestStep() throws {
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<500 {
            let ranks = 1 + rng.below(8)
            let batch = rng.below(200)
            let rates = (0..<ranks).map { _ in Double(rng.uniform(0.001, 50)) }
            let shares = try ShareAllocator.shares(globalBatch: batch, throughputs: rates)
            #expect(shares.reduce(0, +) == batch)
            #expect(shares.allSatisfy { $0 >= 0 })
            let total = rates.reduce(0, +)
            for (share, rate) in zip(shares, rates) {
                #expect(Double(share) >= (Double(batch) * rate / total).rounded(.down) - 1e-9, "below the floor of its ideal")
            }
            // No single move of a sample from one rank to another shortens the step.
            let step = ShareAllocator.predictedStepTime(shares: shares, throughputs: rates)
            for from in 0..<ranks where shares[from] > 0 {
                for to in 0..<ranks where to != from {
                    var moved = shares
                    moved[from] -= 1
                    moved[to] += 1
                    #expect(ShareAllocator.predictedStepTime(shares: moved, throughputs: rates) >= step * (1 - 1e-12))
                }
            }
            #expect(try ShareAllocator.shares(globalBatch: batch, throughputs: rates) == shares)
        }
    }

    @Test func smallCasesMatchAnExhaustiveSearch() throws {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let rates = (0..<3).map { _ in Double(rng.uniform(0.05, 10)) }
            let batch = 1 + rng.below(12)
            var best = Double.infinity
            for a in 0...batch {
                for b in 0...(batch - a) {
                    best = min(best, ShareAllocator.predictedStepTime(shares: [a, b, batch - a - b], throughputs: rates))
                }
            }
            let shares = try ShareAllocator.shares(globalBatch: batch, throughputs: rates)
            #expect(abs(ShareAllocator.predictedStepTime(shares: shares, throughputs: rates) - best) <= 1e-12 * best)
        }
    }

    @Test func aSlowRankIsNotGivenOneSampleTooMany() throws {
        // Measured in the mixed-efficiency benchmark: 32 sequences in 371 ms, 8 in 378 ms, 4 in 393 ms.
        // Largest remainder rounds the ideal (31.9, 7.8, 3.8) to 32/8/4 (393 ms); 33/8/3 finishes in 383 ms.
        let rates = [32 / 371.0, 8 / 378.0, 4 / 393.0]
        #expect(try ShareAllocator.shares(globalBatch: 44, throughputs: rates) == [33, 8, 3])
    }

    @Test func capsRedistributeTheOverflow() throws {
        // Ideal (8, 4, 2); rank 0 holds 5, the other 9 go 2:1 → 6, 3.
        #expect(try ShareAllocator.shares(globalBatch: 14, throughputs: [4, 2, 1], caps: [5, nil, nil]) == [5, 6, 3])
        // A second round: after rank 0 is capped, rank 1's new ideal passes its cap too.
        #expect(try ShareAllocator.shares(globalBatch: 14, throughputs: [4, 2, 1], caps: [5, 5, nil]) == [5, 5, 4])
        // Caps that exactly fit.
        #expect(try ShareAllocator.shares(globalBatch: 6, throughputs: [1, 9], caps: [3, 3]) == [3, 3])
        // A cap of 0: that rank gets nothing.
        #expect(try ShareAllocator.shares(globalBatch: 6, throughputs: [5, 1], caps: [0, nil]) == [0, 6])

        var rng = SeededGenerator(seed: 3)
        for _ in 0..<300 {
            let ranks = 1 + rng.below(6)
            let caps: [Int?] = (0..<ranks).map { _ in rng.below(3) == 0 ? nil : rng.below(30) }
            let room = caps.contains { $0 == nil } ? Int.max : caps.reduce(0) { $0 + $1! }
            let batch = min(rng.below(100), room)
            let rates = (0..<ranks).map { _ in Double(rng.uniform(0.1, 10)) }
            let shares = try ShareAllocator.shares(globalBatch: batch, throughputs: rates, caps: caps)
            #expect(shares.reduce(0, +) == batch)
            for (share, cap) in zip(shares, caps) {
                #expect(share >= 0)
                if let cap { #expect(share <= cap) }
            }
        }
    }

    @Test func capsBelowTheBatchNameEveryRank() {
        expectMedleyError(
            .outOfMemory, "global batch 64 does not fit", "at most 40 samples", "rank 0 cpu: 24", "rank 1 sim: 8",
            "rank 2 sim: 8"
        ) {
            _ = try ShareAllocator.shares(
                globalBatch: 64, throughputs: [1, 1, 1], caps: [24, 8, 8], labels: ["cpu", "sim", "sim"])
        }
    }

    @Test func badThroughputsAreRejected() {
        for bad in [0, -1, Double.nan, Double.infinity] {
            expectMedleyError(.invalidArgument, "rank 1", "throughput") {
                _ = try ShareAllocator.shares(globalBatch: 4, throughputs: [1, bad])
            }
        }
        expectMedleyError(.invalidArgument, "zero ranks") { _ = try ShareAllocator.shares(globalBatch: 4, throughputs: []) }
        expectMedleyError(.invalidArgument, "caps") { _ = try ShareAllocator.shares(globalBatch: 4, throughputs: [1], caps: [1, 2]) }
        expectMedleyError(.invalidArgument, "negative cap") {
            _ = try ShareAllocator.shares(globalBatch: 4, throughputs: [1, 1], caps: [-1, nil])
        }
        expectMedleyError(.invalidArgument, "global batch") { _ = try ShareAllocator.shares(globalBatch: -1, throughputs: [1]) }
    }

    @Test func predictedStepTimeIsTheSlowestRank() {
        #expect(ShareAllocator.predictedStepTime(shares: [8, 4, 0], throughputs: [4, 1, 0.001]) == 4)
        #expect(ShareAllocator.predictedStepTime(shares: [0, 0], throughputs: [1, 1]) == 0)
    }
}
