import Foundation
import MedleyComm
import MedleyCore

/// Profiles on disk: one file per chip type and model (and one per link), each a framed,
/// CRC-checked protobuf message (``DeviceProfileRecord`` or ``NetworkProfileRecord``).
///
/// A file is named by the adapter and a 64-bit FNV-1a hash of its *cache key*, the text of
/// everything the measurement depends on (see ``JobProfiles``); the key is also stored inside
/// and compared on reading, so a hash collision is a miss, never a wrong profile. Files are
/// written atomically (a temporary file beside the target, then a rename). A file that cannot
/// be read or decoded is reported through `warn` and treated as missing, so it is measured again.
public struct ProfileCache: Sendable {
    /// The directory that holds the profile files (created on first write).
    public var directory: String
    /// Receives one line per unusable cache file.
    public var warn: @Sendable (String) -> Void

    /// A cache in `directory`.
    public init(directory: String, warn: @escaping @Sendable (String) -> Void = { _ in }) {
        self.directory = directory
        self.warn = warn
    }

    /// The default directory: `$MEDLEY_CACHE_DIR/profiles` when set, else
    /// `$XDG_CACHE_HOME/medley/profiles`, else `~/.cache/medley/profiles`.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        cacheRoot(environment: environment) + "/profiles"
    }

    /// Medley's cache directory on this host: `$MEDLEY_CACHE_DIR` when set, else
    /// `$XDG_CACHE_HOME/medley`, else `~/.cache/medley`.
    public static func cacheRoot(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        CacheDirectory.root(environment: environment)
    }

    /// The file that holds the record for `key`; `label` (an adapter name, `network`) starts the name.
    public func path(label: String, key: String) -> String {
        let base = label.split(separator: "/").last.map(String.init) ?? label
        let safe = String(base.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" })
        let hash = String(Self.fnv1a64(key), radix: 16)
        return directory + "/" + (safe.isEmpty ? "chip" : safe) + "-" + String(repeating: "0", count: 16 - hash.count)
            + hash + ".profile"
    }

    /// The record stored for `key`, or nil when there is none, it is unreadable (warned), or it
    /// was stored for another key.
    public func load<Record: FramedMessage>(_: Record.Type, label: String, key: String, storedKey: (Record) -> String)
        -> Record?
    {
        let file = path(label: label, key: key)
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        guard let data = FileManager.default.contents(atPath: file) else {
            warn("warning: profile cache file \(file) cannot be read; measuring again")
            return nil
        }
        let record: Record
        do {
            record = try Record(framed: [UInt8](data))
        } catch let error as MedleyError {
            warn("warning: profile cache file \(file) is corrupt (\(error.message)); measuring again")
            return nil
        } catch {
            warn("warning: profile cache file \(file) is corrupt (\(error)); measuring again")
            return nil
        }
        guard storedKey(record) == key else { return nil }
        return record
    }

    /// Stores `record` for `key`, atomically; returns the file's path.
    @discardableResult
    public func store<Record: FramedMessage>(_ record: Record, label: String, key: String) throws -> String {
        let file = path(label: label, key: key)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(
                .io, "cannot create the profile cache directory \(directory): \(error.localizedDescription); set MEDLEY_CACHE_DIR or pass --cache DIR")
        }
        try writeAtomically(Data(record.framed()), to: file)
        return file
    }

    /// 64-bit FNV-1a of the UTF-8 bytes: stable across runs and builds (unlike `Hasher`).
    public static func fnv1a64(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so a
/// reader sees the old file or the new one, never a part.
func writeAtomically(_ data: Data, to path: String) throws {
    try CacheDirectory.writeAtomically(data, to: path)
}
