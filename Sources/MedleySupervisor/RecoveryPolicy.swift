/// What happens after a run of the job (an *attempt*: one `mpirun`) ends: which chips are
/// evicted, which spares take their places, whether the job shrinks, when it restarts from its
/// newest checkpoint and when it gives up.
///
/// A pure state machine in the style of ``Supervisor``: events in, directives out, time given
/// with each event. The shell (the launcher) carries the directives out: it re-plans for the
/// chips of a `restart`, waits `afterSeconds`, and starts the next attempt with `--resume`.
///
/// Rules:
/// - an attempt that `finished`, or `stopped` on request: `.finish`;
/// - an attempt that failed: every rank named by a fatal fault (exited, fault, silent: a hang)
///   is evicted for the rest of the run, with its reason; the first unused spare takes its
///   place (same rank), else the job shrinks by that chip. Stragglers are not evicted here: the
///   rebalancer gives them less work. A failure naming no rank (mpirun itself) restarts the
///   same chips;
/// - a chip that slowed down (a `slowdown` alert; the launcher ends the attempt for it only when
///   ``hasSpare(at:)``) is swapped for a spare and stays out for `stragglerCooldownSeconds`, after
///   which it is a spare again (`.rejoin`); with no spare, or a cooldown of 0, it stays (the
///   rebalancer copes);
/// - a loss or gradient that is not finite, which every rank saw alike (`nonFinite`), rolls back on
///   the same chips; when the attempt after that roll-back ends the same way on the same chip,
///   that chip is evicted (a data-borne NaN is `recovery.on_nan: skip_batch`'s business);
/// - a spare (or any chip) that fails as the next attempt starts is evicted the same way;
/// - the restart comes after a backoff that doubles each time (`backoffSeconds`, capped at
///   `maxBackoffSeconds`), starting over when the failed attempt trained new steps (`progressed`)
///   or `backoffResetSeconds` or more passed since the previous restart: a crash loop is
///   restarts that fail before they train; after `maxRestarts` restarts, or with fewer than `minChips` chips
///   left, `.giveUp` with one line saying why.
public struct RecoveryPolicy: Sendable {
    public struct Configuration: Sendable, Equatable {
        /// Restarts allowed in the whole run.
        public var maxRestarts: Int
        /// The job ends rather than run on fewer chips than this.
        public var minChips: Int
        /// The first restart's delay; each later one doubles it.
        public var backoffSeconds: Double
        /// The longest delay.
        public var maxBackoffSeconds: Double
        /// How long a chip swapped out for slowing down stays out; 0: it is never swapped out.
        public var stragglerCooldownSeconds: Double
        /// An attempt that ran this long before it failed starts the backoff over from
        /// `backoffSeconds` (faults hours apart are not a crash loop).
        public var backoffResetSeconds: Double

        public init(maxRestarts: Int = 3, minChips: Int = 1, backoffSeconds: Double = 1, maxBackoffSeconds: Double = 30,
                    stragglerCooldownSeconds: Double = 300, backoffResetSeconds: Double = 60) {
            self.stragglerCooldownSeconds = stragglerCooldownSeconds
            self.backoffResetSeconds = backoffResetSeconds
            self.maxRestarts = maxRestarts
            self.minChips = minChips
            self.backoffSeconds = backoffSeconds
            self.maxBackoffSeconds = maxBackoffSeconds
        }
    }

    /// A chip of the job: the spec's device of rank N, or its spare N.
    public enum Chip: Hashable, Sendable, CustomStringConvertible {
        case primary(Int)
        case spare(Int)

        public var description: String {
            switch self {
            case .primary(let n): "device \(n)"
            case .spare(let n): "spare \(n)"
            }
        }
    }

    /// A rank's fatal fault in the attempt that ended.
    public struct RankFault: Sendable, Equatable {
        public var rank: Int
        public var kind: SupervisorAlert.Kind
        public var message: String

        public init(rank: Int, kind: SupervisorAlert.Kind, message: String) {
            self.rank = rank
            self.kind = kind
            self.message = message
        }
    }

