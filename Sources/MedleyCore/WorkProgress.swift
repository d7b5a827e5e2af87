import Foundation

/// When this process last made progress: the moment a device call returned or a wait on other
/// ranks polled (waiting is healthy; being stuck inside one call is not).
///
/// A rank's heartbeat thread keeps beating while the rank computes, so a beat alone cannot tell
/// a long compute from a chip that hangs inside a call: each beat also carries
/// ``secondsSinceProgress()``, and the supervisor reports a rank whose progress stopped for
/// longer than its heartbeat timeout. Marking costs one uncontended lock.
public enum WorkProgress {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var last = DispatchTime.now().uptimeNanoseconds

    /// Notes progress now.
    public static func mark() {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.lock()
        last = now
        lock.unlock()
    }

    /// Seconds since the last ``mark()`` (or since the process began).
    public static func secondsSinceProgress() -> Double {
        lock.lock()
        let then = last
        lock.unlock()
        let now = DispatchTime.now().uptimeNanoseconds
        return now > then ? Double(now - then) / 1e9 : 0
    }
}
