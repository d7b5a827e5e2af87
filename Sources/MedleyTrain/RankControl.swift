import Foundation
import MedleyControl
import MedleyCore

/// This rank's end of the control channel, when the job runs under `medley launch` (the
/// launcher puts `MEDLEY_CONTROL` and `MEDLEY_CONTROL_TOKEN` in every rank's environment).
///
/// One per process (a worker process is one rank). It only watches: a rank that cannot reach
/// its supervisor trains and logs as before, and nothing here can throw into training.
public enum RankControl {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var client: ControlClient?
    /// The last step this rank finished.
    nonisolated(unsafe) private static var lastStep = 0
    /// The device memory this rank held at its last step.
    nonisolated(unsafe) private static var lastMemory: UInt64 = 0

    /// Connects to the supervisor named by the environment, if any, introducing this rank.
    static func start(hello: ControlHello, environment: [String: String] = ProcessInfo.processInfo.environment) {
        guard let endpoint = ControlEndpoint.fromEnvironment(environment) else { return }
        let made = ControlClient(endpoint: endpoint, hello: hello, progress: { WorkProgress.secondsSinceProgress() })
        lock.withLock { client = made }
        made.start()
    }

    /// Why the supervisor asked this rank to stop, once it has (latched).
    nonisolated(unsafe) private static var stopReason: String?
    /// A `checkpoint now` arrived and was not acted on yet.
    nonisolated(unsafe) private static var checkpointWanted = false

    /// Whether the supervisor has asked this rank to stop (at the next step boundary that
    /// every rank agrees on: the workers share this flag in their per-step allgather).
    static func stopRequested(rank: Int) -> Bool {
        if SlurmSignal.terminated != 0 {
            lock.withLock { stopReason = stopReason ?? "SIGTERM from Slurm (preempted, cancelled or at its time limit)" }
        }
        guard let client = current else { return lock.withLock { stopReason != nil } }
        for command in client.takeCommands() {
            switch command.kind {
            case .stop:
                lock.withLock { stopReason = stopReason ?? command.reason }
            case .checkpointNow:
                lock.withLock { checkpointWanted = true }
            }
        }
        return lock.withLock { stopReason != nil }
    }

    /// Whether the supervisor asked for a checkpoint since the last call (read after
    /// ``stopRequested(rank:)``, which takes the commands in). The workers share the flag in
    /// their per-step allgather, so every rank checkpoints after the same step.
    static func checkpointRequested() -> Bool {
        lock.withLock {
            defer { checkpointWanted = false }
            return checkpointWanted
        }
    }

    /// The supervisor's reason for the stop, if it asked for one.
    static var requestedStopReason: String? { lock.withLock { stopReason } }

    /// The client, when this rank reports to a supervisor.
    static var current: ControlClient? { lock.withLock { client } }

    /// A resumed rank starts after `step`: its fault reports and beats count from there.
    static func resumed(after step: Int) {
        lock.withLock { lastStep = step }
    }

    /// After every step, on every rank: this rank's row of the record, and a fresh heartbeat state.
    static func report(_ record: StepRecord, rank: Int, deviceMemoryUsedBytes: UInt64) {
        guard let client = current, record.shares.indices.contains(rank) else { return }
        lock.withLock {
            lastStep = record.step
            lastMemory = deviceMemoryUsedBytes
        }
        client.update(
            step: record.step, loss: record.loss, tokensPerSecond: record.tokensPerS, deviceMemoryUsedBytes: deviceMemoryUsedBytes,
            health: .ok)
        client.report(ControlStepReport(
            rank: rank, step: record.step, loss: record.loss, tokensPerSecond: record.tokensPerS, stepMs: record.stepMs,
            computeMs: record.computeMs[rank], idleMs: record.idleMs[rank], exchangeMs: record.exchangeMs[rank],
            share: record.shares[rank], validationLoss: record.valLoss))
    }

    /// A failure this rank is about to stop for, in the supervisor's words for it; sent before
    /// the process ends (at most a second's wait).
    static func reportFailure(_ error: Error, rank: Int) {
        guard let client = current else { return }
        let (step, memory) = lock.withLock { (lastStep + 1, lastMemory) }
        let medley = (error as? CollectiveFailure)?.error ?? (error as? MedleyError)
        let suspects = (error as? CollectiveFailure)?.suspects ?? []
        var kind: ControlFaultKind
        switch medley?.code {
        case .outOfMemory?: kind = .outOfMemory
        case .timeout?: kind = .timeout
        case .adapterCall?, .deviceLost?: kind = .adapterError
        case .corruption? where "\(error)".contains("non-finite") || "\(error)".contains("not finite"): kind = .nonFinite
        default: kind = .other
        }
        if !suspects.isEmpty { kind = .corruption }
        let line = "\(error)".replacingOccurrences(of: "\n", with: " ")
        client.update(step: step, loss: nil, tokensPerSecond: nil, deviceMemoryUsedBytes: memory, health: .failing)
        client.report(ControlFaultReport(rank: rank, step: step, kind: kind, message: String(line.prefix(900)), suspects: suspects))
        client.stop(flushTimeoutSeconds: 1)
    }

    /// The job ended normally: the last reports go out, the connection closes.
    static func finish() {
        guard let client = current else { return }
        let (step, memory) = lock.withLock { (lastStep, lastMemory) }
        client.update(step: step, loss: nil, tokensPerSecond: nil, deviceMemoryUsedBytes: memory, health: .finished)
        client.stop(flushTimeoutSeconds: 1)
    }
}

/// Inside a Slurm job, Slurm signals every process of the step at once (SIGTERM at preemption,
/// `scancel` or the time limit, then SIGKILL after the grace time). A rank then stops at the next
/// step boundary that every rank agrees on, checkpoints and exits, like a `stop` from the
/// supervisor; a second SIGTERM ends it at once.
public enum SlurmSignal {
    /// Set by the handler: the first SIGTERM has arrived.
    nonisolated(unsafe) static var terminated: sig_atomic_t = 0

    /// Whether this process runs inside a Slurm job.
    public static var insideJob: Bool { ProcessInfo.processInfo.environment["SLURM_JOB_ID"] != nil }

    /// Installs the handler when inside a Slurm job (nothing otherwise).
    public static func install() {
        guard insideJob else { return }
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in
            if SlurmSignal.terminated != 0 {
                // The second one: as if there were no handler.
                signal(SIGTERM, SIG_DFL)
                raise(SIGTERM)
            }
            SlurmSignal.terminated = 1
        }
        sigemptyset(&action.sa_mask)
        sigaction(SIGTERM, &action, nil)
    }
}
