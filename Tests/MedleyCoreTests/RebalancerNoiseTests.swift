import MedleyCore
import Testing

/// The rebalancer on a shared host: scripted measurement sequences with seeded noise. A
/// re-division must beat the measurement's own noise and repay its cost.
@Suite struct RebalancerNoiseTests {
    /// Chips rated 1 : 0.5 : 0.25 (samples per second), the default job's mix.
    static let speeds = [1024.0, 512, 256]

    /// One step's measurements: rank `i` computes at `speeds[i]` times a factor drawn uniformly
    /// from `1 ± noise`, independently per rank and step.
    static func noisyStep(
        _ shares: [Int], speeds: [Double], noise: Double, generator: inout SeededGenerator
    ) -> [Rebalancer.StepMeasurement] {
        zip(shares, speeds).map { share, speed in
            let factor = 1 + Double.random(in: -noise...noise, using: &generator)
            return .init(computeMilliseconds: Double(share) / (speed * factor) * 1000, samples: share)
        }
    }

    /// Runs `steps` noisy steps from `first`; returns the re-divisions.
    static func run(
        _ rebalancer: inout Rebalancer, from first: Int, steps: Int, speeds: [Double], noise: Double,
        generator: inout SeededGenerator
    ) throws -> [Rebalancer.Reshard] {
        var changes: [Rebalancer.Reshard] = []
        for step in first..<(first + steps) {
            let measurements = noisyStep(rebalancer.shares, speeds: speeds, noise: noise, generator: &generator)
            if case .reshard(let change) = try rebalancer.record(step: step, measurements: measurements) {
                changes.append(change)
            }
        }
        return changes
    }

    @Test func noisySamplesAroundTheSameSpeedsNeverReshard() throws {
        // 14 sequences over 1 : 0.5 : 0.25 is 8/4/2 exactly; ±20 % per step, as a shared host gives.
        for seed in UInt64(1)...20 {
            var generator = SeededGenerator(seed: seed)
            var steady = try Rebalancer(
                configuration: .init(globalBatch: 14, every: 5, totalSteps: 400), shares: [8, 4, 2], throughputs: Self.speeds)
            let changes = try Self.run(
                &steady, from: 1, steps: 400, speeds: Self.speeds, noise: 0.2, generator: &generator)
            #expect(changes.isEmpty, "seed \(seed): \(changes.map(\.shares)) — \(changes.first?.reason ?? "")")
            #expect(steady.shares == [8, 4, 2])
            let decision = try #require(steady.lastDecision)
            #expect(!decision.changed && !decision.reason.isEmpty)
            #expect(steady.relativeErrors.allSatisfy { $0 > 0 }, "the window's spread was measured")
        }
        // The same sequences without the noise rule wander: the rule is what keeps them still.
        var wandered = 0
        for seed in UInt64(1)...20 {
            var generator = SeededGenerator(seed: seed)
            var naive = try Rebalancer(
                configuration: .init(globalBatch: 14, every: 5, noiseMultiplier: 0), shares: [8, 4, 2],
                throughputs: Self.speeds)
            wandered += try Self.run(&naive, from: 1, steps: 400, speeds: Self.speeds, noise: 0.2, generator: &generator).count
        }
        #expect(wandered > 0)
    }

    @Test func aRealTwofoldSlowdownStillReshardsWithinOneWindow() throws {
        var generator = SeededGenerator(seed: 7)
        var rebalancer = try Rebalancer(
            configuration: .init(globalBatch: 14, every: 5, totalSteps: 400), shares: [8, 4, 2], throughputs: Self.speeds)
        #expect(try Self.run(&rebalancer, from: 1, steps: 50, speeds: Self.speeds, noise: 0.2, generator: &generator).isEmpty)
        // The 0.5 chip halves its speed from step 51, the first step of a window.
        let slowed = [1024.0, 256, 256]
        let changes = try Self.run(&rebalancer, from: 51, steps: 5, speeds: slowed, noise: 0.2, generator: &generator)
        let change = try #require(changes.first)
        #expect(changes.count == 1 && change.step == 55)
        #expect(change.shares[1] < 4 && change.shares[0] > 8, "\(change.shares)")
        #expect(change.previousStepMilliseconds - change.stepMilliseconds > change.noiseMilliseconds)
        #expect(change.reason.contains("beyond the noise") && change.reason.contains("repays"), "\(change.reason)")
        #expect(rebalancer.lastDecision?.changed == true && rebalancer.lastDecision?.reason == change.reason)
        // And it stays put at the new speeds.
        #expect(try Self.run(&rebalancer, from: 56, steps: 100, speeds: slowed, noise: 0.2, generator: &generator).isEmpty)
    }

    @Test func aGainThatCannotPayBackOverTheRemainingStepsDoesNotReshard() throws {
        // 1000 samples at 105 and 100 per second: 512/488 beats 500/500 by 120 ms a step (2.4 %),
        // noise-free; the change costs one step (5 s), so it needs more than 41 steps left.
        let speeds = [105.0, 100]
        func changes(totalSteps: Int?, cost: Double? = nil) throws -> (count: Int, reason: String) {
            var rebalancer = try Rebalancer(
                configuration: .init(globalBatch: 1000, every: 2, totalSteps: totalSteps, changeCostMilliseconds: cost),
                shares: [500, 500])
            var count = 0
            for step in 1...2 {
                let measurements = zip(rebalancer.shares, speeds).map {
                    Rebalancer.StepMeasurement(computeMilliseconds: Double($0) / $1 * 1000, samples: $0)
                }
                if case .reshard = try rebalancer.record(step: step, measurements: measurements) { count += 1 }
            }
            return (count, rebalancer.lastDecision?.reason ?? "")
        }
        let short = try changes(totalSteps: 30)
        #expect(short.count == 0)
        #expect(short.reason.contains("does not repay"), "\(short.reason)")
        #expect(try changes(totalSteps: 100).count == 1)
        #expect(try changes(totalSteps: nil).count == 1, "no known end: nothing has to pay back")
        // A cheap change (10 ms) pays back even over 28 steps.
        #expect(try changes(totalSteps: 30, cost: 10).count == 1)
    }

    @Test func theStandardErrorOfAMedianIsRobust() throws {
        #expect(Rebalancer.standardErrorOfMedian([5]) == 0)
        #expect(Rebalancer.standardErrorOfMedian([5, 5, 5, 5]) == 0)
        // One wild sample does not move it: the MAD of 1,2,3,4,1000 is 1 either way.
        let calm = Rebalancer.standardErrorOfMedian([1, 2, 3, 4, 5])
        #expect(calm > 0 && Rebalancer.standardErrorOfMedian([1, 2, 3, 4, 1000]) == calm)
        expectMedleyError(.invalidArgument, "noise multiplier") {
            _ = try Rebalancer(configuration: .init(globalBatch: 8, every: 1, noiseMultiplier: -1), shares: [8])
        }
        expectMedleyError(.invalidArgument, "change cost") {
            _ = try Rebalancer(configuration: .init(globalBatch: 8, every: 1, changeCostMilliseconds: .nan), shares: [8])
        }
        expectMedleyError(.invalidArgument, "total steps") {
            _ = try Rebalancer(configuration: .init(globalBatch: 8, every: 1, totalSteps: -1), shares: [8])
        }
    }
}
