import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import MedleyTestSupport
import Testing

@testable import MedleyTrain

/// A rank's training state (what a checkpoint will hold for it) comes back bit for bit:
/// training on from a restored state is training on from where it was captured.
@Suite("RankState: capture and restore a rank's training state")
struct RankStateTests {
    static let config = ModelConfig(layers: 2, dim: 16, heads: 2, seq: 8, maxBatch: 2, vocab: 256)

    static func model() throws -> GPT {
        let device = try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath).openDevice(0, options: [])
        return try GPT(config: config, device: device, seed: 7)
    }

    /// One AdamW step of `model` on a fixed batch.
    static func train(_ model: GPT, seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let count = 2 * config.seq
        let tokens = (0..<count).map { _ in Int32(random.next() % 256) }
        let targets = (0..<count).map { _ in Int32(random.next() % 256) }
        try model.zeroGradients()
        _ = try model.forward(tokens: tokens, targets: targets, batch: 2)
        try model.backward()
        try model.step(lr: 1e-2, weightDecay: 0.1)
    }

    @Test("restoring a captured state and training on gives the same bits as never stopping")
    func roundTrip() throws {
        let a = try Self.model(), b = try Self.model()
        try Self.train(a, seed: 1)
        let saved = try RankState(capturing: a, step: 1)
        #expect(saved.optimizerSteps == 1 && saved.step == 1)
        try Self.train(a, seed: 2)

        try Self.train(b, seed: 99)  // b wanders off, then takes a's state at step 1
        try saved.restore(into: b)
        #expect(try RankState(capturing: b, step: 1) == saved)
        try Self.train(b, seed: 2)
        #expect(try b.readParameters() == a.readParameters())
        #expect(try RankState(capturing: b, step: 2) == RankState(capturing: a, step: 2))
    }

    @Test("a state captured under another layout is refused, naming both sizes")
    func otherLayout() throws {
        let a = try Self.model()
        var state = try RankState(capturing: a, step: 3)
        state.tensorNames.removeLast()
        #expect(throws: MedleyError.self) { try state.restore(into: a) }
        do { try state.restore(into: a) } catch let error as MedleyError { #expect(error.message.contains("another layout")) }
    }
}
