import MedleyComm
import MedleyCore
import Testing

@Suite("Bucket layout")
struct BucketLayoutTests {
    let tensors = [
        TensorMeta(name: "a", shape: [100], dtype: .float32),   // 400 B
        TensorMeta(name: "b", shape: [50], dtype: .float32),    // 200 B
        TensorMeta(name: "c", shape: [300], dtype: .float32),   // 1200 B (over the cap)
        TensorMeta(name: "d", shape: [10], dtype: .float32),    // 40 B
    ]

    @Test func packsInOrderUpToTheCap() throws {
        let layout = try BucketLayout(tensors: tensors, capBytes: 1000)
        #expect(layout.buckets.map { $0.tensors.map(\.name) } == [["a", "b"], ["c"], ["d"]])
        #expect(layout.buckets.map(\.payloadBytes) == [600, 1200, 40])
        #expect(layout.buckets[0].tensors[1].byteOffset == 400)
        #expect(layout.location(of: "d")! == (2, 0))
        #expect(layout.totalBytes == 1840)
    }

    @Test func fingerprintFollowsTheLayout() throws {
        let a = try BucketLayout(tensors: tensors, capBytes: 1000)
        #expect(a.fingerprint == (try BucketLayout(tensors: tensors, capBytes: 1000)).fingerprint)
        #expect(a.fingerprint != (try BucketLayout(tensors: tensors, capBytes: 2000)).fingerprint)
        var t = tensors; t[1].shape = [51]
        #expect(a.fingerprint != (try BucketLayout(tensors: t, capBytes: 1000)).fingerprint)
        #expect(a.fingerprint != (try BucketLayout(tensors: tensors, capBytes: 1000, jobID: "other")).fingerprint)
    }

    @Test func rejectsDuplicateNamesAndBadCaps() {
        #expect(throws: MedleyError.self) { try BucketLayout(tensors: [tensors[0], tensors[0]], capBytes: 1000) }
        #expect(throws: MedleyError.self) { try BucketLayout(tensors: tensors, capBytes: 0) }
    }

    @Test func differenceNamesBucketTensorAndRanks() throws {
        let mine = try BucketLayout(tensors: tensors, capBytes: 1000).header(step: 5, sampleCount: 1)
        var t = tensors; t[1].shape = [25, 2]
        let theirs = try BucketLayout(tensors: t, capBytes: 1000).header(step: 5, sampleCount: 9)
        #expect(mine.difference(from: mine, rank: 1) == nil)
        #expect(theirs.difference(from: mine, rank: 3) == "bucket 0 differs on rank 3: tensor 'b' shape [25,2] vs [50] on rank 0")
        var d = tensors; d[3].dtype = .float64
        let dt = try BucketLayout(tensors: d, capBytes: 1000).header(step: 5, sampleCount: 1)
        #expect(dt.difference(from: mine, rank: 1) == "bucket 2 differs on rank 1: tensor 'd' dtype float64 vs float32 on rank 0")
        let later = try BucketLayout(tensors: tensors, capBytes: 1000).header(step: 6, sampleCount: 1)
        #expect(later.difference(from: mine, rank: 2) == "rank 2 is at step 6 vs 5 on rank 0")
        let fewer = try BucketLayout(tensors: Array(tensors.dropLast()), capBytes: 1000).header(step: 5, sampleCount: 1)
        #expect(fewer.difference(from: mine, rank: 1) == "rank 1 has 2 buckets vs 3 on rank 0")
        // Sample counts are allowed to differ.
        #expect(try BucketLayout(tensors: tensors, capBytes: 1000).header(step: 5, sampleCount: 77).difference(from: mine, rank: 1) == nil)
    }

    @Test func byteCountsParse() throws {
        #expect(try ByteCount.parse("64KiB") == 65536)
        #expect(try ByteCount.parse("256MiB") == 256 << 20)
        #expect(try ByteCount.parse("4096") == 4096)
        #expect(throws: MedleyError.self) { try ByteCount.parse("lots") }
    }
}
