import MedleyControl
import MedleyCore

/// The supervisor of `medley launch` as a pure state machine: events in, directives out.
///
/// It does no I/O, reads no clock and starts no thread: a shell feeds it ``SupervisorEvent``s
/// (each stamped with its time) and carries out the ``SupervisorDirective``s that
/// ``handle(_:)`` returns, in order. The same events always give the same directives.
///
/// The rules, each judged when its event arrives:
///
/// - **hello**: records the rank's identity (chip, adapter, vendor, host, pid). A hello for a rank
///   outside `0..<ranks` is an `impostor` alert and is dropped. A second hello for a rank from
///   another pid or host while its first process is alive (not exited and not silent) is an
///   `impostor` alert; the first identity is kept. A second hello from the same pid and host is
///   a reconnection (accepted). The same impostor (rank, host, pid) is alerted once; its later
///   hellos are only counted ("impostor hello"). A hello from another process for a rank that is silent or has
///   exited takes the rank over (a `recovered` alert; its faults and straggler count start anew).
/// - **missing hello**: on a tick more than `helloTimeout` after the start, each rank still
///   without a hello gets one `missingHello` alert (once per rank, ever).
/// - **silence**: any accepted frame from a rank (hello, heartbeat, step or fault report) is a sign
///   of life. On a tick, a rank that said hello, has not exited and was last heard from more than
///   `heartbeatTimeout` ago gets one `silent` alert and opens a silent episode; no other silent
///   alert is raised for it until the episode ends. The next sign of life ends the episode with
///   one `recovered` alert.
/// - **no progress**: a heartbeat may say how long the rank has gone without progress
///   (``ControlHeartbeat/secondsSinceProgress``: its beating thread goes on while the rank is stuck
///   inside one device call). On a tick, a rank not silent whose last beat's count plus the time
///   since that beat passes `heartbeatTimeout` gets one `silent` alert ("no progress") and opens a
///   stalled episode; a later beat whose count (plus its age) is back within the timeout ends it
///   with one `recovered` alert. Beats that do not say are judged only by their arrival.
/// - **frames from ranks without a hello**: heartbeats and step reports from a rank in range that
///   has not said hello are ignored and counted in ``droppedFrames`` as "no hello"; frames for a
///   rank outside the job as "rank out of range"; frames from a rank after its exit as "rank exited".
///   Fault reports from a rank in range are taken even before its hello (the words matter most).
/// - **steps**: when every rank has reported step N, one `.record(SupervisorStep)` follows. Reports
///   may come in any order and for several steps at once; a second report from a rank for a step
///   it already reported, or a report for a step already recorded (or too old to be kept), is
///   ignored ("duplicate step report", "late step report"). At most ``historyLimit`` steps wait
///   for their last report; past that, the lowest waiting step is given up.
/// - **stragglers**: on each recorded step, each rank with a share above 0 and a finite compute
///   time is judged by its compute ms against the median of the other such ranks (not per
///   sequence: the shares give a slower chip fewer sequences, so in a balanced job every rank
///   computes about as long, and the rank whose compute stands out is the one the others wait for;
///   a chip that is merely slow is not a straggler) (the others', so that in a two-rank job one rank can be twice the other). Above
///   `stragglerFactor` × that median (when the median is above 0) counts one step; any other
///   judged step resets the count. At `stragglerSteps` in a row, one `straggler` alert opens an
///   episode; the first judged step not above ends it with a `recovered` alert. A rank not judged
///   on a step (share 0, a non-finite time, no other rank to compare with) keeps its count.
/// - **slowdowns**: each rank is also judged against itself, by compute ms per sequence (compute ms
///   ÷ share; the shares move, the cost of a sequence should not). Its baseline is the median of
///   its first ``slowdownBaselineSteps`` judged steps after the first recorded step (a warm-up).
///   Above `slowdownFactor` × the baseline counts one step, anything else resets the count; at
///   `stragglerSteps` in a row, one `slowdown` alert opens an episode (its chip slowed down: the
///   recovery policy may swap it for a spare); the first step not above ends it with `recovered`.
///   A rank whose process is replaced (a hello that takes it over) gets a new baseline.
/// - **skipped batches**: a recorded step whose loss is not finite (the ranks skipped its batch:
///   `recovery.on_nan: skip_batch`) is one `skipped` alert naming the step.
/// - **faults**: each fault report is a `fault` alert with the rank's words (made one line) and its
///   kind; the rank's status becomes `failed`.
/// - **rank exits**: a rank exiting with a non-zero status or by a signal is an `exited` alert naming
///   the status or the signal (SIGKILL: "killed by signal 9 (SIGKILL)"); exit status 0 is a normal
///   end, with no alert. A second exit for the same rank, or one for a rank outside the job, is ignored.
/// - **a rank's exit** with ``SupervisorEvent/unknownExitStatus`` (the shell saw its process gone
///   but is not its parent) counts as status 0 when the rank's last heartbeat said `finished`.
/// - **mpirun's exit** (`processExit` with rank nil): `.stop(outcome)`: `finished` if it exited 0, not
///   by a signal, and no fatal alert (fault, exited) was raised; else `failed`, with the first fatal
///   alert's message as the reason (or, if there was none, `mpirun`'s status or signal).
/// - **requested commands**: `.command` directives to the named rank, or to every rank that has
///   said hello and not exited (ignored for a rank that has not said hello, has exited, or is outside the job).
/// - **after stop**: every event is ignored: no directive, no change.
///
/// Memory is bounded: ``steps`` and ``alerts`` keep the last ``historyLimit``, steps waiting for
/// reports are capped alike, and ``droppedFrames`` keeps at most 64 reasons (the rest count as "other").
public struct Supervisor: Sendable {
    /// The reasons the supervisor itself counts in ``droppedFrames``.
    public enum DropReason {
        public static let noHello = "no hello"
        public static let rankOutOfRange = "rank out of range"
        public static let rankExited = "rank exited"
        public static let impostorHello = "impostor hello"
        public static let duplicateStepReport = "duplicate step report"
        public static let lateStepReport = "late step report"
        /// Where reasons beyond the 64th go.
        public static let other = "other"
    }

