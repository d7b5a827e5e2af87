import Foundation
import MedleyCore
import MedleyPlanner
import MedleyTestSupport
import Testing

@testable import MedleyTrain

/// Checkpoints of a real data-parallel run under mpirun, and resuming from them.
@Suite("checkpoint and resume under mpirun", .serialized)
struct ResumeTests {
    static let devices = "[reference, {adapter: sim, options: {vendor: Acme, name: acme-x1}}]"

    struct Run {
        var result: TestSupport.ProcessResult
        var records: [StepRecord]
        var weights: [Float]
    }

    /// `medley train` on `yaml` in `dir`, with a log, saved weights and `extra` arguments.
    static func train(_ yaml: String, in dir: String, name: String, _ extra: [String]) throws -> Run {
        let job = dir + "/\(name).yaml", log = dir + "/\(name).jsonl", weights = dir + "/\(name).bin"
        try yaml.write(toFile: job, atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(
            ["train", job, "--log", log, "--save-weights", weights, "--timeout", "240"] + extra, timeout: 300)
        let records = (try? String(contentsOfFile: log, encoding: .utf8)).map { try? StepRecord.read(jsonLines: $0) } ?? nil
        let data = (try? Data(contentsOf: URL(fileURLWithPath: weights))) ?? Data()
        return Run(result: result, records: records ?? [], weights: data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
    }

    static func job(devices: String, shares: String, every: Int = 4) -> String {
        """
        name: test
        model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}
        train: {steps: 8, lr: 0.003, warmup_steps: 3, rebalance_every: 0, eval_every: 0, shares: \(shares), checkpoint_every: \(every)}
        devices: \(devices)
        """
    }

    @Test("resumed from step 4 on the same chips: the same records after it and bitwise-equal weights; on other chips: within 1e-3")
    func resume() throws {
        let dir = try TestSupport.temporaryDirectory("medley-resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let checkpoints = dir + "/checkpoints"
        let whole = try Self.train(Self.job(devices: Self.devices, shares: "[8, 4]"), in: dir, name: "whole",
                                   ["--checkpoint-dir", checkpoints])
        try #require(whole.result.status == 0, "\(whole.result.output)")
        #expect(CheckpointStore(directory: checkpoints).steps() == [8, 4])
        let stall = try #require(whole.records.first { $0.step == 4 }?.checkpointMs)
        #expect(stall >= 0 && whole.records.first { $0.step == 3 }?.checkpointMs == nil)
        let saved = try CheckpointStore.load(checkpoints + "/" + CheckpointStore.name(step: 4))
        #expect(saved.step == 4 && saved.shares == [8, 4] && saved.optimizerSteps == 4 && saved.totalSteps == 8)

        // The interrupted run: only the step-4 checkpoint is left (as if it died at step 6).
        try FileManager.default.removeItem(atPath: checkpoints + "/" + CheckpointStore.name(step: 8))
        let resumed = try Self.train(Self.job(devices: Self.devices, shares: "[8, 4]"), in: dir, name: "resumed",
                                     ["--resume", checkpoints])
        try #require(resumed.result.status == 0, "\(resumed.result.output)")
        #expect(resumed.result.stdout.contains("resuming from") && resumed.result.stdout.contains("step 4 done, 4 to go"))
        #expect(resumed.result.stdout.contains("done: steps 5-8 (resumed after 4)"), "\(resumed.result.stdout)")
        #expect(resumed.records.map(\.step) == [5, 6, 7, 8])
        for (a, b) in zip(whole.records.suffix(4), resumed.records) {
            #expect(a.loss == b.loss && a.gradNorm == b.gradNorm && a.lr == b.lr, "step \(a.step): \(a.loss) vs \(b.loss)")
        }
        try #require(!whole.weights.isEmpty)
        #expect(whole.weights.map(\.bitPattern) == resumed.weights.map(\.bitPattern), "resumed weights differ from the uninterrupted run's")

        // Other chips, other shares, another shard of the moments: three ranks, one a cpu chip.
        let other = try Self.train(
            Self.job(devices: "[cpu, reference, {adapter: sim, options: {vendor: Borealis, speed: 0.5}}]", shares: "[5, 4, 3]"),
            in: dir, name: "other", ["--resume", checkpoints + "/" + CheckpointStore.name(step: 4)])
        try #require(other.result.status == 0, "\(other.result.output)")
        #expect(other.records.map(\.step) == [5, 6, 7, 8])
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(whole.weights, other.weights) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
        }
        #expect(other.weights.count == whole.weights.count && (difference / norm).squareRoot() <= 1e-3)
    }

    @Test("pipelines: resumed on the same plan bitwise equal; on other stage boundaries and as data parallel within 1e-3")
    func pipelineResume() throws {
        let dir = try TestSupport.temporaryDirectory("medley-resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let checkpoints = dir + "/checkpoints"
        let devices = "[reference, {adapter: sim, options: {vendor: Acme}}, reference, {adapter: sim, options: {vendor: Borealis}}]"
        let train = "steps: 8, eval_every: 0, checkpoint_every: 4"
        // Two replicas of two stages (wte tied between each replica's ends: four holders).
        let twoByTwo = Plan.manual(globalBatch: 12, microbatchSize: 2, replicas: [(7, [(0, 0..<2), (1, 2..<4)]), (5, [(2, 0..<3), (3, 3..<4)])])
        let yaml = try PipelineJobTests.job(devices: devices, plan: twoByTwo, planPath: dir + "/a.json", train: train)
        let whole = try Self.train(yaml, in: dir, name: "whole", ["--checkpoint-dir", checkpoints])
        try #require(whole.result.status == 0, "\(whole.result.output)")
        try #require(CheckpointStore(directory: checkpoints).steps() == [8, 4])
        try FileManager.default.removeItem(atPath: checkpoints + "/" + CheckpointStore.name(step: 8))
        let saved = try CheckpointStore.load(checkpoints + "/" + CheckpointStore.name(step: 4))
        #expect(saved.planJSON.contains("replicas") && saved.tensors.allSatisfy { $0.secondMoment.contains { $0 != 0 } })

        let same = try Self.train(yaml, in: dir, name: "same", ["--resume", checkpoints])
        try #require(same.result.status == 0, "\(same.result.output)")
        #expect(same.records.map(\.step) == [5, 6, 7, 8])
        #expect(whole.records.suffix(4).map(\.loss) == same.records.map(\.loss))
        #expect(!whole.weights.isEmpty && whole.weights.map(\.bitPattern) == same.weights.map(\.bitPattern), "same plan: weights differ")

        func close(_ run: Run, _ what: String) {
            var difference = 0.0, norm = 0.0
            for (x, y) in zip(whole.weights, run.weights) {
                difference += Double(x - y) * Double(x - y)
                norm += Double(x) * Double(x)
            }
            #expect(run.weights.count == whole.weights.count && (difference / norm).squareRoot() <= 1e-3, "\(what)")
            #expect(run.records.map(\.step) == [5, 6, 7, 8], "\(what)")
        }
        // One replica of three stages on three chips, microbatches of 3.
        let three = Plan.manual(globalBatch: 12, microbatchSize: 3, replicas: [(12, [(0, 0..<1), (1, 1..<3), (2, 3..<4)])])
        let threeYAML = try PipelineJobTests.job(devices: "[cpu, reference, {adapter: sim, options: {vendor: Acme}}]", plan: three,
                                                 planPath: dir + "/b.json", train: train)
        let staged = try Self.train(threeYAML, in: dir, name: "staged", ["--resume", checkpoints])
        try #require(staged.result.status == 0, "\(staged.result.output)")
        close(staged, "three stages")
        // Data parallel on two chips.
        let data = try Self.train(Self.job(devices: Self.devices, shares: "[6, 6]"), in: dir, name: "data", ["--resume", checkpoints])
        try #require(data.result.status == 0, "\(data.result.output)")
        close(data, "data parallel")
    }

    @Test("a 0-step run writes the initial state; init_from: it trains exactly as the run it came from")
    func initFrom() throws {
        let dir = try TestSupport.temporaryDirectory("medley-resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let yaml = Self.job(devices: Self.devices, shares: "[8, 4]")
        let zero = try Self.train(yaml, in: dir, name: "zero", ["--steps", "0", "--checkpoint-dir", dir + "/initial"])
        try #require(zero.result.status == 0, "\(zero.result.output)")
        #expect(zero.result.stdout.contains("done: 0 steps; the initial state is checkpoint step-00000000"), "\(zero.result.stdout)")
        #expect(zero.records.isEmpty && !zero.weights.isEmpty)
        let initial = try CheckpointStore.load(dir + "/initial/" + CheckpointStore.name(step: 0))
        #expect(initial.step == 0 && initial.optimizerSteps == 0)
        #expect(initial.tensors.allSatisfy { $0.firstMoment.allSatisfy { $0 == 0 } })

        let original = try Self.train(yaml, in: dir, name: "original", [])
        try #require(original.result.status == 0, "\(original.result.output)")
        // Another seed would start elsewhere; init_from (relative to the job file) replaces it.
        let seeded = yaml.replacingOccurrences(of: "checkpoint_every: 4}", with: "checkpoint_every: 4, seed: 99, init_from: initial}")
        let started = try Self.train(seeded, in: dir, name: "started", [])
        try #require(started.result.status == 0, "\(started.result.output)")
        #expect(started.result.stdout.contains("starting from the weights of"), "\(started.result.stdout)")
        #expect(started.records.first?.loss == original.records.first?.loss, "step 1")
        #expect(started.weights.map(\.bitPattern) == original.weights.map(\.bitPattern))
        // A bad init_from is one line before mpirun.
        let bad = yaml.replacingOccurrences(of: "checkpoint_every: 4}", with: "checkpoint_every: 4, init_from: nowhere}")
        let failed = try Self.train(bad, in: dir, name: "bad", [])
        #expect(failed.result.status != 0 && failed.result.stderr.contains("train.init_from:"), "\(failed.result.output)")
    }

    @Test("a damaged newest checkpoint is named and the one before it is used; bad --resume paths are one line before mpirun")
    func damagedAndBad() throws {
        let dir = try TestSupport.temporaryDirectory("medley-resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let checkpoints = dir + "/checkpoints"
        let yaml = Self.job(devices: Self.devices, shares: "[8, 4]", every: 2)
        let first = try Self.train(yaml, in: dir, name: "first", ["--checkpoint-dir", checkpoints, "--steps", "8"])
        try #require(first.result.status == 0, "\(first.result.output)")
        #expect(CheckpointStore(directory: checkpoints).steps() == [8, 6, 4], "checkpoint_keep 3")
        // Resume needs a checkpoint before the end: drop 8, damage 6.
        try FileManager.default.removeItem(atPath: checkpoints + "/" + CheckpointStore.name(step: 8))
        let tensors = checkpoints + "/" + CheckpointStore.name(step: 6) + "/tensors.bin"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: tensors)))
        bytes[17] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: tensors))
        let resumed = try Self.train(yaml, in: dir, name: "resumed", ["--resume", checkpoints])
        try #require(resumed.result.status == 0, "\(resumed.result.output)")
        #expect(resumed.result.stdout.contains("step-00000006 is unusable") && resumed.result.stdout.contains("CRC-32C"),
                "\(resumed.result.stdout)")
        #expect(resumed.records.map(\.step) == [5, 6, 7, 8])
        #expect(resumed.weights.map(\.bitPattern) == first.weights.map(\.bitPattern))

        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
        for (arguments, expected) in [
            (["--resume", dir + "/nowhere"], "is not a directory"),
            (["--resume", dir + "/empty"], "no checkpoint in"),
            (["--resume", checkpoints, "--steps", "4"], "nothing is left to train"),
        ] {
            let job = dir + "/bad.yaml"
            try yaml.write(toFile: job, atomically: true, encoding: .utf8)
            let result = try TestSupport.medley(["train", job, "--timeout", "60"] + arguments, timeout: 120)
            #expect(result.status != 0, "\(arguments): \(result.output)")
            let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            #expect(errors.count == 1 && errors[0].contains(expected), "\(arguments): \(result.output)")
        }
        // Another model: one line naming a tensor.
        let bigger = yaml.replacingOccurrences(of: "layers: 2", with: "layers: 3")
        let job = dir + "/bigger.yaml"
        try bigger.write(toFile: job, atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(["train", job, "--resume", checkpoints, "--timeout", "60"], timeout: 120)
        #expect(result.status != 0 && result.stderr.contains("written for another model"), "\(result.output)")
    }

