import Foundation
import MedleyAdapters
import MedleyCore
import MedleyTestSupport
import Testing

@Suite("Adapter loader")
struct AdapterLoaderTests {
    @Test("the reference adapter loads by name from the build products")
    func loadsReference() throws {
        let library = try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath)
        #expect(library.info.name == "reference")
        #expect(library.abiMajor == AdapterABI.major)
        #expect(library.opsetVersion == AdapterABI.opsetVersion)
        #expect(try library.deviceCount() == 1)
    }

    @Test("MEDLEY_ADAPTER_PATH-style search finds a library in an extra directory first")
    func searchPathOrder() throws {
        let dir = try TestSupport.temporaryDirectory()
        let template = try TestSupport.templateAdapter(into: dir)
        let path = AdapterSearchPath(directories: [dir, TestSupport.productsDirectory])
        #expect(try path.resolve("template") == template)
        let names = path.discover().map(\.name)
        #expect(names.contains("template"))
        #expect(names.contains("reference"))
    }

    @Test("an unknown adapter name says where it looked and what to do")
    func unknownName() throws {
        let error = #expect(throws: MedleyError.self) {
            try AdapterLibrary.load("no-such-chip", searchPath: TestSupport.buildSearchPath)
        }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains("libmedley-adapter-no-such-chip") == true)
        #expect(error?.message.contains("MEDLEY_ADAPTER_PATH") == true)
    }

    @Test("a name with odd characters is rejected, not searched")
    func invalidName() throws {
        let error = #expect(throws: MedleyError.self) {
            try AdapterLibrary.load("bad name!", searchPath: TestSupport.buildSearchPath)
        }
        #expect(error?.code == .invalidArgument)
    }

    @Test("a missing file is named")
    func missingFile() throws {
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: "/nonexistent/libx.so") }
        #expect(error?.code == .notFound)
        #expect(error?.message.contains("/nonexistent/libx.so") == true)
    }

    @Test("a file that is not a shared library fails to load with the reason")
    func notALibrary() throws {
        let dir = try TestSupport.temporaryDirectory()
        let path = dir + "/libmedley-adapter-text.so"
        try "not an ELF file".write(toFile: path, atomically: true, encoding: .utf8)
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.code == .adapterLoad)
        #expect(error?.message.contains("cannot load adapter") == true)
    }

    @Test("a library without the entry symbol is not an adapter")
    func noEntrySymbol() throws {
        let path = try TestSupport.brokenAdapter("no-entry", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.message.contains("does not export medley_adapter_get_api") == true)
    }

    @Test("an entry that returns NULL is reported")
    func nullTable() throws {
        let path = try TestSupport.brokenAdapter("null-table", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.message.contains("returned NULL") == true)
    }

    @Test("a wrong ABI major is refused with both versions named")
    func wrongMajor() throws {
        let path = try TestSupport.brokenAdapter("wrong-major", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.code == .adapterLoad)
        #expect(error?.message.contains("ABI major 2") == true)
        #expect(error?.message.contains("speaks ABI major 1") == true)
    }

    @Test("an adapter declaring an opset newer than this Medley knows is refused in one line saying what to do")
    func newerOpset() throws {
        let path = try TestSupport.brokenAdapter("newer-opset", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        let message = error?.message ?? ""
        #expect(error?.code == .adapterLoad)
        #expect(message.contains(path), "\(message)")
        #expect(message.contains("opset \(AdapterABI.opsetVersion + 1)"), "\(message)")
        #expect(message.contains("newest opset this Medley knows is \(AdapterABI.opsetVersion)"), "\(message)")
        #expect(message.contains("rebuild"), "\(message)")
        #expect(!message.contains("\n"), "\(message)")
    }

    @Test("a too-small table is refused, and the entries beyond it count as missing")
    func smallTable() throws {
        let path = try TestSupport.brokenAdapter("small-table", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.message.contains("struct_size 16") == true)
        #expect(error?.message.contains("required entries missing: error_free") == true)
    }

    @Test("every missing required entry is reported in one error")
    func missingEntries() throws {
        let path = try TestSupport.brokenAdapter("missing-entry", into: try TestSupport.temporaryDirectory())
        let error = #expect(throws: MedleyError.self) { try AdapterLibrary(path: path) }
        #expect(error?.message.contains("required entries missing: memset, op_launch") == true)
    }

    @Test("the entry list comes from the header: required entries are exactly the ABI's")
    func entryList() {
        let required = AdapterABI.entries.filter(\.isRequired).map(\.name)
        #expect(required.contains("op_launch"))
        #expect(required.contains("error_free"))
        #expect(!required.contains("copy_d2d"))
        #expect(!required.contains("step_begin"))
        #expect(AdapterABI.opset.count == 17)
        // Offsets are strictly increasing: the table is laid out in list order.
        let offsets = AdapterABI.entries.map(\.offset)
        #expect(offsets == offsets.sorted())
    }

    @Test("docs/adapters.md embeds the entry table generated from the header")
    func docsEntryTable() throws {
        let docs = try String(contentsOfFile: TestSupport.repositoryRoot + "/docs/adapters.md", encoding: .utf8)
        #expect(docs.contains(AdapterABI.entriesMarkdown()))
    }
}
