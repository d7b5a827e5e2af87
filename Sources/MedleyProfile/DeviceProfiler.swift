import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel
import MedleyPlanner

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Measures one chip type on its real adapter and device: the forward and backward time of ONE
/// planning layer of each kind (embedding, block, head with the loss) at each microbatch size,
/// AdamW's time per parameter byte, and the memory the device reports.
///
/// Each kind is timed on a one-layer pipeline stage (`GPT` built with `stage: k..<k+1`) of a
/// one-block model of the job's width (a layer's time does not depend on the depth, and a deep
/// model's parameters are never generated), so a block's time is exactly one block's launches;
/// the stage also copies its input (the residual stream) onto the device, as a pipeline stage
/// does. Every size gets `warmups` untimed runs (at least one), then `repetitions` timed samples
/// (each repeating the work for at least 5 ms) whose median is kept (see ``typical(_:)`` for why
/// not the fastest). AdamW is timed the same way on the block stage's parameters (`GPT.step`). A size whose stage does not fit the device's
/// memory is left out (the planner extrapolates); a kind that does not fit even one sequence is
/// an error naming the chip and the bytes.
public struct DeviceProfiler: Sendable {
    /// The model whose layers are timed (its `layers` and `batch` are not used: one layer of each
    /// kind is timed, at `microbatchSizes`).
    public var model: JobSpec.Model
    /// Sequences per microbatch to time each kind at, ascending.
    public var microbatchSizes: [Int]
    /// Untimed runs before timing.
    public var warmups: Int
    /// Timed samples; the median is kept.
    public var repetitions: Int
    /// Where adapters are looked up.
    public var searchPath: AdapterSearchPath

    /// A profiler; throws when a setting is out of range.
    public init(
        model: JobSpec.Model, microbatchSizes: [Int], warmups: Int = 1, repetitions: Int = 5,
        searchPath: AdapterSearchPath = .default
    ) throws {
        guard !microbatchSizes.isEmpty, microbatchSizes.allSatisfy({ $0 >= 1 }) else {
            throw MedleyError(
                .invalidArgument, "profile: microbatch sizes must be whole numbers of at least 1, got \(microbatchSizes)")
        }
        guard warmups >= 0 else { throw MedleyError(.invalidArgument, "profile: warm-up runs must be 0 or more, got \(warmups)") }
        guard repetitions >= 1 else {
            throw MedleyError(.invalidArgument, "profile: repetitions must be at least 1, got \(repetitions)")
        }
        self.model = model
        self.microbatchSizes = Array(Set(microbatchSizes)).sorted()
        self.warmups = warmups
        self.repetitions = repetitions
        self.searchPath = searchPath
    }

    /// Opens one device of `chip` (device 0 of its adapter, with its options) and measures it.
    public func measure(_ chip: ChipType) throws -> DeviceProfile {
        let device = try openDevice(chip)
        defer { try? device.close() }
        return try measure(device: device, chip: chip.key, adapter: chip.adapter)
    }

    /// Measures an opened device; `chip` and `adapter` label the profile.
    public func measure(device: Device, chip: String, adapter: String) throws -> DeviceProfile {
        var timings: [DeviceProfile.LayerTiming] = []
        var optimizerMsPerByte = 0.0
        for kind in ModelCost.Layer.Kind.allCases {
            let (stage, sizes) = try buildStage(kind, on: device, chip: chip)
            for batch in sizes {
                let (forward, backward) = try time(stage, batch: batch)
                timings.append(
                    DeviceProfile.LayerTiming(kind: kind, microbatch: batch, forwardMs: forward, backwardMs: backward))
            }
            if kind == .block {
                optimizerMsPerByte = try timeOptimizer(stage)
            }
        }
        let description = device.description
        return DeviceProfile(
            chip: chip, adapter: adapter, vendor: description.vendor, name: description.name,
            memoryBytes: Int(clamping: description.memoryBytes), timings: timings,
            optimizerMsPerParameterByte: optimizerMsPerByte)
    }

    // MARK: Stages

    /// The planning layer of `kind` in the one-block model the stages are cut from.
    func layers(of kind: ModelCost.Layer.Kind) -> Range<Int> {
        switch kind {
        case .embedding: 0..<1
        case .block: 1..<2
        case .head: 2..<3
        }
    }

    /// The one-block model of the job's width, with `batch` sequences per microbatch.
    func config(batch: Int) -> ModelConfig {
        ModelConfig(layers: 1, dim: model.dim, heads: model.heads, seq: model.seq, maxBatch: batch, vocab: model.vocab)
    }

