import COpenBLAS
import Foundation
import MedleyAdapters
import MedleyCore
import MedleyModel

/// One line of a benchmark: an op on one of the model's shapes, or the whole model.
///
/// Nominal work per row (what `gflops` and `gbps` divide by the median time):
///
/// | op | flops | bytes (for `gbps`) |
/// |---|---|---|
/// | matmul_forward | 2·N·C·OC | — |
/// | matmul_backward | 4·N·C·OC (dx and dW; dbias not counted) | — |
/// | attention_forward | 2·B·T²·C (QKᵀ and PV over the causal half) | — |
/// | attention_backward | 4·B·T²·C (twice the forward) | — |
/// | encoder_forward | 1 per output element | 4·(BT + 3·BTC): ids, gathered wte and wpe rows, out |
/// | encoder_backward | 2 per dout element | 4·(BT + 5·BTC): dout, ids, dwte and dwpe rows read and written |
/// | layernorm_forward | 8 per element | 4·(2·NC + 2·C + 2·N) |
/// | layernorm_backward | 16 per element | 4·(4·NC + 5·C + 2·N): dx, dw, db read and written |
/// | gelu_forward | 10 per element | 4·2n |
/// | gelu_backward | 20 per element | 4·4n (dx read and written) |
/// | residual_forward | 1 per element | 4·3n |
/// | residual_backward | 2 per element | 4·5n (da, db read and written) |
/// | crossentropy_forward | 4 per logit | 4·(NV + 3N) |
/// | crossentropy_backward | 4 per logit | 4·(3·NV + 2N) |
/// | adamw_update | 14 per parameter | 4·7n (grad read; param, m, v read and written) |
/// | sum_squares | 2 per element | 4·n |
/// | model_fwd_bwd | 6·P·B·T + 6·L·B·T²·C | — |
///
/// `gbps` is given for the memory-bound ops only (everything but matmul,
/// attention and the whole model).
public struct BenchmarkRow: Sendable, Hashable, Codable {
    /// Op name of opset v1, or `model_fwd_bwd` for one forward and backward of the whole GPT.
    public var op: String
    /// Where in the model the op runs with this shape (e.g. `attn.qkv`, `head (tied wte)`).
    public var role: String
    /// The shape, e.g. `512x128->384` for a matmul of 512 rows from 128 to 384 channels.
    public var shape: String
    /// Milliseconds of one launch followed by `synchronize` (or one model step): the `statistic` of `repeats` samples.
    public var ms: Double
    /// Nominal GFLOP/s (see the table above).
    public var gflops: Double
    /// Nominal GB/s of memory traffic, for memory-bound ops.
    public var gbps: Double?
    /// GFLOP/s of the same products through plain OpenBLAS `cblas_sgemm` on one thread (matmul rows).
    public var sgemmGflops: Double?
    /// `gflops / sgemmGflops` (matmul rows).
    public var ratio: Double?
    /// Median milliseconds of the same row on the reference adapter, measured in the same run.
    public var referenceMs: Double?
    /// `referenceMs / ms`: how many times faster than the reference adapter.
    public var speedup: Double?
    /// How `ms` (and `referenceMs`) summarise the samples: `median` or `min`.
    public var statistic: String
    /// Number of timed samples per contestant.
    public var repeats: Int

    /// Creates a row.
    public init(
        op: String, role: String, shape: String, ms: Double, gflops: Double, gbps: Double? = nil,
        sgemmGflops: Double? = nil, ratio: Double? = nil, referenceMs: Double? = nil, speedup: Double? = nil,
        statistic: String = "median", repeats: Int = 1
    ) {
        self.op = op
        self.role = role
        self.shape = shape
        self.ms = ms
        self.gflops = gflops
        self.gbps = gbps
        self.sgemmGflops = sgemmGflops
        self.ratio = ratio
        self.referenceMs = referenceMs
        self.speedup = speedup
        self.statistic = statistic
        self.repeats = repeats
    }

    enum CodingKeys: String, CodingKey {
        case op, role, shape, ms, gflops, gbps
        case sgemmGflops = "sgemm_gflops"
        case ratio
        case referenceMs = "reference_ms"
        case speedup, statistic, repeats
    }
}

/// How a benchmark row summarises its timed samples.
public enum BenchmarkStatistic: String, Sendable, CaseIterable {
    /// The median: the typical launch (the default).
    case median
    /// The fastest launch: the least disturbed by other load on a shared machine.
    case min
}

