import Foundation
import MedleyCore
import MedleyTestSupport
@testable import MedleyTrain
import Testing

/// A rank the measured shares leave with no sequence is named once, with the reason and what to do.
@Suite("medley train: a rank with share 0")
struct IdleRankTests {
    @Test("the note gives the speed beside the fastest and one sequence's cost beside the step")
    func note() {
        let labels = ["rank 0 (cpu fast)", "rank 1 (sim slow)", "rank 2 (sim mid)"]
        // 100 and 50 sequences/s share 6 as 4 + 2 (a 40 ms step); at 2/s one sequence takes 500 ms.
        let notes = TrainingWorker.idleRankNotes(shares: [4, 0, 2], throughputs: [100, 2, 50], labels: labels)
        #expect(notes.count == 1 && notes[0].rank == 1)
        #expect(notes[0].text == "note: rank 1 (sim slow) gets 0 of the 6 sequences of each batch: it is too slow for this batch "
            + "(measured at 0.02× the speed of the fastest, rank 0 (cpu fast); one sequence on it would take 12.5× the whole step), "
            + "so it trains nothing; give it a share with --shares, or leave it out of the job (plan: auto already leaves out a chip that would not help)")
        #expect(TrainingWorker.idleRankNotes(shares: [4, 0, 2], throughputs: [100, 2, 50], labels: labels, skipping: [1]).isEmpty)
        #expect(TrainingWorker.idleRankNotes(shares: [4, 1, 1], throughputs: [100, 2, 50], labels: labels).isEmpty)
    }

    @Test("a very slow sim beside a cpu chip gets share 0 and is reported once, not every step")
    func reportedOnce() throws {
        let dir = try TestSupport.temporaryDirectory("medley-idle")
        try """
            name: idle
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 6, eval_every: 0, rebalance_every: 2}
            devices:
              - cpu
              - adapter: sim
                options: {name: slow-chip, speed: 0.02}
            """.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(
            ["train", dir + "/job.yaml", "--timeout", "120"], environment: ["MEDLEY_CACHE_DIR": dir + "/cache"], timeout: 180)
        #expect(result.status == 0, "\(result.output)")
        let notes = result.stdout.split(separator: "\n").filter { $0.hasPrefix("note: ") }
        #expect(notes.count == 1, "\(result.output)")
        let note = String(notes.first ?? "")
        #expect(note.hasPrefix("note: rank 1 (sim slow-chip) gets 0 of the 4 sequences of each batch: it is too slow for this batch"), "\(note)")
        #expect(note.contains("the speed of the fastest, rank 0 (cpu ") && note.contains("× the whole step"), "\(note)")
        #expect(note.contains("--shares") && note.contains("leave it out of the job"), "\(note)")
        #expect(result.stdout.contains("step 6/6"), "\(result.output)")
    }

    @Test("a share pinned at 0 by hand is not reported")
    func pinnedIsNotReported() throws {
        let dir = try TestSupport.temporaryDirectory("medley-idle")
        try """
            name: idle-pinned
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 2, eval_every: 0}
            devices: [cpu, reference]
            """.write(toFile: dir + "/job.yaml", atomically: true, encoding: .utf8)
        let result = try TestSupport.medley(
            ["train", dir + "/job.yaml", "--shares", "4,0", "--timeout", "120"], environment: ["MEDLEY_CACHE_DIR": dir + "/cache"],
            timeout: 180)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.stdout.contains("note: "), "\(result.output)")
    }
}
