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

/// Decoding may succeed or throw a MedleyError; anything else (a crash, another error) fails.
func decodeNeverCrashes(_ bytes: [UInt8]) {
    do {
        _ = try BucketLayoutHeader(framed: bytes)
    } catch let e as MedleyError {
        #expect(e.code == .corruption, "unexpected code \(e.code): \(e)")
    } catch {
        Issue.record("non-Medley error \(error)")
    }
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

    @Test func everyTruncationIsAnError() {
        let bytes = sampleLayout.framed()
        for cut in 0..<bytes.count {
            #expect(throws: MedleyError.self) { try BucketLayoutHeader(framed: Array(bytes[0..<cut])) }
        }
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

    @Test func randomBytesNeverCrashTheDecoder() {
        var rng = SplitMix64(state: 1)
        for _ in 0..<5000 {
            let n = Int.random(in: 0..<200, using: &rng)
            decodeNeverCrashes((0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
    }

    @Test func randomBytesBehindAValidHeaderNeverCrash() {
        // Valid magic, version, kind, length and CRC around garbage: exercises protobuf-c and validation.
        var rng = SplitMix64(state: 2)
        for _ in 0..<5000 {
            let n = Int.random(in: 0..<300, using: &rng)
            let body = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            decodeNeverCrashes(Frame(kind: .bucketLayoutHeader, body: body).encoded())
        }
    }

    @Test func mutatedValidMessagesNeverCrash() {
        var rng = SplitMix64(state: 3)
        let body = sampleLayout.serialized()
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
            decodeNeverCrashes(Frame(kind: .bucketLayoutHeader, body: b).encoded())
            // Also through the raw frame (CRC now wrong in most cases).
            var f = sampleLayout.framed()
            f[Int.random(in: 0..<f.count, using: &rng)] ^= 0x10
            decodeNeverCrashes(f)
        }
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
