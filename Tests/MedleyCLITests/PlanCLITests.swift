import Foundation
import MedleyTestSupport
import Testing

@Suite("medley profile and medley plan", .serialized)
struct PlanCLITests {
    /// One profile cache for the suite, so each job is measured once.
    static let cache: String = try! TestSupport.temporaryDirectory("medley-plan-cli")
    /// Quick measurements: one sample per layer and size.
    static let quick = ["--repetitions", "1", "--warmups", "0"]

    static func example(_ name: String) -> String { TestSupport.repositoryRoot + "/examples/" + name }

    static func run(_ arguments: [String], cache: String = PlanCLITests.cache) throws -> TestSupport.ProcessResult {
        // The command, the quick settings, then the test's own arguments (which win when repeated).
        try TestSupport.medley([arguments[0], "--cache", cache] + quick + arguments.dropFirst(), timeout: 300)
    }

    /// Writes a job spec to a temporary file.
    static func job(_ yaml: String) throws -> String {
        let path = try TestSupport.temporaryDirectory("medley-plan-job") + "/job.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    // MARK: profile

    @Test("profile --json measures once, then reads the cache; a corrupt cache file gets one warning")
    func profile() throws {
        let cache = try TestSupport.temporaryDirectory("medley-profile-cli")
        let path = try Self.job(
            """
            model: {layers: 1, dim: 16, heads: 2, seq: 8, batch: 4}
            devices: [reference, {adapter: sim, options: {speed: 0.5}}]
            """)
        let first = try Self.run(["profile", path, "--json"], cache: cache)
        #expect(first.status == 0, "\(first.output)")
        let report = try Self.json(first.stdout)
        let chips = try #require(report["chips"] as? [[String: Any]])
        #expect(chips.compactMap { $0["key"] as? String } == ["reference", "sim{speed=0.5}"])
        #expect(chips.allSatisfy { $0["cached"] as? Bool == false })
        for chip in chips {
            let timings = try #require((chip["profile"] as? [String: Any])?["timings"] as? [[String: Any]])
            #expect(Set(timings.compactMap { $0["kind"] as? String }) == ["embedding", "block", "head"])
            #expect(timings.allSatisfy { ($0["forwardMs"] as? Double ?? 0) > 0 && ($0["backwardMs"] as? Double ?? 0) > 0 })
        }
        let network = try #require(report["network"] as? [String: Any])
        #expect((network["latencySeconds"] as? Double ?? 0) > 0 && (network["bytesPerSecond"] as? Double ?? 0) > 0)

        // This test is about the cache: the staleness probe of so tiny a layer is too noisy to
        // promise a match (profile --check has its own test).
        let second = try Self.run(["profile", path, "--no-staleness-check"], cache: cache)
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("head+loss") && second.stdout.contains("cached"))
        #expect(!second.stdout.contains("measuring"), "a cache hit measures nothing: \(second.stdout)")

        let file = try #require(chips[1]["cacheFile"] as? String)
        try Data([0x4d, 0x44, 0x4c, 0x46, 1]).write(to: URL(fileURLWithPath: file))
        let repaired = try Self.run(["profile", path, "--no-staleness-check"], cache: cache)
        #expect(repaired.status == 0, "\(repaired.output)")
        #expect(repaired.stderr.split(separator: "\n").count == 1, "\(repaired.stderr)")
        #expect(repaired.stderr.hasPrefix("warning: profile cache file \(file) is corrupt"), "\(repaired.stderr)")
        #expect(repaired.stdout.contains("measuring chip type 2 of 2"))

        let refreshed = try Self.run(["profile", path, "--refresh"], cache: cache)
        #expect(refreshed.status == 0 && refreshed.stdout.contains("measuring chip type 1 of 2"), "\(refreshed.output)")
    }

