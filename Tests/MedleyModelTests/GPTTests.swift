import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import MedleyTestSupport
import Testing

/// Opens device 0 of a built adapter.
func openDevice(_ name: String, options: [(String, String)] = []) throws -> Device {
    try AdapterLibrary.load(name, searchPath: TestSupport.buildSearchPath).openDevice(0, options: options)
}

/// A deterministic batch of `batch × seq` tokens and next-token targets.
func sampleBatch(_ config: ModelConfig, batch: Int, seed: UInt64) -> (tokens: [Int32], targets: [Int32]) {
    var rng = SeededGenerator(seed: seed)
    var tokens: [Int32] = []
    var targets: [Int32] = []
    for _ in 0..<batch {
        let row = (0...config.seq).map { _ in Int32(rng.below(config.vocab)) }
        tokens += row.dropLast()
        targets += row.dropFirst()
    }
    return (tokens, targets)
}

@Suite("GPT on one device")
struct GPTTests {
    static let tiny = ModelConfig(layers: 2, dim: 16, heads: 2, seq: 8, maxBatch: 2, vocab: 256)

    @Test("the layout names every tensor, packs them back to back and counts the parameters")
    func layout() throws {
        let config = ModelConfig.default
        let layout = ParameterLayout(config: config)
        let c = config.dim
        let perLayer = 2 * c + 3 * c * c + 3 * c + c * c + c + 2 * c + 4 * c * c + 4 * c + 4 * c * c + c
        #expect(layout.count == config.vocab * c + config.seq * c + config.layers * perLayer + 2 * c)
        #expect(config.parameterCount == layout.count)
        #expect(layout.entries.first?.name == "wte")
        #expect(layout["h.0.attn.qkv.w"]?.shape == [3 * c, c])
        #expect(layout["h.3.mlp.proj.w"]?.shape == [c, 4 * c])
        #expect(layout["lnf.b"]?.range.upperBound == layout.count)
        var next = 0
        for entry in layout.entries {
            #expect(entry.offset == next)
            next += entry.count
        }
        let groups = layout.decayGroups
        #expect(groups.map(\.range.count).reduce(0, +) == layout.count)
        #expect(groups.first?.decays == true)  // wte and wpe together
        #expect(groups.first?.range == 0..<(config.vocab + config.seq) * c)
        #expect(throws: MedleyError.self) { try layout.entry("h.9.ln1.w") }
    }

