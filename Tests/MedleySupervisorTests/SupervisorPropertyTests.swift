import MedleyControl
import MedleyCore
import MedleySupervisor
import Testing

/// Random event streams: ranks in and out of range, non-decreasing times with gaps, NaN and
/// infinite numbers, words with line breaks.
struct RandomEvents {
    var rng: SeededGenerator
    let ranks: Int
    var time = 0.0
    var step = 1

    init(seed: UInt64, ranks: Int) {
        rng = SeededGenerator(seed: seed)
        self.ranks = ranks
    }

    mutating func chance(_ n: Int) -> Bool { rng.below(n) == 0 }

    mutating func number() -> Double {
        switch rng.below(12) {
        case 0: .nan
        case 1: .infinity
        case 2: -.infinity
        case 3: 0
        case 4: -Double(rng.below(100))
        default: Double(rng.uniform(0, 50))
        }
    }

    mutating func rank() -> Int {
        chance(10) ? [-1, ranks, ranks + 2, Int.max, Int.min][rng.below(5)] : rng.below(ranks)
    }

    mutating func words() -> String {
        ["device lost", "bad\nthing\r\nhappened", "", "  \t ", "NaN in \u{2028}grad", String(repeating: "x", count: 2000),
         "oom\u{0}\u{7}"][rng.below(7)]
    }

    mutating func stepNumber() -> Int {
        if chance(8) { step += 1 }
        switch rng.below(20) {
        case 0: return rng.below(1_000_000) - 500
        case 1: return step - rng.below(5)
        default: return step
        }
    }

    mutating func next() -> SupervisorEvent {
        // Time: mostly small steps, sometimes a long gap (a silent stretch).
        time += chance(200) ? Double(rng.uniform(5, 40)) : Double(rng.uniform(0, 0.3))
        let at = time
        switch rng.below(100) {
        case 0..<4:
            let r = rank()
            return .hello(ControlHello(rank: r, adapter: "sim", vendor: "acme", chip: chance(5) ? "x\n1" : "x1",
                                       host: chance(4) ? "host\(rng.below(3))" : "host\(r & 3)",
                                       pid: Int32(truncatingIfNeeded: chance(4) ? rng.below(1000) : (r & 0xff)), memoryBytes: 1),
                          at: at)
        case 4..<40:
            return .heartbeat(ControlHeartbeat(rank: rank(), step: stepNumber(), loss: number(), tokensPerSecond: number(),
                                               deviceMemoryUsedBytes: rng.next(), health: .ok), at: at)
        case 40..<75:
            let share = chance(6) ? 0 : (chance(20) ? -3 : rng.below(8) + 1)
            return .stepReport(ControlStepReport(rank: rank(), step: stepNumber(), loss: number(), tokensPerSecond: number(),
                                                 stepMs: number(), computeMs: number(), idleMs: number(), exchangeMs: number(),
                                                 share: share, validationLoss: chance(3) ? number() : nil), at: at)
        case 75..<77:
            return .faultReport(ControlFaultReport(rank: rank(), step: stepNumber(),
                                                   kind: ControlFaultKind.allCases[rng.below(ControlFaultKind.allCases.count)],
                                                   message: words()), at: at)
        case 77..<93:
            return .tick(at: at)
        case 93..<95:
            return .processExit(rank: chance(3000) ? nil : rank(), status: Int32(rng.below(3)) - 1,
                                signal: chance(2) ? Int32(rng.below(40)) : nil, at: at)
        case 95..<98:
            return .droppedFrame(reason: "reason \(rng.below(100))", peer: "peer", at: at)
        default:
            return .requestCommand(ControlCommand(kind: .stop, reason: "test"), rank: chance(2) ? nil : rank(), at: at)
        }
    }
}

