import MedleyControl
import MedleyCore
import Testing

let sampleMessages: [ControlMessage] = [
    .hello(ControlHello(rank: 3, adapter: "sim", vendor: "Medley Sim", chip: "sim-a100 ✓", host: "node-7", pid: 4242,
                        memoryBytes: 80 << 30)),
    .hello(ControlHello(rank: 0, adapter: "", vendor: "", chip: "", host: "", pid: -1, memoryBytes: 0)),
    .heartbeat(ControlHeartbeat(rank: 1, step: 17, loss: 2.5, tokensPerSecond: 1234.5, deviceMemoryUsedBytes: 1 << 33,
                                health: .ok)),
    .heartbeat(ControlHeartbeat(rank: (1 << 20) - 1, step: 0, loss: nil, tokensPerSecond: nil, deviceMemoryUsedBytes: 0,
                                health: .idle)),
    .heartbeat(ControlHeartbeat(rank: 2, step: 9, loss: 0, tokensPerSecond: 0, health: .failing)),
    .heartbeat(ControlHeartbeat(rank: 4, step: 10, health: .ok, secondsSinceProgress: 12.5)),
    .heartbeat(ControlHeartbeat(rank: 4, step: 10, health: .ok, secondsSinceProgress: 0)),
    .stepReport(ControlStepReport(rank: 2, step: 100, loss: 3.25, tokensPerSecond: 9000, stepMs: 120.5, computeMs: 80,
                                  idleMs: 10.25, exchangeMs: 30, share: 12, validationLoss: 3.5)),
    .stepReport(ControlStepReport(rank: 0, step: 1, loss: -1, tokensPerSecond: 0, stepMs: 0, computeMs: 0, idleMs: 0,
                                  exchangeMs: 0, share: 0, validationLoss: nil)),
    .faultReport(ControlFaultReport(rank: 5, step: 33, kind: .outOfMemory, message: "sim: out of memory (needs 3 GiB)")),
    .faultReport(ControlFaultReport(rank: 0, step: 0, kind: .other, message: "")),
    .faultReport(ControlFaultReport(rank: 0, step: 7, kind: .corruption, message: "probe", suspects: [1, 3])),
    .command(ControlCommand(kind: .checkpointNow, reason: "operator asked")),
    .command(ControlCommand(kind: .stop, reason: "rank 3 lost")),
] + ControlFaultKind.allCases.map { .faultReport(ControlFaultReport(rank: 1, step: 2, kind: $0, message: "k")) }
    + ControlHealth.allCases.map { .heartbeat(ControlHeartbeat(rank: 1, step: 2, health: $0)) }

let testToken: [UInt8] = Array(0..<16)

/// Decodes everything the bytes hold.
func decodeAll(_ bytes: [UInt8], token: [UInt8] = testToken, chunk: Int? = nil) -> (results: [ControlDecodeResult], decoder: ControlFrameDecoder) {
    var d = ControlFrameDecoder(token: token)
    var out: [ControlDecodeResult] = []
    if let chunk {
        var i = 0
        while i < bytes.count {
            d.append(Array(bytes[i..<min(bytes.count, i + chunk)]))
            while let r = d.next() { out.append(r) }
            i += chunk
        }
    } else {
        d.append(bytes)
        while let r = d.next() { out.append(r) }
    }
    return (out, d)
}

/// A frame around arbitrary payload bytes.
func frame(_ payload: [UInt8]) -> [UInt8] {
    let n = UInt32(payload.count)
    return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + payload
}

@Suite("control wire")
struct ControlWireTests {
    @Test("every message round-trips, whole and split across appends (one byte at a time too)")
    func roundTrip() {
        let stream = sampleMessages.flatMap { ControlWire.encode($0, token: testToken) }
        for chunk in [nil, 1, 2, 3, 7, 64, 1000] as [Int?] {
            let (results, d) = decodeAll(stream, chunk: chunk)
            #expect(results == sampleMessages.map { .message($0) }, "chunk \(String(describing: chunk))")
            #expect(d.pendingBytes == 0)
            #expect(d.decoded == sampleMessages.count)
            #expect(d.dropped.isEmpty)
        }
        // The raw-buffer append gives the same.
        var d = ControlFrameDecoder(token: testToken)
        stream.withUnsafeBytes { d.append($0) }
        var got: [ControlDecodeResult] = []
        while let r = d.next() { got.append(r) }
        #expect(got == sampleMessages.map { .message($0) })
    }