    @Test("initialisation is deterministic, N(0, 0.02) weights, scaled residual projections, LN 1/0, zero biases")
    func initialisation() throws {
        let config = ModelConfig.default
        let layout = ParameterLayout(config: config)
        let a = GPT.initialParameters(layout: layout, config: config, seed: 7)
        let b = GPT.initialParameters(layout: layout, config: config, seed: 7)
        let c = GPT.initialParameters(layout: layout, config: config, seed: 8)
        #expect(a == b)
        #expect(a != c)
        func std(_ name: String) -> Double {
            let values = a[layout[name]!.range].map(Double.init)
            let mean = values.reduce(0, +) / Double(values.count)
            return (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        }
        #expect(abs(std("wte") - 0.02) < 0.002)
        #expect(abs(std("h.0.mlp.fc.w") - 0.02) < 0.002)
        #expect(abs(std("h.0.mlp.proj.w") - 0.02 / (8.0).squareRoot()) < 0.001)
        #expect(abs(std("h.1.attn.proj.w") - 0.02 / (8.0).squareRoot()) < 0.001)
        #expect(a[layout["h.2.ln2.w"]!.range].allSatisfy { $0 == 1 })
        #expect(a[layout["lnf.b"]!.range].allSatisfy { $0 == 0 })
        #expect(a[layout["h.1.attn.qkv.b"]!.range].allSatisfy { $0 == 0 })
    }

    @Test("the initial loss is close to ln(256)")
    func initialLoss() throws {
        let device = try openDevice("cpu")
        let config = ModelConfig.default
        let model = try GPT(config: config, device: device, seed: 1)
        let batch = sampleBatch(config, batch: config.maxBatch, seed: 2)
        let loss = try model.forward(tokens: batch.tokens, targets: batch.targets, batch: config.maxBatch)
        #expect(abs(Double(loss) - log(256.0)) < 0.1, "initial loss \(loss)")
    }

    @Test("backward matches central finite differences of the whole model (reference adapter)")
    func gradientCheck() throws {
        let device = try openDevice("reference")
        let config = Self.tiny
        let model = try GPT(config: config, device: device, seed: 3)
        // Larger-than-init parameters so every gradient is well above fp32 noise.
        var rng = SeededGenerator(seed: 4)
        var params = try model.readParameters()
        for entry in model.layout.entries {
            let isLNWeight = entry.shape.count == 1 && entry.name.hasSuffix(".w")
            for i in entry.range { params[i] = (isLNWeight ? 1 : 0) + rng.uniform(-0.3, 0.3) }
        }
        try model.writeParameters(params)
        let batch = sampleBatch(config, batch: 2, seed: 5)
        var targets = batch.targets
        targets[3] = -1  // an ignored position

        _ = try model.forward(tokens: batch.tokens, targets: targets, batch: 2)
        try model.zeroGradients()
        try model.backward()
        let grads = try model.readGradients()

        let names = [
            "wte", "wte", "wpe", "h.0.ln1.w", "h.0.ln1.b", "h.0.attn.qkv.w", "h.1.attn.qkv.w", "h.0.attn.qkv.b",
            "h.1.attn.proj.w", "h.0.attn.proj.b", "h.1.ln2.w", "h.0.mlp.fc.w", "h.1.mlp.fc.w", "h.1.mlp.fc.b",
            "h.0.mlp.proj.w", "h.1.mlp.proj.w", "h.1.mlp.proj.b", "lnf.w", "lnf.b", "wpe",
        ]
        var pick = SeededGenerator(seed: 6)
        let h: Float = 1e-2
        var worst = 0.0
        for (n, name) in names.enumerated() {
            let entry = model.layout[name]!
            // The first wte pick is the embedding row of a token in the batch (encoder and head both use it).
            let i = n == 0 ? entry.offset + Int(batch.tokens[0]) * config.dim + pick.below(config.dim)
                : entry.offset + pick.below(entry.count)
            var p = params
            p[i] = params[i] + h
            try model.writeParameters(p)
            let plus = Double(try model.forward(tokens: batch.tokens, targets: targets, batch: 2))
            p[i] = params[i] - h
            try model.writeParameters(p)
            let minus = Double(try model.forward(tokens: batch.tokens, targets: targets, batch: 2))
            let numeric = (plus - minus) / (2 * Double(h))
            let analytic = Double(grads[i])
            let error = abs(numeric - analytic)
            worst = max(worst, error / (1e-3 + abs(numeric)))
            #expect(error <= 2e-4 + 0.03 * abs(numeric), "\(name)[\(i - entry.offset)]: finite difference \(numeric), backward \(analytic)")
        }
        try model.writeParameters(params)
        print("gradient check worst error ratio \(worst)")
    }

    @Test("30 AdamW steps on one fixed batch drive the loss below half, deterministically")
    func overfit() throws {
        func train() throws -> [Float] {
            let device = try openDevice("cpu")
            let config = ModelConfig.default
            let model = try GPT(config: config, device: device, seed: 11)
            let batch = sampleBatch(config, batch: 2, seed: 12)
            var losses: [Float] = []
            for _ in 0..<30 {
                losses.append(try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 2))
                try model.zeroGradients()
                try model.backward()
                try model.step(lr: 1e-3, weightDecay: 0.1)
            }
            losses.append(try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 2))
            return losses
        }
        let losses = try train()
        print("overfit losses \(losses.first!) -> \(losses.last!)")
        #expect(losses.last! < losses.first! / 2, "loss \(losses.first!) -> \(losses.last!)")
        #expect(try train() == losses)
    }

    @Test("cpu and reference adapters agree on the loss over 5 training steps")
    func adaptersAgree() throws {
        func losses(_ adapter: String) throws -> [Float] {
            let config = ModelConfig(layers: 2, dim: 32, heads: 4, seq: 16, maxBatch: 4)
            let model = try GPT(config: config, device: try openDevice(adapter), seed: 21)
            let batch = sampleBatch(config, batch: 3, seed: 22)
            var out: [Float] = []
            for _ in 0..<5 {
                out.append(try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 3))
                try model.zeroGradients()
                try model.backward()
                try model.step(lr: 1e-3, weightDecay: 0.1)
            }
            out.append(try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 3))
            return out
        }
        let cpu = try losses("cpu")
        let reference = try losses("reference")
        for (a, b) in zip(cpu, reference) {
            #expect(abs(a - b) <= 1e-4 * abs(b), "cpu \(cpu) vs reference \(reference)")
        }
    }

    @Test("gradientNormSquared is the sum of squares of the gradients")
    func gradientNorm() throws {
        let config = Self.tiny
        let model = try GPT(config: config, device: try openDevice("reference"), seed: 31)
        let batch = sampleBatch(config, batch: 1, seed: 32)
        _ = try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 1)
        try model.zeroGradients()
        try model.backward()
        let expected = try model.readGradients().reduce(0.0) { $0 + Double($1) * Double($1) }
        let got = try model.gradientNormSquared()
        #expect(expected > 0)
        #expect(abs(got - expected) <= 1e-5 * expected)
        // Accumulation: a second backward without zeroing doubles the gradients.
        try model.backward()
        #expect(abs(try model.gradientNormSquared() - 4 * expected) <= 1e-4 * expected)
    }

    @Test("bad configs and inputs are rejected with clear errors")
    func badConfigs() throws {
        let cases: [(ModelConfig, String)] = [
            (ModelConfig(layers: 2, dim: 30, heads: 4, seq: 8, maxBatch: 2), "not a multiple of heads"),
            (ModelConfig(layers: 0, dim: 16, heads: 2, seq: 8, maxBatch: 2), "layers must be at least 1"),
            (ModelConfig(layers: 1, dim: 16, heads: 0, seq: 8, maxBatch: 2), "heads must be at least 1"),
            (ModelConfig(layers: 1, dim: 16, heads: 2, seq: -1, maxBatch: 2), "seq must be at least 1"),
            (ModelConfig(layers: 1, dim: 16, heads: 2, seq: 8, maxBatch: 0), "batch must be at least 1"),
            (ModelConfig(layers: 1, dim: 16, heads: 2, seq: 8, maxBatch: 2, vocab: 0), "vocab must be at least 1"),
            (ModelConfig(layers: 1, dim: 1 << 21, heads: 2, seq: 8, maxBatch: 2), "too large"),
        ]
        let device = try openDevice("reference")
        for (config, message) in cases {
            do {
                _ = try GPT(config: config, device: device)
                Issue.record("\(config) was accepted")
            } catch let error as MedleyError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.contains(message), "\(error.message)")
            }
        }
        let config = Self.tiny
        let model = try GPT(config: config, device: device)
        let batch = sampleBatch(config, batch: 2, seed: 1)
        let bad: [(() throws -> Void, String)] = [
            ({ _ = try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 3) }, "outside 1...2"),
            ({ _ = try model.forward(tokens: batch.tokens, targets: batch.targets, batch: 1) }, "expected 8 (batch 1"),
            ({ _ = try model.forward(tokens: [300] + batch.tokens.dropFirst(), targets: batch.targets, batch: 2) }, "token 300"),
            ({ _ = try model.forward(tokens: batch.tokens, targets: [256] + batch.targets.dropFirst(), batch: 2) }, "target 256"),
            ({ try model.backward() }, "no forward pass"),
            ({ try model.writeParameters([1, 2]) }, "2 values"),
            ({ try model.step(lr: -1) }, "lr"),
        ]
        for (call, message) in bad {
            do {
                try call()
                Issue.record("accepted; expected an error containing '\(message)'")
            } catch let error as MedleyError {
                #expect(error.message.contains(message), "\(error.message)")
            }
        }
    }
}
