import Foundation
import MedleyAdapters
import MedleyCore
import MedleyTestSupport
import Testing

@Suite("Check records and adapter names")
struct CheckRecordTests {
    /// A store in a fresh directory.
    static func store() throws -> CheckRecordStore {
        CheckRecordStore(directory: try TestSupport.temporaryDirectory("medley-checks") + "/checks")
    }

    @Test("a passing check is recorded by content hash; a rebuilt library reads as never checked")
    func storeAndLookup() throws {
        let dir = try TestSupport.temporaryDirectory("medley-check-record")
        let path = try TestSupport.templateAdapter(into: dir)
        let store = try Self.store()
        #expect(store.lookup(libraryPath: path) == nil)
        let report = ConformanceCheck(candidate: path, options: [("memory", "1GiB")]).run()
        #expect(report.passed, "\(report.table())")
        let stored = try #require(try store.store(report))
        #expect(stored.passed && stored.failures == 0 && stored.firstFailure == nil)
        #expect(stored.adapter == "template" && stored.libraryPath == path && stored.options == ["memory": "1GiB"])
        #expect(stored.contentHash.count == 16 && stored.rtol == report.tolerance.rtol && stored.atol == report.tolerance.atol)
        #expect(stored.checkedAt.hasSuffix("Z"), "UTC: \(stored.checkedAt)")
        #expect(FileManager.default.fileExists(atPath: store.path(contentHash: stored.contentHash)))
        #expect(store.lookup(libraryPath: path) == stored)
        let library = try AdapterLibrary(path: path)
        #expect(store.status(of: library) == .passed(stored))
        #expect(CheckRecordStore.message(for: .passed(stored), library: library, adapter: "template", refusing: false) == nil)

        // The same bytes under another path are the same build; changed bytes are another build.
        let copy = dir + "/copy.so"
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        #expect(store.lookup(libraryPath: copy)?.contentHash == stored.contentHash)
        let handle = try #require(FileHandle(forWritingAtPath: copy))
        handle.seekToEndOfFile()
        handle.write(Data([0]))
        try handle.close()
        #expect(store.lookup(libraryPath: copy) == nil)
    }

    @Test("a failed check is recorded with its count and first failure, and the warning says FAILED")
    func failedCheck() throws {
        let path = try TestSupport.brokenAdapter("off-by", into: try TestSupport.temporaryDirectory())
        let store = try Self.store()
        let report = ConformanceCheck(candidate: path).run()
        #expect(!report.passed)
        let stored = try #require(try store.store(report))
        #expect(!stored.passed && stored.failures == report.failures.count && stored.failures > 0)
        let first = try #require(report.failures.first)
        #expect(stored.firstFailure == "\(first.group) \(first.item): \(first.detail)")
        let library = try AdapterLibrary(path: path)
        let status = store.status(of: library)
        #expect(status == .failed(stored) && !status.isTrusted)
        let warning = try #require(CheckRecordStore.message(for: status, library: library, adapter: path, refusing: false))
        #expect(warning.hasPrefix("warning: adapter \(library.info.name) (\(path)) FAILED `medley adapter check` in this build"), "\(warning)")
        #expect(warning.contains("first failure: \(stored.firstFailure!)") && warning.contains("`medley adapter check \(path)`"), "\(warning)")
        let refusal = try #require(CheckRecordStore.message(for: status, library: library, adapter: path, refusing: true))
        #expect(refusal.hasPrefix("require_checked: ") && !refusal.contains("\n"), "\(refusal)")
    }

