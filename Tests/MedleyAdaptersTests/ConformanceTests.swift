import MedleyAdapters
import MedleyTestSupport
import Testing

@Suite("Conformance kit")
struct ConformanceTests {
    @Test("the reference adapter passes every check")
    func referencePasses() {
        let report = ConformanceCheck(candidate: "reference", searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        let ops = Set(report.rows.filter { $0.group == "op" }.map(\.item))
        #expect(ops == Set(AdapterABI.opset.map(\.name)))
        #expect(report.rows.filter { $0.group == "gradient" }.count == 7)
        #expect(report.rows.filter { $0.group == "error" }.count >= 10)
    }

    @Test("the cpu and sim adapters pass every check", arguments: ["cpu", "sim"])
    func shippedAdaptersPass(_ name: String) {
        let report = ConformanceCheck(candidate: name, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        // Finite differences on the adapter's own ops, beside the reference's.
        #expect(report.rows.filter { $0.group == "gradient" && $0.item.hasPrefix(name + " ") && $0.status == .pass }.count == 7)
    }

    @Test("the adapter template, built as the guide says, passes every check")
    func templatePasses() throws {
        let path = try TestSupport.templateAdapter(into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        #expect(report.adapter == "template")
    }

    @Test("the minimal template, built as the guide says, passes every check and skips only what it documents")
    func minimalPasses() throws {
        let path = try TestSupport.minimalAdapter(into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        #expect(report.adapter == "minimal")
        let ops = Set(report.rows.filter { $0.group == "op" && $0.status == .pass }.map(\.item))
        #expect(ops == Set(AdapterABI.opset.map(\.name)))
        // The optional subset it leaves out, as its header comment and docs/adapters.md say.
        let library = try AdapterLibrary(path: path)
        #expect(library.optionalEntriesAbsent == ["copy_d2d", "stream_create", "stream_destroy", "step_begin"])
        #expect(report.rows.filter { $0.status == .skip }.map(\.item) == ["d2d"])
        let device = try library.openDevice(0)
        #expect(try !device.supports("gelu_forward", dtype: .bf16))
        #expect(try library.deviceCount() == 1)
    }

    @Test("the minimal template fits one screen, and the guide builds it from the sources the test uses")
    func minimalIsSmallAndDocumented() throws {
        let root = TestSupport.repositoryRoot
        let source = try String(contentsOfFile: root + "/adapters/template/minimal_adapter.c", encoding: .utf8)
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false).count - 1
        #expect(lines <= 150, "minimal_adapter.c has \(lines) lines")
        let guide = try String(contentsOfFile: root + "/docs/adapters.md", encoding: .utf8)
        // The guide's commands as words, so that line continuations do not matter.
        let words = guide.split(whereSeparator: \.isWhitespace).filter { $0 != "\\" }.joined(separator: " ")
        let sources = TestSupport.minimalAdapterSources.joined(separator: " ")
        #expect(words.contains(sources + " -lm -o libmedley-adapter-minimal.so"),
                "docs/adapters.md does not build the minimal template from \(sources)")
        // It is the first adapter the guide shows: before the full template.
        let minimal = try #require(guide.range(of: "minimal_adapter.c"))
        let full = try #require(guide.range(of: "template_adapter.c"))
        #expect(minimal.lowerBound < full.lowerBound)
    }

    @Test("an op that is off by 1e-2 fails, naming the op, the worst element and the tolerance")
    func offByOneHundredth() throws {
        let path = try TestSupport.brokenAdapter("off-by", into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(!report.passed)
        #expect(report.failures.map(\.item) == ["gelu_forward"])
        let detail = report.failures.first?.detail ?? ""
        #expect(detail.contains("out["))
        #expect(detail.contains("tolerance"))
        #expect(report.verdict().contains("gelu_forward"))
    }

    @Test("an adapter that accepts unknown ops fails the error-path check")
    func acceptsUnknownOps() throws {
        let path = try TestSupport.brokenAdapter("no-errors", into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.failures.map(\.item) == ["unknown op"])
        #expect(report.failures.first?.detail.contains("returned success") == true)
    }

    @Test("an adapter that cannot load is one failed row, not a crash")
    func unloadable() throws {
        let path = try TestSupport.brokenAdapter("wrong-major", into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.rows.count == 1)
        #expect(report.failures.first?.detail.contains("ABI major 2") == true)
    }

    @Test("an adapter declaring a newer opset fails the check at load, in one row")
    func newerOpsetFails() throws {
        let path = try TestSupport.brokenAdapter("newer-opset", into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(!report.passed)
        #expect(report.rows.map(\.item) == ["load"])
        #expect(report.failures.first?.detail.contains("opset \(AdapterABI.opsetVersion + 1)") == true)
    }

    @Test("tolerances order as the dtypes' precision")
    func tolerances() {
        #expect(Tolerance.forDType(.f32).rtol < Tolerance.forDType(.f16).rtol)
        #expect(Tolerance.forDType(.f16).rtol < Tolerance.forDType(.bf16).rtol)
    }
}
