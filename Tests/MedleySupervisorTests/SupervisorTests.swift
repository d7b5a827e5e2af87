import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor
import Testing

/// Scripted helpers: a job of `ranks` sim ranks, hello'd at t = 1.
struct Script {
    var supervisor: Supervisor
    var directives: [SupervisorDirective] = []

    init(ranks: Int = 3, heartbeatTimeout: Double = 10, stragglerFactor: Double = 2, stragglerSteps: Int = 3,
         helloTimeout: Double = 30, hello: Bool = true) {
        supervisor = Supervisor(configuration: SupervisorConfiguration(ranks: ranks, heartbeatTimeout: heartbeatTimeout,
                                                                       stragglerFactor: stragglerFactor,
                                                                       stragglerSteps: stragglerSteps, helloTimeout: helloTimeout),
                                startedAt: 0)
        if hello { for r in 0..<ranks { send(.hello(Script.hello(r), at: 1)) } }
    }

    static func hello(_ rank: Int, pid: Int32? = nil, host: String? = nil) -> ControlHello {
        ControlHello(rank: rank, adapter: "sim", vendor: "acme", chip: "acme-x\(rank)", host: host ?? "host\(rank)",
                     pid: pid ?? Int32(truncatingIfNeeded: 100 &+ rank), memoryBytes: 1 << 30)
    }

    static func report(_ rank: Int, _ step: Int, computeMs: Double = 10, share: Int = 4, loss: Double = 2.5,
                       validationLoss: Double? = nil) -> ControlStepReport {
        ControlStepReport(rank: rank, step: step, loss: loss, tokensPerSecond: 1000 + Double(rank), stepMs: computeMs + 5,
                          computeMs: computeMs, idleMs: 1, exchangeMs: 2, share: share, validationLoss: validationLoss)
    }

    @discardableResult
    mutating func send(_ event: SupervisorEvent) -> [SupervisorDirective] {
        let out = supervisor.handle(event)
        directives += out
        return out
    }

    mutating func beat(_ rank: Int, at: Double, step: Int = 0) -> [SupervisorDirective] {
        send(.heartbeat(ControlHeartbeat(rank: rank, step: step), at: at))
    }

    /// Every rank beats at `at`.
    mutating func beatAll(at: Double) {
        for r in 0..<supervisor.ranks.count { _ = beat(r, at: at) }
    }
}

func alerts(_ directives: [SupervisorDirective]) -> [SupervisorAlert] {
    directives.compactMap { if case let .alert(a) = $0 { a } else { nil } }
}

func records(_ directives: [SupervisorDirective]) -> [SupervisorStep] {
    directives.compactMap { if case let .record(s) = $0 { s } else { nil } }
}

func outcome(_ directives: [SupervisorDirective]) -> SupervisorOutcome? {
    directives.lazy.compactMap { if case let .stop(o) = $0 { o } else { nil } }.first
}

@Suite("supervisor: hello")
struct HelloTests {
    @Test("a hello records the rank's identity; the rank is alive")
    func records() {
        let s = Script(ranks: 2)
        #expect(s.directives.isEmpty)
        let view = s.supervisor.ranks[1]
        #expect(view.hello == Script.hello(1))
        #expect(view.helloAt == 1)
        #expect(view.status == .alive)
        #expect(s.supervisor.heartbeatAge(rank: 1, at: 3.5) == 2.5)
        #expect(s.supervisor.heartbeatAge(rank: 7, at: 3.5) == nil)
    }

    @Test("a second hello from another pid while the first is alive is an impostor; the first is kept")
    func impostorSecondHello() {
        var s = Script(ranks: 2)
        let out = s.send(.hello(Script.hello(1, pid: 999), at: 2))
        let alert = try! #require(alerts(out).first)
        #expect(out.count == 1)
        #expect(alert.kind == .impostor && alert.rank == 1 && alert.at == 2)
        #expect(alert.message.contains("pid 999") && alert.message.contains("pid 101") && alert.message.contains("first is kept"))
        #expect(s.supervisor.ranks[1].hello?.pid == 101)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.impostorHello] == 1)
        // Another host, same pid: an impostor too.
        #expect(alerts(s.send(.hello(Script.hello(1, host: "elsewhere"), at: 3))).map(\.kind) == [.impostor])
        // The same impostor again (reconnecting in a loop): counted, not alerted again.
        #expect(s.send(.hello(Script.hello(1, pid: 999), at: 3.5)).isEmpty)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.impostorHello] == 3)
        // The same process again: a reconnection, no alert.
        #expect(s.send(.hello(Script.hello(1), at: 4)).isEmpty)
        #expect(s.supervisor.alerts.map(\.kind) == [.impostor, .impostor])
    }