    @Test("profile --check prints each chip's stored and current probe; contradicting flags get one line")
    func check() throws {
        let cache = try TestSupport.temporaryDirectory("medley-profile-cli")
        let path = try Self.job("model: {layers: 1, dim: 16, heads: 2, seq: 8, batch: 4}\ndevices: [reference]\n")
        #expect(try Self.run(["profile", path], cache: cache).status == 0)
        // A threshold no noise reaches (stale beyond 51×): the check passes and prints the table.
        let passed = try Self.run(["profile", path, "--check", "--staleness-threshold", "50"], cache: cache)
        #expect(passed.status == 0, "\(passed.output)")
        #expect(passed.stdout.contains("staleness probe") && passed.stdout.contains("ok"), "\(passed.stdout)")
        #expect(!passed.stdout.contains("measuring"), "\(passed.stdout)")
        for bad in [
            ["--check", "--no-staleness-check"], ["--keep-stale", "--no-staleness-check"], ["--staleness-threshold", "0"],
        ] {
            let result = try Self.run(["profile", path] + bad, cache: cache)
            #expect(result.status != 0, "\(bad)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(bad): \(result.stderr)")
        }
    }

    // MARK: plan

    @Test("plan on the built-in job prints a plan table")
    func defaultJob() throws {
        let result = try Self.run(["plan"])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("plan for job mixed-default: 3 ranks"), "\(result.stdout)")
        #expect(result.stdout.contains("tokens/s"), "\(result.stdout)")
        #expect(result.stderr.isEmpty, "\(result.stderr)")
    }

    @Test("plan on a job whose small chips cannot hold the model prints a pipeline")
    func smallMemory() throws {
        let text = try Self.run(["plan", Self.example("plan-small-memory.yaml")])
        #expect(text.status == 0, "\(text.output)")
        #expect(text.stdout.contains("plan for job plan-small-memory"), "\(text.stdout)")

        let json = try Self.run(["plan", Self.example("plan-small-memory.yaml"), "--json"])
        #expect(json.status == 0, "\(json.output)")
        let plan = try Self.json(json.stdout)
        let replicas = try #require(plan["replicas"] as? [[String: Any]])
        let stageCounts = replicas.map { ($0["stages"] as? [Any])?.count ?? 0 }
        let leftOut = (plan["leftOut"] as? [Any])?.count ?? 0
        // The sims cannot train alone: either they are pipeline stages or they are left out.
        #expect(stageCounts.contains { $0 >= 2 } || leftOut > 0, "\(json.stdout)")
        #expect(plan["prediction"] is [String: Any])

        // The JSON is a plan file: a job that names it passes medley train's checks.
        let dir = try TestSupport.temporaryDirectory("medley-plan-file")
        try json.stdout.write(toFile: dir + "/plan.json", atomically: true, encoding: .utf8)
        let spec = try String(contentsOfFile: Self.example("plan-small-memory.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "\nplan: auto\n", with: "\nplan: plan.json\n")
        try spec.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        let dryRun = try TestSupport.medley(["train", dir + "/job.yaml", "--dry-run"])
        #expect(dryRun.status == 0, "\(dryRun.output)")
    }

    @Test("plan on a job that cannot fit fails with one Error: line naming the shortfall")
    func impossible() throws {
        let result = try Self.run(["plan", Self.example("plan-impossible.yaml")])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(lines.first?.hasPrefix("Error: ") == true, "\(result.stderr)")
        #expect(lines.first?.contains("acme-m6") == true, "the line names the chip that lacks memory: \(result.stderr)")
        #expect(!result.output.contains("Fatal error"))
    }

    @Test("bad input gets one clear line and a non-zero exit")
    func badInput() throws {
        let cases: [([String], String)] = [
            (["plan", "/no/such/job.yaml"], "does not exist"),
            (["profile", "/no/such/job.yaml"], "does not exist"),
            (["plan", "--microbatch", "0"], "--microbatch must be at least 1"),
            (["profile", "--microbatches", "1,x"], "--microbatches"),
            (["profile", "--repetitions", "0"], "--repetitions must be at least 1"),
        ]
        for (arguments, expected) in cases {
            let result = try Self.run(arguments)
            #expect(result.status != 0, "\(arguments)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
        }
        let badAdapter = try Self.job("devices: [nosuchchip]")
        let result = try Self.run(["profile", badAdapter])
        #expect(result.status != 0)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("devices[0].adapter"), "\(result.stderr)")
    }
}
