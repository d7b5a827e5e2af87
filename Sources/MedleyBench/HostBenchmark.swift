import COpenBLAS
import Foundation
import MedleyComm
import MedleyCore
import MedleyTrain

/// How much a host core loses while the core beside it works: the part of heterogeneous
/// efficiency the host takes when simulated chips compute on the host's other cores.
///
/// A sim chip computes its real results on a host core before it sleeps to its rated speed, so in
/// a mixed job on one host the cpu chip's core works beside a busy neighbour, while the cpu
/// chip alone has the host to itself. This measures that effect without Medley in the way: on
/// one thread pinned to `cpu`, plain OpenBLAS `sgemm` (compute-bound work, like the model's
/// matmuls) and `memset` over 256 MiB (memory-bound work, like its norms, activations and
/// softmax), each while a thread pinned to `neighbour` does nothing, spins in registers,
/// streams memory, or runs `sgemm` too. Every pairing runs once a round, in an order rotated
/// from round to round so that a change in the host's other tenants hits them alike; each
/// figure is the median over the rounds of its ratio to the idle run of the same round.
public enum HostBenchmark {
    /// What the timed core does.
    public enum Work: String, CaseIterable, Codable, Sendable {
        /// `sgemm` of two square matrices (GFLOP/s).
        case gemm
        /// `memset` over 256 MiB (GB/s).
        case memory

        public var unit: String { self == .gemm ? "GFLOP/s" : "GB/s" }
    }

    /// What the neighbouring core does meanwhile.
    public enum Load: String, CaseIterable, Codable, Sendable {
        /// Nothing: the baseline.
        case idle
        /// A dependent chain of floating-point multiplies and adds in registers.
        case spin
        /// `memset` over 256 MiB, again and again: memory bandwidth and the shared cache.
        case memory
        /// `sgemm` of the same size as the timed one.
        case gemm

        /// The work the neighbour repeats: the timed core's own kernels, or none.
        var work: Work? {
            switch self {
            case .idle, .spin: nil
            case .memory: .memory
            case .gemm: .gemm
            }
        }
    }

    /// One pairing's rate in one round.
    public struct Sample: Codable, Sendable {
        public var work: Work
        public var load: Load
        /// GFLOP/s (`gemm`) or GB/s (`memory`).
        public var rate: Double
    }

    /// One pairing over every round.
    public struct Pairing: Codable, Sendable {
        public var work: Work
        public var load: Load
        /// The median rate, in `unit`.
        public var rate: Double
        public var unit: String
        /// Median over the rounds of the rate ÷ the same work's rate with the neighbour idle in
        /// that round, and the range.
        public var ratio: Double
        public var ratioMin: Double
        public var ratioMax: Double

        enum CodingKeys: String, CodingKey {
            case work, load, rate, unit, ratio
            case ratioMin = "ratio_min"
            case ratioMax = "ratio_max"
        }
    }

    public struct Result: Codable, Sendable {
        /// The timed core and its neighbour.
        public var cpu: Int
        public var neighbour: Int
        /// The square `sgemm`'s side, and the seconds each pairing was timed for a round.
        public var size: Int
        public var seconds: Double
        public var pairings: [Pairing]
        /// Every round's samples.
        public var rounds: [[Sample]]
    }

    /// Measures ``Result``; `progress` gets one line per round.
    ///
    /// - Throws: `invalidArgument` for a CPU this host does not have, the same CPU twice,
    ///   fewer than 1 round, a time under 0.05 s or over 60 s, or a size outside 16…4096.
    public static func measure(
        cpu: Int, neighbour: Int, size: Int = 512, seconds: Double = 2, rounds: Int = 5, progress: (String) -> Void
    ) throws -> Result {
        try CPUAffinity.check([cpu], field: "--cpu")
        try CPUAffinity.check([neighbour], field: "--neighbour")
        guard cpu != neighbour else {
            throw MedleyError(.invalidArgument, "--cpu and --neighbour are both CPU \(cpu); give two different CPUs")
        }
        guard rounds >= 1 else { throw MedleyError(.invalidArgument, "--rounds must be at least 1, got \(rounds)") }
        guard seconds.isFinite, seconds >= 0.05, seconds <= 60 else {
            throw MedleyError(.invalidArgument, "--seconds must be from 0.05 to 60, got \(seconds)")
        }
        guard (16...4096).contains(size) else {
            throw MedleyError(.invalidArgument, "--size must be from 16 to 4096, got \(size)")
        }
        openblas_set_num_threads(1)
        let pairs = Work.allCases.flatMap { work in Load.allCases.map { (work, $0) } }
        var samples: [[Sample]] = []
        for round in 0..<rounds {
            var rates = [Double](repeating: 0, count: pairs.count)
            // Rotate the order so that no pairing always runs first, or after the same one.
            for k in pairs.indices {
                let i = (k + round) % pairs.count
                rates[i] = try timed(pairs[i].0, cpu: cpu, neighbour: neighbour, load: pairs[i].1, size: size, seconds: seconds)
            }
            let row = pairs.indices.map { Sample(work: pairs[$0].0, load: pairs[$0].1, rate: rates[$0]) }
            progress("round \(round + 1): " + row.map { "\($0.work.rawValue) beside \($0.load.rawValue) " + String(format: "%.1f", $0.rate) }
                .joined(separator: ", "))
            samples.append(row)
        }
        let pairings = pairs.indices.map { i -> Pairing in
            let (work, load) = pairs[i]
            let idle = pairs.firstIndex { $0 == (work, .idle) }!
            let ratios = samples.map { $0[i].rate / $0[idle].rate }
            return Pairing(
                work: work, load: load, rate: TrainBenchmark.median(samples.map { $0[i].rate }), unit: work.unit,
                ratio: TrainBenchmark.median(ratios), ratioMin: ratios.min()!, ratioMax: ratios.max()!)
        }
        return Result(cpu: cpu, neighbour: neighbour, size: size, seconds: seconds, pairings: pairings, rounds: samples)
    }

