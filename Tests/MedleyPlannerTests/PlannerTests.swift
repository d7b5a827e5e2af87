import Foundation
import MedleyCore
import MedleyPlanner
import Testing

@Suite struct PlannerTests {
    static let chip = Fixture.chip("A", blockMs: 1, memory: 64 * Fixture.mib)

    func planner(
        blocks: Int = 4, profiles: [DeviceProfile] = [chip], counts: [Int] = [2], batch: Int = 8,
        options: Planner.Options = .init(), network: NetworkModel = Fixture.network
    ) -> Planner {
        Planner(
            model: Fixture.model(blocks: blocks), inventory: Fixture.inventory(profiles, counts), network: network,
            globalBatch: batch, options: options)
    }

    /// max/mean of a replica's stage times (forward + backward per microbatch).
    func imbalance(_ replica: Plan.Replica) -> Double {
        let times = replica.stages.map { $0.forwardMs + $0.backwardMs }
        return times.max()! / (times.reduce(0, +) / Double(times.count))
    }

    // MARK: Memory

    @Test("a chip with little memory gets fewer layers, and every stage fits")
    func smallMemoryGetsFewerLayers() throws {
        let model = Fixture.model(blocks: 10)
        let cost = try StepTimeModel(model: model, inventory: Fixture.inventory([Self.chip], [1]), network: Fixture.network)
        // Room for the embedding and 7 blocks with 2 microbatches in flight, and for 3 blocks and the head with 1.
        let big = cost.stageMemoryBytes(layers: 0..<8, inFlight: 2, microbatch: 1) + 1000
        let small = cost.stageMemoryBytes(layers: 8..<12, inFlight: 1, microbatch: 1) + 1000
        #expect(cost.stageMemoryBytes(layers: 0..<12, inFlight: 1, microbatch: 1) > big, "the big chip alone must not hold the model")
        let profiles = [
            Fixture.chip("big", blockMs: 1, memory: big), Fixture.chip("small", blockMs: 1, memory: small),
        ]
        let plan = try planner(blocks: 10, profiles: profiles, counts: [1, 1], batch: 2).plan()
        #expect(plan.replicas.count == 1)
        let stages = try #require(plan.replicas.first?.stages)
        #expect(stages.map(\.chip).sorted() == ["big", "small"])
        let bigLayers = try #require(stages.first { $0.chip == "big" }).layers.count
        let smallLayers = try #require(stages.first { $0.chip == "small" }).layers.count
        #expect(smallLayers < bigLayers, "big holds \(bigLayers) layers, small \(smallLayers)")
        #expect(stages.allSatisfy { $0.freeBytes >= 0 })
        #expect(plan.leftOut.isEmpty)
    }

