import Foundation
import MedleyPlanner

/// The planner's scaling benchmark (`medley bench plan`): plan time and predicted
/// efficiency for growing inventories of the four built-in chip types.
public enum PlannerBenchmark {
    /// One inventory size.
    public struct Row: Codable, Sendable {
        public var chips: Int
        public var devices: String
        public var layers: Int
        /// Median and fastest of the repeats, seconds.
        public var planSeconds: Double
        public var planSecondsMin: Double
        public var repeats: Int
        public var replicas: Int
        public var chipsUsed: Int
        public var microbatchSize: Int
        public var predictedTokensPerS: Double
        public var predictedEfficiency: Double

        enum CodingKeys: String, CodingKey {
            case chips, devices, layers, repeats, replicas
            case planSeconds = "plan_seconds", planSecondsMin = "plan_seconds_min", chipsUsed = "chips_used"
            case microbatchSize = "microbatch_size", predictedTokensPerS = "predicted_tokens_per_s"
            case predictedEfficiency = "predicted_efficiency"
        }
    }

    /// The inventory sizes of the scaling table.
    public static let sizes = [16, 64, 100, 256, 1000, 4096, 10_000]

    /// `chips` split as evenly as possible over A, B, C and D (the first types take the remainder).
    public static func devices(chips: Int) -> String {
        let keys = SyntheticChip.catalog.map(\.key)
        return keys.enumerated().compactMap { i, key in
            let count = chips / keys.count + (i < chips % keys.count ? 1 : 0)
            return count > 0 ? "\(count)x\(key)" : nil
        }.joined(separator: ",")
    }

    /// Plans each size `repeats` times (after one untimed run) and reports the median time.
    public static func run(
        sizes: [Int] = sizes, repeats: Int, shape: Simulation.Shape = .init(), progress: (Row) -> Void = { _ in }
    ) throws -> [Row] {
        var rows: [Row] = []
        for chips in sizes {
            let simulation = try Simulation(devices: devices(chips: chips), shape: shape)
            _ = try simulation.run()
            let (plan, times) = try simulation.run(repeats: repeats)
            let row = Row(
                chips: chips, devices: simulation.devicesText, layers: shape.layers, planSeconds: times[times.count / 2],
                planSecondsMin: times[0], repeats: times.count, replicas: plan.replicas.count,
                chipsUsed: plan.replicas.reduce(0) { $0 + $1.stages.count }, microbatchSize: plan.microbatchSize,
                predictedTokensPerS: plan.prediction.tokensPerSecond, predictedEfficiency: plan.prediction.efficiency)
            progress(row)
            rows.append(row)
        }
        return rows
    }
}