    @Test("the sampler's record (train.log_examples): resumed on other chips, every example of every epoch is trained on exactly once")
    func eachExampleOnce() throws {
        let dir = try TestSupport.temporaryDirectory("medley-examples")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A small corpus: about 30 examples of 33 bytes, so 10 steps of 12 cross several epochs.
        var bytes: [UInt8] = []
        for i in 0..<1100 {
            let letter: Int = (i * 7 + i / 13) % 26
            bytes.append(UInt8(97 + letter))
        }
        try Data(bytes).write(to: URL(fileURLWithPath: dir + "/corpus.txt"))
        func job(_ devices: String, _ shares: String) -> String {
            """
            name: examples
            model: {layers: 1, dim: 16, heads: 2, seq: 32, batch: 12}
            data: {path: \(dir)/corpus.txt, validation_fraction: 0.1}
            train: {steps: 10, rebalance_every: 0, eval_every: 0, shares: \(shares), checkpoint_every: 4, log_examples: true}
            devices: \(devices)
            """
        }
        let checkpoints = dir + "/checkpoints"
        let whole = try Self.train(job(Self.devices, "[8, 4]"), in: dir, name: "whole", ["--checkpoint-dir", checkpoints])
        try #require(whole.result.status == 0, "\(whole.result.output)")
        try FileManager.default.removeItem(atPath: checkpoints + "/" + CheckpointStore.name(step: 8))
        try FileManager.default.removeItem(atPath: checkpoints + "/" + CheckpointStore.name(step: 10))
        let other = try Self.train(
            job("[cpu, reference, {adapter: sim, options: {vendor: Borealis}}]", "[5, 4, 3]"), in: dir, name: "other",
            ["--resume", checkpoints])
        try #require(other.result.status == 0, "\(other.result.output)")
        let same = try Self.train(job(Self.devices, "[8, 4]"), in: dir, name: "same", ["--resume", checkpoints])
        try #require(same.result.status == 0, "\(same.result.output)")
        // On the same chips the resumed steps train on the very examples the uninterrupted run did.
        #expect(same.records.map(\.examples) == whole.records.suffix(6).map(\.examples))
        let spec = try JobSpec.parse(yaml: job(Self.devices, "[8, 4]"))
        let perEpoch = try RankSession.data(for: spec, steps: 10).0.examplesPerEpoch
        #expect(perEpoch > 0 && perEpoch < 60, "the corpus is meant to be small: \(perEpoch) examples")
        try Self.expectEachExampleOnce(Array(whole.records.prefix(4) + same.records), perEpoch: perEpoch)
        try Self.expectEachExampleOnce(Array(whole.records.prefix(4) + other.records), perEpoch: perEpoch)
    }

    /// Steps 1–10 of 12 examples each, as training saw them: each example of each epoch once.
    static func expectEachExampleOnce(_ seen: [StepRecord], perEpoch: Int) throws {
        #expect(seen.map(\.step) == Array(1...10))
        var positions: [Int: [Int]] = [:]  // epoch → examples trained on in it
        for record in seen {
            let rows = try #require(record.examples, "step \(record.step) has no examples")
            #expect(rows.map(\.count) == record.shares, "step \(record.step): each rank's rows are its share")
            for (row, example) in rows.joined().enumerated() {
                positions[((record.step - 1) * 12 + row) / perEpoch, default: []].append(example)
            }
        }
        for (epoch, examples) in positions {
            #expect(Set(examples).count == examples.count, "epoch \(epoch): an example trained on twice: \(examples.sorted())")
            #expect(examples.allSatisfy { (0..<perEpoch).contains($0) })
            let complete = (epoch + 1) * perEpoch <= 120
            if complete { #expect(examples.sorted() == Array(0..<perEpoch), "epoch \(epoch) misses examples") }
        }
        #expect(positions.count >= 3, "10 steps of 12 cover several epochs of \(perEpoch)")
    }
}