    @Test("frame layout: 4-byte big-endian length of the envelope that follows")
    func layout() {
        let bytes = ControlWire.encode(sampleMessages[0], token: testToken)
        let n = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
        #expect(n == bytes.count - 4)
        #expect(n <= ControlWire.maxFrameBytes)
        #expect(ControlWire.decodePayload(Array(bytes[4...]), token: testToken) == .message(sampleMessages[0]))
    }

    @Test("a wrong token is dropped and counted; valid frames after it decode")
    func wrongToken() {
        var other = testToken
        other[15] ^= 1
        let m = sampleMessages[2]
        let stream = ControlWire.encode(m, token: other) + ControlWire.encode(m, token: [])
            + ControlWire.encode(m, token: testToken + [0]) + ControlWire.encode(m, token: testToken)
        let (results, d) = decodeAll(stream, chunk: 5)
        #expect(results == [.dropped(.wrongToken), .dropped(.wrongToken), .dropped(.wrongToken), .message(m)])
        #expect(d.dropped == [.wrongToken: 3])
        #expect(d.decoded == 1)
        #expect(!d.isPoisoned)
    }

    @Test("garbage and truncated payloads are undecodable and counted; the stream goes on")
    func garbage() {
        let good = ControlWire.encode(sampleMessages[5], token: testToken)
        let payload = Array(good[4...])
        var stream: [UInt8] = []
        stream += frame([0xFF, 0xFF, 0xFF, 0xFF, 0xFF])                    // not protobuf
        stream += frame(Array(payload.prefix(payload.count - 3)))            // truncated envelope
        stream += frame(Array(payload.prefix(payload.count / 2)))
        stream += good
        let (results, d) = decodeAll(stream)
        #expect(results.count == 4)
        #expect(results.last == .message(sampleMessages[5]))
        #expect(results.dropLast().allSatisfy { $0 == .dropped(.undecodable) || $0 == .dropped(.wrongToken) })
        #expect(d.dropped.values.reduce(0, +) == 3)
        #expect((d.dropped[.undecodable] ?? 0) >= 1)
    }

    @Test("an envelope with the right token but no body, or bad fields, is undecodable")
    func badBodies() {
        // Token only (field 1, length 16).
        let tokenOnly: [UInt8] = [0x0A, 16] + testToken
        #expect(ControlWire.decodePayload(tokenOnly, token: testToken) == .dropped(.undecodable))
        #expect(ControlWire.decodePayload([], token: testToken) == .dropped(.wrongToken))

        func expectUndecodable(_ m: ControlMessage, _ why: String) {
            let bytes = ControlWire.encode(m, token: testToken)
            #expect(ControlWire.decodePayload(Array(bytes[4...]), token: testToken) == .dropped(.undecodable), "\(why)")
        }
        expectUndecodable(.hello(ControlHello(rank: 1 << 20, adapter: "", vendor: "", chip: "", host: "", pid: 0, memoryBytes: 0)), "rank too big")
        expectUndecodable(.hello(ControlHello(rank: -1, adapter: "", vendor: "", chip: "", host: "", pid: 0, memoryBytes: 0)), "negative rank")
        expectUndecodable(.heartbeat(ControlHeartbeat(rank: 0, step: -5)), "negative step")
        expectUndecodable(.heartbeat(ControlHeartbeat(rank: 0, step: 1, tokensPerSecond: .nan)), "NaN tokens/s")
        expectUndecodable(.stepReport(ControlStepReport(rank: 0, step: 1, loss: 1, tokensPerSecond: 1, stepMs: .infinity,
                                                        computeMs: 0, idleMs: 0, exchangeMs: 0, share: 1)), "infinite step ms")
        expectUndecodable(.stepReport(ControlStepReport(rank: 0, step: 1, loss: 1, tokensPerSecond: -1, stepMs: 1,
                                                        computeMs: 0, idleMs: 0, exchangeMs: 0, share: 1)), "negative tokens/s")

        // A NaN loss is news and passes.
        let nanLoss = ControlWire.encode(.heartbeat(ControlHeartbeat(rank: 0, step: 1, loss: .nan)), token: testToken)
        guard case .message(.heartbeat(let b)) = ControlWire.decodePayload(Array(nanLoss[4...]), token: testToken) else {
            Issue.record("NaN loss refused")
            return
        }
        #expect(b.loss?.isNaN == true)

        // Unknown enum values: patch the encoded enum byte of a command (field 1 inside field 6).
        let cmd = ControlWire.encode(.command(ControlCommand(kind: .stop, reason: "")), token: testToken)
        var payload = Array(cmd[4...])
        // Envelope: 0A 10 <token 16> 32 <len> 08 <kind>
        #expect(payload[18] == 0x32 && payload[20] == 0x08 && payload[21] == 2)
        payload[21] = 9
        #expect(ControlWire.decodePayload(payload, token: testToken) == .dropped(.undecodable))
        payload[21] = 0
        #expect(ControlWire.decodePayload(payload, token: testToken) == .dropped(.undecodable))
    }

