import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

/// What a hostile (or merely unlucky) user tried, and the one line each must get back: the
/// real cause, named, with a non-zero exit, before anything long runs.
@Suite("medley train: hostile input gets the true line")
struct HostileInputTests {
    /// Writes `yaml` as a job file in a fresh directory; returns its path.
    static func job(_ yaml: String) throws -> String {
        let dir = try TestSupport.temporaryDirectory("medley-hostile")
        let path = dir + "/job.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let twoChips = """
        model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
        train: {steps: 6, eval_every: 0}
        devices:
          - adapter: reference
          - adapter: sim
            options: {fault: "hang@step=2"}

        """

    @Test("a hung chip is named by rank, whether mpirun's --timeout or train.step_timeout runs out first")
    func hungChipIsNamed() throws {
        for (extra, flags) in [("", ["--timeout", "12"]), ("train: {steps: 6, eval_every: 0, step_timeout: 3}\n", ["--timeout", "120"])] {
            var yaml = Self.twoChips
            if !extra.isEmpty { yaml = yaml.replacingOccurrences(of: "train: {steps: 6, eval_every: 0}\n", with: extra) }
            let result = try TestSupport.medley(["train", try Self.job(yaml)] + flags, timeout: 150)
            #expect(result.status != 0)
            #expect(result.output.contains("rank 1 (sim"), "\(flags): \(result.output)")
            #expect(result.output.contains("hung"), "\(flags): \(result.output)")
            #expect(!result.output.contains("raise --timeout"), "\(flags): \(result.output)")
        }
    }

    @Test("a data path that is a device says what it is, not 'permission denied'")
    func deviceAsData() throws {
        let path = try Self.job("data: {path: /dev/zero}\ndevices: [{adapter: reference}]\n")
        let result = try TestSupport.medley(["train", path, "--dry-run"])
        #expect(result.status != 0)
        #expect(result.output.contains("character device"), "\(result.output)")
        #expect(!result.output.lowercased().contains("permission"), "\(result.output)")
    }

    @Test("bad flag values and output paths get one line naming the flag, before the first step")
    func badFlags() throws {
        let spec = try Self.job("model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 2}\ntrain: {steps: 3, eval_every: 0}\ndevices: [{adapter: reference}]\n")
        let cases: [([String], String)] = [
            (["--steps", "-5"], "--steps must be at least 1 (or 0 with --checkpoint-dir or --save-weights, to write the initial state), got -5"),
            (["--steps", "0"], "--steps must be at least 1 (or 0 with --checkpoint-dir or --save-weights, to write the initial state), got 0"),
            (["--resume", "/nonexistent/run"], "/nonexistent/run is not a directory; --resume takes a run directory"),
            (["--checkpoint-dir", "/proc/medley-checkpoints"], "--checkpoint-dir /proc/medley-checkpoints"),
            (["--timeout", "-3"], "--timeout must be at least 1 second, got -3"),
            (["--shares", "9:2"], "step 9 is past the job's last step (3)"),
            (["--log", "/dev/null/steps.jsonl"], "--log /dev/null/steps.jsonl: /dev/null is not a directory"),
            (["--log", NSTemporaryDirectory()], "is a directory"),
            (["--save-weights", "/proc/medley/weights.bin"], "--save-weights /proc/medley/weights.bin"),
            (["--timeline", "/proc/medley/t.json"], "--timeline /proc/medley/t.json"),
        ]
        for (flags, expected) in cases {
            let result = try TestSupport.medley(["train", spec] + flags)
            #expect(result.status != 0, "\(flags)")
            #expect(result.output.contains(expected), "\(flags): \(result.output)")
            #expect(!result.output.contains("MedleyError"), "\(flags): \(result.output)")
            #expect(!result.output.contains("Missing value"), "\(flags): \(result.output)")
            #expect(!result.output.contains("step 1/"), "\(flags) ran steps first: \(result.output)")
            #expect(result.output.split(separator: "\n").filter { $0.hasPrefix("Error") }.count == 1, "\(flags): \(result.output)")
        }
    }

    @Test("an absurd model size is one line naming the field, not a trap")
    func absurdSize() throws {
        for (field, yaml) in [
            ("model.dim", "model: {dim: 4000000000, heads: 1}\n"), ("model.layers", "model: {layers: 9223372036854775807}\n"),
            ("model.seq", "model: {seq: 100000000}\n"), ("model.dim", "model: {dim: 30000, heads: 1}\n"),
        ] {
            let result = try TestSupport.medley(["train", try Self.job(yaml + "devices: [{adapter: reference}]\n"), "--dry-run"])
            #expect(result.status == 1, "\(yaml): \(result.output)")
            #expect(result.output.contains(field), "\(yaml): \(result.output)")
        }
    }

    @Test("docs/job-spec.md shows the built-in job exactly as the binary runs it")
    func documentedDefaultJob() throws {
        let docs = try String(contentsOfFile: TestSupport.repositoryRoot + "/docs/job-spec.md", encoding: .utf8)
        let block = try #require(docs.components(separatedBy: "```yaml\n").dropFirst().first?.components(separatedBy: "```").first)
        let printed = try TestSupport.medley(["train", "--print-default-job"])
        #expect(printed.status == 0)
        #expect(block == printed.stdout, "docs/job-spec.md's first YAML block differs from `medley train --print-default-job`")
    }
}
