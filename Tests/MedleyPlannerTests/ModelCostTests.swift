import MedleyPlanner
import Testing

@Suite struct ModelCostTests {
    @Test func networkPricesLatencyPlusBytes() {
        let link = NetworkModel(latencySeconds: 1e-5, bytesPerSecond: 1e9)
        #expect(abs(link.sendSeconds(bytes: 1_000_000) - 0.00101) < 1e-12)
    }

    /// Figures from MedleyModel: `ParameterLayout(config:).count` and `GPT.memoryModel(config:)`
    /// for the same shapes (fixed bytes = 16 per parameter + a 4-byte scalar; per sequence twice
    /// the activations, for them and their gradients, plus 8 bytes a position of token ids and targets).
    @Test("ModelCost.gpt matches the GPT's parameters and per-sequence memory", arguments: [
        (layers: 2, dim: 64, heads: 4, seq: 64, vocab: 256, parameters: 120_576, perSequence: 1_387_008),
        (layers: 3, dim: 48, heads: 6, seq: 32, vocab: 100, parameters: 91_248, perSequence: 722_688),
    ])
    func gptMatchesTheModel(
        shape: (layers: Int, dim: Int, heads: Int, seq: Int, vocab: Int, parameters: Int, perSequence: Int)
    ) {
        let cost = ModelCost.gpt(layers: shape.layers, dim: shape.dim, heads: shape.heads, seq: shape.seq, vocab: shape.vocab)
        #expect(cost.layers.count == shape.layers + 2)
        #expect(cost.blockCount == shape.layers)
        #expect(cost.layers.map(\.kind) == [.embedding] + Array(repeating: .block, count: shape.layers) + [.head])
        #expect(cost.parameterCount == shape.parameters)
        #expect(2 * cost.activationBytesPerSequence + 8 * shape.seq == shape.perSequence)
        #expect(cost.bytesPerParameter == 16)
        let c = shape.dim
        #expect(cost.layers[1].parameters == 12 * c * c + 13 * c)
        #expect(cost.layers.last!.tiedParameters == shape.vocab * c)
        #expect(cost.layers.last!.parameters == shape.vocab * c + 2 * c)
        #expect(cost.layers[0].outputBytesPerSequence == 4 * shape.seq * c)
        #expect(cost.layers[1].outputBytesPerSequence == 4 * shape.seq * c)
    }
}

@Suite struct StepTimeModelTests {
    /// One profile timed at microbatches 2 and 6 (fixed 1 ms + 0.5 ms per sequence forward, 1 + 1 backward).
    static let profile = DeviceProfile(
        chip: "T", adapter: "", vendor: "", name: "", memoryBytes: 1 << 30,
        timings: ModelCost.Layer.Kind.allCases.flatMap { kind in
            [2, 6].map { b in DeviceProfile.LayerTiming(kind: kind, microbatch: b, forwardMs: 1 + 0.5 * Double(b), backwardMs: 1 + Double(b)) }
        },
        optimizerMsPerParameterByte: 0)

    @Test("layer times are interpolated linearly in the microbatch, and extrapolated")
    func interpolation() throws {
        let model = ModelCost.gpt(layers: 1, dim: 8, heads: 2, seq: 4, vocab: 16)
        let cost = try StepTimeModel(
            model: model, inventory: DeviceInventory(profiles: [Self.profile], devices: [0]),
            network: NetworkModel(latencySeconds: 0, bytesPerSecond: 1e30))
        for (b, forward, backward) in [(2, 2.0, 3.0), (4, 3.0, 5.0), (6, 4.0, 7.0), (10, 6.0, 11.0), (1, 1.5, 2.0)] {
            // One block: planning layer 1 alone (sends are free on this network).
            let times = cost.stageTimes(profile: 0, layers: 1..<2, microbatch: b)
            #expect(abs(times.forwardMs - forward) < 1e-9, "b=\(b)")
            #expect(abs(times.backwardMs - backward) < 1e-9, "b=\(b)")
        }
    }

