import Foundation
import MedleyComm
import MedleyCore
import MedleyPlanner

/// Measures the link between two ranks with an MPI ping-pong and fits the α–β model the
/// planner prices sends with: one message of n bytes takes `α + n / bandwidth`.
///
/// Rank 0 sends n bytes to rank 1, which sends them back; half the round trip is one send.
/// `warmups` untimed rounds, then `repetitions` timed rounds, each one round trip of every size
/// in turn; each size keeps its fastest.
/// α is the fastest one-way time of any size (a small one); the bandwidth is the inverse of the
/// least-squares slope of (time − α) against (bytes − smallest size), so the large sizes set it.
///
/// ``measure(program:configuration:timeoutSeconds:)`` starts `program` under real `mpirun`
/// (2 ranks, ``MPIRun``'s flags and `--timeout`) with the hidden command ``commandName``, which
/// calls ``runRanks(on:configuration:)`` and has rank 0 write the samples to a file.
public enum PingPong {
    /// The hidden `medley` subcommand that runs the ranks' side.
    public static let commandName = "ping-pong"

    /// What to measure.
    public struct Configuration: Sendable, Hashable, Codable {
        /// Message sizes in bytes, ascending; at least two distinct.
        public var sizes: [Int]
        /// Untimed rounds (one round trip of every size each).
        public var warmups: Int
        /// Timed rounds; each size keeps its fastest round trip.
        public var repetitions: Int

        /// A configuration; the default is 8 B, 1 KiB, 64 KiB, 1 MiB and 4 MiB, 3 warm-ups, 30 timed.
        public init(sizes: [Int] = [8, 1 << 10, 64 << 10, 1 << 20, 4 << 20], warmups: Int = 3, repetitions: Int = 30) {
            self.sizes = sizes
            self.warmups = warmups
            self.repetitions = repetitions
        }

        /// Throws a one-line error when a setting is out of range.
        public func validate() throws {
            guard Set(sizes).count >= 2, sizes.allSatisfy({ $0 >= 1 && $0 <= 1 << 30 }) else {
                throw MedleyError(
                    .invalidArgument, "ping-pong: give at least two different message sizes from 1 B to 1 GiB, got \(sizes)")
            }
            guard warmups >= 0, repetitions >= 1 else {
                throw MedleyError(
                    .invalidArgument,
                    "ping-pong: warm-ups must be 0 or more and repetitions at least 1, got \(warmups) and \(repetitions)")
            }
        }

        /// The command-line arguments of ``PingPong/commandName`` for this configuration.
        public var arguments: [String] {
            ["--sizes", sizes.map(String.init).joined(separator: ","), "--warmups", String(warmups),
             "--repetitions", String(repetitions)]
        }
    }

    /// One size's fastest one-way time.
    public struct Sample: Sendable, Hashable, Codable {
        /// Message size in bytes.
        public var bytes: Int
        /// Half the fastest round trip, in seconds.
        public var seconds: Double

        /// A sample; see the properties.
        public init(bytes: Int, seconds: Double) {
            self.bytes = bytes
            self.seconds = seconds
        }
    }

    /// The ranks' side, under mpirun: ranks 0 and 1 ping-pong (others only wait); rank 0 returns
    /// the samples, every other rank nil.
    public static func runRanks(on world: Communicator, configuration: Configuration) throws -> [Sample]? {
        try configuration.validate()
        guard world.size >= 2 else {
            throw MedleyError(.invalidArgument, "ping-pong needs 2 ranks, mpirun started \(world.size)")
        }
        let sizes = Array(Set(configuration.sizes)).sorted()
        var buffer = [UInt8](repeating: 0x5a, count: sizes.last!)
        var best = Array(repeating: Double.infinity, count: sizes.count)
        if world.rank <= 1 {
            let peer = 1 - world.rank
            try buffer.withUnsafeMutableBufferPointer { all in
                // Rounds outside, sizes inside: a busy spell of the host (a rank waiting for a
                // core) then slows one round of every size, not every round of one size.
                for round in 0..<(configuration.warmups + configuration.repetitions) {
                    for (index, size) in sizes.enumerated() {
                        let message = UnsafeMutableBufferPointer(rebasing: all[0..<size])
                        let start = MPIRuntime.wallTime()
                        if world.rank == 0 {
                            try world.send(UnsafeBufferPointer(message), to: peer, tag: 7)
                            try world.receive(into: message, from: peer, tag: 7)
                        } else {
                            try world.receive(into: message, from: peer, tag: 7)
                            try world.send(UnsafeBufferPointer(message), to: peer, tag: 7)
                        }
                        if round >= configuration.warmups { best[index] = min(best[index], MPIRuntime.wallTime() - start) }
                    }
                }
            }
        }
        let samples = zip(sizes, best).map { Sample(bytes: $0, seconds: $1 / 2) }
        try world.barrier()
        return world.rank == 0 ? samples : nil
    }