    @Test("a hello for a rank outside the job is an impostor alert and is dropped")
    func impostorOutOfRange() {
        var s = Script(ranks: 2)
        for bad in [2, -1, Int.max] {
            let out = s.send(.hello(Script.hello(bad), at: 2))
            #expect(alerts(out).map(\.kind) == [.impostor])
            #expect(alerts(out)[0].rank == bad)
            #expect(alerts(out)[0].message.contains("0..<2"))
        }
        // The same impostor again: counted, not alerted again.
        #expect(s.send(.hello(Script.hello(2), at: 3)).isEmpty)
        #expect(s.supervisor.ranks.count == 2)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.impostorHello] == 4)
    }

    @Test("a rank with no hello within helloTimeout: one missingHello alert, once; a late hello is taken")
    func missingHello() {
        var s = Script(ranks: 2, helloTimeout: 30, hello: false)
        _ = s.send(.hello(Script.hello(0), at: 5))
        _ = s.beat(0, at: 29.9)
        #expect(s.send(.tick(at: 30)).isEmpty)  // not yet: at the timeout, not past it
        let out = s.send(.tick(at: 30.25))
        #expect(alerts(out).map(\.kind) == [.missingHello])
        #expect(alerts(out)[0].rank == 1 && alerts(out)[0].message.hasPrefix("rank 1: no hello within 30 s"))
        #expect(s.send(.tick(at: 31)).isEmpty)
        let later = s.send(.tick(at: 200))
        #expect(!alerts(later).contains { $0.kind == .missingHello })
        _ = s.send(.hello(Script.hello(1), at: 201))
        #expect(s.supervisor.ranks[1].status == .alive)
        #expect(s.supervisor.ranks[1].missingHelloReported)
    }

    @Test("heartbeats and step reports from a rank without a hello are ignored and counted as 'no hello'")
    func noHello() {
        var s = Script(ranks: 2, hello: false)
        #expect(s.beat(1, at: 1).isEmpty)
        #expect(s.send(.stepReport(Script.report(1, 1), at: 1)).isEmpty)
        #expect(s.beat(5, at: 1).isEmpty)
        #expect(s.supervisor.droppedFrames == [Supervisor.DropReason.noHello: 2, Supervisor.DropReason.rankOutOfRange: 1])
        #expect(s.supervisor.ranks[1].lastHeartbeat == nil && s.supervisor.ranks[1].status == .waiting)
        #expect(s.supervisor.heartbeatAge(rank: 1, at: 2) == nil)
    }
}

@Suite("supervisor: silence")
struct SilenceTests {
    @Test("a silent rank: one silent alert per episode, one recovered alert when it beats again")
    func silentThenRecovered() {
        var s = Script(ranks: 3, heartbeatTimeout: 10)
        for t in stride(from: 2.0, through: 10, by: 1) {
            for r in [0, 1, 2] where !(r == 2 && t > 3) { _ = s.beat(r, at: t) }
            #expect(s.send(.tick(at: t + 0.25)).isEmpty)
        }
        // Rank 2 last beat at 3: silent after 13.
        for r in [0, 1] { _ = s.beat(r, at: 11) }
        #expect(s.send(.tick(at: 13)).isEmpty)  // exactly 10 s: not older than the timeout
        for r in [0, 1] { _ = s.beat(r, at: 13.1) }
        let out = s.send(.tick(at: 13.2))
        #expect(alerts(out).map(\.kind) == [.silent])
        let silent = alerts(out)[0]
        #expect(silent.rank == 2 && silent.chip == "acme-x2" && silent.adapter == "sim" && silent.host == "host2")
        #expect(silent.message == "rank 2 (sim acme-x2 on host2, pid 102): no heartbeat for 10.2 s (heartbeat_timeout 10 s); it is hung or gone")
        #expect(s.supervisor.ranks[2].status == .silent)
        // Ticks keep coming: no second alert in this episode.
        for t in stride(from: 13.5, through: 40, by: 0.25) {
            for r in [0, 1] { _ = s.beat(r, at: t) }
            #expect(s.send(.tick(at: t)).isEmpty)
        }
        let back = s.beat(2, at: 40.5, step: 7)
        #expect(alerts(back).map(\.kind) == [.recovered])
        #expect(alerts(back)[0].message.contains("after 37.5 s of silence"))
        #expect(s.supervisor.ranks[2].status == .alive)
        #expect(s.beat(2, at: 41).isEmpty)
        // A second episode gets its own single alert.
        for r in [0, 1] { _ = s.beat(r, at: 52) }
        #expect(alerts(s.send(.tick(at: 52))).map(\.kind) == [.silent])
        #expect(s.send(.tick(at: 60)).isEmpty)
        #expect(s.supervisor.alerts.map(\.kind) == [.silent, .recovered, .silent])
    }