@Suite("supervisor: random events")
struct SupervisorPropertyTests {
    /// Feeds `count` random events; checks the invariants after each and returns the directives.
    static func run(seed: UInt64, ranks: Int, count: Int, historyLimit: Int) -> [SupervisorDirective] {
        var events = RandomEvents(seed: seed, ranks: ranks)
        let configuration = SupervisorConfiguration(ranks: ranks, heartbeatTimeout: 3, stragglerFactor: 2, stragglerSteps: 2,
                                                    helloTimeout: 10)
        var supervisor = Supervisor(configuration: configuration, startedAt: 0, historyLimit: historyLimit)
        var all: [SupervisorDirective] = []
        var openSilence = Set<Int>()
        var recordedSteps = Set<Int>()
        for _ in 0..<count {
            let wasStopped = supervisor.isStopped
            let out = supervisor.handle(events.next())
            if wasStopped { #expect(out.isEmpty) }
            for directive in out {
                switch directive {
                case let .alert(alert):
                    #expect(!alert.message.isEmpty)
                    #expect(!alert.message.unicodeScalars.contains { $0.properties.generalCategory == .control
                        || $0 == "\u{2028}" || $0 == "\u{2029}" }, "not one line: \(alert.message)")
                    #expect(alert.at.isFinite)
                    if let rank = alert.rank, (0..<ranks).contains(rank) {
                        if alert.kind == .silent {
                            #expect(!openSilence.contains(rank), "a second silent alert in one episode for rank \(rank)")
                            openSilence.insert(rank)
                        } else if alert.kind == .recovered {
                            openSilence.remove(rank)
                        }
                    }
                    if [.silent, .fault, .exited, .straggler, .missingHello, .recovered].contains(alert.kind) {
                        #expect(alert.rank.map { (0..<ranks).contains($0) } == true)
                    }
                case let .record(step):
                    #expect(step.ranks.map(\.rank) == Array(0..<ranks))
                    #expect(!recordedSteps.contains(step.step), "step \(step.step) recorded twice")
                    recordedSteps.insert(step.step)
                case let .command(rank, _):
                    #expect((0..<ranks).contains(rank))
                case .stop:
                    #expect(!wasStopped)
                }
            }
            // An exit closes the rank's silent episode without an alert.
            for view in supervisor.ranks where view.hasExited { openSilence.remove(view.rank) }
            #expect(supervisor.steps.count <= historyLimit)
            #expect(supervisor.alerts.count <= historyLimit)
            #expect(supervisor.pendingStepCount <= historyLimit)
            #expect(supervisor.droppedFrames.count <= Supervisor.dropReasonLimit + 6)
            for view in supervisor.ranks where view.status == .silent { #expect(openSilence.contains(view.rank)) }
            all += out
        }
        #expect(supervisor.ranks.count == ranks)
        // mpirun ends: one stop, with the outcome; nothing after it.
        let wasStopped = supervisor.isStopped
        let end = supervisor.handle(.processExit(rank: nil, status: 0, signal: nil, at: events.time))
        if !wasStopped {
            #expect(end.count == 1)
            if case let .stop(outcome) = end.first {
                #expect(!outcome.reason.contains("\n"))
                let sawFatal = all.contains { if case let .alert(a) = $0 { a.isFatal } else { false } }
                #expect(outcome.result == (sawFatal ? .failed : .finished))
            } else {
                Issue.record("no stop directive")
            }
            all += end
        }
        for _ in 0..<200 { #expect(supervisor.handle(events.next()).isEmpty) }
        return all
    }

    @Test("thousands of random events: no crash, one-line alerts, one silent alert per episode, bounded memory",
          arguments: [(UInt64(1), 1), (2, 2), (3, 3), (4, 5)])
    func randomEvents(seed: UInt64, ranks: Int) {
        let directives = Self.run(seed: seed, ranks: ranks, count: 10_000, historyLimit: 40)
        // The stream exercised the rules it is meant to.
        let kinds = Set(directives.compactMap { if case let .alert(a) = $0 { a.kind } else { nil } })
        #expect(kinds.isSuperset(of: [.silent, .recovered, .fault, .exited, .impostor]))
    }

    @Test("the same events give the same directives")
    func deterministic() {
        let first = Self.run(seed: 77, ranks: 3, count: 3000, historyLimit: 1000)
        let second = Self.run(seed: 77, ranks: 3, count: 3000, historyLimit: 1000)
        // NaN is not equal to itself; the printed form compares numbers bit for bit enough here.
        #expect(first.map { String(describing: $0) } == second.map { String(describing: $0) })
        #expect(first.contains { if case .record = $0 { true } else { false } })
    }
}
