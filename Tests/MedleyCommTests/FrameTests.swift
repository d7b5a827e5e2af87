import MedleyComm
import MedleyCore
import Testing

/// A small deterministic generator, so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let sampleLayout = BucketLayoutHeader(
    jobID: "job-7", step: 42,
    buckets: [
        BucketHeader(jobID: "job-7", step: 42, bucketIndex: 0,
                     tensors: [TensorMeta(name: "h.1.attn.w", shape: [64, 128], dtype: .float32),
                               TensorMeta(name: "h.1.attn.b", shape: [128], dtype: .float32, byteOffset: 32768)],
                     payloadBytes: 33280, sampleCount: 12, checksum: 0xDEAD_BEEF),
        BucketHeader(jobID: "job-7", step: 42, bucketIndex: 1,
                     tensors: [TensorMeta(name: "head.w", shape: [10, 3, 3], dtype: .bfloat16)],
                     payloadBytes: 180, sampleCount: 12),
    ],
    fingerprint: 0x1234_5678_9ABC_DEF0, sampleCount: 12)

/// What one decode of untrusted bytes did.
enum DecodeOutcome {
    /// The bytes decoded to a message.
    case accepted(BucketLayoutHeader)
    /// The decoder refused them with a corruption error.
    case rejected
}

/// Decodes framed bytes as a layout header. Success and a `.corruption` MedleyError are the
/// two allowed outcomes; any other error is recorded as a test failure (and counts as neither).
func decodeLayout(_ bytes: [UInt8]) -> DecodeOutcome? {
    do {
        return .accepted(try BucketLayoutHeader(framed: bytes))
    } catch let e as MedleyError {
        #expect(e.code == .corruption, "unexpected code \(e.code): \(e)")
        return e.code == .corruption ? .rejected : nil
    } catch {
        Issue.record("non-Medley error \(error)")
        return nil
    }
}

/// How many of `inputs` the layout decoder rejects; every accepted one must round-trip
/// (re-frame and decode to an equal message), so an acceptance is never a half-read message.
func rejections(_ inputs: [[UInt8]]) -> Int {
    var rejected = 0
    for bytes in inputs {
        switch decodeLayout(bytes) {
        case .rejected: rejected += 1
        case .accepted(let message): #expect((try? BucketLayoutHeader(framed: message.framed())) == message)
        case nil: break
        }
    }
    return rejected
}

/// `bytes` with the bits at `positions` (bit indices over the whole array) flipped.
func flipping(_ bytes: [UInt8], bits positions: [Int]) -> [UInt8] {
    var out = bytes
    for p in positions { out[p / 8] ^= UInt8(1) << UInt8(p % 8) }
    return out
}

@Suite("Frames")
struct FrameTests {
    @Test func roundTripsEveryMessage() throws {
        #expect(try BucketLayoutHeader(framed: sampleLayout.framed()) == sampleLayout)
        #expect(try BucketHeader(framed: sampleLayout.buckets[0].framed()) == sampleLayout.buckets[0])
        let act = ActivationHeader(step: 3, microbatch: 2, stage: 1, shape: [4, 16, 32], dtype: .float16, checksum: 99)
        #expect(try ActivationHeader(framed: act.framed()) == act)
    }

    @Test func headerLayoutIsAsDocumented() {
        let bytes = sampleLayout.framed()
        #expect(Array(bytes[0..<4]) == Array("MDLF".utf8))
        #expect(bytes[4] == Frame.currentVersion)
        #expect(bytes[5] == Frame.Kind.bucketLayoutHeader.rawValue)
        let length = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        #expect(length == bytes.count - Frame.headerSize)
    }

    @Test func everyTruncationIsRejected() {
        let bytes = sampleLayout.framed()
        let truncations = (0..<bytes.count).map { Array(bytes[0..<$0]) }
        #expect(rejections(truncations) == truncations.count)
    }

    @Test func oversizedLengthIsRefusedBeforeReading() {
        var bytes = sampleLayout.framed()
        bytes[8] = 0xFF; bytes[9] = 0xFF; bytes[10] = 0xFF; bytes[11] = 0x7F
        #expect { try Frame.decode(bytes) } throws: { ($0 as? MedleyError)?.message.contains("oversized") == true }
        #expect(throws: MedleyError.self) { try Frame.decode(sampleLayout.framed(), maxBodyBytes: 16) }
    }

    @Test func wrongVersionKindMagicCRCAndTrailingBytesAreErrors() {
        let good = sampleLayout.framed()
        var v = good; v[4] = 2
        #expect { try Frame.decode(v) } throws: { ($0 as? MedleyError)?.message.contains("version 2") == true }
        var k = good; k[5] = 200
        #expect(throws: MedleyError.self) { try Frame.decode(k) }
        var m = good; m[0] = UInt8(ascii: "X")
        #expect(throws: MedleyError.self) { try Frame.decode(m) }
        var c = good; c[good.count - 1] ^= 1
        #expect { try Frame.decode(c) } throws: { ($0 as? MedleyError)?.message.contains("CRC") == true }
        #expect(throws: MedleyError.self) { try Frame.decode(good + [0]) }
        // Right frame, wrong message type.
        #expect(throws: MedleyError.self) { try ActivationHeader(framed: good) }
    }

    @Test func everySingleBitFlipIsRejected() {
        // Header: magic, version, kind (a flip there names another kind or none), reserved,
        // length and CRC are all checked exactly; body: CRC-32 catches every 1-bit error.
        let bytes = sampleLayout.framed()
        let flips = (0..<(8 * bytes.count)).map { flipping(bytes, bits: [$0]) }
        #expect(rejections(flips) == flips.count)
    }

