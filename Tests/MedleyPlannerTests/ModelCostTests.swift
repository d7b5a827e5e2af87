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