    /// The one-layer stage of `kind`, built for the largest microbatch that fits the device, and
    /// the sizes it can time.
    func buildStage(_ kind: ModelCost.Layer.Kind, on device: Device, chip: String) throws -> (GPT, [Int]) {
        var sizes = microbatchSizes
        while let largest = sizes.last {
            do {
                return (try GPT(config: config(batch: largest), device: device, seed: 1, stage: layers(of: kind)), sizes)
            } catch let error as MedleyError where error.code == .outOfMemory {
                sizes.removeLast()
            }
        }
        let need = GPT.deviceBytes(config: config(batch: 1), stage: layers(of: kind), activationSequences: nil)
        throw MedleyError(
            .outOfMemory,
            "chip \(chip): \(ByteCount.describe(device.description.memoryBytes)) of memory cannot hold one \(kind) layer for one sequence (it needs \(ByteCount.describe(UInt64(need)))), so it cannot be profiled; give it more memory or shrink the model")
    }

    /// The typical forward and backward milliseconds of `stage` on `batch` sequences.
    func time(_ stage: GPT, batch: Int) throws -> (forward: Double, backward: Double) {
        let config = stage.config
        let positions = batch * config.seq
        var rng = SeededGenerator(seed: UInt64(batch))
        let tokens = (0..<positions).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(config.vocab)) }
        let targets = (0..<positions).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(config.vocab)) }
        let stream = (0..<(positions * config.dim)).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) }
        let gradient = stream.map { $0 * 1e-3 }
        let scale = 1 / Double(positions)

        return try stream.withUnsafeBytes { input in
            try gradient.withUnsafeBytes { outputGradient in
                try typical { () throws -> [Double] in
                    let start = monotonicSeconds()
                    try stage.forwardStage(
                        at: 0, batch: batch, tokens: stage.holdsEmbedding ? tokens : nil,
                        input: stage.holdsEmbedding ? nil : input, targets: stage.holdsHead ? targets : nil)
                    try stage.device.synchronize()
                    let middle = monotonicSeconds()
                    try stage.backwardStage(
                        at: 0, batch: batch, outputGradient: stage.holdsHead ? nil : outputGradient, lossScale: scale)
                    try stage.device.synchronize()
                    return [middle - start, monotonicSeconds() - middle]
                }
            }
        }.withFirstTwo
    }

    /// AdamW milliseconds per parameter byte: the typical `GPT.step` over the stage's parameters.
    func timeOptimizer(_ stage: GPT) throws -> Double {
        let ms = try typical { () throws -> [Double] in
            let start = monotonicSeconds()
            try stage.step(lr: 1e-3, weightDecay: 0.1)
            try stage.device.synchronize()
            return [monotonicSeconds() - start]
        }[0]
        return ms / Double(max(1, stage.layout.count * 4))
    }

    /// Runs `body` (which returns the seconds of its parts) `warmups` times untimed (at least once,
    /// to size the samples), then `repetitions` samples of as many runs as fill
    /// ``minimumSampleSeconds``; returns each part's median over the samples of its mean per run,
    /// in milliseconds.
    ///
    /// Why not the fastest sample: a simulated chip carries the time it overslept or was
    /// preempted (up to 50 ms) into later launches and then runs them at full speed, so on a
    /// busy host the fastest sample is one that spent such credit and is faster than the chip.
    /// Averaging within a sample and taking the median across samples gives the chip's rate.
    func typical(_ body: () throws -> [Double]) throws -> [Double] {
        var last: [Double] = []
        for _ in 0..<max(1, warmups) { last = try body() }
        let perRun = max(last.reduce(0, +), 1e-7)
        let runs = max(1, Int((Self.minimumSampleSeconds / perRun).rounded(.up)))
        var all: [[Double]] = Array(repeating: [], count: last.count)
        for _ in 0..<repetitions {
            var sums = Array(repeating: 0.0, count: last.count)
            for _ in 0..<runs {
                for (i, seconds) in try body().enumerated() { sums[i] += seconds }
            }
            for i in all.indices { all[i].append(sums[i] / Double(runs) * 1000) }
        }
        return all.map { $0.sorted()[$0.count / 2] }
    }

    /// The shortest a timed sample is made by repeating the measured work.
    static let minimumSampleSeconds = 0.005
}

extension Array where Element == Double {
    /// The first two elements as a pair.
    fileprivate var withFirstTwo: (forward: Double, backward: Double) { (self[0], self[1]) }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}
