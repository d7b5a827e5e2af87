import Foundation
import MedleyCore
import MedleyModel
import MedleyPlanner
import MedleyTestSupport
import MedleyTrain
import Testing

/// `medley train` running plans with pipeline stages: real mpirun, real adapters.
@Suite("medley train with pipeline plans", .serialized)
struct PipelineJobTests {
    typealias Stages = [(device: Int, layers: Range<Int>)]

    /// The small job of ``TrainJobTests`` (2 blocks: planning layers 0..<4) running `plan`.
    static func job(devices: String, plan: Plan?, planPath: String, model: String? = nil, train: String = "") throws -> String {
        if let plan { try plan.jsonData().write(to: URL(fileURLWithPath: planPath)) }
        var yaml = TrainJobTests.job(devices: devices, train: train)
        if let model {
            yaml = yaml.replacingOccurrences(of: "model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}", with: model)
        }
        return yaml + "\nplan: \(planPath)\n"
    }

    /// Trains `plan` on `devices` and returns the run (status, records, whole-model weights).
    static func train(devices: String, plan: Plan, extra: [String] = []) throws -> TrainJobTests.Run {
        let dir = try TestSupport.temporaryDirectory("medley-pipeline")
        return try TrainJobTests.train(try job(devices: devices, plan: plan, planPath: dir + "/plan.json"), extra)
    }

