import MedleyCore
import MedleyPlanner
import Testing

/// The planner against exhaustive search over the same plan space (`BruteForce`), on small cases.
@Suite struct PlannerOptimalityTests {
    static let fastBig = Fixture.chip("fast-big", blockMs: 1.0, memory: 64 * Fixture.mib)
    static let slowBig = Fixture.chip("slow-big", blockMs: 2.5, memory: 64 * Fixture.mib, fixedMs: 0.1)
    static let fastSmall = Fixture.chip("fast-small", blockMs: 0.8, memory: 5 * Fixture.mib)
    static let tiny = Fixture.chip("tiny", blockMs: 1.5, memory: 3 * Fixture.mib, optimizerMsPerByte: 1e-6)

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var blocks: Int
        var profiles: [DeviceProfile]
        var counts: [Int]
        var batch: Int
        var options = Planner.Options()
        var network = Fixture.network
        var testDescription: String { name }

        var planner: Planner {
            Planner(
                model: Fixture.model(blocks: blocks), inventory: Fixture.inventory(profiles, counts), network: network,
                globalBatch: batch, options: options)
        }
    }

    static let cases: [Case] = [
        Case(name: "three chip types, one each, 6 blocks", blocks: 6, profiles: [fastBig, slowBig, fastSmall], counts: [1, 1, 1], batch: 8),
        Case(name: "5 chips of 3 types, 4 blocks", blocks: 4, profiles: [fastBig, slowBig, tiny], counts: [2, 2, 1], batch: 12),
        Case(name: "8 chips of 2 types, 2 blocks", blocks: 2, profiles: [fastBig, slowBig], counts: [4, 4], batch: 16),
        Case(name: "4 small chips, 12 blocks: pipelines forced", blocks: 12, profiles: [fastSmall], counts: [4], batch: 6),
        Case(name: "small and tiny chips, 12 blocks", blocks: 12, profiles: [fastSmall, tiny], counts: [3, 2], batch: 4),
        Case(name: "8 chips of one type, 3 blocks, fixed microbatch", blocks: 3, profiles: [slowBig], counts: [8], batch: 24,
             options: .init(microbatchSize: 2)),
        Case(name: "slow network, 3 types, at most 2 stages", blocks: 5, profiles: [fastBig, slowBig, fastSmall], counts: [2, 1, 2],
             batch: 10, options: .init(maxStages: 2), network: NetworkModel(latencySeconds: 1e-3, bytesPerSecond: 1e8)),
    ]

    @Test("the plan's step equals exhaustive search's optimum", arguments: cases)
    func matchesExhaustiveSearch(_ example: Case) throws {
        let plan = try example.planner.plan()
        let optimum = try #require(try BruteForce(planner: example.planner).bestStepMs())
        #expect(abs(plan.prediction.stepMs - optimum) <= 1e-9 * optimum, "planner \(plan.prediction.stepMs) ms, exhaustive \(optimum) ms")
        try expectConsistent(plan, example.planner)
    }

    @Test("random small cases: the plan's step equals exhaustive search's optimum", arguments: 0..<6)
    func randomCases(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(1000 + seed))
        let typeCount = 1 + rng.below(3)
        let profiles = (0..<typeCount).map { i in
            Fixture.chip(
                "r\(i)", blockMs: 0.5 + Double(rng.below(30)) / 10, memory: (3 + rng.below(30)) * Fixture.mib,
                fixedMs: Double(rng.below(10)) / 50, optimizerMsPerByte: Double(rng.below(5)) * 1e-7)
        }
        let counts = (0..<typeCount).map { _ in 1 + rng.below(2) }
        let planner = Planner(
            model: Fixture.model(blocks: 1 + rng.below(6)), inventory: Fixture.inventory(profiles, counts),
            network: NetworkModel(latencySeconds: Double(rng.below(50)) * 1e-5, bytesPerSecond: 1e8 * Double(1 + rng.below(20))),
            globalBatch: 1 + rng.below(12))
        let optimum = try BruteForce(planner: planner).bestStepMs()
        guard let optimum else {
            #expect(throws: MedleyError.self) { try planner.plan() }
            return
        }
        let plan = try planner.plan()
        #expect(abs(plan.prediction.stepMs - optimum) <= 1e-9 * optimum, "planner \(plan.prediction.stepMs) ms, exhaustive \(optimum) ms")
        try expectConsistent(plan, planner)
    }

    /// The plan re-evaluated from its layout predicts the same; batch shares add up; every stage fits.
    func expectConsistent(_ plan: Plan, _ planner: Planner) throws {
        let model = try StepTimeModel(model: planner.model, inventory: planner.inventory, network: planner.network)
        let layout = PlanLayout(
            microbatchSize: plan.microbatchSize,
            replicas: plan.replicas.map { replica in
                .init(stages: replica.stages.map { .init(device: $0.device, layers: $0.layers) }, samples: replica.samples)
            })
        let again = try model.evaluate(layout)
        #expect(again.prediction.stepMs == plan.prediction.stepMs)
        #expect(plan.replicas.reduce(0) { $0 + $1.samples } == planner.globalBatch)
        for replica in plan.replicas {
            #expect(replica.samples >= 1)
            #expect(replica.microbatches == (replica.samples + plan.microbatchSize - 1) / plan.microbatchSize)
            for stage in replica.stages { #expect(stage.freeBytes >= 0, "\(stage)") }
        }
    }
}