    @Test("the plan takes the slack asked for when every stage fits with it, less when memory is short")
    func slackFollowsMemory() throws {
        // 1F1B slack: stage s of p keeps (p − 1 − s)(1 + slack) + 1 microbatches, at most m.
        #expect(Plan.inFlight(stagesAfter: 1, microbatches: 16, slack: 0) == 2)
        #expect(Plan.inFlight(stagesAfter: 1, microbatches: 16, slack: 1) == 3)
        #expect(Plan.inFlight(stagesAfter: 2, microbatches: 16, slack: 1) == 5)
        #expect(Plan.inFlight(stagesAfter: 2, microbatches: 4, slack: 1) == 4)
        #expect(Plan.inFlight(stagesAfter: 0, microbatches: 16, slack: 3) == 1)
        #expect(Plan.warmupForwards(stagesAfter: 1, microbatches: 16, slack: 1) == 2)
        #expect(Plan.warmupForwards(stagesAfter: 2, microbatches: 4, slack: 1) == 4)

        let model = Fixture.model(blocks: 10)
        let cost = try StepTimeModel(model: model, inventory: Fixture.inventory([Self.chip], [1]), network: Fixture.network)
        // The same chips as above, 8 microbatches of 1: the big chip's stage fits with 2 in flight, not 3.
        let big = cost.stageMemoryBytes(layers: 0..<8, inFlight: 2, microbatch: 1) + 1000
        let small = cost.stageMemoryBytes(layers: 8..<12, inFlight: 1, microbatch: 1) + 1000
        func plan(big: Int, slack: Int) throws -> Plan {
            let profiles = [Fixture.chip("big", blockMs: 1, memory: big), Fixture.chip("small", blockMs: 1, memory: small)]
            return try planner(blocks: 10, profiles: profiles, counts: [1, 1], batch: 8,
                               options: .init(microbatchSize: 1, slack: slack)).plan()
        }
        let tight = try plan(big: big, slack: 1)
        #expect(tight.replicas.count == 1 && tight.replicas[0].stages.count == 2)
        #expect(tight.slack == 0, "slack 1 would need 3 microbatches in flight on the big chip")
        #expect(tight.replicas[0].stages.allSatisfy { $0.freeBytes >= 0 })

        let roomy = try plan(big: 4 * big, slack: 1)
        #expect(roomy.slack == 1)
        let first = try #require(roomy.replicas.first?.stages.first)
        if roomy.replicas[0].stages.count == 2 {
            #expect(first.memoryBytes == cost.stageMemoryBytes(layers: first.layers, inFlight: 3, microbatch: 1))
        }
        #expect(try plan(big: 4 * big, slack: 0).slack == 0)

        // A plan file from before slack existed runs textbook 1F1B.
        var json = try JSONSerialization.jsonObject(with: roomy.jsonData()) as! [String: Any]
        json.removeValue(forKey: "slack")
        let old = try JSONDecoder().decode(Plan.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(old.slack == 0)
        #expect(try JSONDecoder().decode(Plan.self, from: roomy.jsonData()) == roomy)
    }

    @Test("when nothing fits, one line names the chip and the shortfall")
    func nothingFits() throws {
        let profiles = [Fixture.chip("roomy", blockMs: 1, memory: 2 * Fixture.mib), Fixture.chip("cramped", blockMs: 1, memory: Fixture.mib)]
        let error = try #require(throws: MedleyError.self) {
            try planner(blocks: 8, profiles: profiles, counts: [1, 1], batch: 4).plan()
        }
        #expect(error.code == .outOfMemory)
        #expect(error.message.hasPrefix("no plan fits: split over 2 chips the model needs at least"))
        #expect(error.message.contains("the largest chip, 'roomy' (device 0), has 2.0 MiB"))
        #expect(error.message.contains("short"))
        #expect(!error.message.contains("\n"))

        // One chip too small among larger ones: that chip is named.
        let mixed = [Fixture.chip("ample", blockMs: 1, memory: 8 * Fixture.mib), Fixture.chip("cramped", blockMs: 1, memory: Fixture.mib / 4)]
        let named = try #require(throws: MedleyError.self) {
            try planner(blocks: 8, profiles: mixed, counts: [1, 1], batch: 4).plan()
        }
        #expect(named.message.contains("chip 'cramped' (device 1) has 256.0 KiB"), "\(named.message)")
    }

    // MARK: Chip selection

    @Test("a very slow chip is left out, with the reason")
    func slowChipLeftOut() throws {
        let profiles = [Self.chip, Fixture.chip("snail", blockMs: 1000, memory: 64 * Fixture.mib)]
        let plan = try planner(profiles: profiles, counts: [3, 1], batch: 12).plan()
        #expect(plan.leftOut.count == 1)
        let left = try #require(plan.leftOut.first)
        #expect(left.device == 3)
        #expect(left.chip == "snail")
        #expect(left.reason.hasPrefix("slower with it: the best plan that also uses it predicts"), "\(left.reason)")
        #expect(plan.replicas.allSatisfy { $0.stages.allSatisfy { $0.chip == "A" } })
        #expect(plan.table().contains("left out: device 3 ('snail'): slower with it"))
    }

    @Test("a chip too small for any stage is left out as such, and the others train")
    func uselessChipLeftOut() throws {
        let profiles = [Self.chip, Fixture.chip("crumb", blockMs: 0.1, memory: 1000)]
        let plan = try planner(profiles: profiles, counts: [2, 1]).plan()
        #expect(plan.leftOut.map(\.device) == [2])
        #expect(plan.leftOut.first?.reason.hasPrefix("too little memory: the smallest stage (one layer, microbatch 1) needs") == true)
    }

    // MARK: Determinism and shape

    @Test("the same input gives the same plan", arguments: [false, true])
    func deterministic(large: Bool) throws {
        let make = {
            large
                ? try Simulation(devices: "300xA,200xB,120xC,80xD", shape: .init(layers: 24)).run().plan
                : try self.planner(
                    blocks: 6, profiles: [Self.chip, Fixture.chip("B", blockMs: 1.7, memory: 8 * Fixture.mib)], counts: [2, 3],
                    batch: 10
                ).plan()
        }
        let first = try make(), second = try make()
        #expect(first == second)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(first) == encoder.encode(second))
        #expect(try JSONDecoder().decode(Plan.self, from: encoder.encode(first)) == first)
    }

    @Test("stages are balanced within 5% when the layers allow it")
    func balanced() throws {
        // 32 blocks on 4 chips that cannot hold a quarter more than their share: 4 stages of 8 blocks.
        let model = Fixture.model(blocks: 32)
        let cost = try StepTimeModel(model: model, inventory: Fixture.inventory([Self.chip], [1]), network: Fixture.network)
        let memory = cost.stageMemoryBytes(layers: 0..<10, inFlight: 4, microbatch: 1)
        let profile = Fixture.chip("A", blockMs: 1, memory: memory)
        let plan = try planner(blocks: 32, profiles: [profile], counts: [4], batch: 16, options: .init(microbatchSize: 1)).plan()
        #expect(plan.replicas.count == 1 && plan.replicas[0].stages.count == 4)
        for replica in plan.replicas { #expect(imbalance(replica) <= 1.05, "\(replica.stages.map(\.layers))") }

        // At scale (the template search): 256 chips of type A, 96 layers.
        let large = try Simulation(devices: "256xA").run().plan
        #expect(large.replicas.count > 1 && large.replicas[0].stages.count > 1)
        for replica in large.replicas { #expect(imbalance(replica) <= 1.05, "\(replica.stages.map(\.layers))") }
    }

    @Test("shares are whole sequences that add up to the batch, faster replicas getting more")
    func shares() throws {
        let profiles = [Self.chip, Fixture.chip("half", blockMs: 2, memory: 64 * Fixture.mib)]
        let plan = try planner(profiles: profiles, counts: [1, 1], batch: 30, options: .init(microbatchSize: 1)).plan()
        #expect(plan.replicas.count == 2)
        #expect(plan.replicas.map(\.samples).reduce(0, +) == 30)
        let fast = try #require(plan.replicas.first { $0.stages[0].chip == "A" })
        let slow = try #require(plan.replicas.first { $0.stages[0].chip == "half" })
        #expect(fast.samples > slow.samples)
        #expect(plan.schedule == "1F1B")
        #expect(plan.prediction.stepMs
            == plan.prediction.computeMs + plan.prediction.exchangeMs + plan.prediction.optimizerMs)
        #expect(plan.prediction.efficiency > 0.5 && plan.prediction.efficiency < 1.5)
    }

    @Test("the 1F1B pipeline time: equal stages give the bubble (p-1)/(m+p-1)")
    func bubble() throws {
        let model = Fixture.model(blocks: 3)
        let profile = Fixture.chip("A", blockMs: 1, memory: 64 * Fixture.mib, embeddingShare: 1, headShare: 1)
        let cost = try StepTimeModel(
            model: model, inventory: Fixture.inventory([profile], [5]), network: NetworkModel(latencySeconds: 0, bytesPerSecond: 1e30))
        // Five stages of one layer each, equal times; 7 microbatches of 1.
        let layout = PlanLayout(
            microbatchSize: 1, replicas: [.init(stages: (0..<5).map { .init(device: $0, layers: $0..<($0 + 1)) }, samples: 7)])
        let plan = try cost.evaluate(layout)
        let c = plan.replicas[0].stages[0].forwardMs + plan.replicas[0].stages[0].backwardMs
        #expect(abs(plan.prediction.computeMs - Double(7 + 5 - 1) * c) < 1e-9)
        #expect(abs(plan.prediction.bubbleFraction - 4.0 / 11.0) < 1e-12)
        #expect(plan.replicas[0].microbatches == 7)
    }

    @Test("a plan of 1000 chips of four types is valid")
    func large() throws {
        let simulation = try Simulation(devices: "250xA,250xB,250xC,250xD")
        let plan = try simulation.run().plan
        #expect(plan.replicas.reduce(0) { $0 + $1.samples } == simulation.globalBatch)
        var seen = Set<Int>()
        for replica in plan.replicas {
            #expect(replica.stages.first?.firstLayer == 0)
            #expect(replica.stages.last?.endLayer == 98)
            for (s, stage) in replica.stages.enumerated() {
                #expect(stage.freeBytes >= 0)
                #expect(seen.insert(stage.device).inserted)
                if s > 0 { #expect(stage.firstLayer == replica.stages[s - 1].endLayer) }
            }
        }
        #expect(seen.count + plan.leftOut.count == 1000)
        #expect(plan.prediction.efficiency > 0.9 && plan.prediction.efficiency <= 1.01)
        let table = plan.table()
        #expect(table.contains("×)"))
        #expect(table.split(separator: "\n").count < 200)
    }

    // MARK: Bad input

    static func profile(_ change: (inout DeviceProfile) -> Void) -> DeviceProfile {
        var p = chip
        change(&p)
        return p
    }

    static let badInputs: [(String, Planner, String)] = {
        let model = Fixture.model(blocks: 2)
        let network = Fixture.network
        func make(_ profiles: [DeviceProfile] = [chip], _ devices: [Int] = [0], batch: Int = 4, options: Planner.Options = .init(),
                  network: NetworkModel = network, model: ModelCost = model) -> Planner {
            Planner(model: model, inventory: DeviceInventory(profiles: profiles, devices: devices), network: network,
                    globalBatch: batch, options: options)
        }
        var broken = model
        broken.layers.removeLast()
        return [
            ("zero chips", make([chip], []), "no chips: the inventory lists no devices"),
            ("unknown chip type", make([chip], [0, 2]), "device 1 names chip type 2, but there is 1 chip type (0...0)"),
            ("negative speed", make([profile { $0.timings[2].forwardMs = -1 }]),
             "chip type 0 ('A'): block forward time at microbatch 1 must be a positive, finite number of ms, got -1.0"),
            ("zero time", make([profile { $0.timings[5].backwardMs = 0 }]), "head backward time at microbatch 4 must be a positive"),
            ("infinite time", make([profile { $0.timings[0].forwardMs = .infinity }]), "got inf"),
            ("NaN time", make([profile { $0.timings[0].forwardMs = .nan }]), "got nan"),
            ("missing kind", make([profile { $0.timings.removeAll { $0.kind == .head } }]), "has no timing for the head"),
            ("zero microbatch timing", make([profile { $0.timings[0].microbatch = 0 }]), "microbatches start at 1"),
            ("duplicate timing", make([profile { $0.timings[1].microbatch = 1 }]), "times the embedding twice at microbatch 1"),
            ("no memory", make([profile { $0.memoryBytes = 0 }]), "memory must be positive, got 0 bytes"),
            ("negative optimizer", make([profile { $0.optimizerMsPerParameterByte = -1 }]), "optimizer time per parameter byte"),
            ("duplicate chip key", make([chip, chip], [0, 1]), "chip types 0 and 1 are both 'A'"),
            ("batch 0", make(batch: 0), "the global batch must be at least 1 sequence, got 0"),
            ("negative batch", make(batch: -3), "got -3"),
            ("microbatch 0", make(options: .init(microbatchSize: 0)), "the microbatch size must be at least 1, got 0"),
            ("microbatch above batch", make(options: .init(microbatchSize: 8)), "the microbatch size 8 is larger than the global batch 4"),
            ("no stages", make(options: .init(maxStages: 0)), "the most stages per pipeline must be at least 1"),
            ("negative slack", make(options: .init(slack: -1)), "the pipeline slack must be 0 to 16, got -1"),
            ("too much slack", make(options: .init(slack: 17)), "the pipeline slack must be 0 to 16, got 17"),
            ("no bandwidth", make(network: NetworkModel(latencySeconds: 0, bytesPerSecond: 0)), "network: bandwidth must be"),
            ("negative latency", make(network: NetworkModel(latencySeconds: -1, bytesPerSecond: 1e9)), "network: latency must be"),
            ("model without head", make(model: broken), "planning layer 2 is a block, expected a head"),
        ]
    }()

    @Test("bad input is rejected with one clear line", arguments: badInputs.indices)
    func badInput(_ index: Int) throws {
        let (name, planner, expected) = Self.badInputs[index]
        let error = try #require(throws: MedleyError.self, "\(name)") { try planner.plan() }
        #expect(error.code == .invalidArgument, "\(name)")
        #expect(error.message.contains(expected), "\(name): \(error.message)")
        #expect(!error.message.contains("\n"), "\(name)")
    }
}
