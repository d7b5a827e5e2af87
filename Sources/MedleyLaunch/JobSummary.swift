import Foundation
import MedleyCore
import MedleySupervisor

/// CPU time of this process (all its threads), user + system, seconds.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// What `medley launch` says at the end, and writes as `summary.json`: wall time, tokens/s,
/// the final losses, each rank's share and utilization, and the alerts seen.
public struct JobSummary: Codable, Sendable {
    public struct Rank: Codable, Sendable {
        public var rank: Int
        public var chip: String
        /// Its share of the global batch at the last step.
        public var share: Int
        /// Median over the recorded steps of compute ÷ step time.
        public var utilization: Double
    }

    public var status: Int32
    public var seconds: Double
    /// Seconds from the start of `medley launch` to the first recorded step.
    public var firstStepSeconds: Double?
    /// CPU time of the `medley launch` process (the supervisor, its control server and timers,
    /// the mpirun output filter; not the ranks) while the job ran, as a percentage of one core.
    public var supervisorCPUPercent: Double?
    public var steps: Int
    public var medianTokensPerSecond: Double?
    public var finalLoss: Double?
    public var finalValidationLoss: Double?
    public var ranks: [Rank]
    public var alerts: [SupervisorAlert]
    public var outcome: String?

    /// The summary of what `supervisor` saw of a job that ended with `status` after `seconds`.
    public init(supervisor: Supervisor, status: Int32, seconds: Double, firstStepSeconds: Double? = nil,
                supervisorCPUSeconds: Double? = nil) {
        self.status = status
        self.seconds = seconds
        self.firstStepSeconds = firstStepSeconds
        supervisorCPUPercent = supervisorCPUSeconds.flatMap { seconds > 0 ? 100 * $0 / seconds : nil }
        let steps = supervisor.steps
        self.steps = steps.count
        let rates = steps.map(\.tokensPerSecond).filter(\.isFinite).sorted()
        medianTokensPerSecond = rates.isEmpty ? nil : rates[rates.count / 2]
        finalLoss = steps.last?.loss
        finalValidationLoss = steps.last(where: { $0.validationLoss != nil })?.validationLoss
        ranks = supervisor.ranks.enumerated().map { index, view in
            let utilizations = steps.compactMap { step -> Double? in
                guard let row = step.ranks.first(where: { $0.rank == index }), step.stepMs > 0 else { return nil }
                return min(1, row.computeMs / step.stepMs)
            }.sorted()
            let chip = view.hello.map { "\($0.adapter) \($0.chip) on \($0.host)" } ?? "(never said hello)"
            return Rank(
                rank: index, chip: chip, share: steps.last?.ranks.first(where: { $0.rank == index })?.share ?? 0,
                utilization: utilizations.isEmpty ? 0 : utilizations[utilizations.count / 2])
        }
        alerts = supervisor.alerts
        outcome = supervisor.outcome.map { "\($0)" }
    }

    /// The lines shown at the end of the job.
    public var lines: [String] {
        var out: [String] = []
        var head = String(format: "summary: %d steps in %.1f s", steps, seconds)
        if let medianTokensPerSecond { head += String(format: ", median %.0f tokens/s", medianTokensPerSecond) }
        if let finalLoss { head += String(format: ", final loss %.4f", finalLoss) }
        if let finalValidationLoss { head += String(format: ", validation %.4f", finalValidationLoss) }
        if let firstStepSeconds { head += String(format: "; first step %.1f s after launch", firstStepSeconds) }
        if let supervisorCPUPercent { head += String(format: "; supervisor CPU %.2f%% of one core", supervisorCPUPercent) }
        out.append(head)
        for rank in ranks {
            out.append(String(format: "  rank %d (%@): share %d, utilization %.0f%%", rank.rank, rank.chip, rank.share, rank.utilization * 100))
        }
        out.append(alerts.isEmpty ? "  no alerts" : "  \(alerts.count) alert\(alerts.count == 1 ? "" : "s") (alerts.jsonl)")
        return out
    }

    /// Writes `summary` to `path` atomically, pretty and with sorted keys.
    public static func write(_ summary: JobSummary, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        do {
            try (encoder.encode(summary) + Data("\n".utf8)).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw MedleyError(.io, "cannot write \(path): \(error.localizedDescription)")
        }
    }
}
