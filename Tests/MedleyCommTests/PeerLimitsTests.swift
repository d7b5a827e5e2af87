@testable import MedleyComm
import MedleyCore
import Testing

/// The corruption error `body` throws, or nil (recording a failure) when it throws none or another.
func corruption(_ body: () throws -> Void) -> MedleyError? {
    do {
        try body()
        Issue.record("no error thrown")
    } catch let e as MedleyError {
        #expect(e.code == .corruption, "\(e.code): \(e)")
        #expect(!e.message.contains("\n"), "one line: \(e.message)")
        return e
    } catch {
        Issue.record("non-Medley error \(error)")
    }
    return nil
}

@Suite("What peers claim is bounded by what the job can need")
struct PeerLimitsTests {
    @Test func sampleCountsWithinTheGlobalBatchAreSummed() throws {
        #expect(try PeerLimits.checkedSampleTotal([5, 0, 2, 7], limit: 14, step: 1) == 14)
        #expect(try PeerLimits.checkedSampleTotal([0, 0], limit: 8, step: 1) == 0)  // zero is the caller's error, later
        #expect(try PeerLimits.checkedSampleTotal([], limit: 8, step: 1) == 0)
    }

    @Test func aCountAboveTheGlobalBatchNamesItsRank() {
        let e = corruption { _ = try PeerLimits.checkedSampleTotal([4, 4, 1 << 40, 4], limit: 16, step: 3) }
        #expect(e?.message == "step 3: rank 2 claims 1099511627776 samples, but a step of this job has at most 16 (its global batch); the rank's sample count is corrupt")
    }

    @Test func countsThatWouldOverflowAreAnErrorNotATrap() {
        // Before the check, `reduce(0, +)` over these trapped (SIGILL) on every rank.
        let huge = UInt64(Int.max)
        let e = corruption { _ = try PeerLimits.checkedSampleTotal([4, huge, huge, 4], limit: Int.max, step: 0) }
        #expect(e?.message.hasPrefix("step 0: the sample counts of ranks 0...1 add up to more than the 9223372036854775807") == true, "\(String(describing: e))")
        #expect(e?.message.contains("rank 1 claims 9223372036854775807") == true)
        let wraps = corruption { _ = try PeerLimits.checkedSampleTotal([UInt64.max, 1], limit: Int.max, step: 0) }
        #expect(wraps?.message.contains("rank 0 claims 18446744073709551615 samples") == true)
    }

    @Test func aSumAboveTheGlobalBatchNamesTheRankThatCrossesIt() {
        let e = corruption { _ = try PeerLimits.checkedSampleTotal([4, 4, 4, 5], limit: 16, step: 2) }
        #expect(e?.message == "step 2: the sample counts of ranks 0...3 add up to more than the 16 a step of this job has (its global batch); rank 3 claims 5, a sample count is corrupt")
    }

    @Test func aNegativeOrZeroLimitAllowsNoSamples() throws {
        #expect(throws: MedleyError.self) { try PeerLimits.checkedSampleTotal([1], limit: -5, step: 0) }
        #expect(try PeerLimits.checkedSampleTotal([0], limit: 0, step: 0) == 0)
    }

    @Test func randomCountsNeverTrap() throws {
        // Counts anywhere in UInt64 (ranks' corrupt words): either a sum within the limit or an error.
        var rng = SplitMix64(state: 16)
        var accepted = 0
        for _ in 0..<5000 {
            let ranks = Int.random(in: 1...64, using: &rng)
            let small = Bool.random(using: &rng)
            let counts = (0..<ranks).map { _ in small ? UInt64.random(in: 0...8, using: &rng) : rng.next() }
            let limit = [16, 1 << 32, Int.max].randomElement(using: &rng)!
            do {
                let total = try PeerLimits.checkedSampleTotal(counts, limit: limit, step: 0)
                #expect(total <= UInt64(limit) && counts.allSatisfy { $0 <= total })
                accepted += 1
            } catch let e as MedleyError {
                #expect(e.code == .corruption)
            }
        }
        #expect(accepted > 0)
    }

    @Test func aClaimIsCheckedAgainstTheCallersBound() throws {
        try PeerLimits.check(24, allowed: 24, peer: 1, what: "payload bytes")
        try PeerLimits.check(0, allowed: 0, peer: 1, what: "payload bytes")
        let over = corruption { try PeerLimits.check(1 << 30, allowed: 24, peer: 3, what: "activation payload bytes", context: "step 7") }
        #expect(over?.message == "step 7: rank 3 claims 1073741824 activation payload bytes, but this job can need at most 24; the peer's metadata is corrupt or the ranks run different plans")
        let negative = corruption { try PeerLimits.check(-1, allowed: 24, peer: 0, what: "elements") }
        #expect(negative?.message.hasPrefix("rank 0 claims -1 elements") == true)
    }

    @Test func negotiationBoundsPeersLayoutHeadersByTheSmallest() {
        // Same layout, other step and sample counts: within a few bytes, far inside the bound.
        let tensors = (0..<40).map { TensorMeta(name: "h.\($0).w", shape: [64, 64], dtype: .float32) }
        let layout = try! BucketLayout(tensors: tensors, capBytes: 64 << 10, jobID: "job")
        let small = layout.header(step: 0, sampleCount: 0).framed().count
        let large = layout.header(step: UInt64.max, sampleCount: UInt64.max).framed().count
        let limit = GradientExchange.layoutFrameLimit(smallest: small)
        #expect(large > small && large <= limit)
        #expect(limit == 2 * small + 4096)
        // Never above the frame limit, never below room for a small header.
        #expect(GradientExchange.layoutFrameLimit(smallest: 1 << 30) == Frame.headerSize + Frame.defaultMaxBodyBytes)
        #expect(GradientExchange.layoutFrameLimit(smallest: -1) == 4096)
    }
}
