import MedleyCore
import Testing

@Suite struct SeededGeneratorTests {
    @Test func sameSeedSameSequence() {
        var a = SeededGenerator(seed: 42)
        var b = SeededGenerator(seed: 42)
        #expect((0..<16).map { _ in a.next() } == (0..<16).map { _ in b.next() })
    }

    @Test func belowStaysInRange() {
        var rng = SeededGenerator(seed: 1)
        for bound in 1...50 {
            let v = rng.below(bound)
            #expect(v >= 0 && v < bound)
        }
    }
}