    public enum Event: Sendable, Equatable {
        /// The attempt ran to its last step.
        case finished(at: Double)
        /// The attempt stopped because it was asked to (Ctrl-C, SIGTERM): not a fault.
        case stopped(at: Double)
        /// The attempt failed; `faults` are its fatal alerts (may be empty: mpirun itself failed).
        case failed(faults: [RankFault], reason: String, at: Double)
        /// The next attempt could not start because of this rank's chip (its adapter or device).
        case failedAtStart(rank: Int, message: String, at: Double)
        /// The attempt stopped at a loss or gradient that is not finite, which every rank saw
        /// alike; `rank` computed it (nil: only the averaged gradient was).
        case nonFinite(rank: Int?, message: String, at: Double)
        /// The attempt trained new steps before it ended (sent before its `failed`): it was no
        /// crash loop, so the next restart's backoff starts over.
        case progressed(at: Double)
    }

    public enum Directive: Sendable, Equatable {
        /// `chip` is out of the run (or, when it slowed down, for its cooldown), for `reason`.
        case evict(Chip, reason: String)
        /// `chip`'s cooldown is over: it is a spare again.
        case rejoin(Chip)
        /// `spare` takes `evicted`'s place (same rank).
        case replace(evicted: Chip, with: Chip)
        /// No spare was left: the job goes on without `chip`.
        case shrink(removed: Chip)
        /// Start attempt `number` on `chips` (rank order) from the newest checkpoint, after `afterSeconds`.
        case restart(chips: [Chip], number: Int, afterSeconds: Double)
        /// The run ends here; one line why.
        case giveUp(reason: String)
        /// The run is over (finished or stopped).
        case finish
    }

    /// An eviction, kept for the summary.
    public struct Eviction: Sendable, Equatable {
        public var chip: Chip
        public var reason: String
        public var at: Double
        /// When a chip swapped out for slowing down may come back; nil: never.
        public var until: Double?
    }

    public let configuration: Configuration
    /// The chips of the current (or next) attempt, in rank order.
    public private(set) var chips: [Chip]
    /// Spares not used yet, in order.
    public private(set) var spares: [Chip]
    public private(set) var evictions: [Eviction] = []
    /// Chips out for a cooldown, with when it ends.
    public private(set) var cooling: [(chip: Chip, until: Double)] = []
    public private(set) var restarts = 0
    /// Set once the run is over.
    public private(set) var isOver = false
    /// The chip whose non-finite loss ended the last attempt, if that is how it ended.
    private var lastNonFinite: Chip?
    /// When the last restart was decided, and how many came in a row without a long attempt
    /// between them (the backoff's exponent).
    private var lastRestartAt: Double?
    private var restartsInARow = 0

    public init(configuration: Configuration = Configuration(), primaries: Int, spares: Int) {
        self.configuration = configuration
        chips = (0..<primaries).map { .primary($0) }
        self.spares = (0..<spares).map { .spare($0) }
    }

