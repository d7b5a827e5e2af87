import MedleyCore

/// Shares fixed by hand for some or all steps, instead of (or on top of) measured ones.
///
/// Each entry reads `[STEP:]a,b,c`: from step `STEP` (1-based; 1 when left out) on, rank `i`
/// gets `a`, `b`, `c`, … sequences of every global batch, until a later entry takes over.
/// Pinned shares are used as given: throughput is still measured and recorded, but nothing
/// re-divides the batch while an entry is in force. Tests use this to put a rank at 0 for
/// some steps; benchmarks use it to give every configuration the same per-chip work.
public struct SharesSchedule: Sendable, Equatable {
    /// The entries, sorted by first step.
    public private(set) var entries: [(step: Int, shares: [Int])]

    /// No pinned shares.
    public init() { entries = [] }

    /// `shares` pinned from step 1 on.
    public init(pinning shares: [Int]) { entries = [(1, shares)] }

    /// This schedule, with `shares` pinned before its first entry (a job's `train.shares`
    /// under `--shares` entries, which take over from their step); itself when `shares` is nil.
    public func starting(with shares: [Int]?) -> SharesSchedule {
        guard let shares, !pinsFirstStep else { return self }
        var combined = self
        combined.entries.insert((1, shares), at: 0)
        return combined
    }

    /// Reads `[STEP:]a,b,c` texts (see the type's documentation).
    ///
    /// Throws `invalidArgument` with one line naming the bad entry.
    public init(parsing texts: [String]) throws {
        var entries: [(step: Int, shares: [Int])] = []
        for text in texts {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else {
                throw MedleyError(.invalidArgument, "--shares '\(text)': expected [STEP:]a,b,c (e.g. 4,2,1 or 10:7,0,0)")
            }
            var step = 1
            if parts.count == 2 {
                guard let s = Int(parts[0].trimmingCharacters(in: .whitespaces)), s >= 1 else {
                    throw MedleyError(.invalidArgument, "--shares '\(text)': the step before ':' must be a whole number from 1")
                }
                step = s
            }
            let values = parts.last!.split(separator: ",", omittingEmptySubsequences: false)
                .map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw MedleyError(
                    .invalidArgument, "--shares '\(text)': shares must be whole numbers of sequences, 0 or more, separated by commas")
            }
            if entries.contains(where: { $0.step == step }) {
                throw MedleyError(.invalidArgument, "--shares: two entries for step \(step); keep one")
            }
            entries.append((step, values.map { $0! }))
        }
        self.entries = entries.sorted { $0.step < $1.step }
    }

    /// Whether nothing is pinned.
    public var isEmpty: Bool { entries.isEmpty }

    /// Whether shares are pinned from the first step (so no warm-up measurement is needed to start).
    public var pinsFirstStep: Bool { entries.first?.step == 1 }

    /// The shares pinned at `step` (1-based), or nil when no entry has started yet.
    public func shares(atStep step: Int) -> [Int]? {
        entries.last(where: { $0.step <= step })?.shares
    }

    /// Whether an entry starts exactly at `step`.
    public func startsEntry(atStep step: Int) -> Bool { entries.contains { $0.step == step } }

    /// Checks every entry against the job: one share per rank, summing to the global batch, within caps.
    public func validate(ranks: Int, globalBatch: Int, caps: [Int]? = nil) throws {
        for entry in entries {
            let field = entry.step == 1 ? "--shares" : "--shares \(entry.step):"
            try JobSpec.checkShares(entry.shares, field: field, ranks: ranks, globalBatch: globalBatch)
            if let caps, let r = entry.shares.indices.first(where: { entry.shares[$0] > caps[$0] }) {
                throw MedleyError(
                    .outOfMemory,
                    "\(field): rank \(r) is given \(entry.shares[r]) sequences but its memory holds at most \(caps[r]); lower its share")
            }
        }
    }

    /// Checks that every entry starts within a job of `steps` steps (an entry past the end would
    /// never apply, which is surely not what was meant).
    public func validate(steps: Int) throws {
        if let late = entries.first(where: { $0.step > steps }) {
            throw MedleyError(
                .invalidArgument,
                "--shares \(late.step):…: step \(late.step) is past the job's last step (\(steps)), so it would never apply; pin a step from 1 to \(steps) or run more --steps")
        }
    }

    /// The schedule as `--shares` arguments.
    public var arguments: [String] {
        entries.flatMap { ["--shares", "\($0.step):" + $0.shares.map(String.init).joined(separator: ",")] }
    }

    public static func == (lhs: SharesSchedule, rhs: SharesSchedule) -> Bool {
        lhs.entries.count == rhs.entries.count
            && zip(lhs.entries, rhs.entries).allSatisfy { $0.step == $1.step && $0.shares == $1.shares }
    }
}
