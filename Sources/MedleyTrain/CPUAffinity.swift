import Foundation
import MedleyCore

#if canImport(Glibc)
import Glibc
#endif

/// Pins this process to host CPUs (a job spec's `devices[].cpus`).
public enum CPUAffinity {
    /// Host CPUs online.
    public static var onlineCount: Int { max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1) }

    /// Checks that every CPU in `cpus` exists on this host; `field` names the spec entry.
    public static func check(_ cpus: [Int], field: String) throws {
        let online = onlineCount
        if let cpu = cpus.first(where: { $0 < 0 || $0 >= online }) {
            throw MedleyError(
                .invalidArgument, "\(field): CPU \(cpu) does not exist on this host (CPUs 0 to \(online - 1)); pick from those")
        }
    }

    /// Restricts this process (every thread it has, and the threads it starts afterwards) to `cpus`.
    ///
    /// Throws `invalidArgument` naming the CPU when one is outside what `sched_setaffinity`
    /// accepts on this host.
    public static func pin(to cpus: [Int]) throws {
        guard !cpus.isEmpty else { return }
        #if os(Linux)
        let set = try mask(cpus, field: "devices[].cpus")
        // sched_setaffinity acts on one thread: pin every thread the process already has
        // (the MPI runtime's, OpenBLAS's pool) and the calling one, whose mask new threads inherit.
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for task in tasks.compactMap({ Int32($0) }) {
            _ = set.withUnsafeBytes { linuxSetAffinity(task, $0.count, $0.baseAddress!) }
        }
        try pinCallingThread(set, cpus: cpus, hint: "check devices[].cpus")
        #else
        throw MedleyError(.unsupported, "devices[].cpus: pinning is only supported on Linux")
        #endif
    }

    /// Restricts the calling thread (and the threads it starts afterwards) to `cpus`; the rest
    /// of the process keeps its CPUs.
    public static func pinCurrentThread(to cpus: [Int]) throws {
        guard !cpus.isEmpty else { return }
        #if os(Linux)
        try pinCallingThread(try mask(cpus, field: "CPU list"), cpus: cpus, hint: "pick CPUs this process may use")
        #else
        throw MedleyError(.unsupported, "pinning a thread to CPUs is only supported on Linux")
        #endif
    }

    #if os(Linux)
    /// `cpus` as glibc's cpu_set_t: a fixed 1024-bit mask of unsigned longs (CPU_SETSIZE).
    private static func mask(_ cpus: [Int], field: String) throws -> [UInt] {
        try check(cpus, field: field)
        var set = [UInt](repeating: 0, count: 1024 / UInt.bitWidth)
        for cpu in cpus {
            guard cpu < set.count * UInt.bitWidth else {
                throw MedleyError(.unsupported, "\(field): CPU \(cpu) is beyond the 1024 CPUs a pin can name")
            }
            set[cpu / UInt.bitWidth] |= 1 << UInt(cpu % UInt.bitWidth)
        }
        return set
    }

    private static func pinCallingThread(_ set: [UInt], cpus: [Int], hint: String) throws {
        let status = set.withUnsafeBytes { linuxSetAffinity(0, $0.count, $0.baseAddress!) }
        if status != 0 {
            throw MedleyError(.invalidArgument, "cannot pin to CPUs \(cpus): \(String(cString: strerror(errno))); \(hint)")
        }
    }
    #endif
}

#if os(Linux)
/// glibc's `sched_setaffinity`, which Swift's Glibc module leaves out (it is a GNU extension).
@_silgen_name("sched_setaffinity")
private func linuxSetAffinity(_ pid: Int32, _ size: Int, _ mask: UnsafeRawPointer) -> Int32
#endif
