import Foundation
import MedleyPlanner
import MedleyTestSupport
import Testing

/// A real accelerator API in a mixed job: the opencl adapter (on PoCL here) beside the cpu and
/// sim chips, data-parallel and as a pipeline stage, against 1 reference rank.
@Suite("medley train with an OpenCL chip", .serialized)
struct OpenCLTrainTests {
    /// The opencl adapter's kernel cache goes to a temporary directory, not the user's.
    static let environment: [String: String] = {
        let dir = (try? TestSupport.temporaryDirectory("medley-opencl-cache")) ?? NSTemporaryDirectory()
        return ["MEDLEY_CACHE_DIR": dir]
    }()

    @Test("cpu + opencl + sim learn what 1 reference rank learns, with staging copies recorded")
    func mixedWithOpenCL() throws {
        let single = try PipelineJobTests.reference.get()
        try #require(single.result.status == 0, "\(single.result.output)")
        // Shares that change during the run and put each rank at 0 for some steps.
        let schedule = ["1:5,4,3", "8:0,12,0", "12:7,0,5", "16:2,6,4"]
        let mixed = try TrainJobTests.train(
            TrainJobTests.job(devices: "[cpu, opencl, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]"),
            schedule.flatMap { ["--shares", $0] }, environment: Self.environment)
        try #require(mixed.result.status == 0, "\(mixed.result.output)")
        try #require(mixed.records.count == 20, "\(mixed.result.output)")
        #expect(mixed.records[9].shares == [0, 12, 0])
        #expect(mixed.records[19].shares == [2, 6, 4])
        for (a, b) in zip(single.records, mixed.records) {
            #expect(abs(a.loss - b.loss) <= 1e-4 * abs(a.loss), "step \(a.step): loss \(a.loss) vs \(b.loss)")
        }
        #expect(single.records.last!.loss < single.records.first!.loss - 0.5, "the model learns")
        // Every step records each rank's host<->device staging time.
        for record in mixed.records where record.skipped == nil {
            let staging = try #require(record.stagingMs, "step \(record.step) has no staging_ms")
            #expect(staging.count == 3 && staging.allSatisfy { $0 >= 0 && $0.isFinite })
        }
    }

    @Test("a pipeline with one stage on the opencl chip learns what 1 reference rank learns")
    func pipelineStageOnOpenCL() throws {
        let single = try PipelineJobTests.reference.get()
        try #require(single.result.status == 0, "\(single.result.output)")
        let dir = try TestSupport.temporaryDirectory("medley-opencl-pipeline")
        let yaml = try PipelineJobTests.job(
            devices: "[cpu, opencl]",
            plan: .manual(globalBatch: 12, microbatchSize: 4, replicas: [(12, [(0, 0..<2), (1, 2..<4)])], slack: 0),
            planPath: dir + "/plan.json")
        let run = try TrainJobTests.train(yaml, environment: Self.environment)
        try #require(run.result.status == 0, "\(run.result.output)")
        PipelineJobTests.expectSameLearning(run, as: single, "cpu stage + opencl stage")
    }
}
