import CMedleyProto
import MedleyCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The control channel's frames: a 4-byte big-endian length, then a protobuf `ControlEnvelope`
/// (protos/medley.proto) that carries the job's token and exactly one message.
///
/// Decoding trusts nothing: a frame longer than ``maxFrameBytes`` poisons the stream; a frame whose
/// token differs from the job's is dropped as `wrongToken`; one that does not unpack, has no body,
/// names an unknown enum value, carries a string longer than ``maxStringBytes`` or not UTF-8, a rank
/// outside `0..<maxRank`, a step or count beyond `Int.max / 2`, or a non-finite (or negative) time or
/// rate is dropped as `undecodable`. Losses may be non-finite: a NaN loss is news, not noise.
public enum ControlWire {
    /// Largest frame accepted (length prefix excluded).
    public static let maxFrameBytes = 65_536
    /// Longest string field, in UTF-8 bytes. ``encode(_:token:)`` shortens longer strings (at a
    /// character boundary) so that every frame it writes decodes.
    public static let maxStringBytes = 1_024
    /// Ranks are in `0..<maxRank`.
    public static let maxRank = 1 << 20
    /// Bytes of the length prefix.
    public static let prefixBytes = 4
    /// Most suspects one fault report names (``encode(_:token:)`` keeps the first ones).
    public static let maxSuspects = 64

    /// 4-byte big-endian length, then a protobuf `ControlEnvelope` carrying `token` and the message.
    public static func encode(_ message: ControlMessage, token: [UInt8]) -> [UInt8] {
        let arena = WireArena()
        let env = arena.allocate(Medley__V1__ControlEnvelope.self)
        medley__v1__control_envelope__init(env)
        env.pointee.token.len = token.count
        env.pointee.token.data = arena.bytes(token)
        switch message {
        case .hello(let h):
            let m = arena.allocate(Medley__V1__ControlHello.self)
            medley__v1__control_hello__init(m)
            m.pointee.rank = wireRank(h.rank)
            m.pointee.adapter = arena.string(h.adapter)
            m.pointee.vendor = arena.string(h.vendor)
            m.pointee.chip = arena.string(h.chip)
            m.pointee.host = arena.string(h.host)
            m.pointee.pid = h.pid
            m.pointee.memory_bytes = h.memoryBytes
            env.pointee.body_case = MEDLEY__V1__CONTROL_ENVELOPE__BODY_HELLO
            env.pointee.hello = m
        case .heartbeat(let b):
            let m = arena.allocate(Medley__V1__ControlHeartbeat.self)
            medley__v1__control_heartbeat__init(m)
            m.pointee.rank = wireRank(b.rank)
            m.pointee.step = wireCount(b.step)
            if let loss = b.loss { m.pointee.loss = loss; m.pointee.loss_known = 1 }
            if let t = b.tokensPerSecond { m.pointee.tokens_per_s = t; m.pointee.tokens_per_s_known = 1 }
            m.pointee.device_memory_used_bytes = b.deviceMemoryUsedBytes
            m.pointee.health = Medley__V1__ControlHealth(rawValue: numericCast(b.health.rawValue))
            if let age = b.secondsSinceProgress, age.isFinite, age >= 0 {
                m.pointee.seconds_since_progress = age
                m.pointee.seconds_since_progress_known = 1
            }
            env.pointee.body_case = MEDLEY__V1__CONTROL_ENVELOPE__BODY_HEARTBEAT
            env.pointee.heartbeat = m
        case .stepReport(let s):
            let m = arena.allocate(Medley__V1__ControlStepReport.self)
            medley__v1__control_step_report__init(m)
            m.pointee.rank = wireRank(s.rank)
            m.pointee.step = wireCount(s.step)
            m.pointee.loss = s.loss
            m.pointee.tokens_per_s = s.tokensPerSecond
            m.pointee.step_ms = s.stepMs
            m.pointee.compute_ms = s.computeMs
            m.pointee.idle_ms = s.idleMs
            m.pointee.exchange_ms = s.exchangeMs
            m.pointee.share = wireCount(s.share)
            if let v = s.validationLoss { m.pointee.validation_loss = v; m.pointee.validation_loss_known = 1 }
            env.pointee.body_case = MEDLEY__V1__CONTROL_ENVELOPE__BODY_STEP_REPORT
            env.pointee.step_report = m
        case .faultReport(let f):
            let m = arena.allocate(Medley__V1__ControlFaultReport.self)
            medley__v1__control_fault_report__init(m)
            m.pointee.rank = wireRank(f.rank)
            m.pointee.step = wireCount(f.step)
            m.pointee.kind = Medley__V1__ControlFaultKind(rawValue: numericCast(f.kind.rawValue))
            m.pointee.message = arena.string(f.message)
            let suspects = f.suspects.prefix(maxSuspects)
            if !suspects.isEmpty {
                let list = arena.allocate(UInt32.self, count: suspects.count)
                for (i, r) in suspects.enumerated() { list[i] = wireRank(r) }
                m.pointee.n_suspects = suspects.count
                m.pointee.suspects = list
            }
            env.pointee.body_case = MEDLEY__V1__CONTROL_ENVELOPE__BODY_FAULT_REPORT
            env.pointee.fault_report = m
        case .command(let c):
            let m = arena.allocate(Medley__V1__ControlCommand.self)
            medley__v1__control_command__init(m)
            m.pointee.kind = Medley__V1__ControlCommandKind(rawValue: numericCast(c.kind.rawValue))
            m.pointee.reason = arena.string(c.reason)
            env.pointee.body_case = MEDLEY__V1__CONTROL_ENVELOPE__BODY_COMMAND
            env.pointee.command = m
        }
        return withExtendedLifetime(arena) {
            let size = medley__v1__control_envelope__get_packed_size(env)
            var out = [UInt8](repeating: 0, count: prefixBytes + size)
            let n = UInt32(truncatingIfNeeded: size)
            out[0] = UInt8(truncatingIfNeeded: n >> 24)
            out[1] = UInt8(truncatingIfNeeded: n >> 16)
            out[2] = UInt8(truncatingIfNeeded: n >> 8)
            out[3] = UInt8(truncatingIfNeeded: n)
            if size > 0 {
                out.withUnsafeMutableBufferPointer { buf in
                    _ = medley__v1__control_envelope__pack(env, buf.baseAddress! + prefixBytes)
                }
            }
            return out
        }
    }

