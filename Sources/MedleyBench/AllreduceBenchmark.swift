import Foundation
import MedleyComm
import MedleyCore

/// `medley bench allreduce`: Medley's weighted gradient exchange against a plain
/// `MPI_Allreduce` of the same bytes in the same run, reported the way nccl-tests does.
///
/// algbw = bytes / time, busbw = algbw · 2(n−1)/n. Each iteration times one Medley step and
/// one plain allreduce, each after a barrier, the slowest rank's time counting; the median
/// over iterations is reported (robust on a shared, noisy machine).
public enum AllreduceBenchmark {
    /// What to measure.
    public struct Configuration: Sendable {
        /// Smallest message, bytes.
        public var minBytes: Int = 4 << 10
        /// Largest message, bytes (sizes double from min to max).
        public var maxBytes: Int = 256 << 20
        /// Bytes to move per size and kind (sets the iteration count, within the bounds below).
        public var bytesPerSize: Int = 1 << 30
        /// Fewest timed iterations per size.
        public var minIterations = 20
        /// Most timed iterations per size.
        public var maxIterations = 2000
        /// Timed blocks of the negotiation measurement; the best is reported.
        public var blocks: Int = 3
        /// Steps of the steady-state agreement timed for the negotiation overhead.
        public var agreementSteps: Int = 2000
        /// Exchange options (checksums off by default, as in training).
        public var options = GradientExchange.Options()

        /// Creates the default configuration.
        public init() {}
    }

    /// One size's figures; JSON keys are snake_case (`size_bytes`, `medley_busbw_gbps`, …).
    public struct Row: Codable, Sendable {
        /// Message size in bytes.
        public var sizeBytes: Int
        /// Timed iterations (each one Medley step and one plain allreduce).
        public var iterations: Int
        /// Medley exchange time per step, µs (median over iterations, slowest rank).
        public var medleyTimeUs: Double
        /// Medley algorithm bandwidth, GB/s.
        public var medleyAlgbwGbps: Double
        /// Medley bus bandwidth, GB/s.
        public var medleyBusbwGbps: Double
        /// Plain `MPI_Allreduce` time, µs (median over iterations, slowest rank).
        public var mpiTimeUs: Double
        /// Plain `MPI_Allreduce` algorithm bandwidth, GB/s.
        public var mpiAlgbwGbps: Double
        /// Plain `MPI_Allreduce` bus bandwidth, GB/s.
        public var mpiBusbwGbps: Double
        /// medley_busbw / mpi_busbw.
        public var ratio: Double
        /// Fastest Medley iteration, µs (what an undisturbed machine gives).
        public var medleyMinUs: Double
        /// Fastest plain `MPI_Allreduce` iteration, µs.
        public var mpiMinUs: Double
        /// mpi_min_us / medley_min_us: the ratio of best-case bandwidths.
        public var ratioBest: Double
        /// Elements of Medley's weighted average that differ from the exact result (summed over ranks).
        public var wrong: Int
        /// Elements of the plain allreduce that differ from the exact sum (summed over ranks).
        public var mpiWrong: Int
    }

    /// The machine a report was measured on.
    public struct Machine: Codable, Sendable {
        /// Host name.
        public var hostname: String
        /// `nproc`.
        public var cpus: Int
        /// CPU model from /proc/cpuinfo.
        public var cpuModel: String
        /// Physical memory, GiB.
        public var memoryGib: Double
        /// The MPI library's version line.
        public var mpiLibrary: String
    }

    /// A whole run.
    public struct Report: Codable, Sendable {
        /// Number of ranks.
        public var ranks: Int
        /// Where it ran.
        public var machine: Machine
        /// Steady-state agreement cost (the one small collective), µs per step, slowest rank.
        public var negotiationUsPerStep: Double
        /// A plain 8-byte `MPI_Allreduce` per step, µs, measured the same way: the floor any
        /// collective pays on this machine, for scale.
        public var tinyAllreduceUsPerStep: Double
        /// Per-size figures.
        public var results: [Row]
    }

    /// Runs the benchmark on every rank of `comm` (collective); every rank returns the same report.
    public static func run(on comm: Communicator, configuration: Configuration = Configuration()) throws -> Report {
        guard configuration.minBytes >= 4, configuration.maxBytes >= configuration.minBytes else {
            throw MedleyError(.invalidArgument, "benchmark sizes must satisfy 4 <= min <= max bytes")
        }
        var sizes: [Int] = []
        var s = configuration.minBytes
        while s <= configuration.maxBytes { sizes.append(s); s *= 2 }
        var rows: [Row] = []
        for size in sizes { rows.append(try measure(size: size, on: comm, configuration)) }
        let (negotiation, tiny) = try measureAgreement(on: comm, configuration)
        return Report(ranks: comm.size, machine: Machine.current(), negotiationUsPerStep: negotiation,
                      tinyAllreduceUsPerStep: tiny, results: rows)
    }

