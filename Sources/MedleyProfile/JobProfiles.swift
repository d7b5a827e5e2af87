import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyPlanner

/// Everything the planner needs to know about a job's hardware: a ``MedleyPlanner/DeviceProfile``
/// per chip type, the α–β model of the link between ranks, the model's per-layer costs, and the
/// inventory that maps every rank to its chip type. Profiles come from the on-disk
/// ``ProfileCache`` when it holds them and are measured (and stored) otherwise.
///
/// ```swift
/// let profiles = try JobProfiles.load(spec: spec)
/// let plan = try Planner(model: profiles.model, inventory: profiles.inventory,
///                        network: profiles.network, globalBatch: spec.model.globalBatch).plan()
/// ```
///
/// A chip profile's cache key is: the adapter (as the spec names it) and the version its
/// library reports, the options sorted by name, the layer shape (`dim`, `heads`, `seq`, `vocab`;
/// not the depth, since one layer's time does not depend on how many there are), the
/// microbatch sizes, and the host name. The link's key is the host name, the transport
/// (`mpirun`, 2 ranks, btl `self,vader`) and the ping-pong sizes.
public struct JobProfiles: Sendable {
    /// One chip type of the job and its profile.
    public struct Chip: Sendable, Hashable, Codable {
        /// The chip type (adapter, options, ranks).
        public var type: ChipType
        /// Its measured profile.
        public var profile: DeviceProfile
        /// Whether the profile came from the cache (false: measured by this call).
        public var cached: Bool
        /// The cache file that holds it.
        public var cacheFile: String
        /// When it was measured, milliseconds since 1970.
        public var measuredUnixMillis: UInt64
        /// The probe stored with the profile in use (``ProfileProbe``); nil for a record of an
        /// older medley kept as it was.
        public var probe: ProfileProbe? = nil
        /// A cached profile's stored probe beside the one taken at this load: the ratio and
        /// whether it was stale (and measured again). Nil when the profile was measured by this
        /// call with no cached record before it, or with ``StalenessCheck/off``.
        public var staleness: ProbeCheck? = nil
    }

    /// What a load does with a cached profile whose probe (``ProfileProbe``) no longer matches.
    public enum StalenessCheck: String, Sendable, CaseIterable {
        /// Probe every cached chip; measure a stale one again (the default).
        case remeasure
        /// Probe every cached chip; keep a stale one and warn in one line.
        case warn
        /// Do not probe: use cached profiles as they are.
        case off
    }

    /// The link between ranks.
    public struct Link: Sendable, Hashable, Codable {
        /// Latency and bandwidth.
        public var network: NetworkModel
        /// Whether it came from the cache.
        public var cached: Bool
        /// The cache file that holds it.
        public var cacheFile: String
        /// When it was measured, milliseconds since 1970.
        public var measuredUnixMillis: UInt64
    }

    /// How to load or measure.
    public struct Options: Sendable {
        /// Measure again even when the cache holds a profile (and overwrite it).
        public var refresh: Bool
        /// The cache directory; nil: ``ProfileCache/defaultDirectory(environment:)``.
        public var cacheDirectory: String?
        /// Microbatch sizes to time; nil: ``JobProfiles/defaultMicrobatchSizes(for:)``.
        public var microbatchSizes: [Int]?
        /// Untimed runs before each layer, size and optimizer measurement (at least one is made).
        public var warmups: Int
        /// Timed samples of each layer and size (the median is kept).
        public var repetitions: Int
        /// The link measurement.
        public var pingPong: PingPong.Configuration
        /// mpirun `--timeout` of the ping-pong, seconds.
        public var timeoutSeconds: Int
        /// The `medley` executable the ping-pong starts under mpirun.
        public var program: String
        /// Where adapters are looked up.
        public var searchPath: AdapterSearchPath
        /// Receives progress lines ("measuring …").
        public var progress: @Sendable (String) -> Void
        /// Receives warnings (an unreadable cache file, a stale profile kept).
        public var warn: @Sendable (String) -> Void
        /// What to do with a cached profile whose probe differs from one taken now.
        public var staleness: StalenessCheck
        /// How far (relative) a probe figure may move before the profile counts as stale; above 0.
        public var stalenessThreshold: Double

        /// The default ``stalenessThreshold``: 15 %, about 3× the probe's own spread between
        /// repeats on a quiet host and above the ≤ 10 % it showed on a busy one (docs/planning.md),
        /// and well below the 30–36 % slowdowns that made plans wrong.
        public static let defaultStalenessThreshold = 0.15

