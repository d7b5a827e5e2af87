import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import MedleyPlanner

/// A quick measurement taken right after a chip profile and stored with it, then taken again
/// whenever the cached profile is reused: if the host or the chip runs at a different speed
/// now, the profile's layer times no longer predict the job (see ``ProbeCheck``).
///
/// Two figures, each the median of a few short timed samples (well under 0.3 s together on
/// the default job):
/// - the host: GFLOP/s of one 256 × 256 × 256 matmul on the `cpu` adapter with one OpenBLAS
///   thread (the cores the coordinator, the cpu chip and the sim chips' real arithmetic run on);
/// - the chip: milliseconds of one block layer forward and backward at one microbatch size
///   (``ProfileProbe/microbatch``, 1 sequence) on the chip itself.
public struct ProfileProbe: Sendable, Hashable, Codable {
    /// Host `sgemm` GFLOP/s (256³, one thread); 0 when it could not be measured.
    public var hostSgemmGflops: Double
    /// The chip's milliseconds for one block layer, forward plus backward.
    public var layerMs: Double
    /// Sequences in that layer's microbatch.
    public var microbatch: Int

    /// A probe; see the properties.
    public init(hostSgemmGflops: Double, layerMs: Double, microbatch: Int) {
        self.hostSgemmGflops = hostSgemmGflops
        self.layerMs = layerMs
        self.microbatch = microbatch
    }

    /// Side of the square matrices the host probe multiplies.
    public static let sgemmSize = 256
    /// Sequences per microbatch of the layer probe.
    public static let layerMicrobatch = 1
    /// The shortest a timed sample is made by repeating the work.
    static let sampleSeconds = 0.01
    /// Timed samples per figure (fewer only when ``budgetSeconds`` runs out after 3).
    static let samples = 7
    /// The time after which no further sample of a figure is started once 3 are in.
    static let budgetSeconds = 0.1

    /// The host figure: GFLOP/s of one 256 × 256 × 256 `matmul_forward` on the `cpu` adapter with
    /// `threads=1` (an OpenBLAS `sgemm` on one thread, through the adapter ABI, so no product
    /// library links OpenBLAS), from the fastest of the samples. The fastest, not the median: a
    /// slowdown that lasts (a throttled or shared host) slows every sample, while what the other
    /// core happens to do for a few milliseconds slows some; the median of this figure moved by
    /// ±20 % between runs a second apart on a busy 2-core host. 0 when the cpu adapter cannot be
    /// loaded from `searchPath` (the check then compares the chip figure alone).
    public static func measureHostSgemm(searchPath: AdapterSearchPath = .default) -> Double {
        (try? hostSgemm(searchPath: searchPath)) ?? 0
    }

    static func hostSgemm(searchPath: AdapterSearchPath) throws -> Double {
        let n = sgemmSize
        let library = try AdapterLibrary.load("cpu", searchPath: searchPath)
        let device = try library.openDevice(0, options: [("threads", "1")])
        defer { try? device.close() }
        let x = try device.upload((0..<(n * n)).map { Float(($0 % 17) - 8) * 0.01 })
        let w = try device.upload((0..<(n * n)).map { Float(($0 % 13) - 6) * 0.01 })
        let y = try device.allocate(bytes: n * n * 4)
        let inputs = [
            TensorView(buffer: x, dtype: .f32, shape: [1, n, n]), TensorView(buffer: w, dtype: .f32, shape: [n, n]),
        ]
        let outputs = [TensorView(buffer: y, dtype: .f32, shape: [1, n, n])]
        let seconds = try timedSamples {
            let start = monotonicSeconds()
            try device.launch("matmul_forward", inputs: inputs, outputs: outputs)
            try device.synchronize()
            return monotonicSeconds() - start
        }[0]
        return 2 * Double(n * n * n) / max(seconds, 1e-12) / 1e9
    }

    /// Samples of the seconds of one run of `body` (which returns its own seconds), ascending:
    /// one untimed run that sizes the samples, then up to ``samples`` samples of as many runs as
    /// fill ``sampleSeconds``, each the mean per run; after 3 samples, no new one starts past
    /// ``budgetSeconds``.
    static func timedSamples(_ body: () throws -> Double) rethrows -> [Double] {
        let perRun = max(try body(), 1e-7)
        let runs = max(1, Int((sampleSeconds / perRun).rounded(.up)))
        let start = monotonicSeconds()
        var means: [Double] = []
        while means.count < samples && (means.count < 3 || monotonicSeconds() - start < budgetSeconds) {
            var sum = 0.0
            for _ in 0..<runs { sum += try body() }
            means.append(sum / Double(runs))
        }
        return means.sorted()
    }