    public let configuration: SupervisorConfiguration
    /// When the job started (the origin of `helloTimeout`).
    public let startedAt: Double
    /// How many steps and alerts are kept (and how many steps may wait for reports).
    public let historyLimit: Int
    /// The most distinct reasons ``droppedFrames`` keeps.
    public static let dropReasonLimit = 64

    private var rankViews: [RankView]
    private var stepHistory: [SupervisorStep] = []
    private var alertHistory: [SupervisorAlert] = []
    private var drops: [String: Int] = [:]
    /// Reports of steps not yet recorded: step → rank → report.
    private var pending: [Int: [Int: ControlStepReport]] = [:]
    /// Steps recorded (the last `historyLimit`), and the step below which every report is late.
    private var recorded: Set<Int> = []
    private var lateBelow: Int = .min
    private var clock: Double
    private var firstFatal: SupervisorAlert?
    /// Whether every rank was asked to stop.
    private var stopRequested = false
    private var totalAlerts = 0
    private var stopped: SupervisorOutcome?
    /// The highest step recorded so far (nil before the first).
    public private(set) var lastRecordedStep: Int?
    /// Impostors already reported (rank, host, pid), so that one reconnecting in a loop is one alert.
    private var impostorsSeen: Set<ImpostorKey> = []
    private struct ImpostorKey: Hashable, Sendable {
        var rank: Int
        var host: String
        var pid: Int32
    }

    /// A supervisor for a job of `configuration.ranks` ranks that started at `startedAt`.
    /// (The configuration is taken as it is; validate it first. A rank count below 0 counts as 0.)
    public init(configuration: SupervisorConfiguration, startedAt: Double, historyLimit: Int = 1000) {
        self.configuration = configuration
        self.startedAt = startedAt.isFinite ? startedAt : 0
        self.historyLimit = max(1, historyLimit)
        self.clock = self.startedAt
        self.rankViews = (0..<max(0, configuration.ranks)).map { RankView(rank: $0) }
    }

    // MARK: - What it knows

