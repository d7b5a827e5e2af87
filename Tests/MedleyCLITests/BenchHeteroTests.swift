import Foundation
import MedleyTestSupport
import Testing

@Suite("medley bench hetero")
struct BenchHeteroTests {
    /// A cpu chip and a sim on a tiny model: seconds a run.
    static let job = """
        name: hetero-tiny
        model:
          layers: 1
          dim: 32
          heads: 2
          seq: 16
          batch: 6
        data:
          path: /usr/share/games/fortunes
          validation_fraction: 0.1
          seed: 3
        train:
          steps: 10
          lr: 0.002
          rebalance_every: 2
          seed: 3
        devices:
          - adapter: cpu
            cpus: [0]
          - adapter: sim
            cpus: [1]
            options:
              vendor: Acme
              name: acme-x1
              kernels: cpu
              speed: 0.5

        """

    static let tiny = ["--steps", "5", "--skip", "1", "--rounds", "2", "--calibrations", "2", "--convergence-steps", "6",
                       "--eval-every", "3", "--host-seconds", "0.05", "--timeout", "120"]

    /// Whether `path` holds a whole PNG: the signature, an IHDR chunk with a non-zero size, and
    /// an IEND chunk at the end.
    static func isPNG(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path), data.count > 45 else { return false }
        let bytes = [UInt8](data)
        guard bytes.prefix(8) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], Array(bytes[12..<16]) == Array("IHDR".utf8) else {
            return false
        }
        func word(_ at: Int) -> UInt32 { bytes[at..<at + 4].reduce(0) { $0 << 8 | UInt32($1) } }
        return word(16) > 0 && word(20) > 0 && Array(bytes[(bytes.count - 8)..<(bytes.count - 4)]) == Array("IEND".utf8)
    }

    @Test("a tiny job writes report.md, report.json and three valid PNGs whose figures agree with each other")
    func tinyReport() throws {
        let directory = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let jobFile = directory + "/job.yaml"
        try Self.job.write(toFile: jobFile, atomically: true, encoding: .utf8)
        let out = directory + "/report"
        let result = try TestSupport.medley(
            ["bench", "hetero", jobFile, "--out", out] + Self.tiny, environment: ["MEDLEY_CACHE_DIR": directory + "/cache"],
            timeout: 600)
        #expect(result.status == 0, "\(result.output)")
        guard result.status == 0 else { return }
        for chart in ["loss.png", "throughput.png", "breakdown.png"] {
            #expect(Self.isPNG(out + "/" + chart), "\(chart) is not a valid PNG")
        }
        let markdown = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        for heading in ["## Throughput", "## Convergence", "## Prediction", "## The host's own share", "**Machine:**", "(loss.png)"] {
            #expect(markdown.contains(heading), "report.md lacks \(heading)")
        }

        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/report.json"))) as? [String: Any])
        let machine = try #require(report["machine"] as? [String: Any])
        #expect((machine["cores"] as? Int ?? 0) >= 1)
        #expect((machine["mpi"] as? String ?? "").contains("Open MPI"))
        #expect((machine["adapters"] as? [String: String])?.keys.sorted() == ["cpu", "sim"])
        let mixes = try #require(report["mixes"] as? [[String: Any]])
        #expect(mixes.count == 1)
        let mix = mixes[0]
        let shares = try #require(mix["shares"] as? [Int])
        #expect(shares.reduce(0, +) == 6)
        #expect((mix["calibrations"] as? [[Int]])?.count == 2)
        let rounds = try #require(mix["rounds"] as? [[String: Any]])
        #expect(rounds.count == 2)
        func number(_ object: [String: Any], _ key: String) -> Double { (object[key] as? NSNumber)?.doubleValue ?? .nan }
        var efficiencies: [Double] = []
        var concurrent: [Double] = []
        for round in rounds {
            let groups = try #require(round["groups"] as? [[String: Any]])
            let together = try #require(round["concurrent_groups"] as? [[String: Any]])
            #expect(groups.count == 2 && together.count == 2)
            let sum = groups.reduce(0) { $0 + number($1, "tokens_per_s") }
            let concurrentSum = together.reduce(0) { $0 + number($1, "tokens_per_s") }
            let mixed = number(round, "mixed_tokens_per_s")
            #expect(mixed > 0 && sum > 0 && concurrentSum > 0)
            // E is recomputed from the recorded tokens/s.
            #expect(abs(number(round, "alone_tokens_per_s_sum") - sum) <= 1e-6 * sum)
            #expect(abs(number(round, "efficiency") - mixed / sum) < 1e-9)
            #expect(abs(number(round, "concurrent_efficiency") - mixed / concurrentSum) < 1e-9)
            efficiencies.append(mixed / sum)
            concurrent.append(mixed / concurrentSum)
            let mfu = number(round, "mixed_mfu")
            #expect(mfu > 0 && mfu <= 1.5, "MFU \(mfu)")
            for key in ["alone_load", "concurrent_load", "mixed_load"] {
                let load = try #require(round[key] as? [String: Any])
                #expect(number(load, "foreign_cores") >= 0 && number(load, "own_cores") > 0, "\(key): \(load)")
            }
        }
        // The medians over two rounds are the means of the two.
        #expect(abs(number(mix, "efficiency") - efficiencies.reduce(0, +) / 2) < 1e-9)
        #expect(abs(number(mix, "concurrent_efficiency") - concurrent.reduce(0, +) / 2) < 1e-9)
        #expect(abs(number(mix, "efficiency_min") - efficiencies.min()!) < 1e-9)
        #expect(abs(number(mix, "concurrent_efficiency_max") - concurrent.max()!) < 1e-9)
        let breakdown = try #require(mix["breakdown"] as? [[String: Any]])
        #expect(breakdown.count == 2)
        for rank in breakdown {
            #expect(number(rank, "compute_ms") > 0 && number(rank, "step_ms") >= number(rank, "compute_ms"))
            #expect(rank["staging_ms"] is NSNumber && rank["bubble_ms"] is NSNumber && rank["idle_ms"] is NSNumber)
        }

        let convergence = try #require(report["convergence"] as? [String: Any])
        let runs = try #require(convergence["runs"] as? [[String: Any]])
        #expect(runs.map { $0["precision"] as? String } == ["fp32", "fp32", "bf16 (sims)"])
        let reference = try #require(runs[0]["loss"] as? [Double])
        for run in runs {
            let loss = try #require(run["loss"] as? [Double])
            // Every curve has the recorded step count, validation at every --eval-every steps.
            #expect(loss.count == 6)
            #expect(run["val_steps"] as? [Int] == [3, 6])
            #expect((run["wall_ms"] as? [Double])?.count == 6)
            let gap = zip(loss, reference).map { abs($0 - $1) / $1 }.max()!
            #expect(abs(number(run, "max_relative_gap") - gap) < 1e-12)
        }
        // Mixed fp32 is the homogeneous run to fp32 rounding; bf16 sims are further off.
        #expect(number(runs[1], "max_relative_gap") <= 1e-4)
        #expect(number(runs[2], "max_relative_gap") > number(runs[1], "max_relative_gap"))

        let prediction = try #require(report["prediction"] as? [String: Any])
        let ratio = number(prediction, "ratio")
        #expect(abs(ratio - number(prediction, "measured_step_ms") / number(prediction, "predicted_step_ms")) < 1e-9)
        #expect(report["host"] is [String: Any])
        #expect(result.stdout.contains("wrote \(out)/report.md"))
    }

    @Test("bad input gets one clear line and a non-zero exit")
    func badInput() throws {
        let directory = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["--rounds", "0"], "--rounds must be at least 1"),
            (["--calibrations", "0"], "--calibrations must be at least 1"),
            (["--steps", "4", "--skip", "2"], "--steps must exceed --skip"),
            (["--convergence-steps", "1"], "--convergence-steps must be at least 2"),
            (["--load-tolerance", "0"], "--load-tolerance must be a positive number"),
            (["--host-seconds", "0.01"], "--host-seconds must be 0"),
            (["--plot-script", directory + "/none.py"], "no such readable file"),
            (["--out", file + "/sub"], "--out"),
            ([directory + "/missing.yaml"], "missing.yaml"),
        ]
        for (arguments, expected) in cases {
            let result = try TestSupport.medley(["bench", "hetero"] + arguments + ["--out", directory + "/out"].filter { _ in !arguments.contains("--out") })
            #expect(result.status != 0, "\(arguments)")
            #expect(result.output.contains(expected), "\(arguments): \(result.output)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
        }
    }
}
