import Foundation
import MedleyAdapters
import MedleyTestSupport
import Testing

/// The mistakes real kernels make, each built as a C fixture (Tests/Fixtures/adapters/broken_adapter.c),
/// checked through the isolated checker as `medley adapter check` runs it: each fails its own row with
/// its own diagnosis, and the checker survives every one.
@Suite("Conformance kit: diagnoses and a checker that survives the adapter")
struct ConformanceDiagnosisTests {
    struct Fixture: CustomTestStringConvertible, Sendable {
        var kind: String
        var item: String
        var says: [String]
        var testDescription: String { kind }
    }

    static let fixtures: [Fixture] = [
        Fixture(kind: "eps-1e6", item: "layernorm_forward",
                says: ["low-variance rows", "behaves as eps ≈ 1.000e-6", "ignores the 'eps' attribute"]),
        Fixture(kind: "eps-0", item: "layernorm_forward", says: ["behaves as eps = 0", "ignores the 'eps' attribute"]),
        Fixture(kind: "adamw-betas", item: "adamw_update",
                says: ["ignores the 'beta1' attribute", "ignores the 'beta2' attribute"]),
        Fixture(kind: "overrun", item: "matmul_forward", says: ["wrote 240 bytes past output 0 (out) of matmul_forward"]),
        Fixture(kind: "overwrite", item: "matmul_backward",
                says: ["overwrote instead of accumulating", "backward ops use +="]),
        Fixture(kind: "transposed", item: "matmul_forward", says: ["weight read transposed"]),
        Fixture(kind: "no-bias", item: "matmul_forward", says: ["only the variant without bias fails"]),
        Fixture(kind: "crash", item: "gelu_backward", says: ["signal 11 (SIGSEGV)", "during op gelu_backward"]),
        Fixture(kind: "no-errors", item: "unknown op", says: ["returned success", "UNSUPPORTED"]),
    ]

    private static func isolated(_ path: String, unitTimeout: Double = 60) -> IsolatedCheck {
        IsolatedCheck(
            check: ConformanceCheck(candidate: path, searchPath: TestSupport.buildSearchPath),
            executable: TestSupport.medleyExecutable, unitTimeout: unitTimeout)
    }

    @Test("each broken kernel fails its own row, with its diagnosis, and the check goes on", arguments: fixtures)
    func diagnoses(_ fixture: Fixture) throws {
        let path = try TestSupport.brokenAdapter(fixture.kind, into: try TestSupport.temporaryDirectory())
        var streamed: [ConformanceReport.Row] = []
        let report = Self.isolated(path).run { streamed.append($0) }
        // Its own row fails, and no other, apart from finite differences on the adapter itself
        // that disagree with the same op family's broken kernel.
        let family = fixture.item.split(separator: "_").first.map(String.init) ?? fixture.item
        #expect(report.failures.filter { $0.group != "gradient" }.map(\.item) == [fixture.item], "\(report.table())")
        for row in report.failures where row.group == "gradient" {
            #expect(row.item.contains(family) || row.item == "adapter", "\(fixture.kind): \(row.item): \(row.detail)")
        }
        let detail = report.failures.first { $0.group != "gradient" }?.detail ?? ""
        for phrase in fixture.says {
            #expect(detail.contains(phrase), "\(fixture.kind): \(detail)")
        }
        // Every op and every error path was still checked: nothing after the failure was lost.
        #expect(Set(report.rows.filter { $0.group == "op" }.map(\.item)) == Set(AdapterABI.opset.map(\.name)))
        #expect(report.rows.filter { $0.group == "error" }.count >= 10)
        #expect(streamed.count == report.rows.count)
    }

    @Test("an op that never returns fails as hung, and the next op is checked by a new child")
    func hang() throws {
        let path = try TestSupport.brokenAdapter("hang", into: try TestSupport.temporaryDirectory())
        let report = Self.isolated(path, unitTimeout: 2).run()
        let hung = try #require(report.failures.first { $0.item == "gelu_forward" })
        #expect(hung.detail.contains("did not return within 2 s"))
        #expect(report.rows.contains { $0.item == "gelu_backward" && $0.status == .pass })
    }

    @Test("medley adapter check prints each row, then one FAIL verdict, and never crashes itself")
    func commandSurvivesACrash() throws {
        let path = try TestSupport.brokenAdapter("crash", into: try TestSupport.temporaryDirectory())
        let result = try TestSupport.medley(["adapter", "check", path])
        #expect(result.status == 1)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.first?.hasPrefix("group") == true)
        // The row, the adapter's own gradient check (whose gelu_backward crashes too), and the verdict.
        #expect(lines.filter { $0.contains("FAIL") }.count == 3, "\(result.stdout)")
        #expect(lines.last?.hasPrefix("adapter template: FAIL (2 of") == true, "\(result.stdout)")
        #expect(!result.output.contains("Fatal error"))
        #expect(!result.output.contains(IsolatedCheck.linePrefix))
    }

    @Test("--op checks only the ops named; an unknown name is one line")
    func onlyOps() throws {
        let result = try TestSupport.medley(["adapter", "check", "reference", "--op", "matmul_forward", "--json"])
        #expect(result.status == 0, "\(result.output)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let rows = object?["rows"] as? [[String: Any]] ?? []
        #expect(rows.filter { $0["group"] as? String == "op" }.compactMap { $0["item"] as? String } == ["matmul_forward"])
        let bad = try TestSupport.medley(["adapter", "check", "reference", "--op", "matmul"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--op 'matmul' is not an op of opset v1"))
    }

    @Test("a correct kernel passes the hard cases: shipped adapters in the isolated check", arguments: ["reference", "cpu", "sim"])
    func shippedPassIsolated(_ name: String) {
        let report = Self.isolated(name).run()
        #expect(report.passed, "\(report.table())")
    }
}