    /// Every rank of the job, in rank order.
    public var ranks: [RankView] { rankViews }
    /// The last ``historyLimit`` recorded steps, in the order they were recorded.
    public var steps: [SupervisorStep] { stepHistory }
    /// The last ``historyLimit`` alerts, in the order they were raised.
    public var alerts: [SupervisorAlert] { alertHistory }
    /// Alerts raised in all (``alerts`` keeps only the last ones).
    public var alertCount: Int { totalAlerts }
    /// Frames dropped, by reason: the shell's (``SupervisorEvent/droppedFrame(reason:peer:at:)``) and the supervisor's (``DropReason``).
    public var droppedFrames: [String: Int] { drops }
    /// Steps with some reports but not all.
    public var pendingStepCount: Int { pending.count }
    /// The latest time seen in an event.
    public var now: Double { clock }
    /// Whether `mpirun` has exited (then every event is ignored), and how the job ended.
    public var isStopped: Bool { stopped != nil }
    public var outcome: SupervisorOutcome? { stopped }

    /// Seconds since the rank was last heard from (any accepted frame) at `now`; nil for a rank outside
    /// the job or never heard from. Never negative.
    public func heartbeatAge(rank: Int, at now: Double) -> Double? {
        guard rankViews.indices.contains(rank), let last = rankViews[rank].lastHeardAt else { return nil }
        let age = now - last
        return age > 0 ? age : 0
    }

    // MARK: - Events

    /// Takes one event and returns what to do about it, in order.
    public mutating func handle(_ event: SupervisorEvent) -> [SupervisorDirective] {
        guard stopped == nil else { return [] }
        let at = event.at
        if at.isFinite, at > clock { clock = at }
        let now = clock
        var out: [SupervisorDirective] = []
        switch event {
        case let .hello(hello, _): onHello(hello, now, &out)
        case let .heartbeat(beat, _): onHeartbeat(beat, now, &out)
        case let .stepReport(report, _): onStepReport(report, now, &out)
        case let .faultReport(fault, _): onFault(fault, now, &out)
        case .tick: onTick(now, &out)
        case let .processExit(rank, status, signal, _): onExit(rank, status, signal, now, &out)
        case let .droppedFrame(reason, _, _): drop(reason)
        case let .requestCommand(command, rank, _): onCommand(command, rank, &out)
        }
        return out
    }

    private mutating func onHello(_ hello: ControlHello, _ now: Double, _ out: inout [SupervisorDirective]) {
        let r = hello.rank
        guard rankViews.indices.contains(r) else {
            drop(DropReason.impostorHello)
            guard firstSighting(hello) else { return }
            let claimed = SupervisorText.identity(hello)
            raise(.impostor, rank: r, identity: hello, step: nil, now,
                  "rank \(r) (\(claimed)): hello for rank \(r), but the job has ranks 0..<\(rankViews.count); ignored, check what else connects to this supervisor",
                  &out)
            return
        }
        let view = rankViews[r]
        if let first = view.hello {
            let sameProcess = first.pid == hello.pid && first.host == hello.host
            if sameProcess {
                rankViews[r].hello = hello
                heard(r, now, &out)
                return
            }
            if !view.hasExited, view.silentSince == nil {
                drop(DropReason.impostorHello)
                guard firstSighting(hello) else { return }
                raise(.impostor, rank: r, identity: hello, step: view.lastKnownStep, now,
                      "rank \(r) (\(SupervisorText.identity(hello))): a second hello for rank \(r) while its first process (\(SupervisorText.identity(first))) is alive; the first is kept",
                      &out)
                return
            }
            // The first process is silent or gone: the newcomer takes the rank over.
            let was = view.hasExited ? "had exited" : "was silent"
            var fresh = RankView(rank: r)
            fresh.hello = hello
            fresh.helloAt = now
            fresh.lastHeardAt = now
            fresh.missingHelloReported = view.missingHelloReported
            fresh.lastStepReport = view.lastStepReport
            rankViews[r] = fresh
            raise(.recovered, rank: r, identity: hello, step: view.lastKnownStep, now,
                  "rank \(r) (\(SupervisorText.identity(hello))): a new process took the rank over; its first (\(SupervisorText.identity(first))) \(was)",
                  &out)
            return
        }
        rankViews[r].hello = hello
        rankViews[r].helloAt = now
        heard(r, now, &out)
    }

    private mutating func onHeartbeat(_ beat: ControlHeartbeat, _ now: Double, _ out: inout [SupervisorDirective]) {
        guard let r = acceptFrom(beat.rank) else { return }
        rankViews[r].lastHeartbeat = beat
        rankViews[r].lastHeartbeatAt = now
        heard(r, now, &out)
        if let since = rankViews[r].stalledSince, let stalled = stalledFor(rankViews[r], now),
           stalled <= configuration.heartbeatTimeout {
            rankViews[r].stalledSince = nil
            raise(.recovered, rank: r, identity: rankViews[r].hello, step: rankViews[r].lastKnownStep, now,
                  "\(SupervisorText.who(rankViews[r])): making progress again after \(SupervisorText.tenths(now - stalled - since)) s without",
                  &out)
        }
    }

