import MedleyCore

/// Plans a job: which chips train, in how many data-parallel replicas, each a
/// 1F1B pipeline of stages holding contiguous layers, with what share of the
/// global batch, and what that is predicted to achieve.
///
/// Pure and deterministic: the same inputs give the same plan, with no clock,
/// randomness or dictionary order involved. Its work grows with chip *types*
/// and layers, not with the number of devices: devices of one type are
/// interchangeable, so the search picks pipelines over types and replicates them.
/// `docs/planning.md` describes the plan space, the cost model and the search.
public struct Planner: Sendable {
    /// Choices the caller may fix instead of leaving them to the planner.
    public struct Options: Sendable, Hashable {
        /// Sequences per microbatch; nil: the planner tries 1, 2, 4, … up to 64 (and the batch).
        public var microbatchSize: Int?
        /// Most stages in one pipeline; nil: as many as planning layers.
        public var maxStages: Int?
        /// Extra microbatches each stage runs ahead of the next (``Plan/slack``): the plan gets the
        /// most slack up to this with which every stage of the chosen layout still fits its chip.
        public var slack: Int

        public init(microbatchSize: Int? = nil, maxStages: Int? = nil, slack: Int = Plan.defaultSlack) {
            self.microbatchSize = microbatchSize
            self.maxStages = maxStages
            self.slack = slack
        }
    }

    public let model: ModelCost
    public let inventory: DeviceInventory
    public let network: NetworkModel
    /// Sequences per training step, over all replicas.
    public let globalBatch: Int
    public let options: Options

    public init(
        model: ModelCost, inventory: DeviceInventory, network: NetworkModel, globalBatch: Int, options: Options = .init()
    ) {
        self.model = model
        self.inventory = inventory
        self.network = network
        self.globalBatch = globalBatch
        self.options = options
    }

    /// The microbatch sizes the planner tries: `options.microbatchSize` alone, or the powers of
    /// two up to 64 that do not exceed the global batch.
    public var microbatchCandidates: [Int] {
        if let fixed = options.microbatchSize { return [fixed] }
        return [1, 2, 4, 8, 16, 32, 64].filter { $0 <= max(globalBatch, 1) }
    }

    /// The best plan found, with its prediction, the homogeneous comparison and every left-out
    /// device with the reason.
    ///
    /// Throws `invalidArgument` (one line) for bad inputs: no devices, an unknown chip type,
    /// non-positive or non-finite timings, memory or bandwidth, a global batch below 1, bad
    /// options; and `outOfMemory` when no plan fits, naming the chip and how many bytes it lacks.
    public func plan() throws -> Plan {
        let costModel = try StepTimeModel(model: model, inventory: inventory, network: network)
        try validateOptions()
        let (types, counts) = typesInUse()
        var search = PlanSearch(
            model: costModel, types: types, counts: counts, batch: globalBatch,
            maxStages: options.maxStages ?? model.layers.count, microbatchSizes: microbatchCandidates)
        search.run()
        guard let best = search.best else { throw nothingFits(costModel) }
        var plan = try withSlack(layout(best), costModel: costModel)
        assert(abs(plan.prediction.stepMs - best.stepMs) <= 1e-9 * best.stepMs,
               "the search priced \(best.stepMs) ms, the plan evaluates to \(plan.prediction.stepMs) ms")
        plan.leftOut = leftOut(plan: plan, search: search, types: types, counts: counts, costModel: costModel)
        // One chip type is its own comparison.
        plan.prediction.homogeneousTokensPerSecond = types.count == 1
            ? plan.prediction.tokensPerSecond
            : homogeneousTokensPerSecond(types: types, counts: counts, microbatch: best.microbatch, costModel: costModel)
        if plan.prediction.homogeneousTokensPerSecond > 0 {
            plan.prediction.efficiency = plan.prediction.tokensPerSecond / plan.prediction.homogeneousTokensPerSecond
        }
        return plan
    }

    // MARK: Inputs

