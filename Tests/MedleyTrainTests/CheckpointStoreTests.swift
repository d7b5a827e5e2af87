import Foundation
import MedleyComm
import MedleyCore
import MedleyModel
import MedleyTestSupport
import Testing

@testable import MedleyTrain

/// Checkpoints on disk: atomic, verified by CRC-32C, the newest K kept, damage detected and
/// named, and the previous checkpoint used instead.
@Suite("checkpoint store")
struct CheckpointStoreTests {
    static let layout = ParameterLayout(config: ModelConfig(layers: 1, dim: 8, heads: 2, seq: 4, maxBatch: 2, vocab: 16))

    static func checkpoint(step: Int) throws -> Checkpoint {
        let n = layout.count
        let p = (0..<n).map { Float($0) * 0.25 + Float(step) }
        let m = (0..<n).map { Float($0) * -0.5 }
        let v = (0..<n).map { Float($0) * 1e-3 }
        return Checkpoint(
            job: "demo", step: step, totalSteps: 100, optimizerSteps: step, shares: [3, 1], specYAML: "name: demo\n",
            planJSON: "{}", dataSeed: 7, tokensSeen: UInt64(step * 16), createdUnixMillis: 1_796_000_000_000,
            tensors: try Checkpoint.tensors(layout: layout, parameters: p, firstMoment: m, secondMoment: v))
    }