    /// Seconds without progress at `now`, by the rank's last heartbeat (its own count, plus the
    /// time since that beat arrived); nil when its beats do not say.
    private func stalledFor(_ view: RankView, _ now: Double) -> Double? {
        guard let beat = view.lastHeartbeat, let since = beat.secondsSinceProgress, since.isFinite, since >= 0,
              let at = view.lastHeartbeatAt else { return nil }
        return since + Swift.max(0, now - at)
    }

    private mutating func onStepReport(_ report: ControlStepReport, _ now: Double, _ out: inout [SupervisorDirective]) {
        guard let r = acceptFrom(report.rank) else { return }
        heard(r, now, &out)
        let step = report.step
        if step < lateBelow || recorded.contains(step) {
            drop(DropReason.lateStepReport)
            return
        }
        if pending[step]?[r] != nil {
            drop(DropReason.duplicateStepReport)
            return
        }
        rankViews[r].lastStepReport = report
        pending[step, default: [:]][r] = report
        guard let reports = pending[step], reports.count == rankViews.count else {
            if pending.count > historyLimit, let lowest = pending.keys.min() { pending[lowest] = nil }
            return
        }
        pending[step] = nil
        record(step, reports, now, &out)
    }

    private mutating func onFault(_ fault: ControlFaultReport, _ now: Double, _ out: inout [SupervisorDirective]) {
        let r = fault.rank
        guard rankViews.indices.contains(r) else { drop(DropReason.rankOutOfRange); return }
        guard !rankViews[r].hasExited else { drop(DropReason.rankExited); return }
        if rankViews[r].hello != nil { heard(r, now, &out) }
        rankViews[r].faultCount += 1
        rankViews[r].lastFault = fault
        let words = SupervisorText.oneLine(fault.message)
        raise(.fault, rank: r, identity: rankViews[r].hello, step: fault.step, now,
              "\(SupervisorText.who(rankViews[r])): fault at step \(fault.step) (\(SupervisorText.kind(fault.kind))): \(words.isEmpty ? "no words given" : words)",
              &out, suspects: fault.suspects.isEmpty ? nil : fault.suspects)
    }

    private mutating func onTick(_ now: Double, _ out: inout [SupervisorDirective]) {
        let helloDue = now - startedAt > configuration.helloTimeout
        for r in rankViews.indices {
            let view = rankViews[r]
            if view.hello == nil {
                if helloDue, !view.missingHelloReported, !view.hasExited {
                    rankViews[r].missingHelloReported = true
                    let limit = SupervisorText.seconds(configuration.helloTimeout)
                    raise(.missingHello, rank: r, identity: nil, step: nil, now,
                          "rank \(r): no hello within \(limit) s of the start (hello_timeout \(limit) s); "
                              + "it did not start, or cannot reach the supervisor",
                          &out)
                }
                continue
            }
            guard !view.hasExited, view.silentSince == nil, let last = view.lastHeardAt else { continue }
            let age = now - last
            let limit = SupervisorText.seconds(configuration.heartbeatTimeout)
            if age > configuration.heartbeatTimeout {
                rankViews[r].silentSince = last
                let beat = view.lastHeartbeatAt == nil ? "no heartbeat since its hello" : "no heartbeat"
                raise(.silent, rank: r, identity: view.hello, step: view.lastKnownStep, now,
                      "\(SupervisorText.who(view)): \(beat) for \(SupervisorText.tenths(age)) s (heartbeat_timeout \(limit) s); it is hung or gone",
                      &out)
                continue
            }
            // "Hung inside a device call" only while its beats really still come (the last one at
            // most half the timeout ago). A rank cut off mid-stall reads as stalled before it reads
            // as silent; judged stalled, it would be the one rank blamed for a cut link, when its
            // host's other ranks fall silent a moment later. Waiting lets the silence speak.
            guard view.stalledSince == nil, let beatAt = view.lastHeartbeatAt, now - beatAt <= configuration.heartbeatTimeout / 2,
                  let stalled = stalledFor(view, now), stalled > configuration.heartbeatTimeout
            else { continue }
            rankViews[r].stalledSince = now - stalled
            raise(.silent, rank: r, identity: view.hello, step: view.lastKnownStep, now,
                  "\(SupervisorText.who(view)): no progress for \(SupervisorText.tenths(stalled)) s\(SupervisorText.atStep(view.lastKnownStep)) "
                      + "(heartbeat_timeout \(limit) s) though its heartbeats still come; it is hung inside a device call",
                  &out)
        }
    }

