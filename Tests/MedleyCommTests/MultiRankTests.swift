import Foundation
import MedleyComm
import Testing

/// The built `medley-comm-check` driver: beside the test binary, or `$MEDLEY_COMM_CHECK`.
func commCheckPath() throws -> String {
    if let explicit = ProcessInfo.processInfo.environment["MEDLEY_COMM_CHECK"] { return explicit }
    let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    var dir = me.deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("medley-comm-check").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    throw CheckNotBuilt()
}

struct CheckNotBuilt: Error, CustomStringConvertible {
    var description: String { "medley-comm-check is not built next to the tests: run `swift build` first or set MEDLEY_COMM_CHECK" }
}

/// Runs a scenario under mpirun with an mpirun timeout (and a Swift-side deadline after it).
func runScenario(_ scenario: String, ranks: Int, timeoutSeconds: Int = 60) throws -> MPIRun.Outcome {
    let outcome = try MPIRun(ranks: ranks, timeoutSeconds: timeoutSeconds).run(program: try commCheckPath(), arguments: [scenario], graceSeconds: 20)
    #expect(!outcome.killedAtDeadline, "mpirun had to be killed: a hang")
    return outcome
}

func lines(_ output: String, _ prefix: String) -> [String] {
    output.split(separator: "\n").map(String.init).filter { $0.contains(prefix) }
}

/// Scenarios run one at a time: the CI box has 2 cores and the ranks poll.
@Suite("Multi-rank exchange under mpirun", .serialized)
struct MultiRankTests {
    @Test("collectives, split, framed point-to-point", arguments: [2, 4])
    func collectives(ranks: Int) throws {
        let o = try runScenario("collectives", ranks: ranks)
        #expect(o.status == 0, "\(o.output)")
        #expect(lines(o.output, ": ok collectives").count == ranks, "\(o.output)")
    }

    @Test("weighted average with uneven and zero shares equals the single-process reference",
          arguments: [("weighted", 2), ("weighted", 4), ("weighted-ring", 2), ("weighted-ring", 4), ("weighted-doubling", 2), ("weighted-doubling", 4), ("weighted-single-bucket", 3)])
    func weighted(scenario: String, ranks: Int) throws {
        let o = try runScenario(scenario, ranks: ranks)
        #expect(o.status == 0, "\(o.output)")
        #expect(lines(o.output, ": ok \(scenario)").count == ranks, "\(o.output)")
    }

    @Test("a mismatched bucket on one rank is a named error on every rank",
          arguments: [("mismatch", 2), ("mismatch", 4), ("mismatch-dtype", 2), ("mismatch-later", 4)])
    func mismatch(scenario: String, ranks: Int) throws {
        // mpirun's 10 s timeout bounds the whole job (start-up included): a hang fails the test.
        let o = try runScenario(scenario, ranks: ranks, timeoutSeconds: 10)
        #expect(o.status != 0)
        let errors = lines(o.output, ": error [mismatch]: gradient buckets disagree: bucket ")
        #expect(errors.count == ranks, "every rank must report the mismatch:\n\(o.output)")
        #expect(Set(errors.map { $0.drop { $0 != ":" } }).count == 1, "ranks must report the same error:\n\(o.output)")
        switch scenario {
        case "mismatch":
            #expect(errors.allSatisfy { $0.contains("differs on rank \(ranks - 1): tensor 'h.1.attn.w' shape [64,192] vs [64,128] on rank 0") }, "\(o.output)")
        case "mismatch-dtype":
            #expect(errors.allSatisfy { $0.contains("tensor 'h.0.attn.b' dtype float16 vs float32") }, "\(o.output)")
        default:
            #expect(errors.allSatisfy { $0.contains("differs on rank 0: tensor 0 is 'h.1.mlp.w_renamed' vs 'h.1.mlp.w'") }, "\(o.output)")
        }
    }

    @Test("pipeline stage links: both directions at once, 1 MiB payloads, checked headers")
    func stageLink() throws {
        let o = try runScenario("stage-link", ranks: 2, timeoutSeconds: 30)
        #expect(o.status == 0, "\(o.output)")
        #expect(lines(o.output, ": ok stage-link").count == 2, "\(o.output)")
    }

