import Foundation
import MedleyCore

/// `medley simulate`: the planner and its step-time model on a synthetic
/// inventory (`4096xA,4096xB,1808xC`), timed.
public struct Simulation: Sendable {
    /// The GPT being planned.
    public struct Shape: Sendable, Hashable, Codable {
        public var layers: Int, dim: Int, heads: Int, seq: Int, vocab: Int
        public init(layers: Int = 96, dim: Int = 2048, heads: Int = 16, seq: Int = 1024, vocab: Int = 50304) {
            (self.layers, self.dim, self.heads, self.seq, self.vocab) = (layers, dim, heads, seq, vocab)
        }

        /// Throws `invalidArgument` naming the first size below 1, or a dim that heads do not divide.
        public func validate() throws {
            for (name, value) in [("layers", layers), ("dim", dim), ("heads", heads), ("seq", seq), ("vocab", vocab)] where value < 1 {
                throw MedleyError(.invalidArgument, "--\(name) must be at least 1, got \(value)")
            }
            guard dim % heads == 0 else {
                throw MedleyError(.invalidArgument, "--dim \(dim) is not a multiple of --heads \(heads)")
            }
        }
    }

    /// One `COUNTxCHIP` entry of a device list.
    public struct Entry: Sendable, Hashable {
        public var count: Int
        public var chip: String
    }

    public var shape: Shape
    public var entries: [Entry]
    public var inventory: DeviceInventory
    public var network: NetworkModel
    public var globalBatch: Int
    public var options: Planner.Options

    /// Sequences per chip in the default global batch.
    public static let defaultSequencesPerChip = 8

    /// A simulation of `devices` (e.g. `4096xA,4096xB`) with `profiles` (nil: the built-in types
    /// A–D for `shape`). `globalBatch` nil: 8 sequences per chip. Throws `invalidArgument` with one
    /// line for a bad device list, an unknown chip type or a bad size.
    public init(
        devices: String, shape: Shape = Shape(), profiles: [DeviceProfile]? = nil, globalBatch: Int? = nil,
        network: NetworkModel = SyntheticChip.network, options: Planner.Options = .init()
    ) throws {
        try shape.validate()
        let profiles = profiles ?? SyntheticChip.catalog.map {
            $0.profile(layers: shape.layers, dim: shape.dim, heads: shape.heads, seq: shape.seq, vocab: shape.vocab)
        }
        let entries = try Self.parse(devices: devices, known: profiles.map(\.chip))
        var used: [DeviceProfile] = []
        var indices: [Int] = []
        for entry in entries {
            indices += [Int](repeating: used.count, count: entry.count)
            used.append(profiles.first { $0.chip == entry.chip }!)
        }
        let chips = indices.count
        if let globalBatch, globalBatch < 1 {
            throw MedleyError(.invalidArgument, "--batch must be at least 1, got \(globalBatch)")
        }
        self.shape = shape
        self.entries = entries
        self.inventory = DeviceInventory(profiles: used, devices: indices)
        self.network = network
        self.globalBatch = globalBatch ?? Self.defaultSequencesPerChip * chips
        self.options = options
    }

