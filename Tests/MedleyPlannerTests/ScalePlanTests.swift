import MedleyCore
import MedleyPlanner
import Testing

/// What the planner predicts for `medley simulate` on 100 illustrative chips: deterministic model
/// output (no clock), so the figures can be bounded.
@Suite struct ScalePlanTests {
    @Test("100 mixed chips: every chip trains, the shares add up to the batch, the loss stays under 4.5 %")
    func hundredChips() throws {
        let simulation = try Simulation(devices: "25xA,25xB,25xC,25xD")
        let plan = try simulation.run().plan
        #expect(plan.leftOut.isEmpty)
        #expect(plan.replicas.reduce(0) { $0 + $1.stages.count } == 100)
        #expect(plan.replicas.reduce(0) { $0 + $1.samples } == simulation.globalBatch)
        for replica in plan.replicas {
            #expect(replica.samples >= 1)
            #expect(replica.microbatches == (replica.samples + plan.microbatchSize - 1) / plan.microbatchSize)
            for stage in replica.stages { #expect(stage.freeBytes >= 0) }
        }
        // The update-aware split: a pipeline's end stages also exchange the token table, so they
        // hold fewer layers than its fullest stage, and the slowest update is that of a middle stage
        // or an end stage relieved of blocks (115 ms before the cap, with an end of 4 layers).
        let model = try StepTimeModel(model: simulation.model, inventory: simulation.inventory, network: simulation.network)
        let holders = StepTimeModel.Holders(stageCounts: plan.replicas.map(\.stages.count))
        var slowest = 0.0
        for replica in plan.replicas where replica.stages.count > 1 {
            let sizes = replica.stages.map { $0.endLayer - $0.firstLayer }
            #expect(sizes.first! < sizes.max()! && sizes.last! < sizes.max()!, "\(sizes)")
            for stage in replica.stages {
                let layers = stage.firstLayer..<stage.endLayer
                let t = simulation.inventory.devices[stage.device]
                slowest = max(slowest, model.exchangeMs(layers: layers, holders: holders)
                    + model.optimizerMs(profile: t, layers: layers, holders: holders))
            }
        }
        let p = plan.prediction
        #expect(abs(slowest - (p.exchangeMs + p.optimizerMs)) <= 1e-9 * slowest)
        #expect(p.exchangeMs + p.optimizerMs < 100)
        #expect(abs(p.stepMs - (p.computeMs + p.exchangeMs + p.optimizerMs)) <= 1e-9 * p.stepMs)
        #expect(p.efficiency >= 0.955 && p.efficiency <= 1.01, "\(p.efficiency)")
    }
}