    private func validateOptions() throws {
        guard globalBatch >= 1 else {
            throw MedleyError(.invalidArgument, "the global batch must be at least 1 sequence, got \(globalBatch)")
        }
        if let b = options.microbatchSize {
            guard b >= 1 else { throw MedleyError(.invalidArgument, "the microbatch size must be at least 1, got \(b)") }
            guard b <= globalBatch else {
                throw MedleyError(.invalidArgument, "the microbatch size \(b) is larger than the global batch \(globalBatch)")
            }
        }
        if let stages = options.maxStages, stages < 1 {
            throw MedleyError(.invalidArgument, "the most stages per pipeline must be at least 1, got \(stages)")
        }
        guard options.slack >= 0 && options.slack <= Plan.maxSlack else {
            throw MedleyError(.invalidArgument, "the pipeline slack must be 0 to \(Plan.maxSlack), got \(options.slack)")
        }
    }

    /// Profile indices with at least one device (ascending), and their device counts.
    private func typesInUse() -> (types: [Int], counts: [Int]) {
        var counts = [Int](repeating: 0, count: inventory.profiles.count)
        for t in inventory.devices { counts[t] += 1 }
        let types = counts.indices.filter { counts[$0] > 0 }
        return (types, types.map { counts[$0] })
    }

    // MARK: From candidate to plan

    /// `layout` evaluated with the most slack, at most `options.slack`, with which every stage
    /// still fits its chip (the search made sure that slack 0 fits).
    private func withSlack(_ layout: PlanLayout, costModel: StepTimeModel) throws -> Plan {
        for slack in stride(from: options.slack, to: 0, by: -1) {
            let plan = try costModel.evaluate(layout, slack: slack)
            if plan.replicas.allSatisfy({ $0.stages.allSatisfy { $0.freeBytes >= 0 } }) { return plan }
        }
        return try costModel.evaluate(layout, slack: 0)
    }

    /// Devices assigned in inventory order per type, pipeline kind by kind; shares by allocation.
    private func layout(_ candidate: Candidate) -> PlanLayout {
        var queues = [[Int]](repeating: [], count: inventory.profiles.count)
        for (device, t) in inventory.devices.enumerated() { queues[t].append(device) }
        var next = [Int](repeating: 0, count: inventory.profiles.count)
        let shares = MicrobatchAllocation.shares(
            candidate.kinds.map(\.split.shape), counts: candidate.kinds.map(\.count), batch: globalBatch,
            microbatch: candidate.microbatch)
        var replicas: [PlanLayout.Replica] = []
        for kind in candidate.kinds {
            for _ in 0..<kind.count {
                var stages: [PlanLayout.Stage] = []
                var start = 0
                for (s, t) in kind.word.enumerated() {
                    stages.append(PlanLayout.Stage(device: queues[t][next[t]], layers: start..<kind.split.ends[s]))
                    next[t] += 1
                    start = kind.split.ends[s]
                }
                replicas.append(PlanLayout.Replica(stages: stages, samples: shares.samples[replicas.count]))
            }
        }
        return PlanLayout(microbatchSize: candidate.microbatch, replicas: replicas)
    }

