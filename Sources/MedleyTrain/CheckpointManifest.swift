import CMedleyProto
import Foundation
import MedleyComm
import MedleyCore

/// A checkpoint's index (`CheckpointManifest` in protos/medley.proto), framed in the `MANIFEST`
/// file: what the checkpoint is, and where each tensor's bytes lie in `tensors.bin` with their
/// CRC-32C. Written after the tensors, so a checkpoint without one is unfinished.
public struct CheckpointManifest: Sendable, Equatable {
    /// What an entry holds for its parameter.
    public enum Role: Int, Sendable, Equatable, CaseIterable {
        case parameter = 1
        case firstMoment = 2
        case secondMoment = 3
    }

    /// One tensor's place in the checkpoint.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var role: Role
        public var file: String
        public var offset: Int
        public var byteCount: Int
        public var crc32c: UInt32
    }

    public var formatVersion: UInt32
    public var job: String
    public var step: Int
    public var totalSteps: Int
    public var optimizerSteps: Int
    public var shares: [Int]
    public var specYAML: String
    public var planJSON: String
    public var dataSeed: UInt64
    public var tokensSeen: UInt64
    public var createdUnixMillis: UInt64
    public var entries: [Entry]

    /// Bounds a decoded manifest must respect (a checkpoint on disk is read as untrusted bytes).
    static let maxEntries = 1 << 20
    static let maxTextBytes = 8 << 20
    static let maxShares = 1 << 20
}

extension CheckpointManifest.Role {
    var wire: Medley__V1__CheckpointRole { Medley__V1__CheckpointRole(rawValue: numericCast(rawValue)) }
}

extension CheckpointManifest: FramedMessage {
    /// Frames of kind ``Frame/Kind/checkpointManifest``.
    public static var frameKind: Frame.Kind { .checkpointManifest }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = arena.allocate(Medley__V1__CheckpointManifest.self, count: 1)
        medley__v1__checkpoint_manifest__init(m)
        m.pointee.job_id = arena.string(job)
        m.pointee.step = UInt64(step)
        m.pointee.format_version = formatVersion
        m.pointee.optimizer_steps = UInt64(optimizerSteps)
        let shareList = arena.allocate(UInt32.self, count: shares.count)
        for (i, share) in shares.enumerated() { shareList[i] = UInt32(clamping: share) }
        m.pointee.n_shares = shares.count
        m.pointee.shares = shareList
        m.pointee.spec_yaml = arena.string(specYAML)
        m.pointee.plan_json = arena.string(planJSON)
        m.pointee.data_seed = dataSeed
        m.pointee.total_steps = UInt64(totalSteps)
        m.pointee.created_unix_millis = createdUnixMillis
        m.pointee.tokens_seen = tokensSeen
        let list = arena.allocate(UnsafeMutablePointer<Medley__V1__CheckpointEntry>?.self, count: entries.count)
        for (i, entry) in entries.enumerated() {
            let e = arena.allocate(Medley__V1__CheckpointEntry.self, count: 1)
            medley__v1__checkpoint_entry__init(e)
            let t = arena.allocate(Medley__V1__TensorMeta.self, count: 1)
            medley__v1__tensor_meta__init(t)
            t.pointee.name = arena.string(entry.name)
            t.pointee.n_shape = entry.shape.count
            t.pointee.shape = arena.shape(entry.shape)
            t.pointee.dtype = DType.float32.wire
            t.pointee.byte_offset = UInt64(entry.offset)
            e.pointee.tensor = t
            e.pointee.file = arena.string(entry.file)
            e.pointee.checksum = UInt64(entry.crc32c)
            e.pointee.role = entry.role.wire
            e.pointee.byte_count = UInt64(entry.byteCount)
            list[i] = e
        }
        m.pointee.n_entries = entries.count
        m.pointee.entries = list
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__checkpoint_manifest__get_packed_size(m)) { medley__v1__checkpoint_manifest__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding: a known format, known roles, float32 tensors
    /// whose byte count is their shape's, bounded strings and lists.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__checkpoint_manifest__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid CheckpointManifest") }
        defer { medley__v1__checkpoint_manifest__free_unpacked(p, nil) }
        let m = p.pointee
        guard m.format_version == Checkpoint.formatVersion else {
            throw MedleyError(
                .corruption, "checkpoint format \(m.format_version), but this build reads format \(Checkpoint.formatVersion) only")
        }
        guard m.n_entries <= Self.maxEntries, m.n_entries == 0 || m.entries != nil else {
            throw MedleyError(.corruption, "checkpoint manifest lists \(m.n_entries) tensors")
        }
        guard m.n_shares <= Self.maxShares, m.n_shares == 0 || m.shares != nil else {
            throw MedleyError(.corruption, "checkpoint manifest lists \(m.n_shares) shares")
        }
        var entries: [Entry] = []
        for i in 0..<m.n_entries {
            guard let e = m.entries[i], let t = e.pointee.tensor else {
                throw MedleyError(.corruption, "checkpoint manifest: tensor \(i) is empty")
            }
            let name = try validatedString(t.pointee.name, what: "checkpoint tensor \(i) name")
            let shape = try validatedShape(t.pointee.n_shape, t.pointee.shape, what: "checkpoint tensor '\(name)'")
            guard t.pointee.dtype == DType.float32.wire else {
                throw MedleyError(.corruption, "checkpoint tensor '\(name)': only float32 is written, got dtype \(t.pointee.dtype.rawValue)")
            }
            guard let role = Role(rawValue: Int(e.pointee.role.rawValue)) else {
                throw MedleyError(.corruption, "checkpoint tensor '\(name)': unknown role \(e.pointee.role.rawValue)")
            }
            let byteCount = try checkedInt(e.pointee.byte_count, what: "checkpoint tensor '\(name)' bytes")
            guard byteCount == shape.reduce(1, *) * 4 else {
                throw MedleyError(.corruption, "checkpoint tensor '\(name)': \(byteCount) bytes for shape \(shape)")
            }
            entries.append(Entry(
                name: name, shape: shape, role: role, file: try validatedString(e.pointee.file, what: "checkpoint tensor '\(name)' file"),
                offset: try checkedInt(t.pointee.byte_offset, what: "checkpoint tensor '\(name)' offset"), byteCount: byteCount,
                crc32c: UInt32(truncatingIfNeeded: e.pointee.checksum)))
        }
        formatVersion = m.format_version
        job = try validatedString(m.job_id, what: "checkpoint job")
        step = try checkedInt(m.step, what: "checkpoint step")
        totalSteps = try checkedInt(m.total_steps, what: "checkpoint total steps")
        optimizerSteps = try checkedInt(m.optimizer_steps, what: "checkpoint optimizer steps")
        shares = (0..<m.n_shares).map { Int(m.shares[$0]) }
        specYAML = try validatedString(m.spec_yaml, what: "checkpoint spec", maxBytes: Self.maxTextBytes)
        planJSON = try validatedString(m.plan_json, what: "checkpoint plan", maxBytes: Self.maxTextBytes)
        dataSeed = m.data_seed
        tokensSeen = m.tokens_seen
        createdUnixMillis = m.created_unix_millis
        self.entries = entries
    }
}
