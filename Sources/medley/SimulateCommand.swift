import ArgumentParser
import Foundation
import MedleyCore
import MedleyPlanner

/// `medley simulate`: plan a synthetic inventory and predict its throughput.
struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Plan a job on many synthetic chips and predict its throughput and efficiency.",
        discussion: """
            Runs the planner and its step-time model (compute, pipeline bubble, gradient exchange, \
            optimizer) on --devices, a list of COUNTxCHIP entries such as 4096xA,4096xB,1808xC. \
            The chip types are the built-in illustrative types A-D (see docs/planning.md) or, with \
            --profiles, the chip keys of a JSON array of DeviceProfile. Prints the plan (alike \
            replicas grouped), the predicted tokens/s and the efficiency against the sum of each \
            chip type training alone.
            """)

    @Option(parsing: .unconditional, help: ArgumentHelp("Chips, e.g. 4096xA,4096xB,1808xC.", valueName: "COUNTxCHIP,..."))
    var devices: String

    @Option(help: "Transformer blocks.")
    var layers = 96
    @Option(help: "Channels (a multiple of --heads).")
    var dim = 2048
    @Option(help: "Attention heads.")
    var heads = 16
    @Option(help: "Sequence length.")
    var seq = 1024
    @Option(help: "Vocabulary size.")
    var vocab = 50304

    @Option(help: "Global batch in sequences (default: 8 per chip).")
    var batch: Int?
    @Option(help: "Sequences per microbatch (default: the planner chooses).")
    var microbatch: Int?
    @Option(help: "Most stages in one pipeline (default: no limit but the layers).")
    var maxStages: Int?
    @Option(help: "Pipeline slack: extra microbatches each stage may run ahead, as memory allows (0 = textbook 1F1B).")
    var slack = Plan.defaultSlack

    @Option(help: ArgumentHelp(
        "Chip types from a file: a JSON array of DeviceProfile, or what `medley profile --json` prints (its measured link too).",
        valueName: "file"))
    var profiles: String?

    @Option(help: "Network latency per message, microseconds (default: 5, or the profile file's).")
    var latencyUs: Double?
    @Option(help: "Network bandwidth per link, GB/s (default: 25, or the profile file's).")
    var linkGbps: Double?

    @Option(help: ArgumentHelp("Also write the prediction and the plan as JSON to this file.", valueName: "file"))
    var json: String?

    func run() throws {
        if let latencyUs, !(latencyUs.isFinite && latencyUs >= 0) {
            throw MedleyError(.invalidArgument, "--latency-us must be a finite number >= 0, got \(latencyUs)")
        }
        if let linkGbps, !(linkGbps.isFinite && linkGbps > 0) {
            throw MedleyError(.invalidArgument, "--link-gbps must be a positive number, got \(linkGbps)")
        }
        if let json { try checkWritable(json) }
        let loaded = try profiles.map(Self.loadProfiles)
        let network = loaded?.network ?? SyntheticChip.network
        let simulation = try Simulation(
            devices: devices, shape: .init(layers: layers, dim: dim, heads: heads, seq: seq, vocab: vocab),
            profiles: loaded?.profiles, globalBatch: batch,
            network: NetworkModel(
                latencySeconds: latencyUs.map { $0 * 1e-6 } ?? network.latencySeconds,
                bytesPerSecond: linkGbps.map { $0 * 1e9 } ?? network.bytesPerSecond),
            options: .init(microbatchSize: microbatch, maxStages: maxStages, slack: slack))
        let (plan, seconds) = try simulation.run()
        let s = simulation.shape
        print("simulate \(simulation.devicesText): \(simulation.inventory.devices.count) chips; GPT \(s.layers) layers x \(s.dim) dim x \(s.heads) heads, "
              + "seq \(s.seq), vocab \(s.vocab); global batch \(simulation.globalBatch); planned in "
              + String(format: "%.3f s", seconds[0]))
        print(plan.table())
        if let json {
            let report = SimulationReport(simulation: simulation, plan: plan, seconds: seconds[0], includePlan: true)
            try JSONReport.write(report, to: json)
        }
    }

    /// Reads chip types from a JSON array of DeviceProfile, or from a `medley profile --json`
    /// report (`chips[i].profile`, and its measured `network`).
    static func loadProfiles(_ path: String) throws -> (profiles: [DeviceProfile], network: NetworkModel?) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw MedleyError(.io, "cannot read profiles \(path): \(error.localizedDescription)")
        }
        struct Report: Decodable {
            struct Chip: Decodable { var profile: DeviceProfile }
            var chips: [Chip]
            var network: NetworkModel?
        }
        do {
            return (try JSONDecoder().decode([DeviceProfile].self, from: data), nil)
        } catch let arrayError {
            if let report = try? JSONDecoder().decode(Report.self, from: data) {
                return (report.chips.map(\.profile), report.network)
            }
            throw MedleyError(
                .invalidArgument,
                "profiles \(path): not a JSON array of DeviceProfile nor a `medley profile --json` report (\(Self.describe(arrayError)))")
        }
    }

    /// A decoding error in one line.
    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, let context):
            return "missing '\(key.stringValue)' at \(path(context))"
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.dataCorrupted(let context):
            return "\(context.debugDescription) at \(path(context))"
        default:
            return "\(error)"
        }
    }

    private static func path(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        return path.isEmpty ? "the top level" : path
    }
}

/// Throws `io` unless `path`'s directory exists and is writable (checked before long work).
func checkWritable(_ path: String) throws {
    let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw MedleyError(.io, "cannot write \(path): directory \(directory) does not exist")
    }
    guard FileManager.default.isWritableFile(atPath: directory) else {
        throw MedleyError(.io, "cannot write \(path): directory \(directory) is not writable")
    }
}