    @Test("memory: parameters at 16 bytes each; activations per sequence in flight, their gradients for one microbatch")
    func memory() throws {
        let model = ModelCost.gpt(layers: 2, dim: 8, heads: 2, seq: 4, vocab: 16)
        let cost = try StepTimeModel(
            model: model, inventory: DeviceInventory(profiles: [Self.profile], devices: [0]),
            network: NetworkModel(latencySeconds: 0, bytesPerSecond: 1e9))
        let block = model.layers[1]
        let input = 4 * 4 * 8  // the received residual stream, T·C floats
        let tokens = 8 * 4  // token ids and targets, per sequence
        #expect(cost.stageMemoryBytes(layers: 1..<2, inFlight: 3, microbatch: 2)
            == 16 * block.parameters + (3 + 1) * 2 * (block.activationBytesPerSequence + input) + 3 * 2 * tokens + 4)
        // The whole model on one stage stores the tied table once: GPT.deviceBytes for a batch of 1.
        #expect(cost.stageMemoryBytes(layers: 0..<4, inFlight: 1, microbatch: 1)
            == 16 * model.parameterCount + 2 * model.activationBytesPerSequence + tokens + 4)
        // The head apart from the embedding keeps its own copy of the table.
        let head = model.layers[3]
        #expect(cost.stageMemoryBytes(layers: 3..<4, inFlight: 1, microbatch: 1)
            == 16 * head.parameters + 2 * (head.activationBytesPerSequence + input) + tokens + 4)
    }

    @Test("exchange: each holder set's ring, the tied table among its copies after each pipeline sums its two")
    func exchange() throws {
        let model = ModelCost.gpt(layers: 2, dim: 8, heads: 2, seq: 4, vocab: 16)
        let cost = try StepTimeModel(
            model: model, inventory: DeviceInventory(profiles: [Self.profile], devices: [0]),
            network: NetworkModel(latencySeconds: 1e-6, bytesPerSecond: 1e9))
        func ring(_ bytes: Int, _ k: Int) -> Double {
            k < 2 ? 0 : 1000 * (2 * Double(k - 1) / Double(k) * Double(bytes) / 1e9 + 2 * Double(k - 1) * 1e-6)
        }
        let table = 4 * model.layers[3].tiedParameters
        let head = 4 * model.layers[3].parameters, block = 4 * model.layers[1].parameters
        // One replica of one stage: nothing to exchange.
        #expect(cost.exchangeMs(layers: 0..<4, holders: .init(stageCounts: [1])) == 0)
        // Three whole-model replicas: one ring over everything.
        #expect(abs(cost.exchangeMs(layers: 0..<4, holders: .init(stageCounts: [1, 1, 1])) - ring(4 * model.parameterCount, 3)) < 1e-12)
        // A 2-stage replica and a whole-model one: the head's stage sums the table with its
        // embedding's stage, then the table goes round its 3 copies, lnf round the 2 replicas.
        let holders = StepTimeModel.Holders(stageCounts: [2, 1])
        #expect(holders == .init(replicas: 2, table: 3))
        #expect(abs(cost.exchangeMs(layers: 3..<4, holders: holders) - (ring(table, 2) + ring(table, 3) + ring(head - table, 2))) < 1e-12)
        #expect(abs(cost.exchangeMs(layers: 1..<3, holders: holders) - ring(2 * block, 2)) < 1e-12)
        // Its optimizer updates a third of the table and half of lnf, then gathers the other shards.
        func gather(_ bytes: Int, _ k: Int) -> Double {
            k < 2 ? 0 : 1000 * (Double(k - 1) / Double(k) * Double(bytes) / 1e9 + Double(k - 1) * 1e-6)
        }
        let optimizer = StepTimeModel.Holders(replicas: 2, table: 3)
        let rate = 1e-3
        var profile = Self.profile
        profile.optimizerMsPerParameterByte = rate
        let priced = try StepTimeModel(model: model, inventory: DeviceInventory(profiles: [profile], devices: [0]), network: cost.network)
        #expect(abs(priced.optimizerMs(profile: 0, layers: 3..<4, holders: optimizer)
            - (rate * (Double(table) / 3 + Double(head - table) / 2) + gather(table, 3) + gather(head - table, 2))) < 1e-12)
        #expect(priced.optimizerMs(profile: 0, layers: 0..<4, holders: .init(stageCounts: [1])) == rate * Double(4 * model.parameterCount))
    }
}
