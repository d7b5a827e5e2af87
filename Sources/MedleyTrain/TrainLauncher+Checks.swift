import Foundation
import MedleyAdapters
import MedleyCore

/// `medley train` consults `medley adapter check`: every adapter library of the job is looked
/// up in the check records (``CheckRecordStore``) by its current content hash. An adapter whose
/// build has not passed gets one warning line (once per library in this process, so a restart
/// under `medley launch` does not repeat it); with `require_checked: true` the job is refused in
/// one line before any rank starts. The reference adapter, the check's own oracle, is exempt.
extension TrainLauncher {
    /// One adapter library of the job: how the first device entry that uses it names it, that
    /// entry's options, and the library.
    struct JobAdapter {
        var adapter: String
        var options: [String: String]
        var library: AdapterLibrary
    }

    /// The job's adapter libraries, each once (by file), in device order; ones that do not load
    /// are left out (the preflight reports them).
    func jobAdapters() -> [JobAdapter] {
        var found: [JobAdapter] = []
        var seen = Set<String>()
        for device in spec.devices {
            guard let library = try? AdapterLibrary.load(device.adapter) else { continue }
            let file = URL(fileURLWithPath: library.path).standardizedFileURL.path
            guard seen.insert(file).inserted else { continue }
            found.append(JobAdapter(adapter: device.adapter, options: device.options, library: library))
        }
        return found
    }

    /// With `require_checked: true`, throws one line naming the first adapter whose current build
    /// has not passed the check (and how many more there are).
    func refuseUncheckedAdapters() throws {
        guard spec.requireChecked else { return }
        let store = checkRecords
        let untrusted = jobAdapters().compactMap { job -> String? in
            CheckRecordStore.message(
                for: store.status(of: job.library), library: job.library, adapter: job.adapter, options: job.options, refusing: true)
        }
        guard let first = untrusted.first else { return }
        let more = untrusted.count > 1 ? " (and \(untrusted.count - 1) more adapter\(untrusted.count == 2 ? "" : "s") not passed)" : ""
        throw MedleyError(.invalidArgument, first + more)
    }

    /// The warning lines for adapters whose current build has not passed the check, leaving out
    /// libraries already warned about in this process.
    public func uncheckedAdapterWarnings() -> [String] {
        let store = checkRecords
        return jobAdapters().compactMap { job in
            guard let line = CheckRecordStore.message(
                for: store.status(of: job.library), library: job.library, adapter: job.adapter, options: job.options, refusing: false),
                Self.warnedLibraries.firstTime(job.library.path)
            else { return nil }
            return line
        }
    }

    /// Libraries already warned about in this process.
    static let warnedLibraries = OnceSet()
}

/// A set of strings that says whether each is new, under a lock.
final class OnceSet: @unchecked Sendable {
    // @unchecked: `members` is only touched under `lock`.
    private let lock = NSLock()
    private var members = Set<String>()

    /// True the first time `value` is seen.
    func firstTime(_ value: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return members.insert(value).inserted
    }
}
