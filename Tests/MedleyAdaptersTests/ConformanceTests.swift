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
    }

    @Test("the adapter template, built as the guide says, passes every check")
    func templatePasses() throws {
        let path = try TestSupport.templateAdapter(into: try TestSupport.temporaryDirectory())
        let report = ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath).run()
        #expect(report.passed, "\(report.table())")
        #expect(report.adapter == "template")
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

    @Test("tolerances order as the dtypes' precision")
    func tolerances() {
        #expect(Tolerance.forDType(.f32).rtol < Tolerance.forDType(.f16).rtol)
        #expect(Tolerance.forDType(.f16).rtol < Tolerance.forDType(.bf16).rtol)
    }
}
