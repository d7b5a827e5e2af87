import Foundation
import MedleyControl
import MedleySupervisor

/// What the status page's JSON endpoint (`/status.json`) returns, and what `/metrics` is made
/// from: the job's progress, a row per rank, the last recorded steps and the last alerts.
///
/// Numbers the supervisor does not know yet are absent in JSON and NaN in `/metrics`.
public struct StatusSnapshot: Codable, Sendable, Equatable {
    /// One rank as the supervisor sees it.
    public struct Rank: Codable, Sendable, Equatable {
        public var rank: Int
        public var adapter: String?
        public var vendor: String?
        public var chip: String?
        public var host: String?
        public var pid: Int32?
        /// `waiting`, `ok`, `straggler`, `silent`, `stalled`, `fault`, `done`, `exit N`, `killed (N)`, `gone`.
        public var status: String
        /// Whether it has said hello and is neither silent, stalled nor ended.
        public var up: Bool
        /// Its share of the global batch, and its times, at its last step report.
        public var share: Int?
        public var stepMs: Double?
        public var computeMs: Double?
        public var idleMs: Double?
        public var exchangeMs: Double?
        /// idle ms ÷ step ms at its last step.
        public var idleFraction: Double?
        public var loss: Double?
        public var tokensPerSecond: Double?
        /// Device memory Medley holds on it (last heartbeat), and the device's memory (its hello).
        public var memoryUsedBytes: UInt64?
        public var memoryBytes: UInt64?
        public var heartbeatAgeSeconds: Double?
        public var secondsSinceProgress: Double?
        public var step: Int?
        public var faults: Int
    }

    /// One recorded step.
    public struct Step: Codable, Sendable, Equatable {
        public var step: Int
        public var loss: Double
        public var validationLoss: Double?
        public var tokensPerSecond: Double
        public var stepMs: Double
    }

    public var job: String
    public var totalSteps: Int
    /// The last recorded step (0 before the first).
    public var step: Int
    public var elapsedSeconds: Double
    public var etaSeconds: Double?
    public var loss: Double?
    public var validationLoss: Double?
    public var tokensPerSecond: Double?
    /// Restarts of the job (issue 18's recovery will count them; 0 until then).
    public var restarts: Int
    public var alertCount: Int
    /// Control frames dropped, by reason.
    public var droppedFrames: [String: Int]
    public var ranks: [Rank]
    /// The last `stepLimit` recorded steps, oldest first.
    public var steps: [Step]
    /// The last `alertLimit` alerts, oldest first.
    public var alerts: [SupervisorAlert]

    public static let stepLimit = 200
    public static let alertLimit = 50

    /// The snapshot of what `supervisor` knows at `now` (its clock), `elapsed` seconds into `job`.
    public init(supervisor: Supervisor, job: String, totalSteps: Int, at now: Double, elapsed: Double? = nil, restarts: Int = 0) {
        self.job = job
        self.totalSteps = totalSteps
        let recorded = supervisor.steps
        step = recorded.last?.step ?? 0
        elapsedSeconds = elapsed ?? max(0, now - supervisor.startedAt)
        etaSeconds = LaunchDisplay.eta(steps: recorded, totalSteps: totalSteps)
        loss = recorded.last?.loss
        validationLoss = recorded.last(where: { $0.validationLoss != nil })?.validationLoss
        tokensPerSecond = recorded.last?.tokensPerSecond
        self.restarts = restarts
        alertCount = supervisor.alertCount
        droppedFrames = supervisor.droppedFrames
        ranks = supervisor.ranks.map { view in
            let report = view.lastStepReport
            let beat = view.lastHeartbeat
            let status = LaunchDisplay.status(view)
            var stalled = beat?.secondsSinceProgress
            if let since = stalled, let at = view.lastHeartbeatAt { stalled = since + max(0, now - at) }
            return Rank(
                rank: view.rank, adapter: view.hello?.adapter, vendor: view.hello?.vendor, chip: view.hello?.chip,
                host: view.hello?.host, pid: view.hello?.pid, status: status,
                up: view.hello != nil && ["ok", "straggler"].contains(status),
                share: report?.share, stepMs: report?.stepMs, computeMs: report?.computeMs, idleMs: report?.idleMs,
                exchangeMs: report?.exchangeMs,
                idleFraction: report.flatMap { $0.stepMs > 0 ? $0.idleMs / $0.stepMs : nil },
                loss: report?.loss ?? beat?.loss, tokensPerSecond: report?.tokensPerSecond ?? beat?.tokensPerSecond,
                memoryUsedBytes: beat?.deviceMemoryUsedBytes, memoryBytes: view.hello?.memoryBytes,
                heartbeatAgeSeconds: supervisor.heartbeatAge(rank: view.rank, at: now), secondsSinceProgress: stalled,
                step: view.lastKnownStep, faults: view.faultCount)
        }
        steps = recorded.suffix(Self.stepLimit).map {
            Step(step: $0.step, loss: $0.loss, validationLoss: $0.validationLoss, tokensPerSecond: $0.tokensPerSecond, stepMs: $0.stepMs)
        }
        alerts = Array(supervisor.alerts.suffix(Self.alertLimit))
    }

    /// The snapshot as JSON (sorted keys; NaN and infinities, which JSON lacks, as the strings "NaN", "Infinity", "-Infinity").
    public func jsonData() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return (try? encoder.encode(self)) ?? Data("{}".utf8)
    }
}
