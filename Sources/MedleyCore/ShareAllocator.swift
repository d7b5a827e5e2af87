/// Divides a global batch among ranks in proportion to how fast each one computes.
///
/// Shares are whole samples (sequences), at least 0 each, and sum exactly to the global
/// batch. The ideal share of rank `i` is `B · t_i / Σt`; each rank gets the floor of its
/// ideal, and the samples left over go one at a time to the rank that would finish soonest
/// with one more (`(n_i + 1) / t_i`), ties going to the lower rank so every rank computes the
/// same shares. This minimises the predicted step time `max_i n_i / t_i` over all whole-sample
/// divisions (largest-remainder rounding does not: it can leave a slow rank one sample too many).
///
/// A rank may have a cap: the most samples it can hold in memory. A rank whose ideal share
/// reaches its cap gets the cap, and the rest of the batch is divided again among the
/// ranks with room (water filling), until no ideal share passes a cap.
public enum ShareAllocator {
    /// Shares of `globalBatch` proportional to `throughputs` (any unit, e.g. tokens per second).
    ///
    /// - Parameters:
    ///   - globalBatch: samples to divide, at least 0.
    ///   - throughputs: one measured rate per rank; each must be finite and greater than 0.
    ///   - caps: per rank, the most samples it can hold, or `nil` for no limit; empty means no caps.
    ///   - labels: per rank, a short name for messages (e.g. the adapter); empty for none.
    /// - Throws: `invalidArgument` for no ranks, a bad throughput, a negative batch or cap, or
    ///   mismatched list lengths; `outOfMemory` when the caps sum below the batch.
    public static func shares(
        globalBatch: Int, throughputs: [Double], caps: [Int?] = [], labels: [String] = []
    ) throws -> [Int] {
        let ranks = throughputs.count
        guard ranks > 0 else {
            throw MedleyError(.invalidArgument, "cannot divide a global batch among zero ranks")
        }
        guard globalBatch >= 0 else {
            throw MedleyError(.invalidArgument, "global batch must be at least 0, got \(globalBatch)")
        }
        guard caps.isEmpty || caps.count == ranks else {
            throw MedleyError(.invalidArgument, "\(caps.count) caps for \(ranks) ranks")
        }
        guard labels.isEmpty || labels.count == ranks else {
            throw MedleyError(.invalidArgument, "\(labels.count) labels for \(ranks) ranks")
        }
        func name(_ rank: Int) -> String { labels.isEmpty ? "rank \(rank)" : "rank \(rank) \(labels[rank])" }
        for (rank, rate) in throughputs.enumerated() where !(rate.isFinite && rate > 0) {
            throw MedleyError(
                .invalidArgument,
                "\(name(rank)) has throughput \(rate); a measured throughput must be a finite number greater than 0"
            )
        }
        let limits = caps.isEmpty ? Array(repeating: nil, count: ranks) : caps
        for (rank, cap) in limits.enumerated() {
            if let cap, cap < 0 {
                throw MedleyError(.invalidArgument, "\(name(rank)) has a negative cap (\(cap)); a cap is a number of samples")
            }
        }
        if limits.allSatisfy({ $0 != nil }) {
            let room = limits.reduce(0) { $0 + $1! }
            if room < globalBatch {
                let each = (0..<ranks).map { "\(name($0)): \(limits[$0]!)" }.joined(separator: ", ")
                throw MedleyError(
                    .outOfMemory,
                    "global batch \(globalBatch) does not fit: ranks can hold at most \(room) samples (\(each)); lower model.batch or add devices"
                )
            }
        }

        var shares = Array(repeating: 0, count: ranks)
        var open = Set(0..<ranks)
        var remaining = globalBatch
        // Water filling: fix every rank whose ideal share reaches its cap, then divide again.
        while true {
            let total = open.reduce(0.0) { $0 + throughputs[$1] }
            let capped = open.filter { rank in
                guard let cap = limits[rank] else { return false }
                return Double(remaining) * throughputs[rank] / total >= Double(cap)
            }
            if capped.isEmpty { break }
            for rank in capped {
                shares[rank] = limits[rank]!
                remaining -= limits[rank]!
                open.remove(rank)
            }
            if open.isEmpty { break }
        }
        guard !open.isEmpty || remaining == 0 else {
            throw MedleyError(.internalError, "share allocation left \(remaining) samples with every rank full")
        }
        if open.isEmpty { return shares }

        // Each rank starts at the floor of its ideal share; the samples left over go one at a
        // time to the rank that would finish its share soonest with one more, `(n + 1) / t`
        // (ties to the lower rank). That gives every rank the same B smallest "finish times"
        // j / t_r a sample-by-sample greedy would, so the predicted step time (the slowest
        // rank's) is the least any whole-sample division can reach; rounding the ideal shares
        // by largest remainder can leave a slow rank one sample too many.
        let members = open.sorted()
        let total = members.reduce(0.0) { $0 + throughputs[$1] }
        var given = 0
        for rank in members {
            let ideal = Double(remaining) * throughputs[rank] / total
            var whole = Int(ideal.rounded(.down))
            if let cap = limits[rank] { whole = min(whole, cap) }
            shares[rank] = whole
            given += whole
        }
        // Floating-point sums can put the floors a sample over `remaining`; take back from the
        // rank that finishes last.
        while given > remaining {
            let rank = members.filter { shares[$0] > 0 }.max {
                Double(shares[$0]) / throughputs[$0] < Double(shares[$1]) / throughputs[$1]
            }!
            shares[rank] -= 1
            given -= 1
        }
        while given < remaining {
            var best: Int?
            var bestTime = Double.infinity
            for rank in members where limits[rank].map({ shares[rank] < $0 }) ?? true {
                let time = Double(shares[rank] + 1) / throughputs[rank]
                if time < bestTime {
                    best = rank
                    bestTime = time
                }
            }
            guard let best else {
                throw MedleyError(.internalError, "share allocation left \(remaining - given) samples with every rank full")
            }
            shares[best] += 1
            given += 1
        }
        return shares
    }

    /// The predicted time of a step under `shares`: ranks compute in parallel, so the step lasts
    /// as long as the slowest one, `max_i shares_i / throughputs_i` (in the throughputs' time unit).
    public static func predictedStepTime(shares: [Int], throughputs: [Double]) -> Double {
        precondition(shares.count == throughputs.count, "\(shares.count) shares for \(throughputs.count) throughputs")
        return zip(shares, throughputs).reduce(0.0) { slowest, pair in
            pair.0 == 0 ? slowest : max(slowest, Double(pair.0) / pair.1)
        }
    }
}
