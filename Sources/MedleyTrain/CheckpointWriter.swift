import Foundation
import MedleyCore

/// Writes checkpoints on a thread of its own, so training stalls only for the snapshot.
///
/// One write at a time: a checkpoint handed over while the previous one is still being
/// written waits for it (that wait is part of the stall the step record reports). A write
/// that fails is one `warning:` line on standard error and training goes on; ``finish()``
/// waits for the last write.
///
/// With a `snapshot` store (shared memory, e.g. under /dev/shm), each checkpoint goes there
/// first (memory speed, the newest one only), then to `store` on disk: a job ended while the
/// disk write was still going (another rank crashed right after the step) still leaves that
/// step whole in memory, and a restart on this host reads it without waiting on the disk.
public final class CheckpointWriter: @unchecked Sendable {
    public let store: CheckpointStore
    /// Where each checkpoint is written first, if anywhere (keeps the newest only).
    public let snapshot: CheckpointStore?
    private let condition = NSCondition()
    private var pending: Checkpoint?
    private var busy = false
    private var stopping = false
    private var thread: Thread?
    /// Steps written, in order (for tests and the closing line).
    public private(set) var written: [Int] = []
    /// The last failure, if any.
    public private(set) var lastError: String?

    public init(store: CheckpointStore, snapshot: CheckpointStore? = nil) {
        self.store = store
        self.snapshot = snapshot
        let thread = Thread { [weak self] in self?.loop() }
        thread.name = "medley.checkpoint"
        self.thread = thread
        thread.start()
    }

    /// Hands `checkpoint` over; returns once it is queued (after the previous write, if one is still going).
    public func submit(_ checkpoint: Checkpoint) {
        condition.lock()
        while busy || pending != nil { condition.wait() }
        pending = checkpoint
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until no checkpoint is queued or being written.
    public func waitUntilIdle() {
        condition.lock()
        while busy || pending != nil { condition.wait() }
        condition.unlock()
    }

    /// Waits for every handed-over checkpoint to be written, then stops the thread.
    public func finish() {
        condition.lock()
        while busy || pending != nil { condition.wait() }
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        while true {
            condition.lock()
            while pending == nil && !stopping { condition.wait() }
            guard let next = pending else {
                condition.unlock()
                return
            }
            pending = nil
            busy = true
            condition.unlock()
            var failure: String?
            if let snapshot {
                do {
                    try snapshot.write(next)
                } catch {
                    FileHandle.standardError.write(Data(
                        "warning: the snapshot of step \(next.step) in \(snapshot.directory) was not written: \(error); the disk copy goes on\n".utf8))
                }
            }
            do {
                try store.write(next)
            } catch {
                failure = "\(error)"
                FileHandle.standardError.write(Data(
                    "warning: the checkpoint of step \(next.step) was not written: \(error); training goes on\n".utf8))
            }
            condition.lock()
            busy = false
            if let failure { lastError = failure } else { written.append(next.step) }
            condition.broadcast()
            condition.unlock()
        }
    }
}
