import CMedleyProto
import MedleyCore
import MedleyComm
import MedleyPlanner

/// A measured chip profile as the profile cache stores it (`DeviceProfile` in the proto):
/// the planner's ``MedleyPlanner/DeviceProfile`` plus what it was measured for and when.
public struct DeviceProfileRecord: Sendable, Hashable {
    /// The profile the planner reads.
    public var profile: DeviceProfile
    /// The text the cache file's name hashes (adapter, version, options, model, microbatches);
    /// a record whose key differs from the one asked for is not used.
    public var cacheKey: String
    /// When it was measured, milliseconds since 1970.
    public var measuredUnixMillis: UInt64
    /// The quick probe taken right after the profile (``ProfileProbe``); nil in a record written
    /// by a medley before probes, which makes the cached profile stale-unknown.
    public var probe: ProfileProbe?

    /// A record; see the properties.
    public init(profile: DeviceProfile, cacheKey: String, measuredUnixMillis: UInt64, probe: ProfileProbe? = nil) {
        self.profile = profile
        self.cacheKey = cacheKey
        self.measuredUnixMillis = measuredUnixMillis
        self.probe = probe
    }
}

/// A fitted α–β link model as the profile cache stores it (`NetworkProfile` in the proto).
public struct NetworkProfileRecord: Sendable, Hashable {
    /// Latency and bandwidth of one point-to-point link.
    public var network: NetworkModel
    /// What the link was measured for (host, ranks, transport).
    public var cacheKey: String
    /// When it was measured, milliseconds since 1970.
    public var measuredUnixMillis: UInt64

    /// A record; see the properties.
    public init(network: NetworkModel, cacheKey: String, measuredUnixMillis: UInt64) {
        self.network = network
        self.cacheKey = cacheKey
        self.measuredUnixMillis = measuredUnixMillis
    }
}

/// Limits of the profile messages (a cache file is read as untrusted bytes).
private enum ProfileLimits {
    static let maxTimings = 4096
    static let maxKeyBytes = 64 << 10
    static let maxMicrobatch = 1 << 24
}

extension ModelCost.Layer.Kind {
    var wire: Medley__V1__LayerKind {
        switch self {
        case .embedding: MEDLEY__V1__LAYER_KIND__LAYER_KIND_EMBEDDING
        case .block: MEDLEY__V1__LAYER_KIND__LAYER_KIND_BLOCK
        case .head: MEDLEY__V1__LAYER_KIND__LAYER_KIND_HEAD
        }
    }

    init(wire: Medley__V1__LayerKind) throws {
        switch wire {
        case MEDLEY__V1__LAYER_KIND__LAYER_KIND_EMBEDDING: self = .embedding
        case MEDLEY__V1__LAYER_KIND__LAYER_KIND_BLOCK: self = .block
        case MEDLEY__V1__LAYER_KIND__LAYER_KIND_HEAD: self = .head
        default: throw MedleyError(.corruption, "device profile: unknown layer kind \(wire.rawValue)")
        }
    }
}

/// A finite number ≥ 0, or a corruption error naming it.
private func checkedMilliseconds(_ value: Double, what: String) throws -> Double {
    guard value.isFinite, value >= 0 else {
        throw MedleyError(.corruption, "device profile: \(what) is \(value), not a finite time of 0 or more")
    }
    return value
}

// MARK: - DeviceProfile

