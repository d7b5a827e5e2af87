import Foundation
import MedleyCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What one run of `medley adapter check` found for one build of an adapter library.
///
/// A build is named by its file's content hash (64-bit FNV-1a of every byte, in hex), so a
/// rebuilt library is a new build that has not been checked, whatever its path.
public struct CheckRecord: Codable, Sendable, Equatable {
    /// The adapter's `plugin_info` name (or what was asked for, if it never loaded).
    public var adapter: String
    /// The library file that was checked.
    public var libraryPath: String
    /// 64-bit FNV-1a of the library file's bytes, 16 hex digits.
    public var contentHash: String
    /// The library file's size in bytes.
    public var libraryBytes: UInt64
    /// Whether every check passed.
    public var passed: Bool
    /// Checks that failed.
    public var failures: Int
    /// The first failure, as `group item: detail`; nil when it passed.
    public var firstFailure: String?
    /// Device options the check opened the device with.
    public var options: [String: String]
    /// The tolerance of the op comparisons.
    public var rtol: Double
    /// The absolute tolerance (relative to a tensor's largest magnitude).
    public var atol: Double
    /// When the check ran, UTC, ISO 8601.
    public var checkedAt: String
    /// The Medley that checked it: its ABI and opset (Medley has no release version yet).
    public var medleyVersion: String?

    enum CodingKeys: String, CodingKey {
        case adapter, passed, failures, options, rtol, atol
        case libraryPath = "library_path"
        case contentHash = "content_hash"
        case libraryBytes = "library_bytes"
        case firstFailure = "first_failure"
        case checkedAt = "checked_at"
        case medleyVersion = "medley_version"
    }

    /// The record of `report`, for a library whose content hash and size are given.
    public init(report: ConformanceReport, contentHash: String, libraryBytes: UInt64, date: Date = Date()) {
        adapter = report.adapter
        libraryPath = report.path
        self.contentHash = contentHash
        self.libraryBytes = libraryBytes
        passed = report.passed
        let failed = report.failures
        failures = failed.count
        firstFailure = failed.first.map { "\($0.group) \($0.item): \($0.detail)" }
        options = report.options
        rtol = report.tolerance.rtol
        atol = report.tolerance.atol
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        checkedAt = formatter.string(from: date)
        medleyVersion = "medley ABI \(AdapterABI.major).\(AdapterABI.minor), opset \(AdapterABI.opsetVersion)"
    }
}

/// The records of `medley adapter check`, one file per library build:
/// `<cache>/checks/<content hash>.json`, holding the latest check of that build.
///
/// Files are written atomically (a temporary file beside the target, then a rename). A file
/// that cannot be read or decoded counts as no record (the build reads as never checked).
public struct CheckRecordStore: Sendable {
    /// The directory that holds the records (created on first write).
    public var directory: String

    /// A store in `directory`.
    public init(directory: String) {
        self.directory = directory
    }

    /// `$MEDLEY_CACHE_DIR/checks` when set, else `$XDG_CACHE_HOME/medley/checks`, else
    /// `~/.cache/medley/checks` (beside the profile cache).
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        CacheDirectory.root(environment: environment) + "/checks"
    }

    /// The store in ``defaultDirectory(environment:)``.
    public static var `default`: CheckRecordStore { CheckRecordStore(directory: defaultDirectory()) }

    /// The file holding the record of the build whose content hash is `hash`.
    public func path(contentHash hash: String) -> String {
        directory + "/" + hash + ".json"
    }

    /// Records `report` under its library's current content hash; returns the record, or nil
    /// when the report names no library file (the adapter was never found).
    @discardableResult
    public func store(_ report: ConformanceReport, date: Date = Date()) throws -> CheckRecord? {
        guard !report.path.isEmpty, FileManager.default.fileExists(atPath: report.path) else { return nil }
        let (hash, bytes) = try Self.contentHash(ofFile: report.path)
        let record = CheckRecord(report: report, contentHash: hash, libraryBytes: bytes, date: date)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(
                .io, "cannot create the check record directory \(directory): \(error.localizedDescription); set MEDLEY_CACHE_DIR")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try CacheDirectory.writeAtomically(try encoder.encode(record), to: path(contentHash: hash))
        return record
    }

    /// ``store(_:date:)``, with a failure to record told on standard error as one warning line
    /// (the check's own verdict stands either way).
    public func storeQuietly(_ report: ConformanceReport) {
        do {
            try store(report)
        } catch {
            let reason = (error as? MedleyError)?.message ?? "\(error)"
            FileHandle.standardError.write(Data("warning: the check result was not recorded: \(reason)\n".utf8))
        }
    }

    /// The latest record for the library file's current content, or nil when that build was
    /// never checked (or the file cannot be read).
    public func lookup(libraryPath: String) -> CheckRecord? {
        guard let (hash, _) = try? Self.contentHash(ofFile: libraryPath) else { return nil }
        guard let data = FileManager.default.contents(atPath: path(contentHash: hash)),
            let record = try? JSONDecoder().decode(CheckRecord.self, from: data), record.contentHash == hash
        else { return nil }
        return record
    }

    // MARK: Content hash

    /// In-process memo of file hashes by (path, size, modification time): a job looks each
    /// library up more than once.
    private static let memo = HashMemo()

    /// 64-bit FNV-1a of the file's bytes (16 hex digits) and its size, read in 1 MiB chunks.
    public static func contentHash(ofFile path: String) throws -> (hash: String, bytes: UInt64) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw MedleyError(.notFound, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        #if os(Linux)
        let modified = "\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        #else
        let modified = "\(info.st_mtimespec.tv_sec).\(info.st_mtimespec.tv_nsec)"
        #endif
        let key = "\(path)\u{0}\(info.st_size)\u{0}\(modified)"
        if let known = memo.get(key) { return known }
        guard let file = fopen(path, "rb") else {
            throw MedleyError(.io, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        var total: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count == 0 { break }
            total += UInt64(count)
            buffer.withUnsafeBufferPointer { bytes in
                for byte in bytes[0..<count] {
                    hash ^= UInt64(byte)
                    hash = hash &* 0x0000_0100_0000_01b3
                }
            }
        }
        guard ferror(file) == 0 else { throw MedleyError(.io, "cannot read \(path)") }
        let hex = String(hash, radix: 16)
        let result = (String(repeating: "0", count: 16 - hex.count) + hex, total)
        memo.set(key, result)
        return result
    }
}

