import Foundation
import MedleyComm
import MedleyCore

/// A directory of checkpoints: `step-00000120/` each holding `tensors.bin` (every tensor's
/// parameters, then its first and second AdamW moments, float32 little-endian, in layout
/// order) and `MANIFEST` (a framed ``CheckpointManifest``).
///
/// Writing is atomic at every level: the files go into a hidden temporary directory and are
/// fsynced, `MANIFEST` is written last (through a temporary name, fsynced, renamed), then the
/// directory is renamed into place and the parent fsynced. A crash leaves either the whole
/// checkpoint or a temporary directory that the next write removes. Only then are checkpoints
/// beyond the newest `keep` deleted, so there is always one whole checkpoint once one was.
public struct CheckpointStore: Sendable {
    /// The directory holding the checkpoints.
    public let directory: String
    /// How many to keep.
    public let keep: Int

    static let tensorsFile = "tensors.bin"
    static let manifestFile = "MANIFEST"
    static let prefix = "step-"

    public init(directory: String, keep: Int = 3) {
        self.directory = directory
        self.keep = max(1, keep)
    }

    /// The directory name of the checkpoint of `step`.
    /// The environment variable that names rank 0's snapshot store (set by `medley launch`).
    public static let snapshotVariable = "MEDLEY_SNAPSHOT_DIR"

    /// Of two stores, the one whose newest checkpoint that verifies is the later step (`disk` on
    /// a tie, or when `memory` has none); nil when neither has one.
    public static func newer(disk: String, memory: String?) -> (path: String, step: Int, fromMemory: Bool)? {
        let onDisk = CheckpointStore(directory: disk).newest()?.checkpoint.step
        let inMemory = memory.flatMap { CheckpointStore(directory: $0).newest()?.checkpoint.step }
        if let inMemory, let memory, inMemory > (onDisk ?? -1) { return (memory, inMemory, true) }
        return onDisk.map { (disk, $0, false) }
    }

    public static func name(step: Int) -> String { prefix + String(format: "%08d", step) }