    /// Parses `COUNTxCHIP[,COUNTxCHIP…]` (commas inside a key's braces do not separate entries);
    /// every chip must be one of `known`, listed once.
    public static func parse(devices text: String, known: [String]) throws -> [Entry] {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "--devices: " + message) }
        // Commas inside braces belong to a chip key (`sim{kernels=cpu,speed=0.5}`).
        var items: [String] = [""]
        var depth = 0
        for ch in text {
            if ch == "," && depth == 0 {
                items.append("")
                continue
            }
            if ch == "{" { depth += 1 } else if ch == "}" { depth = max(0, depth - 1) }
            items[items.count - 1].append(ch)
        }
        items = items.map { $0.trimmingCharacters(in: .whitespaces) }
        guard !(items.count == 1 && items[0].isEmpty) else { throw fail("no devices; write COUNTxCHIP, e.g. 4096xA,4096xB") }
        var entries: [Entry] = []
        for item in items {
            let digits = item.prefix { $0.isNumber || $0 == "-" || $0 == "+" }
            let rest = item.dropFirst(digits.count)
            guard !digits.isEmpty, rest.first == "x" || rest.first == "X" else {
                throw fail("'\(item)' is not COUNTxCHIP (e.g. 4096xA)")
            }
            guard let count = Int(digits), count >= 1, !digits.hasPrefix("+") else {
                throw fail("'\(item)': the count must be a whole number of at least 1")
            }
            let chip = String(rest.dropFirst())
            guard !chip.isEmpty else { throw fail("'\(item)' names no chip type (e.g. 4096xA)") }
            guard known.contains(chip) else {
                throw fail("unknown chip type '\(chip)' in '\(item)' (known: \(known.joined(separator: ", ")))")
            }
            guard !entries.contains(where: { $0.chip == chip }) else { throw fail("chip type '\(chip)' is listed twice") }
            entries.append(Entry(count: count, chip: chip))
        }
        return entries
    }

    /// The model's cost.
    public var model: ModelCost {
        ModelCost.gpt(layers: shape.layers, dim: shape.dim, heads: shape.heads, seq: shape.seq, vocab: shape.vocab)
    }

    /// Plans the job `repeats` times (at least once), timing each call of ``Planner/plan()``;
    /// returns the plan and the times in seconds, fastest first.
    public func run(repeats: Int = 1) throws -> (plan: Plan, seconds: [Double]) {
        let planner = Planner(model: model, inventory: inventory, network: network, globalBatch: globalBatch, options: options)
        var times: [Double] = []
        var plan: Plan?
        let clock = ContinuousClock()
        for _ in 0..<max(repeats, 1) {
            var result: Plan?
            let elapsed = try clock.measure { result = try planner.plan() }
            times.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
            plan = result
        }
        return (plan!, times.sorted())
    }

    /// The device list as written canonically (`4096xA,4096xB`).
    public var devicesText: String { entries.map { "\($0.count)x\($0.chip)" }.joined(separator: ",") }
}

/// What `medley simulate --json` writes.
public struct SimulationReport: Codable, Sendable {
    public var devices: String
    public var chips: Int
    public var model: Simulation.Shape
    public var globalBatch: Int
    public var planSeconds: Double
    public var predictedTokensPerS: Double
    public var predictedEfficiency: Double
    public var homogeneousTokensPerS: Double
    public var stepMs: Double
    public var computeMs: Double
    public var exchangeMs: Double
    public var optimizerMs: Double
    public var bubbleFraction: Double
    public var replicas: Int
    public var microbatchSize: Int
    public var chipsUsed: Int
    public var plan: Plan?

    enum CodingKeys: String, CodingKey {
        case devices, chips, model, plan, replicas
        case globalBatch = "global_batch", planSeconds = "plan_seconds", predictedTokensPerS = "predicted_tokens_per_s"
        case predictedEfficiency = "predicted_efficiency", homogeneousTokensPerS = "homogeneous_tokens_per_s"
        case stepMs = "step_ms", computeMs = "compute_ms", exchangeMs = "exchange_ms", optimizerMs = "optimizer_ms"
        case bubbleFraction = "bubble_fraction", microbatchSize = "microbatch_size", chipsUsed = "chips_used"
    }

    public init(simulation: Simulation, plan: Plan, seconds: Double, includePlan: Bool) {
        devices = simulation.devicesText
        chips = simulation.inventory.devices.count
        model = simulation.shape
        globalBatch = plan.globalBatch
        planSeconds = seconds
        let p = plan.prediction
        predictedTokensPerS = p.tokensPerSecond
        predictedEfficiency = p.efficiency
        homogeneousTokensPerS = p.homogeneousTokensPerSecond
        stepMs = p.stepMs
        computeMs = p.computeMs
        exchangeMs = p.exchangeMs
        optimizerMs = p.optimizerMs
        bubbleFraction = p.bubbleFraction
        replicas = plan.replicas.count
        microbatchSize = plan.microbatchSize
        chipsUsed = plan.replicas.reduce(0) { $0 + $1.stages.count }
        self.plan = includePlan ? plan : nil
    }
}