    @Test("strings: too long or not UTF-8 is undecodable; encode shortens long strings so they decode")
    func strings() {
        // Hand-built command with a 1025-byte reason: 0A 10 token, 32 len { 08 01 12 <varint 1025> ... }
        func command(reason: [UInt8]) -> [UInt8] {
            var inner: [UInt8] = [0x08, 0x01, 0x12]
            var n = reason.count
            while n >= 0x80 { inner.append(UInt8(n & 0x7F) | 0x80); n >>= 7 }
            inner.append(UInt8(n))
            inner += reason
            var outer: [UInt8] = [0x0A, 16] + testToken + [0x32]
            var m = inner.count
            while m >= 0x80 { outer.append(UInt8(m & 0x7F) | 0x80); m >>= 7 }
            outer.append(UInt8(m))
            return outer + inner
        }
        #expect(ControlWire.decodePayload(command(reason: Array("ok".utf8)), token: testToken)
            == .message(.command(ControlCommand(kind: .checkpointNow, reason: "ok"))))
        #expect(ControlWire.decodePayload(command(reason: [UInt8](repeating: 0x61, count: 1024)), token: testToken)
            == .message(.command(ControlCommand(kind: .checkpointNow, reason: String(repeating: "a", count: 1024)))))
        #expect(ControlWire.decodePayload(command(reason: [UInt8](repeating: 0x61, count: 1025)), token: testToken)
            == .dropped(.undecodable))
        #expect(ControlWire.decodePayload(command(reason: [0x61, 0xC3, 0x28]), token: testToken) == .dropped(.undecodable))

        let long = String(repeating: "é", count: 3000)
        let bytes = ControlWire.encode(.faultReport(ControlFaultReport(rank: 0, step: 0, kind: .adapterError, message: long)),
                                       token: testToken)
        guard case .message(.faultReport(let f)) = ControlWire.decodePayload(Array(bytes[4...]), token: testToken) else {
            Issue.record("long message did not decode")
            return
        }
        #expect(f.message.utf8.count <= ControlWire.maxStringBytes)
        #expect(f.message.utf8.count >= ControlWire.maxStringBytes - 1)
        #expect(long.hasPrefix(f.message))
    }

    @Test("an oversized length prefix is dropped, counted, and poisons the stream")
    func oversized() {
        let good = ControlWire.encode(sampleMessages[0], token: testToken)
        let big = UInt32(ControlWire.maxFrameBytes + 1)
        let stream = good + [UInt8(big >> 24), UInt8((big >> 16) & 0xFF), UInt8((big >> 8) & 0xFF), UInt8(big & 0xFF)] + good
        var d = ControlFrameDecoder(token: testToken)
        d.append(stream)
        #expect(d.next() == .message(sampleMessages[0]))
        #expect(d.next() == .dropped(.oversized))
        #expect(d.isPoisoned)
        #expect(d.next() == nil)
        d.append(good)
        #expect(d.next() == nil)
        #expect(d.dropped == [.oversized: 1])

        // A smaller limit applies too; a frame at the limit passes.
        var small = ControlFrameDecoder(token: testToken, maxFrameBytes: good.count - 4)
        small.append(good + good)
        #expect(small.next() == .message(sampleMessages[0]))
        var tiny = ControlFrameDecoder(token: testToken, maxFrameBytes: good.count - 5)
        tiny.append(good)
        #expect(tiny.next() == .dropped(.oversized))
        #expect(tiny.isPoisoned)
        var huge = ControlFrameDecoder(token: testToken)
        huge.append([0xFF, 0xFF, 0xFF, 0xFF])
        #expect(huge.next() == .dropped(.oversized))
    }

    @Test("a truncated stream waits for more bytes and holds them")
    func truncatedStream() {
        let good = ControlWire.encode(sampleMessages[3], token: testToken)
        var d = ControlFrameDecoder(token: testToken)
        d.append(Array(good.prefix(3)))
        #expect(d.next() == nil)
        d.append(Array(good[3..<(good.count - 1)]))
        #expect(d.next() == nil)
        #expect(d.pendingBytes == good.count - 1)
        d.append([good.last!])
        #expect(d.next() == .message(sampleMessages[3]))
        #expect(d.pendingBytes == 0)
    }

    @Test("random bytes never crash the decoder, and a valid frame after garbage of exact length still decodes")
    func randomBytes() {
        var rng = SeededGenerator(seed: 0xC0_17_01)
        let templates = sampleMessages.map { ControlWire.encode($0, token: testToken) }
        for round in 0..<3000 {
            var d = ControlFrameDecoder(token: testToken, maxFrameBytes: 1 << 12)
            var bytes: [UInt8]
            switch round % 3 {
            case 0:
                bytes = (0..<Int(rng.next() % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1:
                // A valid frame with a few bytes flipped (length prefix left alone).
                bytes = templates[Int(rng.next() % UInt64(templates.count))]
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    let i = 4 + Int(rng.next() % UInt64(bytes.count - 4))
                    bytes[i] = UInt8(truncatingIfNeeded: rng.next())
                }
            default:
                // Random payload framed with its true length, then a good frame.
                let payload = (0..<Int(rng.next() % 120)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                bytes = frame(payload) + templates[0]
            }
            var i = 0
            var results: [ControlDecodeResult] = []
            while i < bytes.count {
                let n = 1 + Int(rng.next() % 17)
                d.append(Array(bytes[i..<min(bytes.count, i + n)]))
                while let r = d.next() { results.append(r) }
                i += n
            }
            if round % 3 == 2 {
                #expect(results.last == .message(sampleMessages[0]), "round \(round)")
                #expect(results.count == 2)
            }
            let counted = d.decoded + d.dropped.values.reduce(0, +)
            #expect(counted == results.count)
        }
    }

    @Test("tokens: 16 random bytes, hex round-trip, malformed hex refused")
    func tokens() {
        let a = ControlToken.random()
        let b = ControlToken.random()
        #expect(a.count == 16)
        #expect(a != b)
        let h = ControlToken.hex(a)
        #expect(h.count == 32)
        #expect(ControlToken.parse(hex: h) == a)
        #expect(ControlToken.parse(hex: h.uppercased()) == a)
        #expect(ControlToken.hex(testToken) == "000102030405060708090a0b0c0d0e0f")
        #expect(ControlToken.parse(hex: "") == nil)
        #expect(ControlToken.parse(hex: String(h.dropLast())) == nil)
        #expect(ControlToken.parse(hex: h + "00") == nil)
        #expect(ControlToken.parse(hex: "g" + String(h.dropFirst())) == nil)
        #expect(ControlToken.parse(hex: "é" + String(h.dropFirst(2))) == nil)
    }

    @Test("endpoint from the environment")
    func endpoint() {
        let hex = ControlToken.hex(testToken)
        let e = ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": "127.0.0.1:7070", "MEDLEY_CONTROL_TOKEN": hex])
        #expect(e == ControlEndpoint(host: "127.0.0.1", port: 7070, token: testToken))
        #expect(ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": "[::1]:9", "MEDLEY_CONTROL_TOKEN": hex])?.host == "::1")
        #expect(ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": "node-3:1", "MEDLEY_CONTROL_TOKEN": hex])?.port == 1)
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":80", "host:", "host:x", "::1:80", "[::1]80", "h:-1"] {
            #expect(ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": bad, "MEDLEY_CONTROL_TOKEN": hex]) == nil, "\(bad)")
        }
        #expect(ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": "h:1", "MEDLEY_CONTROL_TOKEN": "abc"]) == nil)
        #expect(ControlEndpoint.fromEnvironment(["MEDLEY_CONTROL": "h:1"]) == nil)
        #expect(ControlEndpoint.fromEnvironment([:]) == nil)
        if let e {
            #expect(ControlEndpoint.fromEnvironment(e.environment) == e)
        }
    }
}
