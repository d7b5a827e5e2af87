import Foundation
import MedleyTestSupport
import Testing

/// A chip whose memory is not host memory trains like the reference: adapters/template-devmem in `medley train`.
@Suite("medley train on the device-memory template", .serialized)
struct DevmemTrainTests {
    @Test("a devmem chip alone, and a devmem chip beside a cpu chip, learn what 1 reference rank learns")
    func devmemEqualsReference() throws {
        let library = try TestSupport.devmemAdapter(into: try TestSupport.temporaryDirectory("medley-devmem"))
        let reference = try TrainJobTests.train(TrainJobTests.job(devices: "[reference]"))
        try #require(reference.result.status == 0, "\(reference.result.output)")
        let alone = try TrainJobTests.train(TrainJobTests.job(devices: "[{adapter: '\(library)'}]"))
        try #require(alone.result.status == 0, "\(alone.result.output)")
        // Data-parallel: shares that change and put each rank at 0 for some steps.
        let schedule = ["1:7,5", "8:12,0", "14:0,12", "17:3,9"]
        let mixed = try TrainJobTests.train(
            TrainJobTests.job(devices: "[{adapter: '\(library)'}, cpu]"), schedule.flatMap { ["--shares", $0] })
        try #require(mixed.result.status == 0, "\(mixed.result.output)")

        try #require(reference.records.count == 20 && alone.records.count == 20 && mixed.records.count == 20)
        #expect(mixed.records[9].shares == [12, 0])
        #expect(mixed.records[14].shares == [0, 12])
        for run in [alone, mixed] {
            for (a, b) in zip(reference.records, run.records) {
                #expect(abs(a.loss - b.loss) <= 1e-4 * abs(a.loss), "step \(a.step): loss \(a.loss) vs \(b.loss)")
            }
        }
        #expect(reference.records.last!.loss < reference.records.first!.loss - 0.5, "the model learns")
        let (p, q) = (reference.weights, mixed.weights)
        try #require(p.count == q.count && !p.isEmpty)
        var difference = 0.0, norm = 0.0
        for (x, y) in zip(p, q) {
            difference += Double(x - y) * Double(x - y)
            norm += Double(x) * Double(x)
        }
        #expect((difference / norm).squareRoot() <= 1e-3)
    }
}