extension DeviceProfileRecord: FramedMessage {
    /// Frames of kind ``Frame/Kind/deviceProfile``.
    public static var frameKind: Frame.Kind { .deviceProfile }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = arena.allocate(Medley__V1__DeviceProfile.self, count: 1)
        medley__v1__device_profile__init(m)
        m.pointee.chip = arena.string(profile.chip)
        m.pointee.adapter = arena.string(profile.adapter)
        m.pointee.vendor = arena.string(profile.vendor)
        m.pointee.name = arena.string(profile.name)
        m.pointee.memory_bytes = UInt64(max(0, profile.memoryBytes))
        let list = arena.allocate(UnsafeMutablePointer<Medley__V1__LayerTiming>?.self, count: profile.timings.count)
        for (i, timing) in profile.timings.enumerated() {
            let t = arena.allocate(Medley__V1__LayerTiming.self, count: 1)
            medley__v1__layer_timing__init(t)
            t.pointee.kind = timing.kind.wire
            t.pointee.microbatch = UInt32(clamping: timing.microbatch)
            t.pointee.forward_ms = timing.forwardMs
            t.pointee.backward_ms = timing.backwardMs
            list[i] = t
        }
        m.pointee.n_timings = profile.timings.count
        m.pointee.timings = list
        m.pointee.optimizer_ms_per_parameter_byte = profile.optimizerMsPerParameterByte
        m.pointee.cache_key = arena.string(cacheKey)
        m.pointee.measured_unix_millis = measuredUnixMillis
        if let probe {
            let q = arena.allocate(Medley__V1__ProfileProbe.self, count: 1)
            medley__v1__profile_probe__init(q)
            q.pointee.host_sgemm_gflops = probe.hostSgemmGflops
            q.pointee.layer_ms = probe.layerMs
            q.pointee.microbatch = UInt32(clamping: probe.microbatch)
            m.pointee.probe = q
        }
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__device_profile__get_packed_size(m)) { medley__v1__device_profile__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding: every timing a known kind, a microbatch ≥ 1 and
    /// finite times ≥ 0; strings bounded and UTF-8; a probe, when present, with a finite layer
    /// time above 0, a finite host figure of 0 or more (0: not measured) and a microbatch ≥ 1.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__device_profile__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid DeviceProfile") }
        defer { medley__v1__device_profile__free_unpacked(p, nil) }
        let n = p.pointee.n_timings
        guard n <= ProfileLimits.maxTimings else { throw MedleyError(.corruption, "device profile lists \(n) timings") }
        guard n == 0 || p.pointee.timings != nil else { throw MedleyError(.corruption, "device profile: missing timings") }
        var timings: [DeviceProfile.LayerTiming] = []
        for i in 0..<n {
            guard let t = p.pointee.timings[i] else { throw MedleyError(.corruption, "device profile: null timing \(i)") }
            let microbatch = Int(t.pointee.microbatch)
            guard microbatch >= 1, microbatch <= ProfileLimits.maxMicrobatch else {
                throw MedleyError(.corruption, "device profile: timing \(i) has microbatch \(microbatch)")
            }
            timings.append(
                DeviceProfile.LayerTiming(
                    kind: try ModelCost.Layer.Kind(wire: t.pointee.kind), microbatch: microbatch,
                    forwardMs: try checkedMilliseconds(t.pointee.forward_ms, what: "timing \(i) forward"),
                    backwardMs: try checkedMilliseconds(t.pointee.backward_ms, what: "timing \(i) backward")))
        }
        let profile = DeviceProfile(
            chip: try validatedString(p.pointee.chip, what: "chip", maxBytes: ProfileLimits.maxKeyBytes),
            adapter: try validatedString(p.pointee.adapter, what: "adapter", maxBytes: ProfileLimits.maxKeyBytes),
            vendor: try validatedString(p.pointee.vendor, what: "vendor"),
            name: try validatedString(p.pointee.name, what: "name"),
            memoryBytes: try checkedInt(p.pointee.memory_bytes, what: "memory bytes"),
            timings: timings,
            optimizerMsPerParameterByte: try checkedMilliseconds(
                p.pointee.optimizer_ms_per_parameter_byte, what: "optimizer ms per parameter byte"))
        var probe: ProfileProbe?
        if let q = p.pointee.probe {
            let gflops = q.pointee.host_sgemm_gflops, layer = q.pointee.layer_ms, microbatch = Int(q.pointee.microbatch)
            guard gflops.isFinite, gflops >= 0, layer.isFinite, layer > 0, microbatch >= 1,
                microbatch <= ProfileLimits.maxMicrobatch
            else {
                throw MedleyError(
                    .corruption,
                    "device profile: probe (\(gflops) GFLOP/s, \(layer) ms, microbatch \(microbatch)) is not a finite layer time above 0 and host figure of 0 or more")
            }
            probe = ProfileProbe(hostSgemmGflops: gflops, layerMs: layer, microbatch: microbatch)
        }
        self.init(
            profile: profile,
            cacheKey: try validatedString(p.pointee.cache_key, what: "cache key", maxBytes: ProfileLimits.maxKeyBytes),
            measuredUnixMillis: p.pointee.measured_unix_millis, probe: probe)
    }
}

// MARK: - NetworkProfile

extension NetworkProfileRecord: FramedMessage {
    /// Frames of kind ``Frame/Kind/networkProfile``.
    public static var frameKind: Frame.Kind { .networkProfile }

    /// The protobuf encoding.
    public func serialized() -> [UInt8] {
        let arena = Arena()
        let m = arena.allocate(Medley__V1__NetworkProfile.self, count: 1)
        medley__v1__network_profile__init(m)
        m.pointee.latency_seconds = network.latencySeconds
        m.pointee.bytes_per_second = network.bytesPerSecond
        m.pointee.cache_key = arena.string(cacheKey)
        m.pointee.measured_unix_millis = measuredUnixMillis
        return withExtendedLifetime(arena) {
            packBytes(medley__v1__network_profile__get_packed_size(m)) { medley__v1__network_profile__pack(m, $0) }
        }
    }

    /// Decodes and validates a protobuf encoding: latency finite and ≥ 0, bandwidth finite and > 0.
    public init(serialized bytes: [UInt8]) throws {
        let p = bytes.withUnsafeBufferPointer { medley__v1__network_profile__unpack(nil, $0.count, $0.baseAddress) }
        guard let p else { throw MedleyError(.corruption, "bytes are not a valid NetworkProfile") }
        defer { medley__v1__network_profile__free_unpacked(p, nil) }
        let latency = p.pointee.latency_seconds, bandwidth = p.pointee.bytes_per_second
        guard latency.isFinite, latency >= 0 else {
            throw MedleyError(.corruption, "network profile: latency \(latency) s is not a finite time of 0 or more")
        }
        guard bandwidth.isFinite, bandwidth > 0 else {
            throw MedleyError(.corruption, "network profile: bandwidth \(bandwidth) B/s is not a finite rate above 0")
        }
        self.init(
            network: NetworkModel(latencySeconds: latency, bytesPerSecond: bandwidth),
            cacheKey: try validatedString(p.pointee.cache_key, what: "cache key", maxBytes: ProfileLimits.maxKeyBytes),
            measuredUnixMillis: p.pointee.measured_unix_millis)
    }
}