    @Test("a rank whose beats stop while it makes no progress is reported as silent, not as hung in a device call")
    func stalledThenCut() {
        var s = Script(ranks: 2, heartbeatTimeout: 4)
        // Rank 1 waits (no progress from t = 1) and its beats stop after t = 3, as when its link is cut.
        for t in stride(from: 1.0, through: 3, by: 1) {
            _ = s.beat(0, at: t)
            _ = s.send(.heartbeat(ControlHeartbeat(rank: 1, step: 9, secondsSinceProgress: t - 1), at: t))
        }
        // At t = 5.5 it has made no progress for 4.5 s, but its last beat is 2.5 s old: no verdict yet.
        _ = s.beat(0, at: 5)
        #expect(alerts(s.send(.tick(at: 5.5))).isEmpty)
        // At t = 7.2 its beats have been missing for 4.2 s: silent, for want of heartbeats.
        _ = s.beat(0, at: 7)
        let out = s.send(.tick(at: 7.2))
        #expect(alerts(out).map(\.kind) == [.silent])
        #expect(alerts(out).first?.rank == 1)
        #expect(alerts(out).first?.message.contains("no heartbeat for 4.2 s") == true, "\(alerts(out))")
    }

    @Test("a rank that beats but makes no progress: one silent alert (no progress), recovered when progress resumes")
    func stalledWhileBeating() {
        var s = Script(ranks: 2, heartbeatTimeout: 5)
        func beat(_ r: Int, _ t: Double, stuck: Double?, step: Int = 3) -> [SupervisorDirective] {
            s.send(.heartbeat(ControlHeartbeat(rank: r, step: step, secondsSinceProgress: stuck), at: t))
        }
        // Rank 1 stops making progress at t = 2 but its beats go on; rank 0 says nothing of progress.
        for t in stride(from: 2.0, through: 6, by: 1) {
            _ = s.beat(0, at: t)
            #expect(beat(1, t, stuck: t - 2).isEmpty)
            #expect(s.send(.tick(at: t + 0.5)).isEmpty, "t \(t)")  // at most 4.5 s without progress
        }
        _ = s.beat(0, at: 7)
        #expect(beat(1, 7, stuck: 5).isEmpty)
        #expect(s.send(.tick(at: 7)).isEmpty)  // exactly 5 s: not past the timeout
        // Its last beat (t = 7) said 5 s; by t = 7.2 that is 5.2 s without progress.
        let out = s.send(.tick(at: 7.2))
        #expect(alerts(out).map(\.kind) == [.silent])
        #expect(alerts(out).first?.rank == 1)
        #expect(alerts(out).first?.message == "rank 1 (sim acme-x1 on host1, pid 101): no progress for 5.2 s at step 3 "
            + "(heartbeat_timeout 5 s) though its heartbeats still come; it is hung inside a device call")
        #expect(s.supervisor.ranks[1].status == .silent)
        // More beats that still say stuck, more ticks: no second alert.
        for t in stride(from: 8.0, through: 20, by: 1) {
            _ = s.beat(0, at: t)
            #expect(beat(1, t, stuck: t - 2).isEmpty)
            #expect(s.send(.tick(at: t + 0.5)).isEmpty)
        }
        // Progress resumed at 20.5: the beat at 21 says 0.5 s.
        let back = beat(1, 21, stuck: 0.5, step: 4)
        #expect(alerts(back).map(\.kind) == [.recovered])
        #expect(alerts(back).first?.message.contains("making progress again after 18.5 s without") == true, "\(alerts(back))")
        #expect(s.supervisor.ranks[1].status == .alive)
        // A beat that says nothing of progress never opens a stalled episode.
        for t in stride(from: 22.0, through: 40, by: 1) {
            _ = beat(1, t, stuck: 0.1)
            _ = s.beat(0, at: t)
            #expect(s.send(.tick(at: t + 0.5)).isEmpty)
        }
        #expect(s.supervisor.alerts.map(\.kind) == [.silent, .recovered])
    }

    @Test("a rank that said hello and never beats goes silent from its hello")
    func silentFromHello() {
        var s = Script(ranks: 1, heartbeatTimeout: 5)
        let out = s.send(.tick(at: 6.5))
        #expect(alerts(out).map(\.kind) == [.silent])
        #expect(alerts(out)[0].message.contains("no heartbeat since its hello for 5.5 s"))
    }

    @Test("an exited rank is not reported silent; time never runs backwards")
    func exitedNotSilent() {
        var s = Script(ranks: 2, heartbeatTimeout: 5)
        _ = s.send(.processExit(rank: 1, status: 0, signal: nil, at: 2))
        _ = s.beat(0, at: 20)
        #expect(s.send(.tick(at: 20)).isEmpty)
        _ = s.beat(0, at: 3)  // stamped in the past: taken as 20
        #expect(s.supervisor.ranks[0].lastHeardAt == 20)
        #expect(s.supervisor.now == 20)
        #expect(s.send(.tick(at: .nan)).isEmpty)
    }
}