    /// Every device the plan does not use, with the reason.
    private func leftOut(plan: Plan, search: PlanSearch, types: [Int], counts: [Int], costModel: StepTimeModel) -> [Plan.LeftOut] {
        var used = [Bool](repeating: false, count: inventory.devices.count)
        for replica in plan.replicas { for stage in replica.stages { used[stage.device] = true } }
        let tokens = Double(globalBatch * model.seq)
        let costs = StageCosts(costModel, microbatch: 1)
        var reasons: [String] = []
        for (i, t) in types.enumerated() {
            let profile = inventory.profiles[t]
            let inUse = (0..<inventory.devices.count).filter { used[$0] && inventory.devices[$0] == t }.count
            // Cheapest stage it could hold at all: one layer, one sequence, last in its pipeline.
            let smallest = (0..<model.layers.count).map { costs.memoryBytes($0, $0 + 1, inFlight: 1) }.min()!
            if smallest > profile.memoryBytes {
                reasons.append(
                    "too little memory: the smallest stage (one layer, microbatch 1) needs "
                        + "\(describe(smallest)), it has \(describe(profile.memoryBytes))")
                continue
            }
            let more = search.bestWith[i][(inUse + 1)...].min() ?? .infinity
            if more.isFinite {
                let with = Plan.grouped(tokens / (more / 1000)), without = Plan.grouped(plan.prediction.tokensPerSecond)
                reasons.append(
                    more <= plan.prediction.stepMs * (1 + 1e-9)
                        ? "adds nothing: the best plan that also uses it predicts the same \(without) tokens/s"
                        : "slower with it: the best plan that also uses it predicts \(with) tokens/s, this one \(without)")
            } else if inUse > 0 {
                reasons.append("no plan found that also uses it: the other \(inUse) '\(profile.chip)' chips are placed and this one does not complete a pipeline that fits")
            } else {
                reasons.append("no plan found that uses it: no pipeline with it fits in memory")
            }
        }
        var out: [Plan.LeftOut] = []
        for (device, t) in inventory.devices.enumerated() where !used[device] {
            let i = types.firstIndex(of: t)!
            out.append(Plan.LeftOut(device: device, chip: inventory.profiles[t].chip, reason: reasons[i]))
        }
        return out
    }

    /// Σ over chip types of the tokens/s that type's devices reach alone, each with a share of the
    /// global batch proportional to its raw speed (devices ÷ per-sequence time of the whole model).
    private func homogeneousTokensPerSecond(types: [Int], counts: [Int], microbatch: Int, costModel: StepTimeModel) -> Double {
        let costs = StageCosts(costModel, microbatch: microbatch)
        let n = model.layers.count
        let weights = zip(types, counts).map { t, count in
            Double(count) / (costs.computeOnlyMs(t, 0, n) / Double(microbatch))
        }
        let total = weights.reduce(0, +)
        var sum = 0.0
        for (i, t) in types.enumerated() {
            let batch = max(1, Int((Double(globalBatch) * weights[i] / total).rounded()))
            let sizes = options.microbatchSize.map { [min($0, batch)] } ?? [1, 2, 4, 8, 16, 32, 64].filter { $0 <= batch }
            var alone = PlanSearch(
                model: costModel, types: [t], counts: [counts[i]], batch: batch,
                maxStages: options.maxStages ?? n, microbatchSizes: sizes)
            alone.run()
            if let best = alone.best { sum += Double(batch * model.seq) / (best.stepMs / 1000) }
        }
        return sum
    }

    // MARK: Nothing fits

    /// The error when no pipeline of any chips fits: how much the fullest stage needs when the model
    /// is spread over every device at microbatch 1, and the chip that lacks it.
    private func nothingFits(_ costModel: StepTimeModel) -> MedleyError {
        let costs = StageCosts(costModel, microbatch: 1)
        let depth = min(inventory.devices.count, options.maxStages ?? model.layers.count, model.layers.count)
        let needed = SplitSearch.leastPeakMemory(stages: depth, costs: costs)
        let memories = inventory.devices.map { inventory.profiles[$0].memoryBytes }
        let spread = depth == 1
            ? "on one chip the model needs \(describe(needed)) (microbatch 1)"
            : "split over \(depth) chips the model needs at least \(describe(needed)) on its fullest stage (microbatch 1)"
        let largest = memories.indices.max { memories[$0] < memories[$1] }!
        let device = memories[largest] < needed ? largest : memories.indices.first { memories[$0] < needed }
        guard let device else {
            return MedleyError(.outOfMemory, "no plan fits: \(spread), and no split found places every stage on a chip with room for it")
        }
        let chip = inventory.profiles[inventory.devices[device]].chip
        let which = device == largest && memories[largest] < needed ? "the largest chip, '\(chip)' (device \(device))," : "chip '\(chip)' (device \(device))"
        return MedleyError(
            .outOfMemory,
            "no plan fits: \(spread); \(which) has \(describe(memories[device])), \(describe(needed - memories[device])) short")
    }

    private func describe(_ bytes: Int) -> String { ByteCount.describe(UInt64(max(bytes, 0))) }
}
