import CMPI
import MedleyCore

extension Communicator {
    /// Tag of the arrival notices of ``awaitEveryRank(step:timeoutSeconds:pollSeconds:)``.
    public static let arrivalTag = 1_201

    /// The ranks that had not arrived when ``awaitEveryRank(step:timeoutSeconds:pollSeconds:)``
    /// ran out of time: the caller names them (a hung chip is a rank, not a timeout).
    public struct ArrivalTimeout: Error, CustomStringConvertible, Sendable {
        /// Ranks of this communicator that never arrived, in order.
        public var missing: [Int]
        /// How long this rank waited.
        public var seconds: Double
        public var description: String {
            "rank\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) did not arrive within \(Self.format(seconds)) s"
        }
        static func format(_ seconds: Double) -> String { Communicator.format(seconds) }
    }

    /// A barrier that knows whom it waits for: this rank tells every other rank that it reached
    /// `step` and waits, sleeping between polls (as ``barrier(timeoutSeconds:pollSeconds:what:)``
    /// does), until every other rank has said the same. Returns the seconds waited.
    ///
    /// When `timeoutSeconds` pass first it throws ``ArrivalTimeout`` listing the ranks still
    /// missing, so the message can name the hung chip instead of the waiting one. A rank that
    /// reports another step is out of step with this one: a corruption error naming it.
    /// (After a timeout the notices still posted are left to MPI_Abort: their buffers are not
    /// freed, since MPI may still write into them.)
    public func awaitEveryRank(step: Int64, timeoutSeconds: Double, pollSeconds: Double = 50e-6) throws -> Double {
        guard timeoutSeconds > 0 else {
            throw MedleyError(.invalidArgument, "awaitEveryRank: the timeout must be above 0 s, got \(timeoutSeconds)")
        }
        let start = MPI_Wtime()
        guard size > 1 else { return 0 }
        let notice = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        notice.initialize(to: step)
        let heard = UnsafeMutablePointer<Int64>.allocate(capacity: size)
        heard.initialize(repeating: -1, count: size)
        var sends: [MPI_Request?] = Array(repeating: nil, count: size)
        var receives: [MPI_Request?] = Array(repeating: nil, count: size)
        var pending = Set((0..<size).filter { $0 != rank })
        for peer in pending {
            try mpiCheck(
                MPI_Irecv(heard + peer, 1, CMPI_int64(), Int32(peer), Int32(Self.arrivalTag), handle, &receives[peer]),
                "MPI_Irecv (arrival) from rank \(peer)")
            try mpiCheck(
                MPI_Isend(notice, 1, CMPI_int64(), Int32(peer), Int32(Self.arrivalTag), handle, &sends[peer]),
                "MPI_Isend (arrival) to rank \(peer)")
        }
        var polls = 0
        while !pending.isEmpty {
            WorkProgress.mark()
            for peer in pending.sorted() {
                var done: Int32 = 0
                try mpiCheck(MPI_Test(&receives[peer], &done, CMPI_status_ignore()), "MPI_Test (arrival)")
                if done != 0 { pending.remove(peer) }
            }
            if pending.isEmpty { break }
            let waited = MPI_Wtime() - start
            if waited > timeoutSeconds { throw ArrivalTimeout(missing: pending.sorted(), seconds: waited) }
            polls += 1
            Self.pause(afterPolls: polls, pollSeconds: pollSeconds)
        }
        // Every peer has arrived, so every peer has posted its receive: the sends finish.
        for peer in 0..<size where peer != rank {
            try mpiCheck(MPI_Wait(&sends[peer], CMPI_status_ignore()), "MPI_Wait (arrival)")
        }
        let odd = (0..<size).first { $0 != rank && heard[$0] != step }
        let oddStep = odd.map { heard[$0] }
        notice.deallocate()
        heard.deallocate()
        if let odd, let oddStep {
            throw MedleyError(
                .corruption, "rank \(odd) arrived at step \(oddStep) while rank \(rank) is at step \(step); the ranks are out of step")
        }
        return MPI_Wtime() - start
    }
}