    /// The α–β model that fits `samples` (see ``PingPong``); throws when they cannot give a
    /// positive latency and bandwidth.
    public static func fit(_ samples: [Sample]) throws -> NetworkModel {
        let sorted = samples.sorted { $0.bytes < $1.bytes }
        guard Set(sorted.map(\.bytes)).count >= 2,
            sorted.allSatisfy({ $0.seconds.isFinite && $0.seconds > 0 && $0.bytes > 0 })
        else {
            throw MedleyError(
                .invalidArgument,
                "ping-pong: need positive times for at least two message sizes to fit latency and bandwidth, got \(samples.count) samples")
        }
        // The smallest message is not always the fastest (it follows the largest in a round).
        let (alpha, smallest) = (sorted.map(\.seconds).min()!, Double(sorted[0].bytes))
        var numerator = 0.0, denominator = 0.0
        for sample in sorted {
            let n = Double(sample.bytes) - smallest
            numerator += n * (sample.seconds - alpha)
            denominator += n * n
        }
        var secondsPerByte = numerator / denominator
        if !(secondsPerByte > 0) {
            // Noise swamped the slope (a link faster than the clock resolves): fall back to the
            // largest message's average rate, which is never faster than the link.
            let largest = sorted.last!
            secondsPerByte = largest.seconds / Double(largest.bytes)
        }
        return NetworkModel(latencySeconds: alpha, bytesPerSecond: 1 / secondsPerByte)
    }

    /// Starts `program` (the `medley` executable) under `mpirun` with 2 ranks running
    /// ``commandName``, waits at most `timeoutSeconds` (mpirun's `--timeout`, then a kill), and
    /// returns the samples rank 0 wrote.
    public static func measure(
        program: String = ChildProcess.currentExecutable, configuration: Configuration = Configuration(),
        timeoutSeconds: Int = 120
    ) throws -> [Sample] {
        try configuration.validate()
        guard timeoutSeconds >= 1 else {
            throw MedleyError(.invalidArgument, "ping-pong: the timeout must be at least 1 second, got \(timeoutSeconds)")
        }
        let directory = NSTemporaryDirectory() + "/medley-ping-pong-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = directory + "/samples.json"
        let outcome = try MPIRun(ranks: 2, timeoutSeconds: timeoutSeconds)
            .run(program: program, arguments: [commandName, "--output", output] + configuration.arguments, graceSeconds: 10)
        guard outcome.status == 0, let data = FileManager.default.contents(atPath: output) else {
            let reason =
                outcome.killedAtDeadline
                ? "it ran past \(timeoutSeconds) s and was stopped"
                : "mpirun exited with status \(outcome.status)"
            let last = outcome.output.split(separator: "\n").last { $0.hasPrefix("Error:") }
                .map { ": " + $0.dropFirst("Error: ".count) } ?? ""
            throw MedleyError(.communication, "ping-pong between 2 ranks under mpirun failed: \(reason)\(last)")
        }
        do {
            return try JSONDecoder().decode([Sample].self, from: data)
        } catch {
            throw MedleyError(.corruption, "ping-pong: rank 0's samples in \(output) are not readable: \(error)")
        }
    }

    /// Writes rank 0's samples to `path` atomically (the hidden command's last step).
    public static func write(_ samples: [Sample], to path: String) throws {
        let data = try JSONEncoder().encode(samples)
        try writeAtomically(data, to: path)
    }
}