    /// Asserts per-step loss within 1e-4 relative and final weights within 1e-3 of `reference`.
    static func expectSameLearning(_ run: TrainJobTests.Run, as reference: TrainJobTests.Run, _ what: String) {
        #expect(run.records.count == reference.records.count, "\(what): \(run.result.output)")
        for (a, b) in zip(reference.records, run.records) {
            #expect(abs(a.loss - b.loss) <= 1e-4 * abs(a.loss), "\(what) step \(a.step): loss \(a.loss) vs \(b.loss)")
        }
        if let a = reference.records.last?.valLoss, let b = run.records.last?.valLoss {
            #expect(abs(a - b) <= 1e-4 * abs(a), "\(what): validation loss \(a) vs \(b)")
        }
        let (p, q) = (reference.weights, run.weights)
        #expect(p.count == q.count && !p.isEmpty, "\(what): \(p.count) vs \(q.count) weights")
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(p, q) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
        }
        #expect((difference / max(norm, 1e-30)).squareRoot() <= 1e-3, "\(what): weights differ")
    }

    static let reference: Result<TrainJobTests.Run, any Error> = Result {
        try TrainJobTests.train(TrainJobTests.job(devices: "[reference]"))
    }

    @Test("2-stage and 3-stage pipelines across mixed adapters learn what 1 reference rank learns")
    func pipelinesEqualHomogeneous() throws {
        let single = try Self.reference.get()
        try #require(single.result.status == 0, "\(single.result.output)")
        let dir = try TestSupport.temporaryDirectory("medley-pipeline")
        let timeline = dir + "/timeline.json"
        let two = try Self.train(
            devices: "[cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]",
            plan: .manual(globalBatch: 12, microbatchSize: 4, replicas: [(12, [(0, 0..<2), (1, 2..<4)])], slack: 0),
            extra: ["--timeline", timeline])
        try #require(two.result.status == 0, "\(two.result.output)")
        #expect(two.result.output.contains("schedule 1F1B with slack 0"), "\(two.result.output)")
        Self.expectSameLearning(two, as: single, "2 stages, textbook 1F1B")

        let three = try Self.train(
            devices: "[reference, {adapter: sim, options: {vendor: Borealis, kernels: cpu}}, cpu]",
            plan: .manual(globalBatch: 12, microbatchSize: 3, replicas: [(12, [(0, 0..<1), (1, 1..<3), (2, 3..<4)])]))
        try #require(three.result.status == 0, "\(three.result.output)")
        #expect(three.result.output.contains("schedule 1F1B with slack 1"), "\(three.result.output)")
        Self.expectSameLearning(three, as: single, "3 stages, slack 1")

        // The timeline: one lane per rank, forward/backward on both, sends and receives between them.
        let trace = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: timeline))) as? [String: Any]
        let events = trace?["traceEvents"] as? [[String: Any]] ?? []
        let spans = events.filter { $0["ph"] as? String == "X" }
        for (tid, categories) in [(0, ["forward", "backward", "send", "recv", "exchange", "update"]), (1, ["forward", "backward", "send", "recv"])] {
            let mine = Set(spans.filter { $0["tid"] as? Int == tid }.compactMap { $0["cat"] as? String })
            #expect(Set(categories).isSubset(of: mine), "rank \(tid) lane has \(mine)")
        }
        #expect(events.filter { $0["ph"] as? String == "M" }.count == 2)
    }

    @Test("2 replicas x 2 stages, and replicas cut differently, learn what 1 reference rank learns")
    func replicasOfPipelines() throws {
        let single = try Self.reference.get()
        try #require(single.result.status == 0, "\(single.result.output)")
        let grid = try Self.train(
            devices: "[cpu, reference, {adapter: sim, options: {speed: 0.5, kernels: cpu}}, cpu]",
            plan: .manual(globalBatch: 12, microbatchSize: 2, replicas: [(7, [(0, 0..<2), (1, 2..<4)]), (5, [(2, 0..<3), (3, 3..<4)])]))
        try #require(grid.result.status == 0, "\(grid.result.output)")
        Self.expectSameLearning(grid, as: single, "2x2")
        #expect(grid.records.first?.shares == [7, 7, 5, 5])

        // One replica is a single chip holding everything, the other a 2-stage pipeline.
        let mixed = try Self.train(
            devices: "[reference, cpu, {adapter: sim, options: {speed: 0.5}}]",
            plan: .manual(globalBatch: 12, microbatchSize: 3, replicas: [(4, [(0, 0..<4)]), (8, [(1, 0..<1), (2, 1..<4)])]))
        try #require(mixed.result.status == 0, "\(mixed.result.output)")
        Self.expectSameLearning(mixed, as: single, "1 + 2 stages")
    }

    @Test("a chip too small for the whole model trains as a pipeline stage, where data parallelism cannot")
    func smallChipTrainsAsAStage() throws {
        let model = "model: {layers: 4, dim: 64, heads: 2, seq: 32, batch: 8}"
        var config = ModelConfig(layers: 4, dim: 64, heads: 2, seq: 32, maxBatch: 2)
        let stageNeed = GPT.deviceBytes(config: config, stage: 4..<6, activationSequences: 2)
        config.maxBatch = 1
        let wholeNeed = GPT.deviceBytes(config: config)
        try #require(stageNeed < wholeNeed / 2)
        let memory = (stageNeed + wholeNeed) / 2
        let devices = "[cpu, {adapter: sim, options: {name: tiny, memory: '\(memory)'}}]"
        let dir = try TestSupport.temporaryDirectory("medley-pipeline")

        // Data parallelism needs the whole model on the small chip: refused before mpirun.
        let data = TrainJobTests.job(devices: devices, train: "steps: 5").replacingOccurrences(
            of: "model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}", with: model)
        try data.write(toFile: dir + "/data.yaml", atomically: true, encoding: .utf8)
        let refused = try TestSupport.medley(["train", dir + "/data.yaml"], timeout: 60)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("sim tiny"), "\(refused.output)")

        let plan = Plan.manual(globalBatch: 8, microbatchSize: 2, replicas: [(8, [(0, 0..<4), (1, 4..<6)])])
        let yaml = try Self.job(devices: devices, plan: plan, planPath: dir + "/plan.json", model: model, train: "steps: 8, eval_every: 0")
        let run = try TrainJobTests.train(yaml)
        try #require(run.result.status == 0, "\(run.result.output)")
        #expect(run.records.count == 8)
        #expect(run.records.last!.loss < run.records.first!.loss, "the model learns")
    }

    @Test("plan: auto profiles the chips, plans at launch and logs the predicted step time")
    func automaticPlan() throws {
        let dir = try TestSupport.temporaryDirectory("medley-pipeline")
        let yaml = TrainJobTests.job(devices: "[cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]", train: "steps: 4")
            + "\nplan: auto\n"
        let run = try TrainJobTests.train(yaml, environment: ["MEDLEY_CACHE_DIR": dir + "/cache"])
        try #require(run.result.status == 0, "\(run.result.output)")
        #expect(run.records.count == 4)
        #expect(run.records.allSatisfy { ($0.predictedStepMs ?? 0) > 0 }, "\(run.result.output)")
        #expect(run.records.first.map { $0.shares.reduce(0, +) >= 12 } == true)
    }

    @Test("bad plans fail with one line before mpirun starts", arguments: [
        ("missing", "does not exist"),
        ("device", "uses device 5"),
        ("gap", "expected a non-empty range starting at 2"),
        ("samples", "sum to 11"),
        ("memory", "short; give it fewer layers"),
        ("shares", "apply to plan: data"),
    ])
    func badPlans(kind: String, expected: String) throws {
        let dir = try TestSupport.temporaryDirectory("medley-pipeline")
        let marker = dir + "/mpirun-started", fake = dir + "/mpirun"
        try "#!/bin/sh\ntouch \(marker)\nexit 1\n".write(toFile: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake)
        var devices = "[cpu, reference]"
        var pinShares = false
        let plan: Plan?
        switch kind {
        case "missing": plan = nil
        case "device": plan = .manual(globalBatch: 12, microbatchSize: 2, replicas: [(12, [(0, 0..<2), (5, 2..<4)])])
        case "gap": plan = .manual(globalBatch: 12, microbatchSize: 2, replicas: [(12, [(0, 0..<2), (1, 3..<4)])])
        case "samples": plan = .manual(globalBatch: 12, microbatchSize: 2, replicas: [(11, [(0, 0..<2), (1, 2..<4)])])
        case "memory":
            devices = "[cpu, {adapter: sim, options: {memory: 64KiB}}]"
            plan = .manual(globalBatch: 12, microbatchSize: 2, replicas: [(12, [(0, 0..<2), (1, 2..<4)])])
        default:
            pinShares = true
            plan = .manual(globalBatch: 12, microbatchSize: 2, replicas: [(12, [(0, 0..<2), (1, 2..<4)])])
        }
        var yaml = try Self.job(devices: devices, plan: plan, planPath: dir + "/plan.json")
        if pinShares { yaml = yaml.replacingOccurrences(of: "train: {", with: "train: {shares: [12, 0], ") }
        try yaml.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(["train", dir + "/job.yaml"], environment: ["MEDLEY_MPIRUN": fake], timeout: 60)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("Error:") && lines[0].contains(expected), "\(result.output)")
        #expect(!FileManager.default.fileExists(atPath: marker), "mpirun was started")
    }
}