/// A locked dictionary of computed hashes.
private final class HashMemo: @unchecked Sendable {
    // @unchecked: `values` is only touched under `lock`.
    private let lock = NSLock()
    private var values: [String: (String, UInt64)] = [:]

    func get(_ key: String) -> (hash: String, bytes: UInt64)? {
        lock.lock()
        defer { lock.unlock() }
        return values[key].map { ($0.0, $0.1) }
    }

    func set(_ key: String, _ value: (hash: String, bytes: UInt64)) {
        lock.lock()
        defer { lock.unlock() }
        values[key] = (value.hash, value.bytes)
    }
}

// MARK: What training makes of the records

/// Where one adapter library stands with `medley adapter check`, as `medley train` sees it.
public enum AdapterCheckStatus: Sendable, Equatable {
    /// The reference adapter: the check's own oracle, so there is nothing to check it against.
    case exempt
    /// This build passed its latest check.
    case passed(CheckRecord)
    /// This build failed its latest check.
    case failed(CheckRecord)
    /// This build was never checked (on this host, in this cache).
    case unchecked

    /// Whether training may use it under `require_checked: true`.
    public var isTrusted: Bool {
        switch self {
        case .exempt, .passed: true
        case .failed, .unchecked: false
        }
    }
}

extension CheckRecordStore {
    /// Whether `library` is the reference adapter Medley builds (its plugin name and file name
    /// are both `reference`): exempt from the check, which compares every adapter against it.
    public static func isReference(_ library: AdapterLibrary) -> Bool {
        library.info.name == "reference"
            && (library.path.split(separator: "/").last.map(String.init) ?? library.path) == AdapterSearchPath.fileName(for: "reference")
    }

    /// Where `library`'s current build stands.
    public func status(of library: AdapterLibrary) -> AdapterCheckStatus {
        if Self.isReference(library) { return .exempt }
        guard let record = lookup(libraryPath: library.path) else { return .unchecked }
        return record.passed ? .passed(record) : .failed(record)
    }

    /// The one line `medley train` prints for an adapter that is not trusted (nil for one that
    /// is): `adapter` is how the job names it, `options` its device options (for the command
    /// to run), `refusing` whether the job refuses it (`require_checked: true`).
    public static func message(
        for status: AdapterCheckStatus, library: AdapterLibrary, adapter: String, options: [String: String] = [:],
        refusing: Bool
    ) -> String? {
        let command = (["medley adapter check \(adapter)"] + options.sorted { $0.key < $1.key }.map { "--option \($0.key)=\($0.value)" })
            .joined(separator: " ")
        let who = "adapter \(library.info.name) (\(library.path))"
        switch status {
        case .exempt, .passed:
            return nil
        case .unchecked:
            let start = "\(who) has not passed `medley adapter check` in this build"
            return refusing
                ? "require_checked: \(start) (never checked); run `\(command)`, or leave require_checked out to train with a warning"
                : "warning: \(start); run `\(command)` (or set require_checked: true to refuse unchecked adapters)"
        case .failed(let record):
            let first = record.firstFailure.map { "; first failure: \($0)" } ?? ""
            let start = "\(who) FAILED `medley adapter check` in this build (\(record.failures) check\(record.failures == 1 ? "" : "s") failed, \(record.checkedAt)\(first))"
            return refusing
                ? "require_checked: \(start); fix it and run `\(command)` again"
                : "warning: \(start); it may train on wrong numbers: fix it and run `\(command)` again (or set require_checked: true to refuse failing adapters)"
        }
    }
}