/// Times every opset v1 op the GPT uses, on the GPT's own shapes, on one adapter.
///
/// Each row is the median (or, with `statistic: .min`, the minimum) of
/// `repeats` timed launches (each followed by `synchronize`) after `warmup`
/// untimed ones. Matmul rows are compared with
/// the same products through plain OpenBLAS `cblas_sgemm` on one thread, timed
/// in the same loop. A last row times one forward + backward of the whole
/// model; for an adapter other than `reference` that row, and every row when
/// `compareReference` is set, also carries the reference adapter's time,
/// measured round-robin in the same loop so both see the same machine state.
public struct AdapterBenchmark {
    /// Adapter name or library path.
    public var adapter: String
    /// Device options (key, value) for the adapter.
    public var options: [(String, String)]
    /// Model whose shapes are benchmarked.
    public var config: ModelConfig
    /// Timed launches per row (the median is reported).
    public var repeats: Int
    /// Untimed launches before timing.
    public var warmup: Int
    /// Whether every row also gets the reference adapter's time.
    public var compareReference: Bool
    /// Where adapters are looked up.
    public var searchPath: AdapterSearchPath
    /// Seed of the random inputs and model parameters.
    public var seed: UInt64
    /// How each row summarises its samples.
    public var statistic: BenchmarkStatistic

    /// Creates a benchmark; nothing runs until `run`.
    public init(
        adapter: String, options: [(String, String)] = [], config: ModelConfig = .default, repeats: Int = 10,
        warmup: Int = 2, compareReference: Bool = false, searchPath: AdapterSearchPath = .default, seed: UInt64 = 1,
        statistic: BenchmarkStatistic = .median
    ) {
        self.adapter = adapter
        self.options = options
        self.config = config
        self.repeats = repeats
        self.warmup = warmup
        self.compareReference = compareReference
        self.searchPath = searchPath
        self.seed = seed
        self.statistic = statistic
    }

    /// Runs every row; `progress` is called as each row finishes.
    public func run(progress: (BenchmarkRow) -> Void = { _ in }) throws -> [BenchmarkRow] {
        guard repeats >= 1 else { throw MedleyError(.invalidArgument, "repeat must be at least 1, got \(repeats)") }
        guard warmup >= 0 else { throw MedleyError(.invalidArgument, "warmup must be at least 0, got \(warmup)") }
        try config.validate()
        let library = try AdapterLibrary.load(adapter, searchPath: searchPath)
        let device = try library.openDevice(0, options: options)
        let isReference = library.info.name == "reference"
        let referenceDevice: Device? =
            (compareReference || !isReference)
            ? try AdapterLibrary.load("reference", searchPath: searchPath).openDevice(0) : nil

        var rows: [BenchmarkRow] = []
        let cases = try BenchCase.all(config: config, device: device, seed: seed)
        let referenceCases =
            compareReference ? try BenchCase.all(config: config, device: referenceDevice!, seed: seed) : nil
        openblas_set_num_threads(1)
        for (index, c) in cases.enumerated() {
            var contestants: [() throws -> Void] = [{ try c.launch() }]
            let gemm = c.gemms.isEmpty ? nil : SgemmBaseline(c.gemms, seed: seed)
            if let gemm { contestants.append { gemm.run() } }
            if let referenceCases { contestants.append { try referenceCases[index].launch() } }
            let ms = try summaries(contestants)
            var row = BenchmarkRow(
                op: c.op, role: c.role, shape: c.shape, ms: ms[0], gflops: c.flops / (ms[0] * 1e6),
                gbps: c.bytes.map { $0 / (ms[0] * 1e6) }, statistic: statistic.rawValue, repeats: repeats)
            if gemm != nil {
                row.sgemmGflops = c.flops / (ms[1] * 1e6)
                row.ratio = row.gflops / row.sgemmGflops!
            }
            if referenceCases != nil {
                row.referenceMs = ms.last!
                row.speedup = ms.last! / ms[0]
            }
            rows.append(row)
            progress(row)
        }

        // The whole model: one forward (with the loss read back) and one backward.
        let model = try ModelStep(config: config, device: device, seed: seed)
        let referenceModel = try referenceDevice.map { try ModelStep(config: config, device: $0, seed: seed) }
        var contestants: [() throws -> Void] = [{ try model.run() }]
        if let referenceModel { contestants.append { try referenceModel.run() } }
        let ms = try summaries(contestants)
        let c = config
        let flops =
            6 * Double(c.parameterCount) * Double(c.maxBatch * c.seq)
            + 6 * Double(c.layers) * Double(c.maxBatch) * Double(c.seq * c.seq) * Double(c.dim)
        var row = BenchmarkRow(
            op: "model_fwd_bwd", role: "GPT forward+backward", shape: "\(c.maxBatch)x\(c.seq) tokens, \(c)",
            ms: ms[0], gflops: flops / (ms[0] * 1e6), statistic: statistic.rawValue, repeats: repeats)
        if referenceModel != nil {
            row.referenceMs = ms[1]
            row.speedup = ms[1] / ms[0]
        }
        rows.append(row)
        progress(row)
        return rows
    }

