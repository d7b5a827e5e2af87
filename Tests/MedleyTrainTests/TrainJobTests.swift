import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

/// `medley train` end to end: real mpirun, real adapters, a small model on the fortunes corpus.
@Suite("medley train", .serialized)
struct TrainJobTests {
    /// A small job: 2 layers, 32 wide, 32 tokens, a global batch of 12.
    /// `train` holds `key: value` pairs that replace the defaults.
    static func job(devices: String, train: String = "", batch: Int = 12) -> String {
        var fields: [(String, String)] = [
            ("steps", "20"), ("lr", "0.003"), ("warmup_steps", "3"), ("rebalance_every", "0"), ("eval_every", "10"),
        ]
        for pair in train.split(separator: ",") {
            let parts = pair.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if let i = fields.firstIndex(where: { $0.0 == parts[0] }) { fields[i].1 = parts[1] } else { fields.append((parts[0], parts[1])) }
        }
        return """
            name: test
            model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: \(batch)}
            train: {\(fields.map { "\($0.0): \($0.1)" }.joined(separator: ", "))}
            devices: \(devices)
            """
    }

    struct Run {
        var result: TestSupport.ProcessResult
        var records: [StepRecord]
        var weights: [Float]
    }

    /// Writes `yaml` to a file and runs `medley train` on it with a log and saved weights.
    static func train(_ yaml: String, _ extra: [String] = [], environment: [String: String] = [:], timeout: Double = 300) throws -> Run {
        let dir = try TestSupport.temporaryDirectory("medley-train")
        let jobPath = dir + "/job.yaml", log = dir + "/steps.jsonl", weights = dir + "/weights.bin"
        try yaml.write(toFile: jobPath, atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(
            ["train", jobPath, "--log", log, "--save-weights", weights, "--timeout", "240"] + extra,
            environment: environment, timeout: timeout)
        let records = (try? String(contentsOfFile: log, encoding: .utf8)).map { try? StepRecord.read(jsonLines: $0) } ?? nil
        let data = (try? Data(contentsOf: URL(fileURLWithPath: weights))) ?? Data()
        let values = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return Run(result: result, records: records ?? [], weights: values)
    }

    @Test("3 mixed ranks with uneven and zero shares learn what 1 reference rank learns")
    func mixedEqualsHomogeneous() throws {
        let single = try Self.train(Self.job(devices: "[reference]"))
        try #require(single.result.status == 0, "\(single.result.output)")
        // A reference chip, the OpenBLAS cpu chip and a simulated chip, with shares that
        // change during the run and put every rank at 0 for some steps.
        let schedule = ["1:5,4,3", "8:12,0,0", "12:0,7,5", "16:2,0,10"]
        let mixed = try Self.train(
            Self.job(devices: "[reference, cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]"),
            schedule.flatMap { ["--shares", $0] })
        try #require(mixed.result.status == 0, "\(mixed.result.output)")

        try #require(single.records.count == 20 && mixed.records.count == 20)
        #expect(mixed.records[9].shares == [12, 0, 0])
        #expect(mixed.records[12].shares == [0, 7, 5])
        #expect(mixed.records[19].shares == [2, 0, 10])
        for (a, b) in zip(single.records, mixed.records) {
            #expect(abs(a.loss - b.loss) <= 1e-4 * abs(a.loss), "step \(a.step): loss \(a.loss) vs \(b.loss)")
        }
        #expect(single.records.last!.loss < single.records.first!.loss - 0.5, "the model learns")
        let (p, q) = (single.weights, mixed.weights)
        try #require(p.count == q.count && !p.isEmpty)
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(p, q) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
            #expect(abs(x - y) <= 1e-3 * max(abs(x), 1e-2), "parameter \(x) vs \(y)")
        }
        #expect((difference / norm).squareRoot() <= 1e-3)
    }