    public mutating func handle(_ event: Event) -> [Directive] {
        guard !isOver else { return [] }
        if case .progressed = event {
            restartsInARow = 0
            return []
        }
        let repeated = lastNonFinite
        lastNonFinite = nil
        switch event {
        case .progressed:
            return []
        case let .nonFinite(rank, message, at):
            var out: [Directive] = []
            rejoinCooled(at: at, into: &out)
            guard let rank, chips.indices.contains(rank) else {
                return restart(after: "a step was not finite (\(message)); rolling back", at: at, into: &out)
            }
            // Once may be the batch or a passing glitch: roll back on the same chips. The same
            // chip again right after the roll-back is the chip.
            if repeated == chips[rank] {
                evict(rank: rank, reason: "\(message), again after a roll-back to the checkpoint", at: at, into: &out)
                return restart(after: "a chip computed non-finite numbers twice", at: at, into: &out)
            }
            lastNonFinite = chips[rank]
            return restart(after: "a step was not finite (\(message)); rolling back", at: at, into: &out)
        case .finished, .stopped:
            isOver = true
            return [.finish]
        case let .failed(faults, reason, at):
            var out: [Directive] = []
            rejoinCooled(at: at, into: &out)
            let judged = faults.filter { chips.indices.contains($0.rank) }
            let fatal = judged.filter { ![.straggler, .recovered, .slowdown].contains($0.kind) }
            var byRank: [Int: RankFault] = [:]
            for fault in fatal where byRank[fault.rank] == nil { byRank[fault.rank] = fault }
            var slowed: [Int: RankFault] = [:]
            for fault in judged where fault.kind == .slowdown && byRank[fault.rank] == nil && slowed[fault.rank] == nil {
                slowed[fault.rank] = fault
            }
            // Highest rank first, so removing one does not move the ranks still to handle (a
            // slowed chip is only ever replaced, never removed).
            var swapped = 0
            // Spares go to failed chips first; a slowed chip takes one only if some are left.
            var forSlowed = max(0, spares.count - byRank.count)
            for rank in Set(byRank.keys).union(slowed.keys).sorted(by: >) {
                if let fault = byRank[rank] {
                    evict(rank: rank, reason: fault.message, at: at, into: &out)
                } else if let fault = slowed[rank], configuration.stragglerCooldownSeconds > 0, forSlowed > 0, !spares.isEmpty {
                    forSlowed -= 1
                    let chip = chips[rank], until = at + configuration.stragglerCooldownSeconds
                    let reason = "\(fault.message); out for its cooldown of \(Self.seconds(configuration.stragglerCooldownSeconds)) s"
                    evictions.append(Eviction(chip: chip, reason: reason, at: at, until: until))
                    cooling.append((chip, until))
                    out.append(.evict(chip, reason: reason))
                    let spare = spares.removeFirst()
                    chips[rank] = spare
                    out.append(.replace(evicted: chip, with: spare))
                    swapped += 1
                }
            }
            let failed = byRank.count + swapped
            if failed == 0 {
                return restart(after: "the attempt failed (\(reason))", at: at, into: &out)
            }
            return restart(after: "\(failed) chip\(failed == 1 ? "" : "s") failed", at: at, into: &out)
        case let .failedAtStart(rank, message, at):
            var out: [Directive] = []
            rejoinCooled(at: at, into: &out)
            guard chips.indices.contains(rank) else {
                return restart(after: "the attempt could not start (\(message))", at: at, into: &out)
            }
            evict(rank: rank, reason: "could not start: \(message)", at: at, into: &out)
            return restart(after: "a chip could not start", at: at, into: &out)
        }
    }

    /// Whether a spare could take a chip's place at `at` (one unused, or one whose cooldown is over).
    public func hasSpare(at: Double) -> Bool {
        !isOver && (!spares.isEmpty || cooling.contains { $0.until <= at })
    }

    /// Chips whose cooldown ended by `at` become spares again, after the unused ones.
    private mutating func rejoinCooled(at: Double, into out: inout [Directive]) {
        let back = cooling.filter { $0.until <= at }
        cooling.removeAll { $0.until <= at }
        for entry in back {
            spares.append(entry.chip)
            out.append(.rejoin(entry.chip))
        }
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }

    private mutating func evict(rank: Int, reason: String, at: Double, into out: inout [Directive]) {
        let chip = chips[rank]
        evictions.append(Eviction(chip: chip, reason: reason, at: at))
        out.append(.evict(chip, reason: reason))
        if !spares.isEmpty {
            let spare = spares.removeFirst()
            chips[rank] = spare
            out.append(.replace(evicted: chip, with: spare))
        } else {
            chips.remove(at: rank)
            out.append(.shrink(removed: chip))
        }
    }

    private mutating func restart(after what: String, at: Double, into out: inout [Directive]) -> [Directive] {
        if chips.count < max(1, configuration.minChips) {
            isOver = true
            out.append(.giveUp(reason: "\(what) and only \(chips.count) chip\(chips.count == 1 ? " is" : "s are") left, fewer than min_chips \(configuration.minChips); add spares or lower min_chips"))
            return out
        }
        if restarts >= configuration.maxRestarts {
            isOver = true
            out.append(.giveUp(reason: "\(what) after \(restarts) restart\(restarts == 1 ? "" : "s"), the most max_restarts \(configuration.maxRestarts) allows; the newest checkpoint is kept for --resume"))
            return out
        }
        if let last = lastRestartAt, at - last >= configuration.backoffResetSeconds { restartsInARow = 0 }
        let delay = min(configuration.maxBackoffSeconds, configuration.backoffSeconds * Double(1 << min(restartsInARow, 30)))
        restartsInARow += 1
        lastRestartAt = at
        restarts += 1
        out.append(.restart(chips: chips, number: restarts, afterSeconds: delay))
        return out
    }
}