    /// Times each contestant `repeats` times, round-robin after `warmup` rounds; the statistic of each, in ms.
    func summaries(_ contestants: [() throws -> Void]) throws -> [Double] {
        for _ in 0..<warmup {
            for body in contestants { try body() }
        }
        var samples = [[Double]](repeating: [], count: contestants.count)
        for _ in 0..<repeats {
            for (i, body) in contestants.enumerated() {
                let start = monotonicSeconds()
                try body()
                samples[i].append((monotonicSeconds() - start) * 1000)
            }
        }
        switch statistic {
        case .median: return samples.map(median)
        case .min: return samples.map { $0.min()! }
        }
    }

    // MARK: Output

    /// Rows of cells for a table, headers first (columns without any value are left out).
    public static func tableCells(_ rows: [BenchmarkRow]) -> [[String]] {
        let hasGemm = rows.contains { $0.sgemmGflops != nil }
        let hasReference = rows.contains { $0.referenceMs != nil }
        var header = ["op", "role", "shape", "ms", "GFLOP/s", "GB/s"]
        if hasGemm { header += ["sgemm GFLOP/s", "ratio"] }
        if hasReference { header += ["reference ms", "speedup"] }
        var cells = [header]
        for row in rows {
            var line = [row.op, row.role, row.shape, format(row.ms, 4), format(row.gflops, 2), format(row.gbps, 2)]
            if hasGemm { line += [format(row.sgemmGflops, 2), format(row.ratio, 3)] }
            if hasReference { line += [format(row.referenceMs, 4), format(row.speedup, 3)] }
            cells.append(line)
        }
        return cells
    }

    /// The rows as a JSON array of objects (keys sorted, absent values left out).
    public static func json(_ rows: [BenchmarkRow]) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(rows)
    }

    /// Writes the rows as JSON to `path` atomically: a temporary file beside it, then rename.
    public static func writeJSON(_ rows: [BenchmarkRow], to path: String) throws {
        let data = try json(rows)
        let temporary = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: data) else {
            throw MedleyError(.io, "cannot write \(temporary) (does the directory exist and is it writable?)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw MedleyError(.io, "cannot rename \(temporary) to \(path): \(reason)")
        }
    }

    /// Throws a clear `.io` error when a file could not be created at `path` (its directory is missing or read-only).
    public static func checkWritable(_ path: String) throws {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw MedleyError(.io, "cannot write \(path): directory \(directory) does not exist")
        }
        guard FileManager.default.isWritableFile(atPath: directory) else {
            throw MedleyError(.io, "cannot write \(path): directory \(directory) is not writable")
        }
    }

    static func format(_ value: Double?, _ digits: Int) -> String {
        guard let value else { return "-" }
        return String(format: "%.\(digits)f", value)
    }
}

/// Median of a non-empty sample.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
}

/// One forward (loss read back) + zeroGradients + backward + synchronize of a GPT.
struct ModelStep {
    let model: GPT
    let tokens: [Int32]
    let targets: [Int32]

    init(config: ModelConfig, device: Device, seed: UInt64) throws {
        model = try GPT(config: config, device: device, seed: seed)
        var rng = SeededGenerator(seed: seed ^ 0x70_6b_65_6e)
        let ids = (0..<(config.maxBatch * config.seq + 1)).map { _ in Int32(rng.below(config.vocab)) }
        tokens = Array(ids.dropLast())
        targets = Array(ids.dropFirst())
    }

    func run() throws {
        _ = try model.forward(tokens: tokens, targets: targets, batch: model.config.maxBatch)
        try model.zeroGradients()
        try model.backward()
        try model.device.synchronize()
    }
}