    private mutating func onExit(_ rank: Int?, _ status: Int32, _ signal: Int32?, _ now: Double,
                                 _ out: inout [SupervisorDirective]) {
        guard let r = rank else {
            stop(status, signal, now, &out)
            return
        }
        guard rankViews.indices.contains(r), !rankViews[r].hasExited else { return }
        // A process seen gone, status unknown, after its last heartbeat said it had finished:
        // a normal end.
        var status = status
        if status == SupervisorEvent.unknownExitStatus, signal == nil, rankViews[r].lastHeartbeat?.health == .finished {
            status = 0
        }
        rankViews[r].exitStatus = status
        rankViews[r].exitSignal = signal
        rankViews[r].silentSince = nil
        rankViews[r].stalledSince = nil
        rankViews[r].isStraggler = false
        rankViews[r].isSlow = false
        guard status != 0 || signal != nil else { return }
        raise(.exited, rank: r, identity: rankViews[r].hello, step: rankViews[r].lastKnownStep, now,
              "\(SupervisorText.who(rankViews[r])): \(SupervisorText.exit(status, signal))\(SupervisorText.afterStep(rankViews[r].lastKnownStep))",
              &out)
    }

    private mutating func stop(_ status: Int32, _ signal: Int32?, _ now: Double, _ out: inout [SupervisorDirective]) {
        let clean = status == 0 && signal == nil && firstFatal == nil
        var reason: String
        if clean {
            let stepText = lastRecordedStep.map { "after step \($0)" } ?? "with no step recorded"
            reason = "mpirun exited 0 \(stepText); \(rankViews.count) rank\(rankViews.count == 1 ? "" : "s"), \(totalAlerts) alert\(totalAlerts == 1 ? "" : "s")"
        } else if let firstFatal {
            reason = firstFatal.message
        } else {
            reason = "mpirun \(SupervisorText.exit(status, signal))\(SupervisorText.afterStep(lastRecordedStep))"
        }
        var result: SupervisorOutcome.Result = clean ? .finished : .failed
        if stopRequested && firstFatal == nil && signal == nil {
            result = .stopped
            reason = "stopped on request \(lastRecordedStep.map { "after step \($0)" } ?? "before any step")"
        }
        let outcome = SupervisorOutcome(result: result, reason: reason, exitStatus: status, signal: signal,
                                        lastStep: lastRecordedStep, alerts: alertHistory, alertCount: totalAlerts, at: now)
        stopped = outcome
        out.append(.stop(outcome))
    }

    private mutating func onCommand(_ command: ControlCommand, _ rank: Int?, _ out: inout [SupervisorDirective]) {
        if command.kind == .stop && rank == nil { stopRequested = true }
        let targets = rank.map { [$0] } ?? Array(rankViews.indices)
        for r in targets where rankViews.indices.contains(r) && rankViews[r].hello != nil && !rankViews[r].hasExited {
            out.append(.command(rank: r, command))
        }
    }

    // MARK: - Steps and stragglers