        /// Options; the defaults measure 1 warm-up and 5 timed runs, keep the cache, and measure
        /// a cached chip again when its probe moved by more than 15 %.
        public init(
            refresh: Bool = false, cacheDirectory: String? = nil, microbatchSizes: [Int]? = nil, warmups: Int = 1,
            repetitions: Int = 5, pingPong: PingPong.Configuration = PingPong.Configuration(), timeoutSeconds: Int = 120,
            program: String = ChildProcess.currentExecutable, searchPath: AdapterSearchPath = .default,
            progress: @escaping @Sendable (String) -> Void = { _ in },
            warn: @escaping @Sendable (String) -> Void = { _ in },
            staleness: StalenessCheck = .remeasure, stalenessThreshold: Double = Options.defaultStalenessThreshold
        ) {
            self.staleness = staleness
            self.stalenessThreshold = stalenessThreshold
            self.refresh = refresh
            self.cacheDirectory = cacheDirectory
            self.microbatchSizes = microbatchSizes
            self.warmups = warmups
            self.repetitions = repetitions
            self.pingPong = pingPong
            self.timeoutSeconds = timeoutSeconds
            self.program = program
            self.searchPath = searchPath
            self.progress = progress
            self.warn = warn
        }
    }

    /// The chip types, in order of their first rank.
    public var chips: [Chip]
    /// The link between ranks.
    public var link: Link
    /// The model's planning layers and their costs.
    public var model: ModelCost
    /// The microbatch sizes the chips were timed at.
    public var microbatchSizes: [Int]
    /// The cache directory used.
    public var cacheDirectory: String

    /// The profiles in chip-type order, and each rank's chip type: the planner's device input.
    public var inventory: DeviceInventory {
        var devices: [Int] = []
        for (index, chip) in chips.enumerated() {
            for rank in chip.type.ranks {
                if devices.count <= rank { devices += Array(repeating: 0, count: rank + 1 - devices.count) }
                devices[rank] = index
            }
        }
        return DeviceInventory(profiles: chips.map(\.profile), devices: devices)
    }

    /// The link's α–β model.
    public var network: NetworkModel { link.network }

    /// The sizes timed by default: the powers of two the planner tries as microbatch sizes
    /// (1, 2, 4, … up to the batch), an even share of the global batch over the ranks
    /// (`ceil(batch / ranks)`, what data parallelism gives each chip), and the whole batch.
    /// Small sizes run far below a chip's peak, so timing the sizes a plan uses beats
    /// interpolating across them.
    public static func defaultMicrobatchSizes(for spec: JobSpec) -> [Int] {
        let batch = max(1, spec.model.globalBatch)
        let share = (batch + max(1, spec.rankCount) - 1) / max(1, spec.rankCount)
        var sizes: Set<Int> = [share, batch]
        var power = 1
        while power <= min(batch, 64) {
            sizes.insert(power)
            power *= 2
        }
        return sizes.sorted()
    }

    /// The model costs the planner sees for `model`.
    public static func modelCost(_ model: JobSpec.Model) -> ModelCost {
        ModelCost.gpt(layers: model.layers, dim: model.dim, heads: model.heads, seq: model.seq, vocab: model.vocab)
    }