    private static func input(rank: Int, index j: Int) -> Float { Float((rank + 1) * (j % 13 + 1)) * 0.125 }

    private static func measure(size: Int, on comm: Communicator, _ c: Configuration) throws -> Row {
        let count = size / 4
        let p = comm.size, r = comm.rank
        let iterations = max(c.minIterations, min(c.maxIterations, c.bytesPerSize / size))
        let layout = try BucketLayout(tensors: [TensorMeta(name: "bench.grad", shape: [count], dtype: .float32)],
                                      capBytes: max(size, 4), jobID: "bench")
        let exchange = try GradientExchange(communicator: comm, layout: layout, options: c.options)
        let samples = r + 1
        let totalSamples = Double(p * (p + 1) / 2)
        try exchange.withGradient(named: "bench.grad") { g in
            for j in 0..<count { g[j] = input(rank: r, index: j) }
        }
        var plain = [Float](repeating: 0, count: count)
        for j in 0..<count { plain[j] = input(rank: r, index: j) }

        // Warm up both paths (the first exchange negotiates) and check the plain sum once.
        var step: UInt64 = 0
        try exchange.exchange(step: step, sampleCount: samples)
        step += 1
        var mpiWrong = 0
        try plain.withUnsafeMutableBufferPointer { buf in
            try comm.allreduce(inPlace: buf, op: .sum)
            let scale = Float(p * (p + 1) / 2)
            for j in 0..<count where buf[j] != Float(j % 13 + 1) * 0.125 * scale { mpiWrong += 1 }
            buf.update(repeating: 0)
            try comm.allreduce(inPlace: buf, op: .sum)
        }

        // Paired, interleaved samples: each iteration times one Medley step and one plain
        // allreduce, each started right after a barrier; per iteration the slowest rank counts.
        // The median over iterations is reported, which a noisy shared machine disturbs least.
        var medleyTimes = [Double](repeating: 0, count: iterations)
        var mpiTimes = [Double](repeating: 0, count: iterations)
        try plain.withUnsafeMutableBufferPointer { buf in
            for i in 0..<iterations {
                try comm.barrier()
                var t0 = MPIRuntime.wallTime()
                try exchange.exchange(step: step, sampleCount: samples)
                medleyTimes[i] = MPIRuntime.wallTime() - t0
                step += 1
                try comm.barrier()
                t0 = MPIRuntime.wallTime()
                try comm.allreduce(inPlace: buf, op: .sum)
                mpiTimes[i] = MPIRuntime.wallTime() - t0
            }
        }
        medleyTimes = try comm.allreduce(medleyTimes, op: .max)
        mpiTimes = try comm.allreduce(mpiTimes, op: .max)
        let bestMedley = median(medleyTimes), bestMPI = median(mpiTimes)

        // The weighted average is a fixed point of further exchanges (weights sum to 1), so after
        // all iterations every element must still equal Σ n_i g_i / Σ n_i (fp32 tolerance).
        var wrong = 0
        try exchange.withGradient(named: "bench.grad") { g in
            for j in 0..<count {
                var exact = 0.0
                for q in 0..<p { exact += Double(q + 1) * Double(input(rank: q, index: j)) }
                exact /= totalSamples
                if abs(Double(g[j]) - exact) > 1e-4 * abs(exact) + 1e-6 { wrong += 1 }
            }
        }
        let wrongs = try comm.allreduce([Int64(wrong), Int64(mpiWrong)], op: .sum)

        let busFactor = p > 1 ? 2.0 * Double(p - 1) / Double(p) : 1.0
        let medleyAlg = Double(size) / bestMedley / 1e9
        let mpiAlg = Double(size) / bestMPI / 1e9
        return Row(sizeBytes: size, iterations: iterations,
                   medleyTimeUs: bestMedley * 1e6, medleyAlgbwGbps: medleyAlg, medleyBusbwGbps: medleyAlg * busFactor,
                   mpiTimeUs: bestMPI * 1e6, mpiAlgbwGbps: mpiAlg, mpiBusbwGbps: mpiAlg * busFactor,
                   ratio: (medleyAlg * busFactor) / (mpiAlg * busFactor),
                   medleyMinUs: medleyTimes.min()! * 1e6, mpiMinUs: mpiTimes.min()! * 1e6,
                   ratioBest: mpiTimes.min()! / medleyTimes.min()!,
                   wrong: Int(wrongs[0]), mpiWrong: Int(wrongs[1]))
    }