    /// The rate of `work` on `cpu` over `seconds` while `neighbour` runs `load`.
    static func timed(_ work: Work, cpu: Int, neighbour: Int, load: Load, size: Int, seconds: Double) throws -> Double {
        let shared = Shared()
        let done = DispatchSemaphore(value: 0)
        if load != .idle {
            Thread {
                defer { done.signal() }
                do {
                    try CPUAffinity.pinCurrentThread(to: [neighbour])
                    try run(load, size: size, until: shared)
                } catch {
                    shared.fail(error)
                }
            }.start()
        }
        Thread {
            defer { done.signal() }
            do {
                try CPUAffinity.pinCurrentThread(to: [cpu])
                // Start the clock once the neighbour has its memory touched and is at work.
                if load != .idle {
                    while !shared.isReady && !shared.isStopped { Thread.sleep(forTimeInterval: 0.005) }
                    Thread.sleep(forTimeInterval: 0.05)
                }
                shared.finish(rate: try rate(of: work, size: size, seconds: seconds, until: shared))
            } catch {
                shared.fail(error)
            }
        }.start()
        done.wait()
        if load != .idle { done.wait() }
        return try shared.result()
    }

    /// Runs `work` again and again for `seconds`; GFLOP/s of `sgemm` of side `size`, or GB/s
    /// written by `memset`. Stops early, with what it has, when `shared` is stopped (the
    /// neighbour failed).
    static func rate(of work: Work, size: Int, seconds: Double, until shared: Shared) throws -> Double {
        let kernel = Kernel(work, size: size)
        let start = DispatchTime.now().uptimeNanoseconds
        var runs = 0
        var elapsed = 0.0
        repeat {
            kernel.run(runs)
            runs += 1
            elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        } while elapsed < seconds && !shared.isStopped
        return Double(runs) * kernel.amount / elapsed / 1e9
    }

    /// Bytes the memory work streams through: far past any cache.
    static let memoryBytes = 256 << 20

    /// The neighbour's work, until `stop` is set.
    static func run(_ load: Load, size: Int, until stop: Shared) throws {
        if let work = load.work {
            let kernel = Kernel(work, size: size)
            stop.markReady()
            var runs = 0
            while !stop.isStopped {
                kernel.run(runs)
                runs += 1
            }
        } else if load == .spin {
            stop.markReady()
            var x = 1.0
            while !stop.isStopped {
                for _ in 0..<100_000 { x = x * 1.000_000_1 + 1e-9 }
            }
            stop.sink(x)
        }
    }

    /// One `work` with its memory allocated and touched (page faults are not part of the rate).
    final class Kernel {
        let work: Work
        let size: Int
        private var a: [Float] = [], b: [Float] = [], c: [Float] = []
        private let buffer: UnsafeMutableRawBufferPointer

        init(_ work: Work, size: Int) {
            self.work = work
            self.size = size
            buffer = .allocate(byteCount: work == .memory ? HostBenchmark.memoryBytes : 0, alignment: 64)
            switch work {
            case .gemm:
                let count = size * size
                a = (0..<count).map { Float($0 % 7) * 0.1 }
                b = (0..<count).map { Float($0 % 5) * 0.1 }
                c = [Float](repeating: 0, count: count)
            case .memory:
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
            }
        }

        deinit { buffer.deallocate() }

        /// Floating-point operations (`gemm`) or bytes written (`memory`) in one ``run(_:)``.
        var amount: Double { work == .gemm ? 2 * Double(size * size * size) : Double(buffer.count) }

        /// Runs the work once; `index` varies the bytes written, run to run.
        func run(_ index: Int) {
            switch work {
            case .gemm:
                let n = Int32(size)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, &c, n)
            case .memory:
                memset(buffer.baseAddress!, Int32(index & 0xff), buffer.count)
            }
        }
    }

    /// What the timed thread and the neighbour share: the neighbour's ready flag, the stop flag
    /// it polls, the rate, the first error, and a place to leave a result the optimiser must keep.
    final class Shared: @unchecked Sendable {
        private let lock = NSLock()
        private var stopped = false
        private var ready = false
        private var rate: Double?
        private var error: (any Error)?
        private var kept = 0.0
        var isStopped: Bool { lock.withLock { stopped } }
        var isReady: Bool { lock.withLock { ready } }
        func markReady() { lock.withLock { ready = true } }
        func finish(rate: Double) { lock.withLock { self.rate = rate; stopped = true } }
        func fail(_ error: any Error) { lock.withLock { self.error = self.error ?? error; stopped = true } }
        func sink(_ x: Double) { lock.withLock { kept += x } }
        func result() throws -> Double {
            try lock.withLock {
                if let error { throw error }
                return rate ?? 0
            }
        }
    }
}
