import MedleyPlanner
import Testing

@Suite struct ModelCostTests {
    @Test func networkPricesLatencyPlusBytes() {
        let link = NetworkModel(latencySeconds: 1e-5, bytesPerSecond: 1e9)
        #expect(abs(link.sendSeconds(bytes: 1_000_000) - 0.00101) < 1e-12)
    }

    /// Figures from MedleyModel: `ParameterLayout(config:).count` and `GPT.memoryModel(config:)`
    /// for the same shapes (fixed bytes = 16 per parameter + a 4-byte scalar).
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
        #expect(cost.activationBytesPerSequence == shape.perSequence)
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

    @Test("memory: parameters at 16 bytes each, activations per microbatch in flight, the received input")
    func memory() throws {
        let model = ModelCost.gpt(layers: 2, dim: 8, heads: 2, seq: 4, vocab: 16)
        let cost = try StepTimeModel(
            model: model, inventory: DeviceInventory(profiles: [Self.profile], devices: [0]),
            network: NetworkModel(latencySeconds: 0, bytesPerSecond: 1e9))
        let block = model.layers[1]
        #expect(cost.stageMemoryBytes(layers: 1..<2, inFlight: 3, microbatch: 2)
            == 16 * block.parameters + 3 * 2 * (block.activationBytesPerSequence + 2 * 4 * 4 * 8))
        // The whole model on one stage stores the tied table once.
        #expect(cost.stageMemoryBytes(layers: 0..<4, inFlight: 1, microbatch: 1)
            == 16 * model.parameterCount + model.activationBytesPerSequence)
        // The head apart from the embedding keeps its own copy and sums it with the embedding's.
        let head = model.layers[3]
        #expect(cost.stageMemoryBytes(layers: 3..<4, inFlight: 1, microbatch: 1)
            == 16 * head.parameters + head.activationBytesPerSequence + 2 * 4 * 4 * 8)
        #expect(cost.exchangeMs(layers: 3..<4, replicas: 1) == 1000 * Double(4 * head.tiedParameters) / 1e9)
        #expect(cost.exchangeMs(layers: 0..<4, replicas: 1) == 0)
    }
}
