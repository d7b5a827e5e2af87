import CMPI
import Foundation
import MedleyCore

extension Communicator {
    /// Waits until every rank has called it, sleeping between polls, and gives up after a deadline.
    ///
    /// A blocking `MPI_Barrier` in Open MPI spins on a core while it waits. A rank that
    /// finishes its share of a step early would then steal the core a slower rank on the
    /// same host is computing on, and it could wait forever on a rank that hangs. This
    /// barrier posts `MPI_Ibarrier` and polls it with `MPI_Test`, sleeping `pollSeconds`
    /// between polls (the first few polls do not sleep, so a barrier everyone reaches at
    /// once costs what a plain one does).
    ///
    /// - Returns: seconds spent waiting.
    /// - Throws: `timeout` when the other ranks have not all arrived after `timeoutSeconds`
    ///   (`what` names the wait in the message); the pending barrier is then left behind,
    ///   so the caller should end the job. `communication` when MPI fails.
    @discardableResult
    public func barrier(timeoutSeconds: Double, pollSeconds: Double = 50e-6, what: String = "barrier") throws -> Double {
        guard timeoutSeconds > 0, pollSeconds >= 0 else {
            throw MedleyError(.invalidArgument, "barrier: timeout must be above 0 and poll interval at least 0")
        }
        let start = MPI_Wtime()
        var request: MPI_Request? = nil
        try mpiCheck(MPI_Ibarrier(handle, &request), "MPI_Ibarrier")
        return try Self.poll(
            timeoutSeconds: timeoutSeconds, pollSeconds: pollSeconds,
            timeout: "\(what): not every rank arrived within \(Self.format(timeoutSeconds)) s (this is rank \(rank) of \(size)); a rank is hung or far slower than the rest"
        ) {
            var done: Int32 = 0
            try mpiCheck(MPI_Test(&request, &done, CMPI_status_ignore()), "MPI_Test")
            return done != 0 ? MPI_Wtime() - start : nil
        }
    }

    /// Calls `check` until it returns a value and returns that value, pausing between calls
    /// (``pause(afterPolls:pollSeconds:)``); throws `timeout` with the message `timeout` when
    /// `timeoutSeconds` pass first. Every wait on another rank in MedleyComm goes through it.
    static func poll<T>(
        timeoutSeconds: Double, pollSeconds: Double = 50e-6, timeout: @autoclosure () -> String, _ check: () throws -> T?
    ) throws -> T {
        let start = MPI_Wtime()
        var polls = 0
        while true {
            // Waiting on other ranks is healthy: only a rank stuck inside one call stops progressing.
            WorkProgress.mark()
            if let value = try check() { return value }
            if MPI_Wtime() - start > timeoutSeconds { throw MedleyError(.timeout, timeout()) }
            polls += 1
            pause(afterPolls: polls, pollSeconds: pollSeconds)
        }
    }

    /// The wait between two polls of something another rank will do: nothing for the first
    /// 64 polls (so what arrives at once costs no sleep), then `pollSeconds`, growing gently
    /// but never above 1 ms, so waking costs little and a waiting rank leaves its core free.
    static func pause(afterPolls polls: Int, pollSeconds: Double = 50e-6) {
        guard polls > 64 && pollSeconds > 0 else { return }
        let interval = min(pollSeconds * Double(1 + polls / 1024), 1e-3)
        var wait = timespec(tv_sec: 0, tv_nsec: Int(interval * 1e9))
        var left = timespec()
        while nanosleep(&wait, &left) != 0 && errno == EINTR { wait = left }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.3g", seconds)
    }
}
