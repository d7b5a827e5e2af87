import MedleyCore

/// Checks on what a peer claims before this rank acts on it.
///
/// A peer's metadata (a header's payload size, a message's length, a gathered count) is
/// untrusted input: a corrupt or mismatched rank can claim anything. Nothing is allocated
/// or summed from a claim until it is checked against what the job can need, a bound the
/// caller derives from its own plan (the schedule's tensor sizes, the bucket layout, the
/// global batch), never a generous constant.
public enum PeerLimits {
    /// Throws a one-line `.corruption` error naming `peer` unless `0 <= claimed <= allowed`.
    ///
    /// `what` names the quantity and its unit as a plural noun phrase ("payload bytes",
    /// "samples"); `context`, when given, starts the message ("step 3").
    public static func check(
        _ claimed: Int, allowed: Int, peer: Int, what: String, context: String? = nil
    ) throws {
        if claimed >= 0 && claimed <= allowed { return }
        let start = context.map { "\($0): " } ?? ""
        throw MedleyError(
            .corruption,
            "\(start)rank \(peer) claims \(claimed) \(what), but this job can need at most \(allowed); the peer's metadata is corrupt or the ranks run different plans")
    }

    /// The sum of every rank's sample count for one step, each count checked first.
    ///
    /// `counts[r]` is what rank `r` announced. Each must be at most `limit`, the most samples
    /// one step of the job can have over all ranks (its global batch), and so must their sum,
    /// which is added with overflow checks: a corrupt count is an error naming its rank,
    /// never a trap. Every rank runs this on the same gathered counts, so all throw alike.
    public static func checkedSampleTotal(_ counts: [UInt64], limit: Int, step: UInt64) throws -> UInt64 {
        let cap = UInt64(max(0, limit))
        var total: UInt64 = 0
        for (rank, n) in counts.enumerated() {
            guard n <= cap else {
                throw MedleyError(
                    .corruption,
                    "step \(step): rank \(rank) claims \(n) samples, but a step of this job has at most \(cap) (its global batch); the rank's sample count is corrupt")
            }
            let (sum, overflow) = total.addingReportingOverflow(n)
            guard !overflow, sum <= cap else {
                throw MedleyError(
                    .corruption,
                    "step \(step): the sample counts of ranks 0...\(rank) add up to more than the \(cap) a step of this job has (its global batch); rank \(rank) claims \(n), a sample count is corrupt")
            }
            total = sum
        }
        return total
    }
}