    /// The median of ascending, non-empty `values`.
    static func median(_ values: [Double]) -> Double {
        let mid = values.count / 2
        return values.count % 2 == 1 ? values[mid] : (values[mid - 1] + values[mid]) / 2
    }

    /// Per figure, whichever of `self` and `other` is closer (by factor) to `stored`: two probes
    /// must both have moved for a check to call a profile stale.
    func closer(to stored: ProfileProbe, than other: ProfileProbe) -> ProfileProbe {
        func nearer(_ a: Double, _ b: Double, _ target: Double) -> Double {
            ProbeCheck.distance(a / target) <= ProbeCheck.distance(b / target) ? a : b
        }
        return ProfileProbe(
            hostSgemmGflops: nearer(hostSgemmGflops, other.hostSgemmGflops, stored.hostSgemmGflops),
            layerMs: nearer(layerMs, other.layerMs, stored.layerMs), microbatch: microbatch)
    }
}

/// A cached profile's stored probe beside one taken now, and whether the profile is stale.
///
/// Each figure becomes a slowdown factor (> 1: slower now): `now.layerMs / stored.layerMs` for
/// the chip and `stored.hostSgemmGflops / now.hostSgemmGflops` for the host. The profile is
/// stale when either factor is off by more than ``threshold`` in either direction (a factor above
/// `1 + threshold` or below `1 / (1 + threshold)`), or when there is no stored probe (a record
/// from an older medley: stale, unknown by how much). ``ratio`` is the factor farther from 1.
public struct ProbeCheck: Sendable, Hashable, Codable {
    /// The probe stored with the cached profile; nil for a record written before probes.
    public var stored: ProfileProbe?
    /// The probe taken now.
    public var now: ProfileProbe
    /// The chip's slowdown, `now.layerMs / stored.layerMs`; nil without a stored probe.
    public var layerRatio: Double?
    /// The host's slowdown, `stored.hostSgemmGflops / now.hostSgemmGflops`; nil without a stored probe.
    public var hostRatio: Double?
    /// Whichever of the two is farther from 1 (by factor); nil without a stored probe.
    public var ratio: Double?
    /// The allowed relative difference (0.15: 15 %).
    public var threshold: Double
    /// Whether the profile no longer describes the chip (see the type's summary).
    public var stale: Bool
    /// Whether the stale profile was measured again (false: kept, with a warning, or not stale).
    public var remeasured: Bool

    /// Compares `stored` with `now`; ``remeasured`` starts false.
    public init(stored: ProfileProbe?, now: ProfileProbe, threshold: Double) {
        self.stored = stored
        self.now = now
        self.threshold = threshold
        self.remeasured = false
        guard let stored, stored.layerMs > 0, now.layerMs > 0, stored.microbatch == now.microbatch else {
            stale = true
            return
        }
        let layer = now.layerMs / stored.layerMs
        // A host figure of 0 was not measured (no cpu adapter): the chip's figure decides alone.
        let host = stored.hostSgemmGflops > 0 && now.hostSgemmGflops > 0 ? stored.hostSgemmGflops / now.hostSgemmGflops : 1
        layerRatio = layer
        hostRatio = host
        ratio = Self.distance(layer) >= Self.distance(host) ? layer : host
        stale = Self.distance(layer) > 1 + threshold || Self.distance(host) > 1 + threshold
    }

    /// How far a factor is from 1, as a factor ≥ 1 (0.5 and 2 are equally far).
    static func distance(_ factor: Double) -> Double { factor >= 1 ? factor : 1 / factor }

