import MedleyCore

/// A length-prefixed frame: the unit every Medley message travels in.
///
/// Layout (16-byte header, little-endian):
///
/// | bytes | field |
/// | --- | --- |
/// | 0–3 | magic `MDLF` |
/// | 4 | format version (``Frame/currentVersion``) |
/// | 5 | kind (``Frame/Kind``) |
/// | 6–7 | reserved, zero |
/// | 8–11 | body length in bytes |
/// | 12–15 | CRC-32 of the body |
///
/// followed by the body: one protobuf-c encoded message of the kind's type.
/// Decoding trusts nothing: a short buffer, a length over the limit, a bad magic,
/// an unknown version or kind, a bad CRC, or trailing bytes are thrown errors.
public struct Frame: Sendable, Equatable {
    /// What message a frame's body holds.
    public enum Kind: UInt8, Sendable, CaseIterable {
        /// A ``BucketHeader``.
        case bucketHeader = 1
        /// A ``BucketLayoutHeader`` (negotiation).
        case bucketLayoutHeader = 2
        /// An ``ActivationHeader`` (pipeline sends).
        case activationHeader = 3
        /// A ``DeviceProfileRecord`` (the profile cache).
        case deviceProfile = 4
        /// A ``NetworkProfileRecord`` (the profile cache).
        case networkProfile = 5
        /// A checkpoint's manifest (`MedleyTrain.CheckpointManifest`).
        case checkpointManifest = 6
    }

    /// The magic bytes `MDLF`.
    public static let magic: [UInt8] = Array("MDLF".utf8)
    /// The frame format this code writes and the only one it reads.
    public static let currentVersion: UInt8 = 1
    /// Size of the fixed header in bytes.
    public static let headerSize = 16
    /// Default limit on a body's size: no metadata message is anywhere near it.
    public static let defaultMaxBodyBytes = 16 << 20

    /// The kind of message in the body.
    public var kind: Kind
    /// The encoded message.
    public var body: [UInt8]

    /// Creates a frame around an encoded message.
    public init(kind: Kind, body: [UInt8]) {
        self.kind = kind
        self.body = body
    }

    /// The frame's bytes: header then body.
    public func encoded() -> [UInt8] {
        precondition(body.count <= Int(UInt32.max), "frame body too large")
        var out = Frame.magic
        out.reserveCapacity(Frame.headerSize + body.count)
        out.append(Frame.currentVersion)
        out.append(kind.rawValue)
        out.append(contentsOf: [0, 0])
        appendLE(&out, UInt32(body.count))
        appendLE(&out, Checksum.crc32(body))
        out.append(contentsOf: body)
        return out
    }

    /// Decodes exactly one frame that fills `bytes`; anything else is an error.
    public static func decode(_ bytes: [UInt8], maxBodyBytes: Int = defaultMaxBodyBytes) throws -> Frame {
        let (frame, used) = try decodePrefix(bytes[...], maxBodyBytes: maxBodyBytes)
        guard used == bytes.count else {
            throw MedleyError(.corruption, "frame has \(bytes.count - used) trailing bytes after its \(used)-byte frame")
        }
        return frame
    }

    /// Decodes the frame at the start of `bytes`; returns it and how many bytes it used.
    public static func decodePrefix(_ bytes: ArraySlice<UInt8>, maxBodyBytes: Int = defaultMaxBodyBytes) throws -> (Frame, Int) {
        guard bytes.count >= headerSize else {
            throw MedleyError(.corruption, "truncated frame: \(bytes.count) bytes, the header alone is \(headerSize)")
        }
        let b = bytes.startIndex
        guard Array(bytes[b..<b + 4]) == magic else {
            throw MedleyError(.corruption, "not a Medley frame: bad magic \(Array(bytes[b..<b + 4]))")
        }
        let version = bytes[b + 4]
        guard version == currentVersion else {
            throw MedleyError(.corruption, "frame version \(version) is not supported (this build reads version \(currentVersion)); are all ranks running the same Medley?")
        }
        guard let kind = Kind(rawValue: bytes[b + 5]) else {
            throw MedleyError(.corruption, "unknown frame kind \(bytes[b + 5])")
        }
        guard bytes[b + 6] == 0, bytes[b + 7] == 0 else {
            throw MedleyError(.corruption, "frame reserved bytes are not zero")
        }
        let length = Int(readLE32(bytes, b + 8))
        guard length <= maxBodyBytes else {
            throw MedleyError(.corruption, "oversized frame: body of \(length) bytes, the limit is \(maxBodyBytes)")
        }
        guard bytes.count - headerSize >= length else {
            throw MedleyError(.corruption, "truncated frame: body says \(length) bytes, \(bytes.count - headerSize) present")
        }
        let body = Array(bytes[(b + headerSize)..<(b + headerSize + length)])
        let crc = readLE32(bytes, b + 12)
        guard Checksum.crc32(body) == crc else {
            throw MedleyError(.corruption, "frame body fails its CRC-32 check")
        }
        return (Frame(kind: kind, body: body), headerSize + length)
    }
}

private func appendLE(_ out: inout [UInt8], _ v: UInt32) {
    for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
}

private func readLE32(_ bytes: ArraySlice<UInt8>, _ at: Int) -> UInt32 {
    var v: UInt32 = 0
    for i in 0..<4 { v |= UInt32(bytes[at + i]) << (8 * UInt32(i)) }
    return v
}

/// A protobuf message that travels inside a ``Frame``.
public protocol FramedMessage: Sendable {
    /// The frame kind that carries this message.
    static var frameKind: Frame.Kind { get }
    /// The protobuf encoding of the message.
    func serialized() -> [UInt8]
    /// Decodes and validates a protobuf encoding; malformed input throws.
    init(serialized: [UInt8]) throws
}

extension FramedMessage {
    /// The message in a frame, as bytes.
    public func framed() -> [UInt8] { Frame(kind: Self.frameKind, body: serialized()).encoded() }

    /// Decodes a message from a frame's bytes, checking the frame and its kind.
    public init(framed bytes: [UInt8], maxBodyBytes: Int = Frame.defaultMaxBodyBytes) throws {
        let frame = try Frame.decode(bytes, maxBodyBytes: maxBodyBytes)
        guard frame.kind == Self.frameKind else {
            throw MedleyError(.corruption, "expected a \(Self.frameKind) frame, got \(frame.kind)")
        }
        try self.init(serialized: frame.body)
    }
}
