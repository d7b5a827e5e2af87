import Foundation
import MedleyTestSupport
import Testing

@Suite("medley adapter bench")
struct BenchCLITests {
    static let tiny = ["--layers", "1", "--dim", "16", "--heads", "2", "--seq", "8", "--batch", "2", "--repeat", "1"]

    /// Runs the bench and parses its JSON rows.
    func bench(_ arguments: [String]) throws -> (TestSupport.ProcessResult, [[String: Any]]) {
        let file = try TestSupport.temporaryDirectory() + "/bench.json"
        let result = try TestSupport.medley(["adapter", "bench"] + arguments + ["--json", file])
        guard result.status == 0 else { return (result, []) }
        let rows = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [[String: Any]]
        return (result, rows ?? [])
    }

    @Test("bench reference on a tiny model exits 0 and writes rows with the required keys")
    func reference() throws {
        let (result, rows) = try bench(["reference"] + Self.tiny)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("matmul_forward"))
        let ops = Set(rows.compactMap { $0["op"] as? String })
        for op in [
            "encoder_forward", "encoder_backward", "layernorm_forward", "layernorm_backward", "matmul_forward",
            "matmul_backward", "attention_forward", "attention_backward", "gelu_forward", "gelu_backward",
            "residual_forward", "residual_backward", "crossentropy_forward", "crossentropy_backward", "adamw_update",
            "sum_squares", "model_fwd_bwd",
        ] {
            #expect(ops.contains(op), "no row for \(op)")
        }
        for row in rows {
            #expect(row["shape"] is String)
            #expect((row["ms"] as? Double).map { $0 > 0 } == true, "\(row)")
            #expect(row["gflops"] is Double)
            let isMatmul = (row["op"] as? String)?.hasPrefix("matmul") == true
            #expect((row["sgemm_gflops"] is Double) == isMatmul, "\(row)")
            #expect((row["ratio"] is Double) == isMatmul, "\(row)")
            #expect(row["reference_ms"] == nil, "reference is not compared with itself unless asked")
        }
        #expect(rows.filter { ($0["op"] as? String)?.hasPrefix("matmul") == true }.count == 10)
        #expect(rows.last?["op"] as? String == "model_fwd_bwd")
        #expect(rows.allSatisfy { $0["statistic"] as? String == "median" && $0["repeats"] as? Int == 1 })
        #expect(rows.first { $0["op"] as? String == "residual_forward" }?["gbps"] is Double)
    }

    @Test("another adapter gets the reference time of the model row; --compare-reference gives every row one")
    func compare() throws {
        let (plain, plainRows) = try bench(["cpu"] + Self.tiny)
        #expect(plain.status == 0, "\(plain.output)")
        #expect(plainRows.last?["reference_ms"] is Double)
        #expect(plainRows.last?["speedup"] is Double)
        #expect(plainRows.dropLast().allSatisfy { $0["reference_ms"] == nil })

        let (compared, rows) = try bench(["sim", "--option", "speed=0.5", "--compare-reference", "--statistic", "min"] + Self.tiny)
        #expect(compared.status == 0, "\(compared.output)")
        #expect(!rows.isEmpty && rows.allSatisfy { $0["reference_ms"] is Double && $0["speedup"] is Double })
        #expect(rows.allSatisfy { $0["statistic"] as? String == "min" })
    }

    @Test("bad input gets one clear line and a non-zero exit")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["no-such-chip"], "not found"),
            (["reference", "--dim", "30", "--heads", "4"], "not a multiple of heads"),
            (["reference", "--layers", "0"], "layers must be at least 1"),
            (["reference", "--repeat", "0"], "--repeat must be at least 1"),
            (["reference", "--option", "novalue"], "not key=value"),
            (["reference", "--statistic", "mean"], "not one of median, min"),
            (["reference", "--json", "/nonexistent-dir/x.json"], "does not exist"),
        ]
        for (arguments, expected) in cases {
            let result = try TestSupport.medley(["adapter", "bench"] + arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.output.contains(expected), "\(arguments): \(result.output)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
            #expect(!result.output.contains("Fatal error"), "\(arguments): \(result.output)")
        }
    }
}