    @Test("a stage link names a message for the wrong microbatch, and gives up on silence")
    func stageLinkErrors() throws {
        let mismatch = try runScenario("stage-link-mismatch", ranks: 2, timeoutSeconds: 30)
        #expect(mismatch.status != 0)
        #expect(
            lines(mismatch.output, "rank 1: error [mismatch]: stage 1 waiting for microbatch 1: rank 0 sent microbatch 2, expected step 7 microbatch 1 from stage 0").count == 1,
            "\(mismatch.output)")
        let silent = try runScenario("stage-link-timeout", ranks: 2, timeoutSeconds: 30)
        #expect(silent.status != 0)
        #expect(lines(silent.output, "rank 1: error [timeout]: stage 1 waiting for microbatch 0: nothing from rank 0 within 1 s").count == 1, "\(silent.output)")
    }

    @Test("checksums: no false alarm on clean steps", arguments: [2, 4])
    func checksumsClean(ranks: Int) throws {
        let o = try runScenario("checksum-clean", ranks: ranks)
        #expect(o.status == 0, "\(o.output)")
        #expect(lines(o.output, ": ok checksum-clean").count == ranks, "\(o.output)")
    }

    @Test("checksums catch a corrupted payload on every rank",
          arguments: [("checksum-result", 2), ("checksum-result", 4), ("checksum-contribution", 2), ("checksum-contribution", 4)])
    func checksumsCatchCorruption(scenario: String, ranks: Int) throws {
        let o = try runScenario(scenario, ranks: ranks)
        #expect(o.status != 0)
        let errors = lines(o.output, ": error [corruption]: bucket 1: silent corruption")
        #expect(errors.count == ranks, "\(o.output)")
        if scenario == "checksum-result" {
            #expect(errors.allSatisfy { $0.contains("on rank \(ranks - 1) differs") }, "\(o.output)")
        }
    }

    @Test("a global batch of zero samples is an error on every rank")
    func zeroBatch() throws {
        let o = try runScenario("zero-batch", ranks: 2)
        #expect(o.status != 0)
        #expect(lines(o.output, ": error [invalid argument]: step 0: the global batch has zero samples").count == 2, "\(o.output)")
    }

    @Test("a negative sample count on one rank is an error on every rank, not a hang")
    func negativeSamples() throws {
        let o = try runScenario("negative-samples", ranks: 4, timeoutSeconds: 10)
        #expect(o.status != 0)
        #expect(lines(o.output, ": error [invalid argument]: step 0: rank 2 passed a negative sample count").count == 4, "\(o.output)")
    }

    @Test("a corrupt sample count is a corruption error naming the rank on every rank, not a trap")
    func corruptSampleCounts() throws {
        let o = try runScenario("corrupt-samples", ranks: 4, timeoutSeconds: 10)
        #expect(o.status != 0)
        let errors = lines(o.output, ": error [corruption]: step 0: rank 1 claims 9223372036854775807 samples, but a step of this job has at most 4294967296")
        #expect(errors.count == 4, "\(o.output)")
    }

    @Test("an activation header claiming more than the schedule sends is refused before its payload")
    func activationClaim() throws {
        let o = try runScenario("activation-claim", ranks: 2, timeoutSeconds: 20)
        #expect(o.status != 0)
        let refused = lines(o.output, "rank 1: error [corruption]: rank 0 claims 67108864 activation payload bytes (step 9, microbatch 0, shape [16384, 1024]), but this job can need at most 24")
        #expect(refused.count == 1, "\(o.output)")
    }

    @Test("bench allreduce prints the table and writes JSON with the documented keys")
    func benchCommand() throws {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("medley-bench-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: json) }
        // Not under mpirun + --ranks: the driver relaunches itself under MPIRun, as `medley bench allreduce` does.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try commCheckPath())
        p.arguments = ["bench", "--ranks", "2", "--max-size", "64KiB", "--agreement-steps", "50", "--json", json.path]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(out)")
        #expect(out.contains("busbw") && out.contains("64KiB") && out.contains("negotiation"), "\(out)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any]
        let results = try #require(object?["results"] as? [[String: Any]])
        #expect(results.count == 5)  // 4, 8, 16, 32, 64 KiB
        for row in results {
            for key in ["size_bytes", "medley_busbw_gbps", "mpi_busbw_gbps", "ratio", "wrong"] {
                #expect(row[key] != nil, "missing \(key)")
            }
            #expect(row["wrong"] as? Int == 0)
        }
        #expect(object?["negotiation_us_per_step"] != nil)
        #expect(object?["ranks"] as? Int == 2)
    }
}

@Suite("medley bench allreduce (the CLI)", .serialized)
struct BenchCLITests {
    @Test("medley bench allreduce --ranks 2 --json FILE")
    func cliWritesTheReport() throws {
        let medley = URL(fileURLWithPath: try commCheckPath()).deletingLastPathComponent().appendingPathComponent("medley").path
        try #require(FileManager.default.isExecutableFile(atPath: medley), "build the medley executable first (swift build)")
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("medley-cli-bench-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: json) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: medley)
        p.arguments = ["bench", "allreduce", "--ranks", "2", "--max-size", "16KiB", "--agreement-steps", "20",
                       "--timeout", "60", "--json", json.path]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(out)")
        #expect(out.contains("16KiB") && out.contains("steady-state negotiation"), "\(out)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any]
        let rows = try #require(object?["results"] as? [[String: Any]])
        #expect(rows.map { $0["size_bytes"] as? Int } == [4096, 8192, 16384])
        #expect(rows.allSatisfy { $0["wrong"] as? Int == 0 && $0["ratio"] != nil && $0["medley_busbw_gbps"] != nil && $0["mpi_busbw_gbps"] != nil })
    }
}

@Suite("mpirun launcher")
struct MPIRunTests {
    @Test func argumentsCarryTheCIFlags() {
        let args = MPIRun(ranks: 4, timeoutSeconds: 30).launcherArguments(program: "/bin/prog", arguments: ["x"])
        #expect(args.contains("--oversubscribe"))
        #expect(args.contains("self,vader"))
        #expect(args.firstIndex(of: "--timeout").map { args[$0 + 1] } == "30")
        #expect(args.firstIndex(of: "-np").map { args[$0 + 1] } == "4")
        #expect(args.contains("--allow-run-as-root") == MPIRun.isRoot)
        #expect(Array(args.suffix(2)) == ["/bin/prog", "x"])
    }

    @Test func aHangIsEndedByTheTimeout() throws {
        let o = try MPIRun(ranks: 1, timeoutSeconds: 2).run(program: "/bin/sleep", arguments: ["60"], graceSeconds: 10)
        #expect(o.status != 0)
        #expect(o.seconds < 20)
    }
}