@Suite("supervisor: steps")
struct StepTests {
    @Test("a step is recorded once every rank has reported it, in any order, interleaved with other steps")
    func outOfOrder() {
        var s = Script(ranks: 3)
        var seen: [Int] = []
        let order: [(Int, Int)] = [(2, 1), (0, 2), (1, 1), (2, 2), (0, 3), (1, 2), (0, 1), (2, 3), (1, 3)]
        for (i, (rank, step)) in order.enumerated() {
            let out = s.send(.stepReport(Script.report(rank, step, computeMs: Double(10 + rank), validationLoss: rank == 1 ? 3.0 : nil),
                                          at: 2 + Double(i)))
            seen += records(out).map(\.step)
        }
        #expect(seen == [2, 1, 3])
        let step1 = s.supervisor.steps.first { $0.step == 1 }!
        #expect(step1.ranks.map(\.rank) == [0, 1, 2])
        #expect(step1.ranks.map(\.computeMs) == [10, 11, 12])
        #expect(step1.loss == 2.5 && step1.tokensPerSecond == 1000 && step1.stepMs == 17 && step1.validationLoss == 3.0)
        #expect(step1.at == 8)
        #expect(s.supervisor.pendingStepCount == 0)
    }

    @Test("a late or duplicate step report is ignored and counted")
    func lateAndDuplicate() {
        var s = Script(ranks: 2)
        _ = s.send(.stepReport(Script.report(0, 1), at: 2))
        #expect(s.send(.stepReport(Script.report(0, 1, computeMs: 99), at: 2.1)).isEmpty)
        #expect(records(s.send(.stepReport(Script.report(1, 1), at: 3))).map(\.step) == [1])
        #expect(s.send(.stepReport(Script.report(1, 1), at: 4)).isEmpty)
        #expect(s.supervisor.steps.count == 1 && s.supervisor.steps[0].ranks[0].computeMs == 10)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.duplicateStepReport] == 1)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.lateStepReport] == 1)
    }
}

@Suite("supervisor: stragglers")
struct StragglerTests {
    /// Records `count` steps from `first`, rank 2's compute per sequence `slow` × the others'.
    static func steps(_ s: inout Script, from first: Int, count: Int, slow: Double) -> [SupervisorDirective] {
        var out: [SupervisorDirective] = []
        for step in first..<(first + count) {
            for r in 0..<3 {
                let ms = r == 2 ? 10 * slow : 10
                out += s.send(.stepReport(Script.report(r, step, computeMs: ms), at: Double(step)))
            }
        }
        return out
    }