    @Test("with no job, the built-in mixed job trains and logs one JSON record per step")
    func defaultJob() throws {
        let dir = try TestSupport.temporaryDirectory("medley-train")
        let log = dir + "/steps.jsonl"
        let result = try TestSupport.medley(["train", "--steps", "3", "--log", log, "--timeout", "240"], timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("step 1/3"))
        #expect(result.stdout.contains("done: 3 steps"))
        #expect(!result.stdout.contains("-----"), "no Open MPI banner")
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 3)
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for key in ["step", "loss", "tokens_per_s", "shares"] { #expect(object[key] != nil, "no \(key) in \(line)") }
            #expect((object["shares"] as? [Int])?.reduce(0, +) == JobSpec.defaultJob.model.globalBatch)
        }
    }

    @Test("a chip that turns 4x slower at step 10 loses share at the next re-measure")
    func rebalancesAStraggler() throws {
        // Both chips mostly sleep (speed 0.25), so the 4x slow-down stays visible even when
        // other tests load the host.
        let run = try Self.train(
            Self.job(
                devices: """
                    [{adapter: sim, options: {name: steady, speed: 0.25}},
                     {adapter: sim, options: {name: straggler, speed: 0.25, fault: 'slow:4@step=10'}}]
                    """,
                train: "steps: 20, rebalance_every: 5", batch: 16))
        try #require(run.result.status == 0, "\(run.result.output)")
        try #require(run.records.count == 20)
        let history = run.records.map { "\($0.step): \($0.shares) \($0.nextShares.map { "-> \($0)" } ?? "")" }.joined(separator: "; ")
        let before = run.records[9].shares[1]  // step 10: the shares set while both ran at full speed
        #expect(before >= 6, "equal chips share about equally: \(history)")
        let change = run.records.first { $0.step > 10 && $0.nextShares != nil }
        #expect(change.map { $0.step <= 15 } == true, "re-divided within the window after the slow-down: \(history)")
        if let next = change?.nextShares {
            #expect(next[1] <= before - 2, "the straggler's share drops: \(history)")
        }
        #expect(run.records[19].shares[1] < before, "\(history)")
    }

    @Test("shares respect each device's memory")
    func memoryCaps() throws {
        // 4 MiB holds 6 sequences of this model: the small chip gets at most 6 of 12.
        let run = try Self.train(Self.job(devices: "[cpu, {adapter: sim, options: {memory: 4MiB}}]", train: "steps: 3"))
        try #require(run.result.status == 0, "\(run.result.output)")
        #expect(run.records.allSatisfy { $0.shares[1] <= 6 })
    }

    @Test("bad jobs fail with one line before mpirun starts", arguments: [
        ("[{adapter: nosuchchip}]", 12, "devices[0].adapter"),
        ("[{adapter: sim, options: {memory: 1MiB}}]", 12, "for one sequence"),
        ("[{adapter: sim, options: {memory: 3MiB}}, {adapter: sim, options: {memory: 3MiB}}]", 12, "hold 6 sequences"),
        ("[]", 12, "no devices"),
        ("[cpu, reference, sim]", 2, "smaller than the 3 ranks"),
        ("[{adapter: sim, options: {speed: 3}}]", 12, "speed"),
    ])
    func badJobs(devices: String, batch: Int, expected: String) throws {
        let dir = try TestSupport.temporaryDirectory("medley-train")
        let marker = dir + "/mpirun-started"
        let fake = dir + "/mpirun"
        try "#!/bin/sh\ntouch \(marker)\nexit 1\n".write(toFile: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake)
        let jobPath = dir + "/job.yaml"
        try Self.job(devices: devices, batch: batch).write(toFile: jobPath, atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(["train", jobPath], environment: ["MEDLEY_MPIRUN": fake], timeout: 60)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("Error:") && lines[0].contains(expected), "\(result.output)")
        #expect(!FileManager.default.fileExists(atPath: marker), "mpirun was started")
    }

    @Test("bad --shares fail before mpirun")
    func badShares() throws {
        let result = try TestSupport.medley(["train", "--shares", "4,4"], timeout: 60)
        #expect(result.status != 0)
        #expect(result.stderr.hasPrefix("Error: --shares: 2 shares for 3 ranks"), "\(result.output)")
    }

    @Test("a chip that returns NaN stops the job with one line naming it")
    func nonFiniteLoss() throws {
        let run = try Self.train(Self.job(devices: "[reference, {adapter: sim, options: {name: flaky, fault: 'nan@step=4'}}]"))
        #expect(run.result.status != 0)
        let errors = run.result.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }
        #expect(errors.count == 1, "\(run.result.output)")
        #expect(errors.first?.contains("step 4: rank 1 (sim flaky) computed a non-finite loss") == true, "\(run.result.output)")
        #expect(run.records.count == 3, "steps 1-3 were logged")
    }

    @Test("a chip that hangs stops the job at the step timeout, named by the ranks that waited for it")
    func hungChip() throws {
        let run = try Self.train(
            Self.job(devices: "[reference, {adapter: sim, options: {fault: 'hang@step=3'}}]", train: "step_timeout: 3"),
            timeout: 120)
        #expect(run.result.status != 0)
        #expect(!run.result.timedOut)
        #expect(run.result.output.contains("step 3: rank 1 (sim sim-1) did not get there within 3 s"), "\(run.result.output)")
        #expect(run.result.output.contains("hung or far slower"), "\(run.result.output)")
    }

    @Test("a chip whose process dies fails the job with a non-zero exit")
    func crashedChip() throws {
        let run = try Self.train(Self.job(devices: "[reference, {adapter: sim, options: {fault: 'crash@step=3'}}]"), timeout: 120)
        #expect(run.result.status != 0)
        #expect(!run.result.timedOut)
        #expect(run.result.output.contains("Error:"), "\(run.result.output)")
    }
}
