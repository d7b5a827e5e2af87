import Foundation
import MedleyTestSupport
import Testing

@Suite("medley CLI")
struct CLITests {
    @Test("medley adapters lists the reference adapter and exits 0")
    func adapters() throws {
        let result = try TestSupport.medley(["adapters"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("reference"))
        #expect(result.stdout.contains("Medley"))
    }

    @Test("medley adapters exits non-zero and names an adapter that cannot load")
    func adaptersWithBroken() throws {
        let dir = try TestSupport.temporaryDirectory()
        _ = try TestSupport.brokenAdapter("wrong-major", into: dir)
        let result = try TestSupport.medley(["adapters"], environment: ["MEDLEY_ADAPTER_PATH": dir])
        #expect(result.status != 0)
        #expect(result.stdout.contains("broken-wrong-major"))
        #expect(result.stdout.contains("ABI major 2"))
    }

    @Test("medley adapter check reference passes with exit 0")
    func checkReference() throws {
        let result = try TestSupport.medley(["adapter", "check", "reference"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("adapter reference: PASS"))
    }

    @Test("--json writes a parseable report")
    func checkJSON() throws {
        let result = try TestSupport.medley(["adapter", "check", "reference", "--json"])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect(object?["passed"] as? Bool == true)
        #expect((object?["rows"] as? [Any])?.isEmpty == false)
    }

    @Test("a broken adapter exits 1 and the verdict names the op")
    func checkBroken() throws {
        let path = try TestSupport.brokenAdapter("off-by", into: try TestSupport.temporaryDirectory())
        let result = try TestSupport.medley(["adapter", "check", path])
        #expect(result.status == 1)
        #expect(result.stdout.contains("FAIL"))
        #expect(result.stdout.contains("gelu_forward"))
    }

    @Test("bad input gets one clear line and a non-zero exit")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["adapter", "check", "no-such-chip"], "not found"),
            (["adapter", "check", "/nonexistent/lib.so"], "does not exist"),
            (["adapter", "check", "reference", "--option", "novalue"], "not key=value"),
            (["adapter", "check", "reference", "--tolerance", "f64"], "not one of"),
            (["adapter", "check", "reference", "--option", "memory=lots"], "memory"),
        ]
        for (arguments, expected) in cases {
            let result = try TestSupport.medley(arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.output.contains(expected), "\(arguments): \(result.output)")
            #expect(!result.output.contains("Fatal error"), "\(arguments): \(result.output)")
        }
    }

    @Test("medley adapter entries prints the table docs/adapters.md embeds")
    func entries() throws {
        let result = try TestSupport.medley(["adapter", "entries"])
        #expect(result.status == 0)
        let docs = try String(contentsOfFile: TestSupport.repositoryRoot + "/docs/adapters.md", encoding: .utf8)
        #expect(docs.contains(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}