    @Test("CRC-32C matches the standard check value, in one call or continued")
    func crc32c() {
        let text = Array("123456789".utf8)
        #expect(Checksum.crc32c(text) == 0xE306_9283)
        let split = text.withUnsafeBytes { raw in
            Checksum.crc32c(UnsafeRawBufferPointer(rebasing: raw[5...]),
                            continuing: Checksum.crc32c(UnsafeRawBufferPointer(rebasing: raw[..<5])))
        }
        #expect(split == 0xE306_9283)
        #expect(Checksum.crc32c([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    }

    @Test("written and read back whole; only the newest K stay; no temporary directory is left")
    func roundTrip() throws {
        let directory = try TestSupport.temporaryDirectory("medley-ckpt")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = CheckpointStore(directory: directory, keep: 2)
        for step in [10, 20, 30] { try store.write(try Self.checkpoint(step: step)) }
        #expect(store.steps() == [30, 20])
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(!names.contains { $0.hasPrefix(".") }, "\(names)")
        let found = try #require(store.newest())
        #expect(found.checkpoint == (try Self.checkpoint(step: 30)))
        #expect(found.skipped.isEmpty)
        // Back into flat arrays of the same layout, bit for bit.
        let flat = try found.checkpoint.flat(for: Self.layout)
        #expect(flat.parameters == (0..<Self.layout.count).map { Float($0) * 0.25 + 30 })
        // A stage's layout takes just its tensors, by name.
        let stage = ParameterLayout(config: ModelConfig(layers: 1, dim: 8, heads: 2, seq: 4, maxBatch: 2, vocab: 16), stage: 0..<1)
        let part = try found.checkpoint.flat(for: stage)
        #expect(part.parameters.count == stage.count)
        // Another model is one line naming a tensor.
        let other = ParameterLayout(config: ModelConfig(layers: 2, dim: 8, heads: 2, seq: 4, maxBatch: 2, vocab: 16))
        #expect(throws: MedleyError.self) { try found.checkpoint.flat(for: other) }
        // resolve() takes the store's directory, a run directory above it, or one checkpoint.
        #expect(try CheckpointStore.resolve(directory).checkpoint.step == 30)
        #expect(try CheckpointStore.resolve(directory + "/" + CheckpointStore.name(step: 20)).checkpoint.step == 20)
    }

    @Test("a truncated tensor file, a flipped byte, a missing manifest: named in one line each, and the previous checkpoint is used")
    func damage() throws {
        let directory = try TestSupport.temporaryDirectory("medley-ckpt")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = CheckpointStore(directory: directory, keep: 5)
        for step in [1, 2, 3, 4] { try store.write(try Self.checkpoint(step: step)) }
        func path(_ step: Int) -> String { directory + "/" + CheckpointStore.name(step: step) }

        // 4: a flipped byte in a tensor.
        let tensors = path(4) + "/tensors.bin"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: tensors)))
        bytes[bytes.count / 2] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: tensors))
        // 3: truncated.
        let truncated = path(3) + "/tensors.bin"
        let whole = try Data(contentsOf: URL(fileURLWithPath: truncated))
        try whole.prefix(whole.count - 100).write(to: URL(fileURLWithPath: truncated))
        // 2: no manifest (as a crash before the manifest's rename leaves it).
        try FileManager.default.removeItem(atPath: path(2) + "/MANIFEST")

        let found = try #require(store.newest())
        #expect(found.checkpoint.step == 1)
        #expect(found.skipped.count == 3)
        #expect(found.skipped[0].contains("step-00000004") && found.skipped[0].contains("fails its CRC-32C check"), "\(found.skipped[0])")
        #expect(found.skipped[1].contains("step-00000003") && found.skipped[1].contains("truncated"), "\(found.skipped[1])")
        #expect(found.skipped[2].contains("step-00000002") && found.skipped[2].contains("no MANIFEST"), "\(found.skipped[2])")
        #expect(found.skipped.allSatisfy { !$0.contains("\n") })

        // A manifest of garbage is named too.
        try Data("not a manifest".utf8).write(to: URL(fileURLWithPath: path(1) + "/MANIFEST"))
        #expect(store.newest() == nil)
        #expect(throws: MedleyError.self) { try CheckpointStore.resolve(directory) }
    }

    @Test("the manifest survives a framed protobuf round trip; bad ones are rejected")
    func manifest() throws {
        let directory = try TestSupport.temporaryDirectory("medley-ckpt")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let written = try CheckpointStore(directory: directory).write(try Self.checkpoint(step: 5))
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: written + "/MANIFEST")))
        let manifest = try CheckpointManifest(framed: bytes)
        #expect(manifest.step == 5 && manifest.shares == [3, 1] && manifest.entries.count == 3 * Self.layout.entries.count)
        #expect(try CheckpointManifest(serialized: manifest.serialized()) == manifest)
        var other = manifest
        other.formatVersion = 99
        #expect(throws: MedleyError.self) { try CheckpointManifest(serialized: other.serialized()) }
        var lying = manifest
        lying.entries[0].byteCount += 4
        #expect(throws: MedleyError.self) { try CheckpointManifest(serialized: lying.serialized()) }
    }

    @Test("the writer puts each checkpoint in the snapshot store first (newest only), then on disk; a restart takes the later of the two")
    func snapshotThenDisk() throws {
        let root = try TestSupport.temporaryDirectory("medley-snapshot")
        let disk = root + "/disk", memory = root + "/memory"
        let writer = CheckpointWriter(store: CheckpointStore(directory: disk, keep: 3), snapshot: CheckpointStore(directory: memory, keep: 1))
        for step in [2, 4] { writer.submit(try Self.checkpoint(step: step)) }
        writer.finish()
        #expect(CheckpointStore(directory: disk).steps() == [4, 2])
        #expect(CheckpointStore(directory: memory).steps() == [4])
        #expect(CheckpointStore.newer(disk: disk, memory: memory).map { [$0.path, "\($0.step)", "\($0.fromMemory)"] } == [disk, "4", "false"])
        // Step 6 whole in memory, its disk copy never finished: the snapshot is the newer.
        try CheckpointStore(directory: memory, keep: 1).write(try Self.checkpoint(step: 6))
        #expect(CheckpointStore.newer(disk: disk, memory: memory).map { [$0.path, "\($0.step)", "\($0.fromMemory)"] } == [memory, "6", "true"])
        // A damaged snapshot is passed over.
        let tensors = memory + "/" + CheckpointStore.name(step: 6) + "/tensors.bin"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: tensors))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: tensors))
        #expect(CheckpointStore.newer(disk: disk, memory: memory)?.step == 4)
        #expect(CheckpointStore.newer(disk: root + "/none", memory: nil) == nil)
    }
}