    @Test("a straggler needs exactly stragglerSteps recorded steps in a row; one alert per episode; recovered after")
    func exactlySteps() {
        var s = Script(ranks: 3, stragglerFactor: 2, stragglerSteps: 3)
        #expect(alerts(Self.steps(&s, from: 1, count: 2, slow: 3)).isEmpty)
        #expect(s.supervisor.ranks[2].consecutiveStragglerSteps == 2)
        // One step at 1.5×: the count starts over.
        #expect(alerts(Self.steps(&s, from: 3, count: 1, slow: 1.5)).isEmpty)
        #expect(s.supervisor.ranks[2].consecutiveStragglerSteps == 0)
        #expect(alerts(Self.steps(&s, from: 4, count: 2, slow: 3)).isEmpty)
        let third = Self.steps(&s, from: 6, count: 1, slow: 3)
        #expect(alerts(third).map(\.kind) == [.straggler])
        let alert = alerts(third)[0]
        #expect(alert.rank == 2 && alert.step == 6 && alert.chip == "acme-x2")
        #expect(alert.message == "rank 2 (sim acme-x2 on host2, pid 102): 30.0 ms of compute for 3 steps in a row, 3.0× the other ranks' median 10.0 ms (straggler_factor 2); it slows every step")
        #expect(s.supervisor.ranks[2].isStraggler)
        #expect(alerts(Self.steps(&s, from: 7, count: 10, slow: 3)).isEmpty)
        let back = Self.steps(&s, from: 17, count: 1, slow: 1)
        #expect(alerts(back).map(\.kind) == [.recovered])
        #expect(!s.supervisor.ranks[2].isStraggler)
    }

    @Test("compute time, not time per sequence: a slow chip with a small share is no straggler; share 0 is excluded")
    func slowChipIsNoStraggler() {
        var s = Script(ranks: 3, stragglerFactor: 2, stragglerSteps: 1)
        for step in 1...5 {
            // Rank 1 is 4x slower per sequence, but its share is 4x smaller: it computes as long.
            _ = s.send(.stepReport(Script.report(0, step, computeMs: 40, share: 8), at: 2))
            _ = s.send(.stepReport(Script.report(1, step, computeMs: 40, share: 2), at: 2))
            _ = s.send(.stepReport(Script.report(2, step, computeMs: 500, share: 0), at: 2))
        }
        #expect(s.supervisor.steps.count == 5)
        #expect(s.supervisor.alerts.isEmpty)
    }

    @Test("each rank is judged against the median of the others (even and odd counts)")
    func medianOfOthers() {
        var s = Script(ranks: 5, stragglerFactor: 2, stragglerSteps: 1)
        var out: [SupervisorDirective] = []
        for (r, ms) in [10.0, 10, 20, 20, 50].enumerated() {
            out += s.send(.stepReport(Script.report(r, 1, computeMs: ms, share: 1), at: 2))
        }
        #expect(alerts(out).map(\.rank) == [4])
        #expect(alerts(out)[0].message.contains("3.3× the other ranks' median 15.0 ms"))
        var t = Script(ranks: 4, stragglerFactor: 2, stragglerSteps: 1)
        out = []
        for (r, ms) in [10.0, 20, 30, 45].enumerated() {
            out += t.send(.stepReport(Script.report(r, 1, computeMs: ms, share: 1), at: 2))
        }
        #expect(alerts(out).map(\.rank) == [3])
        #expect(alerts(out)[0].message.contains("2.3× the other ranks' median 20.0 ms"))
    }

    @Test("two ranks: the slow one is judged against the other")
    func twoRanks() {
        var s = Script(ranks: 2, stragglerFactor: 2, stragglerSteps: 1)
        _ = s.send(.stepReport(Script.report(0, 1, computeMs: 10), at: 2))
        let out = s.send(.stepReport(Script.report(1, 1, computeMs: 25), at: 2))
        #expect(alerts(out).map(\.kind) == [.straggler])
        #expect(alerts(out)[0].rank == 1)
    }
}