    private mutating func record(_ step: Int, _ reports: [Int: ControlStepReport], _ now: Double,
                                 _ out: inout [SupervisorDirective]) {
        let ordered = reports.keys.sorted().compactMap { reports[$0] }
        let rows = ordered.map {
            SupervisorStep.Rank(rank: $0.rank, share: $0.share, stepMs: $0.stepMs, computeMs: $0.computeMs, idleMs: $0.idleMs,
                                exchangeMs: $0.exchangeMs)
        }
        let first = ordered[0]
        let stepMs = ordered.map(\.stepMs).reduce(first.stepMs) { Swift.max($0, $1) }
        let record = SupervisorStep(step: step, loss: first.loss, validationLoss: ordered.lazy.compactMap(\.validationLoss).first,
                                    tokensPerSecond: first.tokensPerSecond, stepMs: stepMs, ranks: rows, at: now)
        stepHistory.append(record)
        if stepHistory.count > historyLimit { stepHistory.removeFirst(stepHistory.count - historyLimit) }
        recorded.insert(step)
        if recorded.count > historyLimit, let lowest = recorded.min() {
            recorded.remove(lowest)
            lateBelow = Swift.max(lateBelow, lowest + 1)
            pending = pending.filter { $0.key >= lateBelow }
        }
        lastRecordedStep = step
        out.append(.record(record))
        if !record.loss.isFinite {
            raise(.skipped, rank: nil, identity: nil, step: step, now,
                  "step \(step): the loss is not finite (\(record.loss)); the ranks skipped its batch and went on (recovery.on_nan: skip_batch)", &out)
        }
        judgeStragglers(record, now, &out)
        judgeSlowdowns(record, now, &out)
    }

    /// Judged steps a rank's slowdown baseline is the median of.
    public static let slowdownBaselineSteps = 5

    private mutating func judgeSlowdowns(_ record: SupervisorStep, _ now: Double, _ out: inout [SupervisorDirective]) {
        let needed = Swift.max(1, configuration.stragglerSteps)
        for row in record.ranks where row.share > 0 && row.computeMs.isFinite && row.computeMs >= 0 {
            let r = row.rank
            guard rankViews.indices.contains(r), !rankViews[r].hasExited else { continue }
            let perSequence = row.computeMs / Double(row.share)
            guard let baseline = rankViews[r].baselineMsPerSequence else {
                // The first recorded step of a process warms up; the next ones set the baseline.
                if rankViews[r].judgedSlowdownSteps > 0 { rankViews[r].startMsPerSequence.append(perSequence) }
                rankViews[r].judgedSlowdownSteps += 1
                if rankViews[r].startMsPerSequence.count == Self.slowdownBaselineSteps {
                    let sorted = rankViews[r].startMsPerSequence.sorted()
                    rankViews[r].baselineMsPerSequence = sorted[sorted.count / 2]
                }
                continue
            }
            guard baseline > 0 else { continue }
            let ratio = perSequence / baseline
            if ratio > configuration.slowdownFactor {
                rankViews[r].consecutiveSlowSteps += 1
                if rankViews[r].consecutiveSlowSteps >= needed, !rankViews[r].isSlow {
                    rankViews[r].isSlow = true
                    raise(.slowdown, rank: r, identity: rankViews[r].hello, step: record.step, now,
                          "\(SupervisorText.who(rankViews[r])): slowed down: \(SupervisorText.tenths(perSequence)) ms of compute per sequence "
                              + "for \(rankViews[r].consecutiveSlowSteps) steps in a row, \(SupervisorText.tenths(ratio))× its own "
                              + "\(SupervisorText.tenths(baseline)) ms at the start (slowdown_factor \(SupervisorText.seconds(configuration.slowdownFactor)))",
                          &out)
                }
            } else {
                rankViews[r].consecutiveSlowSteps = 0
                if rankViews[r].isSlow {
                    rankViews[r].isSlow = false
                    raise(.recovered, rank: r, identity: rankViews[r].hello, step: record.step, now,
                          "\(SupervisorText.who(rankViews[r])): back to speed at step \(record.step): "
                              + "\(SupervisorText.tenths(perSequence)) ms per sequence, \(SupervisorText.tenths(ratio))× its own at the start",
                          &out)
                }
            }
        }
    }