    /// The steps of the checkpoint directories here (whole or not), newest first.
    public func steps() -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix(Self.prefix) else { return nil }
            return Int(name.dropFirst(Self.prefix.count))
        }.sorted(by: >)
    }

    // MARK: Writing

    /// Writes `checkpoint` atomically, then deletes all but the newest `keep`; returns its directory.
    @discardableResult
    public func write(_ checkpoint: Checkpoint) throws -> String {
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(.io, "cannot make the checkpoint directory \(directory) (\(error.localizedDescription)); pick a writable one")
        }
        let final = directory + "/" + Self.name(step: checkpoint.step)
        let temporary = directory + "/." + Self.name(step: checkpoint.step) + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: temporary)
        do {
            try fm.createDirectory(atPath: temporary, withIntermediateDirectories: false)
            var entries: [CheckpointManifest.Entry] = []
            try Self.writeFile(temporary + "/" + Self.tensorsFile) { out in
                var offset = 0
                for tensor in checkpoint.tensors {
                    for (role, values) in [(CheckpointManifest.Role.parameter, tensor.parameters),
                                           (.firstMoment, tensor.firstMoment), (.secondMoment, tensor.secondMoment)] {
                        guard values.count == tensor.count else {
                            throw MedleyError(.mismatch, "checkpoint tensor '\(tensor.name)' holds \(values.count) values for shape \(tensor.shape)")
                        }
                        let crc = try values.withUnsafeBytes { bytes -> UInt32 in
                            try out(bytes)
                            return Checksum.crc32c(bytes)
                        }
                        entries.append(CheckpointManifest.Entry(
                            name: tensor.name, shape: tensor.shape, role: role, file: Self.tensorsFile, offset: offset,
                            byteCount: values.count * 4, crc32c: crc))
                        offset += values.count * 4
                    }
                }
            }
            let manifest = CheckpointManifest(
                formatVersion: Checkpoint.formatVersion, job: checkpoint.job, step: checkpoint.step, totalSteps: checkpoint.totalSteps,
                optimizerSteps: checkpoint.optimizerSteps, shares: checkpoint.shares, specYAML: checkpoint.specYAML,
                planJSON: checkpoint.planJSON, dataSeed: checkpoint.dataSeed, tokensSeen: checkpoint.tokensSeen,
                createdUnixMillis: checkpoint.createdUnixMillis, entries: entries)
            let manifestBytes = manifest.framed()
            try Self.writeFile(temporary + "/" + Self.manifestFile + ".tmp") { out in
                try manifestBytes.withUnsafeBytes { try out($0) }
            }
            try Self.rename(temporary + "/" + Self.manifestFile + ".tmp", to: temporary + "/" + Self.manifestFile)
            Self.syncDirectory(temporary)
            if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
            try Self.rename(temporary, to: final)
            Self.syncDirectory(directory)
        } catch let error as MedleyError {
            try? fm.removeItem(atPath: temporary)
            throw error
        } catch {
            try? fm.removeItem(atPath: temporary)
            throw MedleyError(.io, "cannot write the checkpoint of step \(checkpoint.step) to \(final): \(error.localizedDescription)")
        }
        prune(keeping: checkpoint.step)
        return final
    }

    /// Deletes checkpoints beyond the newest `keep` (never `step`'s) and leftover temporary directories.
    func prune(keeping step: Int) {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix("." + Self.prefix) && name.contains(".tmp-") {
            // Another live process's temporary directory carries its pid: leave those.
            if let pid = Int32(name.split(separator: "-").last ?? ""), pid != getpid(), kill(pid, 0) == 0 { continue }
            try? fm.removeItem(atPath: directory + "/" + name)
        }
        for old in steps().dropFirst(keep) where old != step {
            try? fm.removeItem(atPath: directory + "/" + Self.name(step: old))
        }
    }

    /// Writes a file through `body` (which is handed a writer of raw bytes), then fsyncs it.
    static func writeFile(_ path: String, _ body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw MedleyError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        try body { bytes in
            var done = 0
            while done < bytes.count {
                let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw MedleyError(.io, "cannot write \(path): \(String(cString: strerror(errno)))") }
                done += n
            }
        }
        guard fsync(fd) == 0 else { throw MedleyError(.io, "cannot fsync \(path): \(String(cString: strerror(errno)))") }
    }

    static func rename(_ from: String, to: String) throws {
        guard Foundation.rename(from, to) == 0 else {
            throw MedleyError(.io, "cannot rename \(from) to \(to): \(String(cString: strerror(errno)))")
        }
    }

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }

    // MARK: Reading

    /// Reads and verifies the checkpoint in `path` (a `step-…` directory): the manifest decodes,
    /// every tensor lies inside `tensors.bin` and matches its CRC-32C, each parameter has both
    /// moments. Throws one line naming what is wrong.
    public static func load(_ path: String) throws -> Checkpoint {
        let manifestPath = path + "/" + manifestFile
        guard let manifestData = FileManager.default.contents(atPath: manifestPath) else {
            throw MedleyError(.notFound, "\(path) has no MANIFEST (the checkpoint was not finished)")
        }
        let manifest: CheckpointManifest
        do {
            manifest = try CheckpointManifest(framed: [UInt8](manifestData), maxBodyBytes: 64 << 20)
        } catch {
            throw MedleyError(.corruption, "\(manifestPath) does not decode: \(error)")
        }
        var files: [String: Data] = [:]
        var tensors: [Checkpoint.Tensor] = []
        var index: [String: Int] = [:]
        for entry in manifest.entries {
            guard !entry.file.contains("/"), !entry.file.hasPrefix(".") else {
                throw MedleyError(.corruption, "\(manifestPath) names the file '\(entry.file)', outside the checkpoint")
            }
            if files[entry.file] == nil {
                guard let data = FileManager.default.contents(atPath: path + "/" + entry.file) else {
                    throw MedleyError(.notFound, "\(path)/\(entry.file) is missing")
                }
                files[entry.file] = data
            }
            let data = files[entry.file]!
            guard entry.offset >= 0, entry.offset + entry.byteCount <= data.count else {
                throw MedleyError(
                    .corruption,
                    "\(path)/\(entry.file) is truncated: '\(entry.name)' needs bytes \(entry.offset)..<\(entry.offset + entry.byteCount), the file has \(data.count)")
            }
            let values = data.withUnsafeBytes { raw -> (crc: UInt32, floats: [Float]) in
                let slice = UnsafeRawBufferPointer(rebasing: raw[entry.offset..<(entry.offset + entry.byteCount)])
                let floats = [Float](unsafeUninitializedCapacity: entry.byteCount / 4) { buffer, count in
                    for i in 0..<(entry.byteCount / 4) {
                        buffer[i] = Float(bitPattern: UInt32(littleEndian: slice.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                    }
                    count = entry.byteCount / 4
                }
                return (Checksum.crc32c(slice), floats)
            }
            guard values.crc == entry.crc32c else {
                throw MedleyError(
                    .corruption,
                    "\(path): tensor '\(entry.name)' (\(entry.role)) fails its CRC-32C check (bytes changed on disk)")
            }
            if index[entry.name] == nil {
                index[entry.name] = tensors.count
                tensors.append(Checkpoint.Tensor(name: entry.name, shape: entry.shape, parameters: [], firstMoment: [], secondMoment: []))
            }
            let i = index[entry.name]!
            guard tensors[i].shape == entry.shape else {
                throw MedleyError(.corruption, "\(manifestPath): tensor '\(entry.name)' has two shapes")
            }
            switch entry.role {
            case .parameter: tensors[i].parameters = values.floats
            case .firstMoment: tensors[i].firstMoment = values.floats
            case .secondMoment: tensors[i].secondMoment = values.floats
            }
        }
        for tensor in tensors where tensor.parameters.count != tensor.count || tensor.firstMoment.count != tensor.count
            || tensor.secondMoment.count != tensor.count {
            throw MedleyError(.corruption, "\(manifestPath): tensor '\(tensor.name)' lacks its parameters or a moment")
        }
        return Checkpoint(
            job: manifest.job, step: manifest.step, totalSteps: manifest.totalSteps, optimizerSteps: manifest.optimizerSteps,
            shares: manifest.shares, specYAML: manifest.specYAML, planJSON: manifest.planJSON, dataSeed: manifest.dataSeed,
            tokensSeen: manifest.tokensSeen, createdUnixMillis: manifest.createdUnixMillis, tensors: tensors)
    }

    /// The newest checkpoint here that verifies, with one line for each newer one that did not
    /// (so the caller can say why an older one is used); nil when none does.
    public func newest() -> (checkpoint: Checkpoint, path: String, skipped: [String])? {
        var skipped: [String] = []
        for step in steps() {
            let path = directory + "/" + Self.name(step: step)
            do {
                return (try Self.load(path), path, skipped)
            } catch {
                skipped.append("checkpoint \(Self.name(step: step)) is unusable: \(error); trying the one before it")
            }
        }
        return nil
    }

    /// The checkpoint `path` names: a `step-…` directory itself, or a directory of them (its
    /// newest that verifies), or a run directory (its `checkpoints/`). Throws one line when
    /// there is none.
    public static func resolve(_ path: String) throws -> (checkpoint: Checkpoint, path: String, skipped: [String]) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MedleyError(.notFound, "\(path) is not a directory; --resume takes a run directory, a checkpoints directory or one step-… checkpoint")
        }
        if FileManager.default.fileExists(atPath: path + "/" + manifestFile) || URL(fileURLWithPath: path).lastPathComponent.hasPrefix(prefix) {
            return (try load(path), path, [])
        }
        let inner = FileManager.default.fileExists(atPath: path + "/checkpoints") ? path + "/checkpoints" : path
        let store = CheckpointStore(directory: inner)
        if let found = store.newest() { return found }
        let tried = store.steps().count
        throw MedleyError(
            .notFound,
            tried == 0
                ? "no checkpoint in \(inner); a run writes them every train.checkpoint_every steps when it has a checkpoint directory"
                : "none of the \(tried) checkpoints in \(inner) verifies (each is damaged or unfinished); the run cannot resume from them")
    }
}