@Suite("supervisor: faults, exits and the end")
struct EndTests {
    @Test("a fault report is a fault alert with the rank's words (made one line) and its kind")
    func fault() {
        var s = Script(ranks: 2)
        let out = s.send(.faultReport(ControlFaultReport(rank: 1, step: 4, kind: .adapterError,
                                                          message: "device lost\nat queue 3\r\n"), at: 5))
        #expect(alerts(out).map(\.kind) == [.fault])
        #expect(alerts(out)[0].message == "rank 1 (sim acme-x1 on host1, pid 101): fault at step 4 (adapter error): device lost at queue 3")
        #expect(alerts(out)[0].step == 4)
        #expect(s.supervisor.ranks[1].status == .failed)
    }

    @Test("a corruption report's suspects are carried in its alert; other faults carry none")
    func corruptionSuspects() {
        var s = Script(ranks: 2)
        let out = s.send(.faultReport(ControlFaultReport(rank: 0, step: 6, kind: .corruption, message: "probe off", suspects: [1]), at: 5))
        #expect(alerts(out).map(\.kind) == [.fault])
        #expect(alerts(out)[0].suspects == [1] && alerts(out)[0].rank == 0)
        #expect(alerts(out)[0].message.contains("(silent corruption): probe off"))
        let other = s.send(.faultReport(ControlFaultReport(rank: 1, step: 6, kind: .other, message: "x"), at: 6))
        #expect(alerts(other).first?.suspects == nil)
    }

