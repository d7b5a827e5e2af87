import Foundation
import MedleyCore
@testable import MedleyModel
import Testing

@testable import MedleyTrain

/// Property: whatever sizes a job spec names, checking it answers (passes, or throws one
/// line naming a model field) and the memory preflight answers too, in time that does not
/// grow with the model. Before sizes were checked, a huge dim trapped on overflow (SIGILL)
/// in the parameter layout and huge layers made the preflight lay out every block.
@Suite("absurd model sizes: an answer, never a trap")
struct AbsurdSizeTests {
    /// Seeded (SplitMix64), so a failing case reproduces from its seed.
    struct Generator {
        var random: SeededGenerator
        init(state: UInt64) { random = SeededGenerator(seed: state) }
        mutating func next() -> UInt64 { random.next() }
        /// A size a hostile spec might hold: the edges of every limit, powers of two up to
        /// Int.max, negatives, or anything at all.
        mutating func size() -> Int {
            let edges = [
                Int.min, -(1 << 40), -1, 0, 1, 2, 3, 4, 7, 16, 64, 256, 1000, 1 << 16, 23_170, 23_171, 46_341,
                (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 1 << 31, 1 << 40, 1 << 62, Int.max / 2, Int.max,
            ]
            switch next() % 4 {
            case 0: return edges[Int(next() % UInt64(edges.count))]
            case 1: return 1 << Int(next() % 63)
            case 2: return Int(next() % 5000) + 1
            default: return Int(bitPattern: UInt(next()))
            }
        }
    }

    static let modelFields = ["model.layers", "model.dim", "model.heads", "model.seq", "model.batch", "model.vocab"]

    @Test("a spec's sizes are accepted or refused naming the field; accepted ones get a memory answer", arguments: 0..<4)
    func specs(seed: Int) throws {
        var random = Generator(state: UInt64(seed) &* 0x1234_5678_9ABC)
        for _ in 0..<500 {
            var spec = JobSpec.defaultJob
            spec.model = JobSpec.Model(
                layers: random.size(), dim: random.size(), heads: random.next() % 3 == 0 ? random.size() : 4,
                seq: random.size(), globalBatch: random.next() % 2 == 0 ? random.size() : 12,
                vocab: random.next() % 5 == 0 ? random.size() : 256)
            if random.next() % 3 == 0 { spec.model.heads = 1 }
            do {
                try spec.validate()
            } catch let error as MedleyError {
                #expect(error.code == .invalidArgument)
                #expect(Self.modelFields.contains { error.message.hasPrefix($0) }, "\(spec.model): \(error.message)")
                continue
            }
            // Accepted: the preflight's memory answer comes back whatever the device's memory.
            for memory in [UInt64(0), 1 << 20, 1 << 34, 1 << 50, UInt64.max] {
                let capacity = RankCapacity.sequences(memoryBytes: memory, model: spec.model)
                #expect(capacity >= 0 && capacity <= spec.model.globalBatch)
                if capacity < 1 { #expect(!RankCapacity.tooSmall(label: "rank 0", memoryBytes: memory, model: spec.model).isEmpty) }
            }
        }
    }

    @Test("a model built on one device checks its sizes with checked arithmetic", arguments: 0..<2)
    func configs(seed: Int) throws {
        var random = Generator(state: UInt64(seed) &+ 77)
        for _ in 0..<1000 {
            let config = ModelConfig(
                layers: random.size(), dim: random.size(), heads: random.next() % 2 == 0 ? 1 : random.size(), seq: random.size(),
                maxBatch: random.size(), vocab: random.next() % 2 == 0 ? 256 : random.size())
            do {
                try config.validate()
            } catch let error as MedleyError {
                #expect(error.message.hasPrefix("model config: "), "\(error.message)")
                continue
            }
            let memory = GPT.memoryModel(config: config)
            #expect(memory.fixedBytes > 0 && memory.bytesPerSequence > 0)
        }
    }

    @Test("the extrapolated memory model equals the laid-out one")
    func extrapolationIsExact() throws {
        for layers in 1...7 {
            for (dim, heads, seq, vocab) in [(16, 2, 8, 256), (48, 6, 32, 100), (64, 4, 64, 256)] {
                let config = ModelConfig(layers: layers, dim: dim, heads: heads, seq: seq, maxBatch: 3, vocab: vocab)
                let fast = GPT.memoryModel(config: config), laidOut = GPT.laidOutMemoryModel(config: config)
                #expect(fast.fixedBytes == laidOut.fixedBytes && fast.bytesPerSequence == laidOut.bytesPerSequence, "\(config)")
            }
        }
    }

    @Test("the largest accepted depth is answered without laying out its blocks")
    func deepModel() throws {
        var spec = JobSpec.defaultJob
        spec.model.layers = ModelShape.maxSize
        try spec.validate()
        #expect(RankCapacity.sequences(memoryBytes: 1 << 30, model: spec.model) == 0)
        spec.model.dim = 1 << 30
        #expect(throws: MedleyError.self) { try spec.validate() }
        do { try spec.validate() } catch let error as MedleyError { #expect(error.message.hasPrefix("model.dim")) }
    }
}