    @Test func twoAndThreeBitFlipsAreRejected() {
        // CRC-32 has Hamming distance 4 far beyond this length, so no 2- or 3-bit error in
        // body + CRC goes unseen; header fields are compared exactly.
        var rng = SplitMix64(state: 4)
        let bytes = sampleLayout.framed()
        let flips = (0..<20_000).map { i -> [UInt8] in
            var positions = Set<Int>()
            while positions.count < 2 + i % 2 { positions.insert(Int.random(in: 0..<(8 * bytes.count), using: &rng)) }
            return flipping(bytes, bits: Array(positions))
        }
        #expect(rejections(flips) == flips.count)
    }

    @Test func aCorruptedByteAnywhereIsRejected() {
        // Every byte of the frame replaced by each other value: a burst of at most 8 bits,
        // which CRC-32 always detects in the body, and an exact mismatch in the header.
        let bytes = sampleLayout.framed()
        var inputs: [[UInt8]] = []
        for i in bytes.indices {
            for delta in [1, 0x55, 0x80, 0xFF] as [UInt8] {
                var b = bytes
                b[i] ^= delta
                inputs.append(b)
            }
        }
        #expect(rejections(inputs) == inputs.count)
    }

    @Test func randomBytesAreRejected() {
        // Accepting needs the 4 magic bytes, version, a kind, zero reserved bytes, an exact
        // length and a matching CRC: impossible for these (fixed-seed) inputs.
        var rng = SplitMix64(state: 1)
        let inputs = (0..<5000).map { _ in
            (0..<Int.random(in: 0..<200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
        #expect(rejections(inputs) == inputs.count)
        // The same garbage behind a correct magic, version and kind still fails length or CRC.
        let behindMagic = inputs.map { Frame.magic + [Frame.currentVersion, Frame.Kind.bucketLayoutHeader.rawValue] + $0 }
        #expect(rejections(behindMagic) == behindMagic.count)
    }

    @Test func randomBodiesInAValidFrameAreRejectedOrRoundTrip() {
        // Valid magic, version, kind, length and CRC around garbage: protobuf-c and Medley's
        // validation decide. A body whose first tag has wire type 6 or 7 (which protobuf does
        // not define) can never be a message, so every one of those must be rejected; the rest
        // may decode (unknown fields are skipped) but must then round-trip.
        var rng = SplitMix64(state: 2)
        var impossible: [[UInt8]] = []
        var other: [[UInt8]] = []
        for i in 0..<5000 {
            var body = (0..<Int.random(in: 1..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if i % 2 == 0 {
                body[0] = (body[0] & 0x78) | UInt8(6 + i / 2 % 2)  // field 1–15, wire type 6 or 7
                impossible.append(Frame(kind: .bucketLayoutHeader, body: body).encoded())
            } else {
                other.append(Frame(kind: .bucketLayoutHeader, body: body).encoded())
            }
        }
        #expect(rejections(impossible) == impossible.count)
        #expect(rejections(other) > 0)
    }

    @Test func mutatedValidMessagesAreRejectedOrRoundTrip() {
        var rng = SplitMix64(state: 3)
        let body = sampleLayout.serialized()
        var wrapped: [[UInt8]] = []
        var rawFlips: [[UInt8]] = []
        for _ in 0..<20000 {
            var b = body
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: b[Int.random(in: 0..<b.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
                case 1: b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 2: b.removeSubrange(Int.random(in: 0..<b.count, using: &rng)...)
                default: b.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...b.count, using: &rng))
                }
                if b.isEmpty { break }
            }
            // A mutated body in a fresh, valid frame: protobuf-c and validation decide.
            wrapped.append(Frame(kind: .bucketLayoutHeader, body: b).encoded())
            // A one-bit flip in the framed original: the frame checks must catch it.
            var f = sampleLayout.framed()
            f[Int.random(in: 0..<f.count, using: &rng)] ^= 0x10
            rawFlips.append(f)
        }
        #expect(rejections(rawFlips) == rawFlips.count)
        #expect(rejections(wrapped) > 0)
    }

    @Test func decodedMessagesAreValidated() {
        let negative = BucketHeader(jobID: "j", step: 0, bucketIndex: 0,
                                    tensors: [TensorMeta(name: "w", shape: [-3, 2], dtype: .float32)], payloadBytes: 0)
        #expect(throws: MedleyError.self) { try BucketHeader(framed: negative.framed()) }
        var act = ActivationHeader(step: 1, microbatch: 0, stage: 0, shape: [2, 2], dtype: .float32)
        act.payloadBytes = 15
        #expect { try ActivationHeader(framed: act.framed()) } throws: { ($0 as? MedleyError)?.code == .corruption }
        let deep = ActivationHeader(step: 1, microbatch: 0, stage: 0, shape: Array(repeating: 1, count: 40), dtype: .float32)
        #expect(throws: MedleyError.self) { try ActivationHeader(framed: deep.framed()) }
    }

    @Test func checksumsAreStable() {
        #expect(Checksum.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        let a = (0..<1000).map { UInt8($0 & 0xFF) }
        var b = a; b[500] ^= 1
        #expect(Checksum.hash64(a) == Checksum.hash64(a))
        #expect(Checksum.hash64(a) != Checksum.hash64(b))
        #expect(Checksum.hash64(Array(a[0..<999])) != Checksum.hash64(a))
    }
}