    @Test("a rank exiting non-zero or by a signal is an exited alert naming it; exit 0 is quiet")
    func exits() {
        var s = Script(ranks: 3)
        _ = s.send(.stepReport(Script.report(1, 3), at: 2))
        #expect(s.send(.processExit(rank: 0, status: 0, signal: nil, at: 3)).isEmpty)
        let killed = alerts(s.send(.processExit(rank: 1, status: 137, signal: 9, at: 4)))
        #expect(killed.map(\.kind) == [.exited])
        #expect(killed[0].message == "rank 1 (sim acme-x1 on host1, pid 101): killed by signal 9 (SIGKILL) after step 3")
        let status = alerts(s.send(.processExit(rank: 2, status: 3, signal: nil, at: 5)))
        #expect(status[0].message == "rank 2 (sim acme-x2 on host2, pid 102): exited with status 3")
        #expect(s.send(.processExit(rank: 2, status: 3, signal: nil, at: 6)).isEmpty)
        #expect(s.send(.processExit(rank: 9, status: 3, signal: nil, at: 6)).isEmpty)
        #expect(s.supervisor.ranks.map(\.status) == [.exited(status: 0, signal: nil), .exited(status: 137, signal: 9),
                                                     .exited(status: 3, signal: nil)])
        #expect(s.beat(2, at: 7).isEmpty)
        #expect(s.supervisor.droppedFrames[Supervisor.DropReason.rankExited] == 1)
    }

    @Test("mpirun exits 0 with no fatal alert: finished; then events produce nothing")
    func finished() {
        var s = Script(ranks: 2)
        for r in 0..<2 { _ = s.send(.stepReport(Script.report(r, 1), at: 2)) }
        for r in 0..<2 { _ = s.send(.processExit(rank: r, status: 0, signal: nil, at: 3)) }
        let out = s.send(.processExit(rank: nil, status: 0, signal: nil, at: 3.5))
        let result = try! #require(outcome(out))
        #expect(result.result == .finished && result.exitStatus == 0 && result.lastStep == 1 && result.at == 3.5)
        #expect(result.reason == "mpirun exited 0 after step 1; 2 ranks, 0 alerts")
        #expect(s.supervisor.isStopped)
        #expect(s.send(.tick(at: 100)).isEmpty)
        #expect(s.send(.faultReport(ControlFaultReport(rank: 0, step: 1, kind: .other, message: "x"), at: 101)).isEmpty)
        #expect(s.send(.processExit(rank: nil, status: 1, signal: nil, at: 102)).isEmpty)
        #expect(s.supervisor.alerts.isEmpty && s.supervisor.outcome == result)
    }

    @Test("mpirun exits 0 after a fault: failed, the fault's message the reason, the alerts in the outcome")
    func failedAfterFault() {
        var s = Script(ranks: 2)
        _ = s.send(.faultReport(ControlFaultReport(rank: 0, step: 2, kind: .nonFinite, message: "loss is NaN"), at: 3))
        _ = s.send(.processExit(rank: 1, status: 0, signal: 9, at: 4))
        let result = try! #require(outcome(s.send(.processExit(rank: nil, status: 0, signal: nil, at: 5))))
        #expect(result.result == .failed)
        #expect(result.reason == "rank 0 (sim acme-x0 on host0, pid 100): fault at step 2 (non-finite value): loss is NaN")
        #expect(result.alerts.map(\.kind) == [.fault, .exited] && result.alertCount == 2)
    }

    @Test("mpirun exits non-zero with no fatal alert: failed with its status; by a signal: named")
    func failedByMpirun() {
        var a = Script(ranks: 1)
        #expect(outcome(a.send(.processExit(rank: nil, status: 1, signal: nil, at: 2)))?.reason == "mpirun exited with status 1")
        var b = Script(ranks: 1)
        _ = b.send(.stepReport(Script.report(0, 4), at: 2))
        let killed = try! #require(outcome(b.send(.processExit(rank: nil, status: 143, signal: 15, at: 3))))
        #expect(killed.result == .failed && killed.signal == 15)
        #expect(killed.reason == "mpirun killed by signal 15 (SIGTERM) after step 4")
    }

    @Test("a silent rank taken over by a new process: recovered, its identity replaced")
    func takeover() {
        var s = Script(ranks: 2, heartbeatTimeout: 5)
        _ = s.beat(0, at: 7)
        #expect(alerts(s.send(.tick(at: 7))).map(\.kind) == [.silent])
        let out = s.send(.hello(Script.hello(1, pid: 555, host: "spare"), at: 8))
        #expect(alerts(out).map(\.kind) == [.recovered])
        #expect(s.supervisor.ranks[1].hello?.host == "spare" && s.supervisor.ranks[1].status == .alive)
    }

    @Test("requested commands go to the ranks that said hello and have not exited")
    func commands() {
        var s = Script(ranks: 3)
        _ = s.send(.processExit(rank: 2, status: 0, signal: nil, at: 2))
        let stop = ControlCommand(kind: .stop, reason: "Ctrl-C")
        #expect(s.send(.requestCommand(stop, rank: nil, at: 3)) == [.command(rank: 0, stop), .command(rank: 1, stop)])
        let checkpoint = ControlCommand(kind: .checkpointNow, reason: "asked")
        #expect(s.send(.requestCommand(checkpoint, rank: 1, at: 3)) == [.command(rank: 1, checkpoint)])
        #expect(s.send(.requestCommand(checkpoint, rank: 2, at: 3)).isEmpty)
        #expect(s.send(.requestCommand(checkpoint, rank: 7, at: 3)).isEmpty)
    }

    @Test("dropped frames are counted by reason, at most 64 reasons")
    func droppedFrames() {
        var s = Script(ranks: 1)
        for _ in 0..<3 { #expect(s.send(.droppedFrame(reason: "wrong token", peer: "10.0.0.9:5555", at: 2)).isEmpty) }
        for i in 0..<100 { _ = s.send(.droppedFrame(reason: "reason \(i)", peer: "p", at: 2)) }
        #expect(s.supervisor.droppedFrames["wrong token"] == 3)
        #expect(s.supervisor.droppedFrames.count == Supervisor.dropReasonLimit + 1)
        #expect(s.supervisor.droppedFrames.values.reduce(0, +) == 103)
    }
}

@Suite("supervisor: records")
struct RecordTests {
    @Test("an alert encodes to one line of JSON (an alerts.jsonl record) and decodes back")
    func alertJSON() throws {
        var s = Script(ranks: 1)
        _ = s.send(.faultReport(ControlFaultReport(rank: 0, step: 1, kind: .outOfMemory, message: "out of\nmemory"), at: 2))
        let alert = try #require(s.supervisor.alerts.first)
        let data = try JSONEncoder().encode(alert)
        #expect(!data.contains(UInt8(ascii: "\n")))
        #expect(try JSONDecoder().decode(SupervisorAlert.self, from: data) == alert)
        let json = String(decoding: data, as: UTF8.self)
        #expect(json.contains("\"kind\":\"fault\""))
    }
}

