import Foundation
import MedleyCore
import Testing

@testable import MedleyTrain

@Suite("shares schedule, step records, launcher output")
struct SharesAndRecordsTests {
    @Test("--shares entries parse, sort by step and apply from their step on")
    func schedule() throws {
        let schedule = try SharesSchedule(parsing: ["8:12,0,0", "5,4,3", "12:0,7,5"])
        #expect(schedule.pinsFirstStep)
        #expect(schedule.shares(atStep: 1) == [5, 4, 3])
        #expect(schedule.shares(atStep: 7) == [5, 4, 3])
        #expect(schedule.shares(atStep: 8) == [12, 0, 0])
        #expect(schedule.shares(atStep: 100) == [0, 7, 5])
        try schedule.validate(ranks: 3, globalBatch: 12, caps: [12, 12, 12])
        #expect(try SharesSchedule(parsing: schedule.arguments.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)) == schedule)
        #expect(try SharesSchedule(parsing: ["3:2,2"]).shares(atStep: 2) == nil)
    }

    @Test("a job's fixed shares hold until a --shares entry takes over")
    func jobSharesUnderEntries() throws {
        let entries = try SharesSchedule(parsing: ["3:12,0"])
        let combined = entries.starting(with: [4, 8])
        #expect(combined.shares(atStep: 1) == [4, 8] && combined.shares(atStep: 3) == [12, 0])
        #expect(entries.starting(with: nil) == entries)
        let fromOne = try SharesSchedule(parsing: ["6,6"])
        #expect(fromOne.starting(with: [4, 8]) == fromOne, "an entry at step 1 wins")
        #expect(SharesSchedule(pinning: [5, 7]) == (try SharesSchedule(parsing: ["1:5,7"])))
    }

    @Test("bad --shares give one line naming the entry", arguments: [
        ("5,x,3", "whole numbers"), ("0:4,4", "from 1"), ("1:2:3", "[STEP:]a,b,c"), ("4,-1,9", "whole numbers"),
    ])
    func badSchedule(text: String, expected: String) {
        #expect {
            try SharesSchedule(parsing: [text])
        } throws: { error in
            "\(error)".contains(expected) && "\(error)".contains(text) && !"\(error)".contains("\n")
        }
    }

    @Test("shares must match the ranks, add up to the batch and fit memory")
    func scheduleAgainstJob() throws {
        #expect(throws: MedleyError.self) { try SharesSchedule(parsing: ["4,4"]).validate(ranks: 3, globalBatch: 8) }
        #expect(throws: MedleyError.self) { try SharesSchedule(parsing: ["4,4,1"]).validate(ranks: 3, globalBatch: 8) }
        #expect {
            try SharesSchedule(parsing: ["6,1,1"]).validate(ranks: 3, globalBatch: 8, caps: [5, 8, 8])
        } throws: { error in
            (error as? MedleyError)?.code == .outOfMemory && "\(error)".contains("at most 5")
        }
    }

    @Test("a step record round-trips through JSON Lines with the documented keys")
    func record() throws {
        let record = StepRecord(
            step: 3, loss: 4.5, valLoss: 4.75, lr: 1e-3, gradNorm: 0.5, clipScale: 1, tokens: 768, tokensPerS: 1234.5,
            stepMs: 622.1, shares: [7, 3, 2], computeMs: [500, 480, 510], idleMs: [10, 30, 0], exchangeMs: [1, 1, 1],
            updateMs: [2, 2, 2], nextShares: [8, 2, 2], throughputs: [14, 6, 4])
        let line = try record.jsonLine()
        #expect(!line.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        for key in ["step", "loss", "tokens_per_s", "shares", "val_loss", "compute_ms", "idle_ms", "exchange_ms", "next_shares"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(try StepRecord.read(jsonLines: line + "\n\n" + line + "\n") == [record, record])
        let console = record.consoleLine(totalSteps: 50)
        #expect(console.hasPrefix("step  3/50  loss 4.5000  val 4.7500"))
        #expect(console.contains("shares 7/3/2"))
        #expect(console.contains("-> 8/2/2"))
    }

    @Test("the launcher drops Open MPI's banners and shows a failure once")
    func outputFilter() {
        var shown: [(String, Bool)] = []
        let filter = LauncherOutputFilter(verbose: false) { shown.append(($0, $1)) }
        filter.feed("step 1/2  loss 5.5\nstep 2/2")
        filter.feed("  loss 5.4\nError: rank 1 (sim a): device lost\nError: rank 2 (sim b): device lost\n")
        filter.feed(String(repeating: "-", count: 74) + "\nMPI_ABORT was invoked on rank 1\n" + String(repeating: "-", count: 74) + "\n")
        filter.feed("[host:1234] 1 more process has sent help message\nErr")
        filter.feed("or: the end\n")
        filter.finish()
        #expect(shown.map(\.0) == ["step 1/2  loss 5.5", "step 2/2  loss 5.4", "Error: rank 1 (sim a): device lost", "Error: the end"])
        #expect(shown.filter(\.1).count == 2)
        #expect(filter.sawError)
        // The first line Open MPI said is kept for the launcher's one-line error.
        #expect(filter.firstRuntimeLine == "MPI_ABORT was invoked on rank 1")
        // Open MPI's "[host:pid] " prefix, and lines that only look like it.
        #expect(LauncherOutputFilter.isRuntimeLine("[vm:4242] 2 more processes have sent help message"))
        #expect(LauncherOutputFilter.isRuntimeLine("[node-1.example:a:17] x"))
        for line in ["[vm:42]x", "[vm] x", "[:42] x", "[vm:] x", "[vm:4a] x", "vm:42] x", "[vm:42", "", "["] {
            #expect(!LauncherOutputFilter.isRuntimeLine(line), "\(line)")
        }
    }
}
