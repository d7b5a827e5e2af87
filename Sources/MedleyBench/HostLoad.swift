import Foundation

/// How busy the host was while a benchmark run went: what this process and its children used,
/// and what everything else on the machine used over the same wall time.
///
/// The figures come from `/proc/stat` (every CPU's busy and steal time) and `getrusage` (this
/// process and its waited-for children: `mpirun` and, through it, the ranks), so "foreign" is
/// the CPU time spent by anything that is not this benchmark: other jobs, builds, a browser.
/// A run whose baselines saw a different foreign load than its mixed job compares unlike things.
public struct HostLoad: Codable, Sendable, Hashable {
    /// Wall seconds the sample covers.
    public var seconds: Double
    /// Cores kept busy by this benchmark's own processes, on average.
    public var ownCores: Double
    /// Cores kept busy by everything else, on average (never below 0).
    public var foreignCores: Double
    /// Cores the hypervisor took (steal time), on average.
    public var stealCores: Double
    /// The one-minute load average when the sample ended.
    public var loadAverage: Double

    enum CodingKeys: String, CodingKey {
        case seconds
        case ownCores = "own_cores"
        case foreignCores = "foreign_cores"
        case stealCores = "steal_cores"
        case loadAverage = "load_average"
    }

    /// A load of these figures.
    public init(seconds: Double, ownCores: Double, foreignCores: Double, stealCores: Double, loadAverage: Double) {
        self.seconds = seconds
        self.ownCores = ownCores
        self.foreignCores = foreignCores
        self.stealCores = stealCores
        self.loadAverage = loadAverage
    }

    /// The time-weighted mean of several samples (nil for none).
    public static func mean(_ loads: [HostLoad]) -> HostLoad? {
        let total = loads.reduce(0) { $0 + $1.seconds }
        guard total > 0 else { return loads.first }
        func weighted(_ value: KeyPath<HostLoad, Double>) -> Double {
            loads.reduce(0) { $0 + $1[keyPath: value] * $1.seconds } / total
        }
        return HostLoad(
            seconds: total, ownCores: weighted(\.ownCores), foreignCores: weighted(\.foreignCores),
            stealCores: weighted(\.stealCores), loadAverage: loads.last!.loadAverage)
    }

    /// A sampler started now; ``Sampler/finish()`` gives the load since.
    public static func start() -> Sampler { Sampler() }

    /// The counters at the start of a sample.
    public struct Sampler: Sendable {
        let wall: Double
        let busy: Double
        let steal: Double
        let own: Double

        init() {
            wall = monotonicSeconds()
            (busy, steal) = HostLoad.systemSeconds()
            own = HostLoad.ownSeconds()
        }

        /// The load from the start until now.
        public func finish() -> HostLoad {
            let seconds = max(monotonicSeconds() - wall, 1e-9)
            let (busyNow, stealNow) = HostLoad.systemSeconds()
            let ownCores = (HostLoad.ownSeconds() - own) / seconds
            let busyCores = (busyNow - busy) / seconds
            return HostLoad(
                seconds: seconds, ownCores: ownCores, foreignCores: max(0, busyCores - ownCores),
                stealCores: (stealNow - steal) / seconds, loadAverage: HostLoad.loadAverage())
        }
    }

    /// Busy and steal seconds of all CPUs together since boot (user, nice, system, irq, softirq;
    /// guest time is inside user). Zeros where `/proc/stat` cannot be read.
    static func systemSeconds() -> (busy: Double, steal: Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
        else { return (0, 0) }
        let fields = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return (0, 0) }
        let hz = Double(sysconf(Int32(_SC_CLK_TCK)))
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        return (busy / hz, fields[7] / hz)
    }

    /// CPU seconds of this process and of its children that have been waited for.
    static func ownSeconds() -> Double {
        func seconds(_ who: __rusage_who) -> Double {
            var usage = rusage()
            guard getrusage(who.rawValue, &usage) == 0 else { return 0 }
            func value(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
            return value(usage.ru_utime) + value(usage.ru_stime)
        }
        return seconds(RUSAGE_SELF) + seconds(RUSAGE_CHILDREN)
    }

    /// The one-minute load average (0 where `/proc/loadavg` cannot be read).
    static func loadAverage() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return 0 }
        return text.split(separator: " ").first.flatMap { Double($0) } ?? 0
    }
}