    @Test("never checked: its own wording; the reference adapter is exempt; a corrupt record is no record")
    func uncheckedAndExempt() throws {
        let store = try Self.store()
        let cpu = try AdapterLibrary.load("cpu", searchPath: TestSupport.buildSearchPath)
        #expect(store.status(of: cpu) == .unchecked)
        let warning = try #require(
            CheckRecordStore.message(for: .unchecked, library: cpu, adapter: "cpu", options: ["threads": "2"], refusing: false))
        #expect(warning == "warning: adapter cpu (\(cpu.path)) has not passed `medley adapter check` in this build; run "
            + "`medley adapter check cpu --option threads=2` (or set require_checked: true to refuse unchecked adapters)")
        let reference = try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath)
        #expect(CheckRecordStore.isReference(reference) && store.status(of: reference) == .exempt)

        let (hash, _) = try CheckRecordStore.contentHash(ofFile: cpu.path)
        try FileManager.default.createDirectory(atPath: store.directory, withIntermediateDirectories: true)
        try "{not json".write(toFile: store.path(contentHash: hash), atomically: true, encoding: .utf8)
        #expect(store.lookup(libraryPath: cpu.path) == nil)
    }

    @Test("the records live in MEDLEY_CACHE_DIR/checks, else beside the profile cache")
    func defaultDirectory() {
        #expect(CheckRecordStore.defaultDirectory(environment: ["MEDLEY_CACHE_DIR": "/x/cache"]) == "/x/cache/checks")
        #expect(CheckRecordStore.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x/xdg"]) == "/x/xdg/medley/checks")
        #expect(CheckRecordStore.defaultDirectory(environment: ["HOME": "/home/u"]) == "/home/u/.cache/medley/checks")
    }

    @Test("the content hash is FNV-1a 64 of the bytes, read in chunks")
    func contentHash() throws {
        let dir = try TestSupport.temporaryDirectory("medley-hash")
        try Data().write(to: URL(fileURLWithPath: dir + "/empty"))
        #expect(try CheckRecordStore.contentHash(ofFile: dir + "/empty") == ("cbf29ce484222325", 0))
        try Data("a".utf8).write(to: URL(fileURLWithPath: dir + "/a"))
        #expect(try CheckRecordStore.contentHash(ofFile: dir + "/a") == ("af63dc4c8601ec8c", 1))
        // Longer than one chunk: the same hash as one pass over the bytes.
        let big = Data((0..<(3 << 20) + 17).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try big.write(to: URL(fileURLWithPath: dir + "/big"))
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in big { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        let hex = String(hash, radix: 16)
        #expect(try CheckRecordStore.contentHash(ofFile: dir + "/big").hash == String(repeating: "0", count: 16 - hex.count) + hex)
    }

    @Test("lookup by name: the file name first, then the plugin_info name; two libraries reporting it are ambiguous")
    func namesLookup() throws {
        let dir = try TestSupport.temporaryDirectory("medley-names")
        // The template reports the plugin name `template`; its file says `acme-npu`.
        let path = try TestSupport.buildSharedLibrary(
            named: "acme-npu",
            sources: ["adapters/template/template_adapter.c", "adapters/kit/medley_kit.c", "adapters/kernels/medley_ref_kernels.c"],
            into: dir)
        let search = AdapterSearchPath(directories: [dir])
        #expect(try search.resolve("acme-npu") == path)
        #expect(try search.resolve("template") == path)
        #expect(try AdapterLibrary.load("template", searchPath: search).info.name == "template")
        do {
            _ = try search.resolve("nosuchchip")
            Issue.record("an unknown name resolved")
        } catch let error as MedleyError {
            #expect(error.code == .notFound && error.message.contains("no adapter there reports that plugin name"), "\(error.message)")
        }

        // A second library reporting `template`: neither is picked.
        let second = dir + "/" + AdapterSearchPath.fileName(for: "acme-npu2")
        try FileManager.default.copyItem(atPath: path, toPath: second)
        do {
            _ = try search.resolve("template")
            Issue.record("an ambiguous plugin name resolved")
        } catch let error as MedleyError {
            #expect(error.message.contains(path) && error.message.contains(second) && !error.message.contains("\n"), "\(error.message)")
            #expect(error.message.contains("ambiguous"), "\(error.message)")
        }
        // File names still come first.
        #expect(try search.resolve("acme-npu2") == second)
    }
}