    /// Steady-state agreement alone, and a tiny plain allreduce for scale: µs per step, best of
    /// the blocks, slowest rank.
    private static func measureAgreement(on comm: Communicator, _ c: Configuration) throws -> (Double, Double) {
        let layout = try BucketLayout(
            tensors: (0..<64).map { TensorMeta(name: "layer.\($0).w", shape: [64, 64], dtype: .float32) },
            capBytes: 1 << 20, jobID: "bench")
        let exchange = try GradientExchange(communicator: comm, layout: layout, options: c.options)
        _ = try exchange.agree(step: 0, sampleCount: comm.rank + 1)
        var best = Double.infinity, bestTiny = Double.infinity
        var step: UInt64 = 1
        var word: [UInt64] = [1]
        for _ in 0..<max(1, c.blocks) {
            try comm.barrier()
            var t0 = MPIRuntime.wallTime()
            for _ in 0..<c.agreementSteps {
                _ = try exchange.agree(step: step, sampleCount: comm.rank + 1)
                step += 1
            }
            best = min(best, try slowest((MPIRuntime.wallTime() - t0) / Double(c.agreementSteps), comm))
            try comm.barrier()
            t0 = MPIRuntime.wallTime()
            try word.withUnsafeMutableBufferPointer { w in
                for _ in 0..<c.agreementSteps { try comm.allreduce(inPlace: w, op: .max) }
            }
            bestTiny = min(bestTiny, try slowest((MPIRuntime.wallTime() - t0) / Double(c.agreementSteps), comm))
        }
        return (best * 1e6, bestTiny * 1e6)
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let n = sorted.count
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }

    private static func slowest(_ seconds: Double, _ comm: Communicator) throws -> Double {
        try comm.allreduce([seconds], op: .max)[0]
    }

    /// The report as a fixed-width table, one row per size.
    public static func table(_ report: Report) -> String {
        var lines: [String] = []
        lines.append("# medley bench allreduce: \(report.ranks) ranks on \(report.machine.cpus) × \(report.machine.cpuModel); \(report.machine.mpiLibrary)")
        lines.append("# busbw = algbw * 2(n-1)/n; time = median over paired iterations, slowest rank; Medley = weighted average (uneven n_i = rank+1)")
        lines.append(pad(["size", "iters", "medley us", "algbw", "busbw", "mpi us", "algbw", "busbw", "ratio", "best ratio", "wrong", "mpi_wrong"]))
        for r in report.results {
            lines.append(pad([formatBytes(r.sizeBytes), "\(r.iterations)",
                              f(r.medleyTimeUs, 1), f(r.medleyAlgbwGbps, 2), f(r.medleyBusbwGbps, 2),
                              f(r.mpiTimeUs, 1), f(r.mpiAlgbwGbps, 2), f(r.mpiBusbwGbps, 2),
                              f(r.ratio, 3), f(r.ratioBest, 3), "\(r.wrong)", "\(r.mpiWrong)"]))
        }
        lines.append("# steady-state negotiation: \(f(report.negotiationUsPerStep, 2)) us per step (one allgather of 32 bytes per rank); a plain 8-byte MPI_Allreduce: \(f(report.tinyAllreduceUsPerStep, 2)) us")
        return lines.joined(separator: "\n")
    }

    /// The report as pretty JSON with snake_case keys.
    public static func json(_ report: Report) throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(report)
    }

    private static func pad(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            let w = i == 0 ? 8 : 11
            return String(repeating: " ", count: max(0, w - c.count)) + c
        }.joined()
    }
    private static func f(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
}

/// Writes a byte count the short way: 4KiB, 1MiB, 256MiB.
func formatBytes(_ n: Int) -> String {
    if n >= 1 << 30, n % (1 << 30) == 0 { return "\(n >> 30)GiB" }
    if n >= 1 << 20, n % (1 << 20) == 0 { return "\(n >> 20)MiB" }
    if n >= 1 << 10, n % (1 << 10) == 0 { return "\(n >> 10)KiB" }
    return "\(n)B"
}

extension AllreduceBenchmark.Machine {
    /// Reads this machine's description.
    public static func current() -> Self {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
        return Self(hostname: ProcessInfo.processInfo.hostName,
                    cpus: ProcessInfo.processInfo.activeProcessorCount,
                    cpuModel: model,
                    memoryGib: (Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30) * 10).rounded() / 10,
                    mpiLibrary: MPIRuntime.libraryVersion())
    }
}