    /// Loads every chip type's profile and the link's from the cache, measuring (and storing)
    /// what is missing, stale or corrupt, or everything with `options.refresh`.
    ///
    /// Every profile is stored with a ``ProfileProbe``. Unless `options.staleness` is `.off`, each
    /// cached chip is probed again first (one device open, a fraction of a second) and compared
    /// (``ProbeCheck``). One that looks stale (a figure moved by more than
    /// `options.stalenessThreshold`) is probed once more, and each figure keeps whichever probe
    /// is nearer the stored one, so a moment's noise does not cost a re-measurement. A stale one
    /// (or a record without a probe) is measured again, or with `.warn` kept with a one-line warning.
    public static func load(spec: JobSpec, options: Options = Options()) throws -> JobProfiles {
        try spec.validate()
        guard options.stalenessThreshold.isFinite, options.stalenessThreshold > 0 else {
            throw MedleyError(
                .invalidArgument,
                "profile: the staleness threshold must be a fraction above 0 (0.15 = 15 %), got \(options.stalenessThreshold)")
        }
        let sizes = Array(Set(options.microbatchSizes ?? defaultMicrobatchSizes(for: spec))).sorted()
        let profiler = try DeviceProfiler(
            model: spec.model, microbatchSizes: sizes, warmups: options.warmups, repetitions: options.repetitions,
            searchPath: options.searchPath)
        try options.pingPong.validate()
        let directory = options.cacheDirectory ?? ProfileCache.defaultDirectory()
        let cache = ProfileCache(directory: directory, warn: options.warn)
        let host = ProcessInfo.processInfo.hostName

        var hostGflops: Double?
        /// The host probe, measured once per load.
        func hostSgemm() -> Double {
            if let hostGflops { return hostGflops }
            let measured = ProfileProbe.measureHostSgemm(searchPath: options.searchPath)
            hostGflops = measured
            return measured
        }

        let types = ChipType.of(spec)
        var chips: [Chip] = []
        for (index, type) in types.enumerated() {
            let field = "devices[\(spec.rankDevices[type.ranks[0]].entry)]"
            let library: AdapterLibrary
            do {
                library = try AdapterLibrary.load(type.adapter, searchPath: options.searchPath)
            } catch let error as MedleyError {
                throw MedleyError(error.code, "\(field).adapter: \(error.message)")
            }
            let key = chipKey(type, library: library, model: spec.model, sizes: sizes, host: host)
            let label = library.info.name
            /// `body`, with a device error prefixed by the spec field and chip type.
            func naming<T>(_ body: () throws -> T) throws -> T {
                do { return try body() } catch let error as MedleyError {
                    throw MedleyError(error.code, "\(field) (\(type.key)): \(error.message)", cause: error.cause)
                }
            }
            var staleness: ProbeCheck?
            if !options.refresh,
                let record = cache.load(DeviceProfileRecord.self, label: label, key: key, storedKey: \.cacheKey),
                isComplete(record.profile)
            {
                let cached = Chip(
                    type: type, profile: record.profile, cached: true, cacheFile: cache.path(label: label, key: key),
                    measuredUnixMillis: record.measuredUnixMillis, probe: record.probe)
                if options.staleness == .off {
                    chips.append(cached)
                    continue
                }
                var now = try naming { try profiler.probe(type, hostSgemmGflops: hostSgemm()) }
                var check = ProbeCheck(stored: record.probe, now: now, threshold: options.stalenessThreshold)
                if check.stale, let stored = record.probe {
                    // A second probe confirms: a figure counts as moved only if both probes moved it.
                    hostGflops = nil
                    let again = try naming { try profiler.probe(type, hostSgemmGflops: hostSgemm()) }
                    now = now.closer(to: stored, than: again)
                    check = ProbeCheck(stored: record.probe, now: now, threshold: options.stalenessThreshold)
                }
                if !check.stale || options.staleness == .warn {
                    if check.stale { options.warn(check.warning(chip: type.key)) }
                    var chip = cached
                    chip.staleness = check
                    chips.append(chip)
                    continue
                }
                options.progress("chip type \(index + 1) of \(types.count): \(type.key): the cached profile is stale: \(check.summary)")
                check.remeasured = true
                staleness = check
            }
            options.progress("measuring chip type \(index + 1) of \(types.count): \(type.key) …")
            let host = hostSgemm()
            let (profile, probe) = try naming { try profiler.measureWithProbe(type, hostSgemmGflops: host) }
            let record = DeviceProfileRecord(profile: profile, cacheKey: key, measuredUnixMillis: unixMillis(), probe: probe)
            let file = try cache.store(record, label: label, key: key)
            chips.append(
                Chip(
                    type: type, profile: profile, cached: false, cacheFile: file, measuredUnixMillis: record.measuredUnixMillis,
                    probe: probe, staleness: staleness))
        }

        let linkKey = networkKey(options.pingPong, host: host)
        let link: Link
        if !options.refresh,
            let record = cache.load(NetworkProfileRecord.self, label: "network", key: linkKey, storedKey: \.cacheKey)
        {
            link = Link(
                network: record.network, cached: true, cacheFile: cache.path(label: "network", key: linkKey),
                measuredUnixMillis: record.measuredUnixMillis)
        } else {
            options.progress("measuring the link between ranks (MPI ping-pong, 2 ranks) …")
            let samples = try PingPong.measure(
                program: options.program, configuration: options.pingPong, timeoutSeconds: options.timeoutSeconds)
            let record = NetworkProfileRecord(
                network: try PingPong.fit(samples), cacheKey: linkKey, measuredUnixMillis: unixMillis())
            let file = try cache.store(record, label: "network", key: linkKey)
            link = Link(network: record.network, cached: false, cacheFile: file, measuredUnixMillis: record.measuredUnixMillis)
        }
        return JobProfiles(
            chips: chips, link: link, model: modelCost(spec.model), microbatchSizes: sizes, cacheDirectory: directory)
    }

    // MARK: Keys

    /// The text a chip profile's cache file is keyed by (see ``JobProfiles``).
    static func chipKey(_ type: ChipType, library: AdapterLibrary, model: JobSpec.Model, sizes: [Int], host: String)
        -> String
    {
        [
            "medley chip profile v1",
            "adapter: \(type.adapter) (\(library.info.name) \(library.info.version), ABI \(library.abiMajor).\(library.abiMinor))",
            "options: " + type.sortedOptions.map { "\($0.0)=\($0.1)" }.joined(separator: ","),
            "layer: dim=\(model.dim) heads=\(model.heads) seq=\(model.seq) vocab=\(model.vocab)",
            "microbatches: " + sizes.map(String.init).joined(separator: ","),
            "host: \(host)",
        ].joined(separator: "\n")
    }

    /// The text the link's cache file is keyed by.
    static func networkKey(_ configuration: PingPong.Configuration, host: String) -> String {
        [
            "medley network profile v1",
            "transport: mpirun, 2 ranks, btl self,vader",
            "sizes: " + configuration.sizes.map(String.init).joined(separator: ","),
            "host: \(host)",
        ].joined(separator: "\n")
    }

    /// Whether a profile times every layer kind (a cached one from a broken run may not).
    static func isComplete(_ profile: DeviceProfile) -> Bool {
        ModelCost.Layer.Kind.allCases.allSatisfy { kind in profile.timings.contains { $0.kind == kind } }
    }
}

/// Milliseconds since 1970.
func unixMillis() -> UInt64 {
    UInt64(max(0, Date().timeIntervalSince1970 * 1000))
}