    /// Decodes one frame's payload (the bytes after the length prefix).
    public static func decodePayload(_ payload: [UInt8], token: [UInt8]) -> ControlDecodeResult {
        payload.withUnsafeBytes { decodePayload($0, token: token) }
    }

    /// Decodes one frame's payload (the bytes after the length prefix).
    public static func decodePayload(_ raw: UnsafeRawBufferPointer, token: [UInt8]) -> ControlDecodeResult {
        let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let env = medley__v1__control_envelope__unpack(nil, raw.count, base) else {
            return .dropped(.undecodable)
        }
        defer { medley__v1__control_envelope__free_unpacked(env, nil) }
        let t = env.pointee.token
        guard constantTimeEqual(t.data, t.len, token) else { return .dropped(.wrongToken) }
        guard let message = try? message(of: env) else { return .dropped(.undecodable) }
        return .message(message)
    }

    // MARK: Encoding helpers

    private static func wireRank(_ rank: Int) -> UInt32 {
        // Out-of-range ranks go out as an out-of-range value, which the reader refuses.
        (0..<maxRank).contains(rank) ? UInt32(rank) : UInt32.max
    }

    private static func wireCount(_ v: Int) -> UInt64 { v < 0 ? UInt64.max : UInt64(v) }

    // MARK: Decoding

    private struct Invalid: Error {}

