import Foundation
import MedleyCore
import MedleySupervisor
import NIOConcurrencyHelpers

/// Runs the spec's `alert_command` for each alert, one at a time, off the supervisor's path.
///
/// Each run is `/bin/sh -c COMMAND` with the alert as one line of JSON on its standard input
/// (the `alerts.jsonl` record) and `MEDLEY_ALERT_KIND`, `MEDLEY_ALERT_RANK` in its environment.
/// A run past `timeoutSeconds` is killed with its whole process group. Alerts wait in a queue
/// of at most `queueLimit`; past that they are dropped and counted, so a hook that hangs or an
/// alert storm never stalls the supervisor or grows its memory. What went wrong with a run
/// (a non-zero exit, a timeout, a command that cannot start) is told to `onProblem`, once per run.
public final class AlertHook: @unchecked Sendable {
    public let command: String
    public let timeoutSeconds: Double
    public let queueLimit: Int

    private let queue = DispatchQueue(label: "medley.alert-hook")
    private let state = NIOLockedValueBox(Counts())
    private let onProblem: @Sendable (String) -> Void

    /// How the runs went.
    public struct Counts: Sendable, Equatable {
        /// Alerts waiting or running now.
        public var inFlight = 0
        /// Runs that exited 0.
        public var succeeded = 0
        /// Runs that exited non-zero, timed out or could not start.
        public var failed = 0
        /// Alerts dropped because the queue was full.
        public var dropped = 0
    }

    public init(command: String, timeoutSeconds: Double, queueLimit: Int = 64,
                onProblem: @escaping @Sendable (String) -> Void) {
        self.command = command
        self.timeoutSeconds = timeoutSeconds
        self.queueLimit = max(1, queueLimit)
        self.onProblem = onProblem
    }

    public var counts: Counts { state.withLockedValue { $0 } }

    /// Queues a run for `alert`; returns at once.
    public func fire(_ alert: SupervisorAlert) {
        let taken = state.withLockedValue { counts -> Bool in
            guard counts.inFlight < queueLimit else {
                counts.dropped += 1
                return false
            }
            counts.inFlight += 1
            return true
        }
        guard taken else { return }
        let line = (try? JSONEncoder.sortedLine(alert)) ?? "{}"
        queue.async { [self] in
            let problem = run(line: line, alert: alert)
            state.withLockedValue { counts in
                counts.inFlight -= 1
                if problem == nil { counts.succeeded += 1 } else { counts.failed += 1 }
            }
            if let problem { onProblem(problem) }
        }
    }

    /// Waits until every queued run is done, or `seconds` have passed; true when all are done.
    @discardableResult
    public func drain(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while state.withLockedValue({ $0.inFlight }) > 0 {
            if Date() > deadline { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return true
    }

    /// One run; nil when it went well, else one line saying what went wrong.
    private func run(line: String, alert: SupervisorAlert) -> String? {
        let environment = ["MEDLEY_ALERT_KIND": alert.kind.rawValue, "MEDLEY_ALERT_RANK": alert.rank.map(String.init) ?? ""]
        do {
            let outcome = try ChildProcess.run(
                "/bin/sh", ["-c", command], environment: environment, timeoutSeconds: timeoutSeconds, mergeOutput: true,
                killGraceSeconds: 0.5, input: Data((line + "\n").utf8))
            if outcome.timedOut {
                return "alert_command ran past alert_timeout \(SupervisorTextShort.seconds(timeoutSeconds)) s and was killed; make it return sooner (queue the page in the background)"
            }
            if outcome.status != 0 {
                let said = outcome.output.split(whereSeparator: \.isNewline).last.map { ": \($0.prefix(200))" } ?? ""
                return "alert_command exited with status \(outcome.status)\(said)"
            }
            return nil
        } catch {
            return "alert_command cannot run: \(error)"
        }
    }
}

/// Seconds as the user wrote them ("10", "2.5").
enum SupervisorTextShort {
    static func seconds(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e9 ? "\(Int(value))" : String(format: "%.1f", value)
    }
}
