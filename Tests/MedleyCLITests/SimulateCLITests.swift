import Foundation
import MedleyTestSupport
import Testing

@Suite("medley simulate")
struct SimulateCLITests {
    @Test("simulate prints the plan and writes the JSON report")
    func simulate() throws {
        let file = try TestSupport.temporaryDirectory() + "/simulate.json"
        let result = try TestSupport.medley(["simulate", "--devices", "6xA,6xB,4xC", "--layers", "8", "--json", file])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("simulate 6xA,6xB,4xC: 16 chips"))
        #expect(result.stdout.contains("replica") && result.stdout.contains("fwd+bwd ms"))
        #expect(result.stdout.contains("predicted step"))
        #expect(result.stdout.contains("efficiency"))
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        let report = try #require(object)
        #expect(report["devices"] as? String == "6xA,6xB,4xC")
        #expect(report["chips"] as? Int == 16)
        #expect((report["plan_seconds"] as? Double).map { $0 >= 0 } == true)
        #expect((report["predicted_tokens_per_s"] as? Double).map { $0 > 0 } == true)
        #expect((report["predicted_efficiency"] as? Double).map { $0 > 0 } == true)
        #expect(report["plan"] is [String: Any])
        // Nothing but the report is left in the directory (written to a temporary file, then renamed).
        let directory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["simulate.json"])
    }

    @Test("profiles from a file name the chip types")
    func profilesFile() throws {
        let directory = try TestSupport.temporaryDirectory()
        let timings = ["embedding", "block", "head"].map {
            "{\"kind\":\"\($0)\",\"microbatch\":1,\"forwardMs\":1,\"backwardMs\":2}"
        }.joined(separator: ",")
        let profile = { (chip: String, memory: Int) in
            "{\"chip\":\"\(chip)\",\"adapter\":\"\",\"vendor\":\"v\",\"name\":\"n\",\"memoryBytes\":\(memory),"
                + "\"timings\":[\(timings)],\"optimizerMsPerParameterByte\":0}"
        }
        try "[\(profile("fast", 1 << 34)),\(profile("slow", 1 << 34))]".write(
            toFile: directory + "/profiles.json", atomically: true, encoding: .utf8)
        let result = try TestSupport.medley([
            "simulate", "--devices", "4xfast,2xslow", "--layers", "2", "--dim", "64", "--heads", "4", "--seq", "32",
            "--vocab", "256", "--profiles", directory + "/profiles.json",
        ])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("fast"))

        // What `medley profile --json` prints: chips[i].profile, and the measured link.
        let report = "{\"chips\":[{\"key\":\"fast\",\"profile\":\(profile("fast", 1 << 34))}],"
            + "\"network\":{\"latencySeconds\":0.00001,\"bytesPerSecond\":1000000000,\"cached\":true}}"
        try report.write(toFile: directory + "/report.json", atomically: true, encoding: .utf8)
        let fromReport = try TestSupport.medley([
            "simulate", "--devices", "3xfast", "--layers", "2", "--dim", "64", "--heads", "4", "--seq", "32",
            "--vocab", "256", "--profiles", directory + "/report.json",
        ])
        #expect(fromReport.status == 0, "\(fromReport.output)")

        try "{\"not\": \"an array\"}".write(toFile: directory + "/bad.json", atomically: true, encoding: .utf8)
        let bad = try TestSupport.medley(["simulate", "--devices", "1xfast", "--profiles", directory + "/bad.json"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("not a JSON array of DeviceProfile nor a `medley profile --json` report"), "\(bad.output)")
        #expect(bad.stderr.split(separator: "\n").count == 1, "\(bad.stderr)")
    }

    @Test("bad input gets one Error line and a non-zero exit")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["--devices", "4096xZ"], "unknown chip type 'Z'"),
            (["--devices", "0xA"], "count must be a whole number of at least 1"),
            (["--devices", "x"], "'x' is not COUNTxCHIP"),
            (["--devices", "-3xA"], "count must be a whole number of at least 1"),
            (["--devices", "4xA", "--layers", "0"], "--layers must be at least 1"),
            (["--devices", "4xA", "--dim", "30", "--heads", "4"], "not a multiple of --heads"),
            (["--devices", "4xA", "--batch", "0"], "--batch must be at least 1"),
            (["--devices", "4xA", "--link-gbps", "0"], "--link-gbps must be a positive number"),
            (["--devices", "4xA", "--json", "/nonexistent-dir/x.json"], "does not exist"),
            (["--devices", "4xA", "--profiles", "/nonexistent-dir/p.json"], "cannot read profiles"),
        ]
        for (arguments, expected) in cases {
            let result = try TestSupport.medley(["simulate"] + arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.hasPrefix("Error: "), "\(arguments): \(result.output)")
            #expect(result.stderr.contains(expected), "\(arguments): \(result.output)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
        }
    }

    @Test("bench plan runs on small sizes and writes its rows")
    func benchPlan() throws {
        let file = try TestSupport.temporaryDirectory() + "/plan.json"
        let result = try TestSupport.medley(["bench", "plan", "--sizes", "16,100", "--layers", "8", "--repeats", "1", "--json", file])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("Baidu Baige"))
        let rows = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [[String: Any]]
        #expect(rows?.map { $0["chips"] as? Int } == [16, 100])
        #expect(rows?.allSatisfy { $0["plan_seconds"] is Double && $0["predicted_efficiency"] is Double } == true)
    }
}
