import Foundation
import MedleyCore
import MedleyTrain
import Testing

@testable import MedleyBench

@Suite("bench host: one core timed beside a loaded neighbour")
struct HostBenchmarkTests {
    @Test("every work is timed beside every load in every round, with its ratio to idle", .enabled(if: CPUAffinity.onlineCount >= 2))
    func measures() throws {
        var lines: [String] = []
        let result = try HostBenchmark.measure(cpu: 0, neighbour: 1, size: 64, seconds: 0.05, rounds: 2) { lines.append($0) }
        #expect(lines.count == 2)
        let pairs = HostBenchmark.Work.allCases.flatMap { w in HostBenchmark.Load.allCases.map { "\(w)/\($0)" } }
        #expect(result.pairings.map { "\($0.work)/\($0.load)" } == pairs)
        #expect(result.rounds.count == 2)
        for round in result.rounds {
            #expect(round.map { "\($0.work)/\($0.load)" } == pairs)
            #expect(round.allSatisfy { $0.rate.isFinite && $0.rate > 0 })
        }
        for p in result.pairings {
            #expect(p.rate.isFinite && p.rate > 0)
            #expect(p.ratioMin <= p.ratio && p.ratio <= p.ratioMax)
            if p.load == .idle { #expect(p.ratio == 1 && p.ratioMin == 1 && p.ratioMax == 1) }
            #expect(p.unit == (p.work == .gemm ? "GFLOP/s" : "GB/s"))
        }
        let json = String(decoding: try JSONEncoder().encode(result), as: UTF8.self)
        #expect(json.contains("\"ratio_min\"") && json.contains("\"pairings\""))
    }

    @Test("bad input is refused with one line naming the argument", .enabled(if: CPUAffinity.onlineCount >= 2))
    func badInput() {
        let cases: [((cpu: Int, neighbour: Int, size: Int, seconds: Double, rounds: Int), String)] = [
            ((0, 0, 64, 0.1, 1), "give two different CPUs"),
            ((CPUAffinity.onlineCount, 0, 64, 0.1, 1), "--cpu: CPU \(CPUAffinity.onlineCount) does not exist"),
            ((0, -1, 64, 0.1, 1), "--neighbour: CPU -1 does not exist"),
            ((0, 1, 64, 0.1, 0), "--rounds must be at least 1"),
            ((0, 1, 64, 0.01, 1), "--seconds must be from 0.05 to 60"),
            ((0, 1, 8, 0.1, 1), "--size must be from 16 to 4096"),
        ]
        for (c, expected) in cases {
            #expect {
                _ = try HostBenchmark.measure(cpu: c.cpu, neighbour: c.neighbour, size: c.size, seconds: c.seconds, rounds: c.rounds) { _ in }
            } throws: { error in
                let message = "\(error)"
                return message.contains(expected) && !message.contains("\n")
            }
        }
    }
}
