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
/// - a spare (or any chip) that fails as the next attempt starts is evicted the same way;
/// - the restart comes after a backoff that doubles each time (`backoffSeconds`, capped at
///   `maxBackoffSeconds`); after `maxRestarts` restarts, or with fewer than `minChips` chips
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

        public init(maxRestarts: Int = 3, minChips: Int = 1, backoffSeconds: Double = 1, maxBackoffSeconds: Double = 30) {
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
    }

    public enum Directive: Sendable, Equatable {
        /// `chip` is out of the run, for `reason`.
        case evict(Chip, reason: String)
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
    }

    public let configuration: Configuration
    /// The chips of the current (or next) attempt, in rank order.
    public private(set) var chips: [Chip]
    /// Spares not used yet, in order.
    public private(set) var spares: [Chip]
    public private(set) var evictions: [Eviction] = []
    public private(set) var restarts = 0
    /// Set once the run is over.
    public private(set) var isOver = false

    public init(configuration: Configuration = Configuration(), primaries: Int, spares: Int) {
        self.configuration = configuration
        chips = (0..<primaries).map { .primary($0) }
        self.spares = (0..<spares).map { .spare($0) }
    }

    public mutating func handle(_ event: Event) -> [Directive] {
        guard !isOver else { return [] }
        switch event {
        case .finished, .stopped:
            isOver = true
            return [.finish]
        case let .failed(faults, reason, at):
            var out: [Directive] = []
            let fatal = faults.filter { $0.kind != .straggler && $0.kind != .recovered && chips.indices.contains($0.rank) }
            var byRank: [Int: RankFault] = [:]
            for fault in fatal where byRank[fault.rank] == nil { byRank[fault.rank] = fault }
            if byRank.isEmpty {
                return restart(after: "the attempt failed (\(reason))", at: at, into: &out)
            }
            // Highest rank first, so removing one does not move the ranks still to handle.
            for rank in byRank.keys.sorted(by: >) {
                evict(rank: rank, reason: byRank[rank]!.message, at: at, into: &out)
            }
            return restart(after: "\(byRank.count) chip\(byRank.count == 1 ? "" : "s") failed", at: at, into: &out)
        case let .failedAtStart(rank, message, at):
            var out: [Directive] = []
            guard chips.indices.contains(rank) else {
                return restart(after: "the attempt could not start (\(message))", at: at, into: &out)
            }
            evict(rank: rank, reason: "could not start: \(message)", at: at, into: &out)
            return restart(after: "a chip could not start", at: at, into: &out)
        }
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
        let delay = min(configuration.maxBackoffSeconds, configuration.backoffSeconds * Double(1 << min(restarts, 30)))
        restarts += 1
        out.append(.restart(chips: chips, number: restarts, afterSeconds: delay))
        return out
    }
}
