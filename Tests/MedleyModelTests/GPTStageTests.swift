import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import Testing

@Suite("GPT pipeline stages")
struct GPTStageTests {
    static let config = ModelConfig(layers: 3, dim: 16, heads: 2, seq: 8, maxBatch: 4, vocab: 256)

    /// Runs `stages` (planning-layer ranges) as a pipeline on one device each, two microbatches
    /// of 2 sequences kept in flight (forwards first, backwards in reverse), and returns the
    /// summed loss and every tensor's gradient by name (the tied `wte` summed over the stages that hold it).
    func pipeline(_ stages: [Range<Int>], adapter: String = "reference") throws -> (loss: Double, gradients: [String: [Float]]) {
        var micro = Self.config
        micro.maxBatch = 2
        let models = try stages.map {
            try GPT(config: micro, device: try openDevice(adapter), seed: 5, stage: $0, activationSequences: 4)
        }
        let data = sampleBatch(Self.config, batch: 4, seed: 9)
        let rowsPerMicro = 2 * micro.seq
        let width = rowsPerMicro * micro.dim
        let scale = 1 / Double(4 * micro.seq)
        var loss = 0.0
        for m in 0..<2 {
            let tokens = Array(data.tokens[(m * rowsPerMicro)..<((m + 1) * rowsPerMicro)])
            let targets = Array(data.targets[(m * rowsPerMicro)..<((m + 1) * rowsPerMicro)])
            var carry = [Float](repeating: 0, count: width)
            for (s, model) in models.enumerated() {
                let input: [Float]? = s == 0 ? nil : carry
                let sum = try input.withOptional { raw in
                    try model.forwardStage(at: 2 * m, batch: 2, tokens: tokens, input: raw, targets: targets)
                }
                if let sum { loss += sum }
                if s < models.count - 1 {
                    try carry.withUnsafeMutableBytes { try model.readStageOutput(at: 2 * m, batch: 2, into: $0) }
                }
            }
        }
        for m in (0..<2).reversed() {
            var carry = [Float](repeating: 0, count: width)
            for (s, model) in models.enumerated().reversed() {
                let gradient: [Float]? = s == models.count - 1 ? nil : carry
                try gradient.withOptional { raw in
                    try model.backwardStage(at: 2 * m, batch: 2, outputGradient: raw, lossScale: scale)
                }
                if s > 0 { try carry.withUnsafeMutableBytes { try model.readInputGradient(batch: 2, into: $0) } }
            }
        }
        var gradients: [String: [Float]] = [:]
        for model in models {
            let all = try model.readGradients()
            for entry in model.layout.entries {
                let values = Array(all[entry.range])
                if let existing = gradients[entry.name] {
                    gradients[entry.name] = zip(existing, values).map { $0 + $1 }
                } else {
                    gradients[entry.name] = values
                }
            }
        }
        return (loss * scale, gradients)
    }

    @Test("two and three stages with microbatches in flight give the whole model's loss and gradients")
    func stagesComposeToTheWholeModel() throws {
        let whole = try pipeline([0..<5])
        let model = try GPT(config: Self.config, device: try openDevice("reference"), seed: 5)
        let data = sampleBatch(Self.config, batch: 4, seed: 9)
        let loss = try model.forward(tokens: data.tokens, targets: data.targets, batch: 4)
        try model.backward()
        let reference = try model.readGradients()
        #expect(abs(whole.loss - Double(loss)) < 1e-5 * abs(Double(loss)))
        for split in [[0..<2, 2..<5], [0..<1, 1..<4, 4..<5], [0..<3, 3..<4, 4..<5], [0..<4, 4..<5]] {
            let staged = try pipeline(split)
            #expect(abs(staged.loss - Double(loss)) < 1e-5 * abs(Double(loss)), "\(split)")
            #expect(Set(staged.gradients.keys) == Set(model.layout.entries.map(\.name)), "\(split)")
            for entry in model.layout.entries {
                let mine = staged.gradients[entry.name] ?? []
                let theirs = Array(reference[entry.range])
                let scale = max(theirs.map { abs($0) }.max() ?? 0, 1e-6)
                let worst = zip(mine, theirs).map { abs($0 - $1) }.max() ?? .infinity
                #expect(mine.count == theirs.count && worst <= 1e-4 * scale, "\(split) \(entry.name): \(worst) vs \(scale)")
            }
        }
    }

    @Test("a stage holds only its layers' tensors and initialises them like the whole model")
    func stageLayoutAndInit() throws {
        let device = try openDevice("reference")
        let whole = try GPT(config: Self.config, device: device, seed: 3)
        let head = try GPT(config: Self.config, device: device, seed: 3, stage: 3..<5)
        #expect(head.layout.entries.map(\.name).first == "wte")
        #expect(head.layout.entries.contains { $0.name == "h.2.attn.qkv.w" })
        #expect(!head.layout.entries.contains { $0.name == "wpe" || $0.name == "h.1.ln1.w" })
        let mine = try head.readParameters(), theirs = try whole.readParameters()
        for entry in head.layout.entries {
            let source = try whole.layout.entry(entry.name)
            #expect(Array(mine[entry.range]) == Array(theirs[source.range]), "\(entry.name)")
        }
        #expect(!head.holdsEmbedding && head.holdsHead)
        #expect(
            GPT.deviceBytes(config: Self.config, stage: 1..<2, activationSequences: 8)
                < GPT.deviceBytes(config: Self.config))
    }

    @Test("bad stages and slots are rejected with clear errors")
    func badStages() throws {
        let device = try openDevice("reference")
        for (stage, sequences, message) in [(0..<6, 4, "not a non-empty part"), (2..<2, 4, "not a non-empty part"), (0..<2, 3, "fewer than the microbatch")] {
            #expect(throws: MedleyError.self) {
                do { _ = try GPT(config: Self.config, device: device, stage: stage, activationSequences: sequences) } catch let error as MedleyError {
                    #expect(error.message.contains(message), "\(error.message)")
                    throw error
                }
            }
        }
        let middle = try GPT(config: Self.config, device: device, stage: 1..<3, activationSequences: 8)
        #expect(throws: MedleyError.self) { try middle.forwardStage(at: 6, batch: 4, tokens: nil, input: nil, targets: nil) }
        #expect(throws: MedleyError.self) { try middle.forwardStage(at: 0, batch: 4, tokens: nil, input: nil, targets: nil) }
    }
}

extension Optional where Wrapped == [Float] {
    /// Calls `body` with the array's bytes, or nil.
    func withOptional<R>(_ body: (UnsafeRawBufferPointer?) throws -> R) rethrows -> R {
        switch self {
        case .some(let values): return try values.withUnsafeBytes { try body($0) }
        case .none: return try body(nil)
        }
    }
}
