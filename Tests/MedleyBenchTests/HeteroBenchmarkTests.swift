import Foundation
import MedleyCore
import MedleyTrain
import Testing

@testable import MedleyBench

@Suite("bench hetero: shares consensus, convergence gaps, host load")
struct HeteroBenchmarkTests {
    @Test("calibrations agree by majority, else on each rank's median share, always summing to the batch")
    func consensus() {
        #expect(HeteroBenchmark.consensus([[32, 16, 8], [30, 17, 9], [32, 16, 8]], globalBatch: 56) == [32, 16, 8])
        // No majority: the medians 31/17/8 already sum to 56.
        #expect(HeteroBenchmark.consensus([[28, 19, 9], [32, 16, 8], [31, 17, 8]], globalBatch: 56) == [31, 17, 8])
        // Medians of two are rounded means; the rounding is taken back from the largest share.
        let two = HeteroBenchmark.consensus([[7, 5, 2], [9, 3, 2]], globalBatch: 14)
        #expect(two.reduce(0, +) == 14 && two == [8, 4, 2])
        let odd = HeteroBenchmark.consensus([[8, 5, 1], [8, 4, 2]], globalBatch: 14)
        #expect(odd.reduce(0, +) == 14)
        #expect(HeteroBenchmark.consensus([[5, 1]], globalBatch: 6) == [5, 1])
    }

    @Test("a curve's gaps are against the first run; the target is the reference's smoothed loss at 3/4 of the steps")
    func convergenceGaps() {
        func records(_ losses: [Double], val: Double) -> [StepRecord] {
            losses.enumerated().map { i, loss in
                StepRecord(
                    step: i + 1, loss: loss, valLoss: i == losses.count - 1 ? val : nil, lr: 1e-3, gradNorm: 1, clipScale: 1,
                    tokens: 64, tokensPerS: 1000, stepMs: 10, shares: [1], computeMs: [9], idleMs: [0], exchangeMs: [0],
                    updateMs: [1], nextShares: nil, throughputs: nil)
            }
        }
        let reference = HeteroReport.Curve(name: "alone", precision: "fp32", records: records([5, 4, 3, 2], val: 2.5))
        let close = HeteroReport.Curve(name: "mixed", precision: "fp32", records: records([5, 4, 3.00003, 2], val: 2.5))
        let far = HeteroReport.Curve(name: "bf16", precision: "bf16", records: records([5, 4.4, 3.3, 2.2], val: 2.75))
        let c = HeteroReport.Convergence.compare([reference, close, far], steps: 4, evalEvery: 4, flags: [])
        #expect(c.runs[0].maxRelativeGap == 0)
        #expect(abs(c.runs[1].maxRelativeGap - 1e-5) < 1e-12)
        #expect(abs(c.runs[2].maxRelativeGap - 0.1) < 1e-12)
        #expect(abs(c.runs[2].finalValidationGap - 0.1) < 1e-12)
        // Smoothed over up to 5 steps: the reference's mean of its first 3 losses is 4.
        #expect(c.targetLoss == 4)
        #expect(c.runs[0].stepsToTarget == 3 && c.runs[0].msToTarget == 30)
        #expect(c.runs[2].stepsToTarget == 4)
        #expect(c.runs[0].wallMs == [10, 20, 30, 40])
        // Only an fp32 run above 1e-4 is flagged.
        #expect(c.flags.isEmpty)
        let worse = HeteroReport.Curve(name: "mixed", precision: "fp32", records: records([5, 4, 3.01, 2], val: 2.5))
        #expect(HeteroReport.Convergence.compare([reference, worse], steps: 4, evalEvery: 4, flags: []).flags.count == 1)
    }

    @Test("the host's load: the mean is weighted by time; this process's own CPU is not counted as foreign")
    func hostLoad() {
        let a = HostLoad(seconds: 1, ownCores: 1, foreignCores: 0, stealCores: 0, loadAverage: 1)
        let b = HostLoad(seconds: 3, ownCores: 0, foreignCores: 1, stealCores: 0.5, loadAverage: 2)
        let m = HostLoad.mean([a, b])!
        #expect(m.seconds == 4 && m.ownCores == 0.25 && m.foreignCores == 0.75 && m.stealCores == 0.375 && m.loadAverage == 2)
        #expect(HostLoad.mean([]) == nil)
        // Spinning in this process for a moment shows up as our own cores.
        let sampler = HostLoad.start()
        let end = monotonicSeconds() + 0.3
        var x = 0.0
        while monotonicSeconds() < end { x += 1 }
        let load = sampler.finish()
        #expect(x > 0 && load.ownCores > 0.5, "\(load)")
        #expect(load.foreignCores >= 0)
    }
}