    private static func message(of env: UnsafePointer<Medley__V1__ControlEnvelope>) throws -> ControlMessage {
        switch env.pointee.body_case {
        case MEDLEY__V1__CONTROL_ENVELOPE__BODY_HELLO:
            guard let m = env.pointee.hello else { throw Invalid() }
            return .hello(ControlHello(
                rank: try rank(m.pointee.rank), adapter: try string(m.pointee.adapter),
                vendor: try string(m.pointee.vendor), chip: try string(m.pointee.chip),
                host: try string(m.pointee.host), pid: m.pointee.pid, memoryBytes: m.pointee.memory_bytes))
        case MEDLEY__V1__CONTROL_ENVELOPE__BODY_HEARTBEAT:
            guard let m = env.pointee.heartbeat else { throw Invalid() }
            guard let health = ControlHealth(rawValue: Int(m.pointee.health.rawValue)) else { throw Invalid() }
            return .heartbeat(ControlHeartbeat(
                rank: try rank(m.pointee.rank), step: try count(m.pointee.step),
                loss: m.pointee.loss_known != 0 ? m.pointee.loss : nil,
                tokensPerSecond: m.pointee.tokens_per_s_known != 0 ? try measure(m.pointee.tokens_per_s) : nil,
                deviceMemoryUsedBytes: m.pointee.device_memory_used_bytes, health: health,
                secondsSinceProgress: m.pointee.seconds_since_progress_known != 0 ? try measure(m.pointee.seconds_since_progress) : nil))
        case MEDLEY__V1__CONTROL_ENVELOPE__BODY_STEP_REPORT:
            guard let m = env.pointee.step_report else { throw Invalid() }
            return .stepReport(ControlStepReport(
                rank: try rank(m.pointee.rank), step: try count(m.pointee.step), loss: m.pointee.loss,
                tokensPerSecond: try measure(m.pointee.tokens_per_s), stepMs: try measure(m.pointee.step_ms),
                computeMs: try measure(m.pointee.compute_ms), idleMs: try measure(m.pointee.idle_ms),
                exchangeMs: try measure(m.pointee.exchange_ms), share: try count(m.pointee.share),
                validationLoss: m.pointee.validation_loss_known != 0 ? m.pointee.validation_loss : nil))
        case MEDLEY__V1__CONTROL_ENVELOPE__BODY_FAULT_REPORT:
            guard let m = env.pointee.fault_report else { throw Invalid() }
            guard let kind = ControlFaultKind(rawValue: Int(m.pointee.kind.rawValue)) else { throw Invalid() }
            guard m.pointee.n_suspects <= maxSuspects else { throw Invalid() }
            let suspects = try (0..<m.pointee.n_suspects).map { try rank(m.pointee.suspects[$0]) }
            return .faultReport(ControlFaultReport(
                rank: try rank(m.pointee.rank), step: try count(m.pointee.step), kind: kind,
                message: try string(m.pointee.message), suspects: suspects))
        case MEDLEY__V1__CONTROL_ENVELOPE__BODY_COMMAND:
            guard let m = env.pointee.command else { throw Invalid() }
            guard let kind = ControlCommandKind(rawValue: Int(m.pointee.kind.rawValue)) else { throw Invalid() }
            return .command(ControlCommand(kind: kind, reason: try string(m.pointee.reason)))
        default:
            throw Invalid()
        }
    }

    private static func rank(_ v: UInt32) throws -> Int {
        guard v < UInt32(maxRank) else { throw Invalid() }
        return Int(v)
    }

    private static func count(_ v: UInt64) throws -> Int {
        guard v <= UInt64(Int.max / 2) else { throw Invalid() }
        return Int(v)
    }

    /// A time or a rate: finite and not negative.
    private static func measure(_ v: Double) throws -> Double {
        guard v.isFinite, v >= 0 else { throw Invalid() }
        return v
    }

    private static func string(_ p: UnsafeMutablePointer<CChar>?) throws -> String {
        guard let p else { return "" }
        let length = strnlen(p, maxStringBytes + 1)
        guard length <= maxStringBytes else { throw Invalid() }
        guard let s = String(validating: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self) else {
            throw Invalid()
        }
        return s
    }

    /// Compares a received token with the job's in time that depends only on their lengths.
    private static func constantTimeEqual(_ data: UnsafeMutablePointer<UInt8>?, _ len: Int, _ token: [UInt8]) -> Bool {
        guard len == token.count else { return false }
        if len == 0 { return true }
        guard let data else { return false }
        var diff: UInt8 = 0
        for i in 0..<len { diff |= data[i] ^ token[i] }
        return diff == 0
    }
}

/// Why a frame was dropped.
public enum ControlDropReason: String, Sendable, Hashable, CaseIterable {
    /// It decoded, but its token is not the job's.
    case wrongToken
    /// It does not unpack, has no body, or a field is out of bounds.
    case undecodable
    /// Its length prefix exceeds the limit; the stream cannot resync after it.
    case oversized
}

