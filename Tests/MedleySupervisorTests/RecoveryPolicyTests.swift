import MedleySupervisor
import Testing

/// The recovery policy on scripted sequences of attempts: no processes, no clock but the events'.
@Suite("recovery policy")
struct RecoveryPolicyTests {
    typealias P = RecoveryPolicy

    static func fault(_ rank: Int, _ kind: SupervisorAlert.Kind = .exited, _ message: String = "gone") -> P.RankFault {
        P.RankFault(rank: rank, kind: kind, message: "rank \(rank): \(message)")
    }

    @Test("a finished or stopped attempt ends the run; nothing after it")
    func finish() {
        var p = P(primaries: 3, spares: 1)
        #expect(p.handle(.finished(at: 5)) == [.finish])
        #expect(p.isOver && p.handle(.failed(faults: [Self.fault(0)], reason: "x", at: 6)).isEmpty)
        var q = P(primaries: 3, spares: 1)
        #expect(q.handle(.stopped(at: 5)) == [.finish] && q.restarts == 0)
    }

    @Test("a dead chip is evicted and the spare takes its rank; the restart comes after the backoff")
    func spareTakesOver() {
        var p = P(configuration: .init(maxRestarts: 3, backoffSeconds: 1), primaries: 3, spares: 1)
        let out = p.handle(.failed(faults: [Self.fault(1, .exited, "killed (SIGKILL)")], reason: "mpirun exit 1", at: 10))
        #expect(out == [
            .evict(.primary(1), reason: "rank 1: killed (SIGKILL)"), .replace(evicted: .primary(1), with: .spare(0)),
            .restart(chips: [.primary(0), .spare(0), .primary(2)], number: 1, afterSeconds: 1),
        ])
        #expect(p.evictions.map(\.chip) == [.primary(1)] && p.spares.isEmpty)
    }

    @Test("two faults at once with one spare: the higher rank is replaced, the other shrinks the job")
    func twoAtOnce() {
        var p = P(primaries: 4, spares: 1)
        let out = p.handle(.failed(faults: [Self.fault(0, .fault, "device lost"), Self.fault(2, .silent, "hung"), Self.fault(0, .exited)],
                                   reason: "x", at: 3))
        #expect(out == [
            .evict(.primary(2), reason: "rank 2: hung"), .replace(evicted: .primary(2), with: .spare(0)),
            .evict(.primary(0), reason: "rank 0: device lost"), .shrink(removed: .primary(0)),
            .restart(chips: [.primary(1), .spare(0), .primary(3)], number: 1, afterSeconds: 1),
        ])
    }

    @Test("stragglers are not evicted; a failure that names no rank restarts the same chips")
    func notEvicted() {
        var p = P(primaries: 2, spares: 1)
        let out = p.handle(.failed(faults: [Self.fault(1, .straggler, "slow")], reason: "mpirun exited with status 1", at: 1))
        #expect(out == [.restart(chips: [.primary(0), .primary(1)], number: 1, afterSeconds: 1)])
        #expect(p.evictions.isEmpty && p.spares == [.spare(0)])
    }

    @Test("a spare that fails at start is evicted too, and the job shrinks once none is left")
    func spareFailsAtStart() {
        var p = P(primaries: 2, spares: 1)
        _ = p.handle(.failed(faults: [Self.fault(0)], reason: "x", at: 1))
        #expect(p.chips == [.spare(0), .primary(1)])
        let out = p.handle(.failedAtStart(rank: 0, message: "adapter sim: no device", at: 2))
        #expect(out == [
            .evict(.spare(0), reason: "could not start: adapter sim: no device"), .shrink(removed: .spare(0)),
            .restart(chips: [.primary(1)], number: 2, afterSeconds: 2),
        ])
    }

    @Test("faults until max_restarts: the backoff doubles up to its cap, then one line gives up")
    func maxRestarts() {
        var p = P(configuration: .init(maxRestarts: 3, backoffSeconds: 4, maxBackoffSeconds: 10), primaries: 1, spares: 0)
        var delays: [Double] = []
        for t in 0..<3 {
            let out = p.handle(.failed(faults: [], reason: "mpirun exited with status 1", at: Double(t)))
            guard case let .restart(_, number, after)? = out.last else { Issue.record("no restart: \(out)"); return }
            #expect(number == t + 1)
            delays.append(after)
        }
        #expect(delays == [4, 8, 10])
        let last = p.handle(.failed(faults: [], reason: "mpirun exited with status 1", at: 9))
        guard case let .giveUp(reason)? = last.last else { Issue.record("\(last)"); return }
        #expect(reason.contains("after 3 restarts") && reason.contains("max_restarts 3") && p.isOver)
    }

    @Test("shrinking below min_chips ends the run with a clear line")
    func belowMinChips() {
        var p = P(configuration: .init(minChips: 2), primaries: 2, spares: 0)
        let out = p.handle(.failed(faults: [Self.fault(1)], reason: "x", at: 1))
        #expect(out.prefix(2) == [.evict(.primary(1), reason: "rank 1: gone"), .shrink(removed: .primary(1))])
        guard case let .giveUp(reason)? = out.last else { Issue.record("\(out)"); return }
        #expect(reason.contains("only 1 chip is left, fewer than min_chips 2") && p.isOver)
    }

    @Test("a chip that slowed down is swapped for a spare for its cooldown, then is a spare again; failed chips get the spares first")
    func slowedChipCoolsDown() {
        var p = P(configuration: .init(maxRestarts: 5, backoffSeconds: 0, stragglerCooldownSeconds: 100), primaries: 3, spares: 1)
        let out = p.handle(.failed(faults: [Self.fault(2, .slowdown, "slowed down")], reason: "ended to swap it", at: 10))
        #expect(out == [
            .evict(.primary(2), reason: "rank 2: slowed down; out for its cooldown of 100 s"), .replace(evicted: .primary(2), with: .spare(0)),
            .restart(chips: [.primary(0), .primary(1), .spare(0)], number: 1, afterSeconds: 0),
        ])
        #expect(p.evictions.last?.until == 110 && !p.hasSpare(at: 50) && p.hasSpare(at: 110))
        // Before the cooldown ends a second slow chip has no spare: it stays (no eviction).
        let again = p.handle(.failed(faults: [Self.fault(1, .slowdown, "slowed down")], reason: "x", at: 60))
        #expect(again == [.restart(chips: [.primary(0), .primary(1), .spare(0)], number: 2, afterSeconds: 0)])
        // After it, device 2 is a spare again, and takes the place of a crashed chip.
        let later = p.handle(.failed(faults: [Self.fault(0, .exited, "killed")], reason: "x", at: 120))
        #expect(later == [
            .rejoin(.primary(2)), .evict(.primary(0), reason: "rank 0: killed"), .replace(evicted: .primary(0), with: .primary(2)),
            .restart(chips: [.primary(2), .primary(1), .spare(0)], number: 3, afterSeconds: 0),
        ])
        // One spare, a crash and a slowdown at once: the crashed chip gets it; the slow one stays.
        var q = P(configuration: .init(backoffSeconds: 0), primaries: 3, spares: 1)
        let both = q.handle(.failed(faults: [Self.fault(2, .slowdown, "slow"), Self.fault(0, .exited, "killed")], reason: "x", at: 1))
        #expect(both == [
            .evict(.primary(0), reason: "rank 0: killed"), .replace(evicted: .primary(0), with: .spare(0)),
            .restart(chips: [.spare(0), .primary(1), .primary(2)], number: 1, afterSeconds: 0),
        ])
        // A cooldown of 0: never swapped out.
        var r = P(configuration: .init(backoffSeconds: 0, stragglerCooldownSeconds: 0), primaries: 2, spares: 1)
        #expect(r.handle(.failed(faults: [Self.fault(1, .slowdown, "slow")], reason: "x", at: 1)) == [
            .restart(chips: [.primary(0), .primary(1)], number: 1, afterSeconds: 0),
        ])
    }

    @Test("a NaN rolls back on the same chips; the same chip again right after is evicted; another chip, or one in between, starts over")
    func nonFinite() {
        var p = P(configuration: .init(maxRestarts: 5, backoffSeconds: 0), primaries: 2, spares: 1)
        #expect(p.handle(.nonFinite(rank: 1, message: "step 3: rank 1 (sim) computed a non-finite loss", at: 1)) == [
            .restart(chips: [.primary(0), .primary(1)], number: 1, afterSeconds: 0),
        ])
        #expect(p.handle(.nonFinite(rank: 1, message: "step 3: rank 1 (sim) computed a non-finite loss", at: 2)) == [
            .evict(.primary(1), reason: "step 3: rank 1 (sim) computed a non-finite loss, again after a roll-back to the checkpoint"),
            .replace(evicted: .primary(1), with: .spare(0)),
            .restart(chips: [.primary(0), .spare(0)], number: 2, afterSeconds: 0),
        ])
        // The spare's first NaN is a roll-back again; a crash in between resets the count.
        #expect(p.handle(.nonFinite(rank: 1, message: "x", at: 3)) == [.restart(chips: [.primary(0), .spare(0)], number: 3, afterSeconds: 0)])
        _ = p.handle(.failed(faults: [], reason: "mpirun", at: 4))
        #expect(p.handle(.nonFinite(rank: 1, message: "x", at: 5)) == [.restart(chips: [.primary(0), .spare(0)], number: 5, afterSeconds: 0)])
        // Only the averaged gradient: nobody to blame.
        var q = P(configuration: .init(backoffSeconds: 0), primaries: 2, spares: 1)
        _ = q.handle(.nonFinite(rank: nil, message: "grad", at: 1))
        #expect(q.handle(.nonFinite(rank: nil, message: "grad", at: 2)) == [.restart(chips: [.primary(0), .primary(1)], number: 2, afterSeconds: 0)])
    }

    @Test("the backoff doubles in a crash loop and starts over after an attempt that ran backoffResetSeconds")
    func backoffStartsOver() {
        var p = P(configuration: .init(maxRestarts: 10, backoffSeconds: 1, backoffResetSeconds: 100), primaries: 1, spares: 0)
        func delay(at: Double) -> Double? {
            p.handle(.failed(faults: [], reason: "x", at: at)).compactMap { if case let .restart(_, _, after) = $0 { after } else { nil } }.first
        }
        #expect([delay(at: 1), delay(at: 3), delay(at: 8)] == [1, 2, 4])
        #expect(delay(at: 200) == 1, "the attempt before ran 192 s")
        #expect(delay(at: 202) == 2)
        // An attempt that trained new steps was no crash loop.
        #expect(p.handle(.progressed(at: 210)).isEmpty)
        #expect(delay(at: 211) == 1)
        #expect(delay(at: 212) == 2)
    }
}