    private mutating func judgeStragglers(_ record: SupervisorStep, _ now: Double, _ out: inout [SupervisorDirective]) {
        var compute: [Int: Double] = [:]
        for row in record.ranks where row.share > 0 && row.computeMs.isFinite {
            compute[row.rank] = row.computeMs
        }
        let needed = Swift.max(1, configuration.stragglerSteps)
        // Sorted once; each rank's "others" are the sorted values less its own entry (O(n log n) in all).
        let sorted = compute.map { (value: $0.value, rank: $0.key) }.sorted { ($0.value, $0.rank) < ($1.value, $1.rank) }
        let others = sorted.count - 1
        guard others >= 1 else { return }
        for (index, entry) in sorted.enumerated().sorted(by: { $0.element.rank < $1.element.rank }) {
            let r = entry.rank, mine = entry.value
            guard rankViews.indices.contains(r), !rankViews[r].hasExited else { continue }
            /// The k-th smallest of the others: the sorted values with this rank's entry left out.
            func other(_ k: Int) -> Double { sorted[k < index ? k : k + 1].value }
            let median = others % 2 == 1 ? other(others / 2) : (other(others / 2 - 1) + other(others / 2)) / 2
            guard median > 0 else { continue }
            let ratio = mine / median
            if ratio > configuration.stragglerFactor {
                rankViews[r].consecutiveStragglerSteps += 1
                if rankViews[r].consecutiveStragglerSteps >= needed, !rankViews[r].isStraggler {
                    rankViews[r].isStraggler = true
                    raise(.straggler, rank: r, identity: rankViews[r].hello, step: record.step, now,
                          "\(SupervisorText.who(rankViews[r])): \(SupervisorText.tenths(mine)) ms of compute "
                              + "for \(rankViews[r].consecutiveStragglerSteps) steps in a row, \(SupervisorText.tenths(ratio))× "
                              + "the other ranks' median \(SupervisorText.tenths(median)) ms "
                              + "(straggler_factor \(SupervisorText.seconds(configuration.stragglerFactor))); it slows every step",
                          &out)
                }
            } else {
                rankViews[r].consecutiveStragglerSteps = 0
                if rankViews[r].isStraggler {
                    rankViews[r].isStraggler = false
                    raise(.recovered, rank: r, identity: rankViews[r].hello, step: record.step, now,
                          "\(SupervisorText.who(rankViews[r])): no longer a straggler at step \(record.step): "
                              + "\(SupervisorText.tenths(mine)) ms of compute, \(SupervisorText.tenths(ratio))× the other ranks' median",
                          &out)
                }
            }
        }
    }

    // MARK: - Helpers

    /// The rank of a heartbeat or step report if it is to be taken, else counts the drop.
    private mutating func acceptFrom(_ rank: Int) -> Int? {
        guard rankViews.indices.contains(rank) else { drop(DropReason.rankOutOfRange); return nil }
        guard rankViews[rank].hello != nil else { drop(DropReason.noHello); return nil }
        guard !rankViews[rank].hasExited else { drop(DropReason.rankExited); return nil }
        return rank
    }

    /// A sign of life from a rank that said hello: ends its silent episode, if one is open.
    private mutating func heard(_ r: Int, _ now: Double, _ out: inout [SupervisorDirective]) {
        rankViews[r].lastHeardAt = now
        guard let since = rankViews[r].silentSince else { return }
        rankViews[r].silentSince = nil
        raise(.recovered, rank: r, identity: rankViews[r].hello, step: rankViews[r].lastKnownStep, now,
              "\(SupervisorText.who(rankViews[r])): heard from again after \(SupervisorText.tenths(now - since)) s of silence",
              &out)
    }

    /// Whether this impostor (rank, host, pid) is new; remembers at most `historyLimit` of them.
    private mutating func firstSighting(_ hello: ControlHello) -> Bool {
        let key = ImpostorKey(rank: hello.rank, host: hello.host, pid: hello.pid)
        guard !impostorsSeen.contains(key) else { return false }
        if impostorsSeen.count < historyLimit { impostorsSeen.insert(key) }
        return true
    }

    private mutating func drop(_ reason: String) {
        let key = drops[reason] != nil || drops.count < Self.dropReasonLimit ? reason : DropReason.other
        drops[key, default: 0] += 1
    }

    private mutating func raise(_ kind: SupervisorAlert.Kind, rank: Int?, identity: ControlHello?, step: Int?, _ now: Double,
                                _ message: String, _ out: inout [SupervisorDirective], suspects: [Int]? = nil) {
        var alert = SupervisorAlert(kind: kind, rank: rank, chip: identity.map { SupervisorText.oneLine($0.chip) },
                                    adapter: identity.map { SupervisorText.oneLine($0.adapter) },
                                    host: identity.map { SupervisorText.oneLine($0.host) }, step: step, at: now,
                                    message: SupervisorText.oneLine(message, limit: 1000))
        alert.suspects = suspects
        if alert.isFatal, firstFatal == nil { firstFatal = alert }
        totalAlerts += 1
        alertHistory.append(alert)
        if alertHistory.count > historyLimit { alertHistory.removeFirst(alertHistory.count - historyLimit) }
        out.append(.alert(alert))
    }
}
