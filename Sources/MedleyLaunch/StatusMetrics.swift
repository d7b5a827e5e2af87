import Foundation
import Prometheus

/// `/metrics`: a ``StatusSnapshot`` in the Prometheus text format, made with swift-prometheus.
///
/// Every scrape builds a fresh registry from a fresh snapshot, so a rank whose identity changed
/// (a new process took it over) leaves no stale series behind. Per-rank series carry the labels
/// `rank`, `chip`, `adapter` and `host` (empty before the rank's hello) and exist for every rank
/// of the job from the start; a value not known yet is NaN.
public enum StatusMetrics {
    /// One metric: its name, type, unit suffix and help.
    public struct Metric: Sendable {
        public var name: String
        public var isCounter: Bool
        public var help: String
        /// Whether it has one series per rank.
        public var perRank: Bool
    }

    /// Every metric `/metrics` serves, in the order it serves them (docs/launch.md lists them).
    public static let all: [Metric] = [
        Metric(name: "medley_step", isCounter: false, help: "Last step every rank has reported.", perRank: false),
        Metric(name: "medley_steps_planned", isCounter: false, help: "Steps the job runs.", perRank: false),
        Metric(name: "medley_elapsed_seconds", isCounter: false, help: "Seconds since medley launch started the job.", perRank: false),
        Metric(name: "medley_eta_seconds", isCounter: false, help: "Seconds left at the pace of the last 20 steps (NaN before two steps).", perRank: false),
        Metric(name: "medley_loss", isCounter: false, help: "Training loss of the last recorded step.", perRank: false),
        Metric(name: "medley_validation_loss", isCounter: false, help: "Last validation loss.", perRank: false),
        Metric(name: "medley_tokens_per_second", isCounter: false, help: "Job tokens per second at the last recorded step.", perRank: false),
        Metric(name: "medley_restarts_total", isCounter: true, help: "Restarts of the job after a fault.", perRank: false),
        Metric(name: "medley_alerts_total", isCounter: true, help: "Alerts raised by the supervisor.", perRank: false),
        Metric(name: "medley_control_frames_dropped_total", isCounter: true, help: "Control frames dropped, by reason.", perRank: false),
        Metric(name: "medley_rank_up", isCounter: false, help: "1 while the rank is heard from and making progress, else 0.", perRank: true),
        Metric(name: "medley_rank_step_seconds", isCounter: false, help: "The rank's last step time.", perRank: true),
        Metric(name: "medley_rank_compute_seconds", isCounter: false, help: "The rank's compute time at its last step.", perRank: true),
        Metric(name: "medley_rank_exchange_seconds", isCounter: false, help: "The rank's gradient exchange time at its last step.", perRank: true),
        Metric(name: "medley_rank_idle_seconds", isCounter: false, help: "The rank's wait for the other ranks at its last step.", perRank: true),
        Metric(name: "medley_rank_tokens_per_second", isCounter: false, help: "Job tokens per second as the rank last reported.", perRank: true),
        Metric(name: "medley_rank_loss", isCounter: false, help: "Loss as the rank last reported.", perRank: true),
        Metric(name: "medley_rank_share", isCounter: false, help: "Sequences of the global batch the rank trained on at its last step.", perRank: true),
        Metric(name: "medley_rank_heartbeat_age_seconds", isCounter: false, help: "Seconds since the rank was last heard from.", perRank: true),
        Metric(name: "medley_rank_seconds_since_progress", isCounter: false, help: "Seconds since the rank last made progress, by its heartbeats.", perRank: true),
        Metric(name: "medley_rank_device_memory_used_bytes", isCounter: false, help: "Device memory Medley holds on the rank's chip.", perRank: true),
        Metric(name: "medley_rank_device_memory_bytes", isCounter: false, help: "The rank's device memory.", perRank: true),
        Metric(name: "medley_rank_faults_total", isCounter: true, help: "Faults the rank reported.", perRank: true),
    ]

    /// The Prometheus text of `snapshot`.
    public static func text(_ snapshot: StatusSnapshot) -> String {
        let registry = PrometheusCollectorRegistry()
        func descriptor(_ name: String) -> MetricNameDescriptor {
            let help = all.first { $0.name == name }?.help ?? name
            return MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        func gauge(_ name: String, _ value: Double?, _ labels: [(String, String)] = []) {
            registry.makeGauge(descriptor: descriptor(name), labels: labels).set(value ?? .nan)
        }
        func counter(_ name: String, _ value: Int, _ labels: [(String, String)] = []) {
            let c = registry.makeCounter(descriptor: descriptor(name), labels: labels)
            if value > 0 { c.increment(by: Int64(value)) }
        }
        gauge("medley_step", Double(snapshot.step))
        gauge("medley_steps_planned", Double(snapshot.totalSteps))
        gauge("medley_elapsed_seconds", snapshot.elapsedSeconds)
        gauge("medley_eta_seconds", snapshot.etaSeconds)
        gauge("medley_loss", snapshot.loss)
        gauge("medley_validation_loss", snapshot.validationLoss)
        gauge("medley_tokens_per_second", snapshot.tokensPerSecond)
        counter("medley_restarts_total", snapshot.restarts)
        counter("medley_alerts_total", snapshot.alertCount)
        if snapshot.droppedFrames.isEmpty {
            counter("medley_control_frames_dropped_total", 0, [("reason", "none")])
        }
        for (reason, count) in snapshot.droppedFrames.sorted(by: { $0.key < $1.key }) {
            counter("medley_control_frames_dropped_total", count, [("reason", reason)])
        }
        let ms = { (value: Double?) in value.map { $0 / 1000 } }
        for rank in snapshot.ranks {
            let labels = [("rank", "\(rank.rank)"), ("chip", rank.chip ?? ""), ("adapter", rank.adapter ?? ""), ("host", rank.host ?? "")]
            gauge("medley_rank_up", rank.up ? 1 : 0, labels)
            gauge("medley_rank_step_seconds", ms(rank.stepMs), labels)
            gauge("medley_rank_compute_seconds", ms(rank.computeMs), labels)
            gauge("medley_rank_exchange_seconds", ms(rank.exchangeMs), labels)
            gauge("medley_rank_idle_seconds", ms(rank.idleMs), labels)
            gauge("medley_rank_tokens_per_second", rank.tokensPerSecond, labels)
            gauge("medley_rank_loss", rank.loss, labels)
            gauge("medley_rank_share", rank.share.map(Double.init), labels)
            gauge("medley_rank_heartbeat_age_seconds", rank.heartbeatAgeSeconds, labels)
            gauge("medley_rank_seconds_since_progress", rank.secondsSinceProgress, labels)
            gauge("medley_rank_device_memory_used_bytes", rank.memoryUsedBytes.map(Double.init), labels)
            gauge("medley_rank_device_memory_bytes", rank.memoryBytes.map(Double.init), labels)
            counter("medley_rank_faults_total", rank.faults, labels)
        }
        return registry.emitToString()
    }
}
