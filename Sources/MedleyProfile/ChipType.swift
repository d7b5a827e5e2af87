import MedleyCore

/// One distinct kind of chip in a job: an adapter with one set of options. Devices of one
/// chip type are interchangeable, so they share one profile.
///
/// The key is the adapter followed by its options sorted by name, e.g.
/// `sim{kernels=cpu,speed=0.5,vendor=Acme}`, or just `cpu` without options.
public struct ChipType: Sendable, Hashable, Codable {
    /// The adapter's name or library path, as the job spec gives it.
    public var adapter: String
    /// The options the device is opened with.
    public var options: [String: String]
    /// The ranks (device instances) of this type in the job, ascending.
    public var ranks: [Int]

    /// A chip type; see the properties.
    public init(adapter: String, options: [String: String], ranks: [Int]) {
        self.adapter = adapter
        self.options = options
        self.ranks = ranks
    }

    /// The options sorted by name, as `device_open` receives them.
    public var sortedOptions: [(String, String)] {
        options.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// `adapter{key=value,…}` with the options sorted by name; `adapter` alone without options.
    public var key: String {
        guard !options.isEmpty else { return adapter }
        return adapter + "{" + sortedOptions.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    /// The job's chip types in order of their first rank; ranks of the same adapter and options
    /// (also across separate `devices` entries) share one type.
    public static func of(_ spec: JobSpec) -> [ChipType] {
        var types: [ChipType] = []
        for rank in spec.rankDevices {
            if let index = types.firstIndex(where: { $0.adapter == rank.adapter && $0.options == rank.options }) {
                types[index].ranks.append(rank.rank)
            } else {
                types.append(ChipType(adapter: rank.adapter, options: rank.options, ranks: [rank.rank]))
            }
        }
        return types
    }
}