    /// One line on the comparison: "probe 1.34× slower than when profiled (layer 2.10 ms now vs
    /// 1.57 ms stored, host sgemm 40.1 vs 52.3 GFLOP/s)", or, without a stored probe, that the
    /// record has none.
    public var summary: String {
        guard let stored, let ratio, let layerRatio, let hostRatio else {
            return "the cached profile has no staleness probe (written by an older medley, or its probe is unusable)"
        }
        let how =
            abs(ratio - 1) < 0.005
            ? "the same speed as" : ratio > 1 ? "\(Self.factor(ratio)) slower than" : "\(Self.factor(1 / ratio)) faster than"
        return
            "probe runs at \(how) when profiled (layer \(Self.ms(now.layerMs)) now vs \(Self.ms(stored.layerMs)) stored, \(Self.factor(layerRatio)); host sgemm \(Self.gflops(now.hostSgemmGflops)) vs \(Self.gflops(stored.hostSgemmGflops)) GFLOP/s, \(Self.factor(hostRatio)); threshold ±\(Int((threshold * 100).rounded())) %)"
    }

    /// The one-line warning for a stale profile kept as it is.
    public func warning(chip: String) -> String {
        "warning: chip \(chip): the cached profile looks stale: \(summary); plans may be off by as much; run `medley profile --refresh` (or leave out --keep-stale) to measure it again"
    }

    static func factor(_ value: Double) -> String { String(format: "%.2f×", value) }
    static func ms(_ value: Double) -> String { JobProfiles.format(value) + " ms" }
    static func gflops(_ value: Double) -> String { String(format: "%.1f", value) }
}

extension DeviceProfiler {
    /// Opens one device of `chip` and measures its probe, with the host figure given.
    public func probe(_ chip: ChipType, hostSgemmGflops: Double) throws -> ProfileProbe {
        let device = try openDevice(chip)
        defer { try? device.close() }
        return try probe(device: device, chip: chip.key, hostSgemmGflops: hostSgemmGflops)
    }

    /// Measures `chip`'s profile, then its probe on a device opened afresh, as a later load
    /// probes it (a sim chip that just ran the profile carries overslept time into its next
    /// launches, which would make the stored probe fast).
    public func measureWithProbe(_ chip: ChipType, hostSgemmGflops: Double) throws -> (DeviceProfile, ProfileProbe) {
        let profile = try measure(chip)
        return (profile, try probe(chip, hostSgemmGflops: hostSgemmGflops))
    }

    /// The chip figure of a probe on an opened device: the median milliseconds of one block layer
    /// (a one-block stage, as the profile times it) forward and backward on
    /// ``ProfileProbe/layerMicrobatch`` sequences. The median, as the profile keeps: a sim chip
    /// runs some launches fast on time it overslept before (``DeviceProfiler/typical(_:)``).
    public func probe(device: Device, chip: String, hostSgemmGflops: Double) throws -> ProfileProbe {
        let batch = ProfileProbe.layerMicrobatch
        let stage: GPT
        do {
            stage = try GPT(config: config(batch: batch), device: device, seed: 1, stage: layers(of: .block))
        } catch let error as MedleyError where error.code == .outOfMemory {
            throw MedleyError(
                .outOfMemory, "chip \(chip): one block layer for \(batch) sequence does not fit, so it cannot be probed: \(error.message)")
        }
        let positions = batch * model.seq
        var rng = SeededGenerator(seed: 7)
        let stream = (0..<(positions * model.dim)).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) }
        let gradient = stream.map { $0 * 1e-3 }
        let seconds = try stream.withUnsafeBytes { input in
            try gradient.withUnsafeBytes { outputGradient in
                try ProfileProbe.timedSamples { () throws -> Double in
                    let start = monotonicSeconds()
                    try stage.forwardStage(at: 0, batch: batch, tokens: nil, input: input, targets: nil)
                    try stage.backwardStage(at: 0, batch: batch, outputGradient: outputGradient, lossScale: 1 / Double(positions))
                    try stage.device.synchronize()
                    return monotonicSeconds() - start
                }
            }
        }
        return ProfileProbe(hostSgemmGflops: hostSgemmGflops, layerMs: ProfileProbe.median(seconds) * 1000, microbatch: batch)
    }

    /// Device 0 of `chip`'s adapter, opened with its options.
    func openDevice(_ chip: ChipType) throws -> Device {
        let library = try AdapterLibrary.load(chip.adapter, searchPath: searchPath)
        guard try library.deviceCount() > 0 else {
            throw MedleyError(.notFound, "chip \(chip.key): adapter \(library.info.name) reports no devices on this host")
        }
        return try library.openDevice(0, options: chip.sortedOptions)
    }
}