/// One frame's fate.
public enum ControlDecodeResult: Sendable, Hashable {
    case message(ControlMessage)
    case dropped(ControlDropReason)
}

/// Streaming decoder for one connection: append bytes as they arrive, then call next() until nil.
public struct ControlFrameDecoder: Sendable {
    private let token: [UInt8]
    private let maxFrameBytes: Int
    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already consumed (compacted lazily).
    private var start = 0
    private var poisoned = false
    /// How many frames were dropped, by reason.
    public private(set) var dropped: [ControlDropReason: Int] = [:]
    /// How many frames decoded to a message.
    public private(set) var decoded = 0

    public init(token: [UInt8], maxFrameBytes: Int = ControlWire.maxFrameBytes) {
        self.token = token
        self.maxFrameBytes = maxFrameBytes
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !poisoned, !bytes.isEmpty else { return }
        if start > 0, start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// nil: need more bytes. After `.dropped(.oversized)` the stream cannot resync: `isPoisoned` is
    /// true and next() returns nil forever (the caller closes the connection).
    public mutating func next() -> ControlDecodeResult? {
        guard !poisoned else { return nil }
        let available = buffer.count - start
        guard available >= ControlWire.prefixBytes else { return nil }
        let length = Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8
            | Int(buffer[start + 3])
        if length > maxFrameBytes {
            poisoned = true
            buffer = []
            start = 0
            dropped[.oversized, default: 0] += 1
            return .dropped(.oversized)
        }
        guard available >= ControlWire.prefixBytes + length else { return nil }
        let from = start + ControlWire.prefixBytes
        start = from + length
        let result = buffer.withUnsafeBytes { raw in
            ControlWire.decodePayload(UnsafeRawBufferPointer(rebasing: raw[from..<(from + length)]), token: token)
        }
        if start == buffer.count { buffer.removeAll(keepingCapacity: true); start = 0 }
        switch result {
        case .message: decoded += 1
        case .dropped(let reason): dropped[reason, default: 0] += 1
        }
        return result
    }

    public var isPoisoned: Bool { poisoned }

    /// Bytes received but not yet a whole frame (a stream that ends with some was truncated).
    public var pendingBytes: Int { buffer.count - start }
}

/// The job's random token, and its text form for the environment.
public struct ControlToken {
    /// Bytes of a token.
    public static let byteCount = 16

    /// 16 bytes from the system's secure generator.
    public static func random() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<byteCount).map { _ in UInt8.random(in: .min ... .max, using: &g) }
    }

    /// Lowercase hex, two digits a byte.
    public static func hex(_ t: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(t.count * 2)
        for b in t { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Exactly 32 hex digits (either case) → 16 bytes; anything else → nil.
    public static func parse(hex: String) -> [UInt8]? {
        let u = Array(hex.utf8)
        guard u.count == byteCount * 2 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(byteCount)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}

/// C memory for protobuf-c structs while they are packed; private to this module.
private final class WireArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func allocate<T>(_: T.Type, count: Int = 1) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * MemoryLayout<T>.stride,
                                                   alignment: MemoryLayout<T>.alignment)
        blocks.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(1, count))
    }

    func bytes(_ b: [UInt8]) -> UnsafeMutablePointer<UInt8> {
        let p = allocate(UInt8.self, count: b.count)
        if !b.isEmpty { p.initialize(from: b, count: b.count) }
        return p
    }

    /// The string as a C string, shortened to ``ControlWire/maxStringBytes`` at a character
    /// boundary, with any NUL (which would cut it short on the other side) replaced by U+FFFD.
    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        var utf8: [UInt8] = []
        for ch in s.unicodeScalars {
            let scalar = ch == "\0" ? "\u{FFFD}" : ch
            let enc = Array(String(scalar).utf8)
            if utf8.count + enc.count > ControlWire.maxStringBytes { break }
            utf8.append(contentsOf: enc)
        }
        utf8.append(0)
        let p = allocate(CChar.self, count: utf8.count)
        utf8.withUnsafeBytes { raw in
            UnsafeMutableRawPointer(p).copyMemory(from: raw.baseAddress!, byteCount: raw.count)
        }
        return p
    }

    deinit { for b in blocks { b.deallocate() } }
}