@Suite("supervisor: a process seen gone")
struct VanishedProcessTests {
    @Test("gone after a 'finished' heartbeat is a normal end; gone without one is an exited alert")
    func finishedOrVanished() {
        var s = Script(ranks: 2)
        _ = s.send(.heartbeat(ControlHeartbeat(rank: 0, step: 4, health: .finished), at: 2))
        #expect(alerts(s.send(.processExit(rank: 0, status: SupervisorEvent.unknownExitStatus, signal: nil, at: 3))).isEmpty)
        #expect(s.supervisor.ranks[0].exitStatus == 0)
        let vanished = alerts(s.send(.processExit(rank: 1, status: SupervisorEvent.unknownExitStatus, signal: nil, at: 3)))
        #expect(vanished.map(\.kind) == [.exited])
        #expect(vanished.first?.message.contains("ended without a word") == true, "\(vanished)")
    }
}

@Suite("supervisor: slowdowns")
struct SlowdownTests {
    /// Records steps `steps`, rank 1 computing `ms` per sequence on a share of `share`; the others 10 ms on 4.
    static func steps(_ s: inout Script, _ steps: ClosedRange<Int>, ms: Double, share: Int = 4) -> [SupervisorDirective] {
        var out: [SupervisorDirective] = []
        for step in steps {
            for r in 0..<3 {
                let report = r == 1 ? Script.report(r, step, computeMs: ms * Double(share), share: share) : Script.report(r, step, computeMs: 40)
                out += s.send(.stepReport(report, at: Double(step)))
            }
        }
        return out
    }

    @Test("a rank judged against its own start: the first step warms up, the next five set the baseline, then stragglerSteps above slowdownFactor × it is one slowdown alert; back to speed is recovered")
    func slowsDown() {
        var s = Script(ranks: 3, stragglerSteps: 3)
        // Step 1 (warm-up) is slow and does not count; steps 2–6 set 10 ms per sequence.
        #expect(alerts(Self.steps(&s, 1...1, ms: 80)).isEmpty)
        #expect(alerts(Self.steps(&s, 2...6, ms: 10)).isEmpty)
        #expect(s.supervisor.ranks[1].baselineMsPerSequence == 10)
        // The rebalancer moving shares does not change the cost of a sequence: no alert.
        #expect(alerts(Self.steps(&s, 7...10, ms: 11, share: 1)).isEmpty)
        // 2.9× is under the factor of 3.
        #expect(alerts(Self.steps(&s, 11...14, ms: 29, share: 1)).isEmpty)
        #expect(alerts(Self.steps(&s, 15...16, ms: 80, share: 1)).isEmpty)
        let third = Self.steps(&s, 17...17, ms: 80, share: 1)
        // A share of 1 computing 80 ms: also a straggler against the others' 40 ms? 80 > 2 × 40 is not; it is only slow.
        #expect(alerts(third).map(\.kind) == [.slowdown])
        #expect(alerts(third)[0].rank == 1)
        #expect(alerts(third)[0].message == "rank 1 (sim acme-x1 on host1, pid 101): slowed down: 80.0 ms of compute per sequence for 3 steps in a row, 8.0× its own 10.0 ms at the start (slowdown_factor 3)")
        #expect(s.supervisor.ranks[1].isSlow)
        #expect(alerts(Self.steps(&s, 18...30, ms: 80, share: 1)).isEmpty, "one alert per episode")
        let back = Self.steps(&s, 31...31, ms: 12, share: 1)
        #expect(alerts(back).map(\.kind) == [.recovered])
        #expect(!s.supervisor.ranks[1].isSlow)
    }

    @Test("a new process for the rank gets a new baseline; slowdown_factor is validated")
    func newBaseline() throws {
        var s = Script(ranks: 3, stragglerSteps: 1)
        _ = Self.steps(&s, 1...6, ms: 10)
        #expect(s.supervisor.ranks[1].baselineMsPerSequence == 10)
        _ = s.send(.processExit(rank: 1, status: 1, signal: nil, at: 7))
        _ = s.send(.hello(Script.hello(1, pid: 999), at: 8))
        #expect(s.supervisor.ranks[1].baselineMsPerSequence == nil)
        #expect(throws: MedleyError.self) { try SupervisorConfiguration(ranks: 1, slowdownFactor: 1).validate() }
    }
}
