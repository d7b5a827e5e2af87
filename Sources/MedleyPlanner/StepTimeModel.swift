import MedleyCore

/// The planner's prediction of time and memory for a job laid out on chips:
/// what a stage costs, what a step takes. Pure arithmetic over the model's
/// cost, the chips' profiles and the network; `docs/planning.md` states every
/// formula.
///
/// - A stage of chip type t holding planning layers `a..<e` at microbatch b:
///   forward = Σ forward(layer, b) + the send of its output to the next stage;
///   backward = Σ backward(layer, b) + the send of its input's gradient to the
///   previous stage (α + bytes/β each, nothing at the pipeline's ends).
/// - Its memory with k microbatches in flight, as the GPT stage allocates it:
///   stored parameters × `bytesPerParameter`, plus per sequence the stage's
///   activations (those of its layers, and its received input) for k·b
///   sequences and their gradients for b, and the token ids and targets of k·b
///   sequences. Under textbook 1F1B stage s of p keeps k = p − s in flight; a plan
///   with slack keeps (p − 1 − s)(1 + slack) + 1, at most m (``Plan/slack``). The
///   search plans for textbook 1F1B; the planner then gives the chosen layout the
///   most slack (up to what was asked) with which every stage still fits.
/// - A replica of p stages with stage times cₛ = forwardₛ + backwardₛ running m
///   microbatches: Σₛ cₛ + (m − 1)·maxₛ cₛ.
/// - A step: the slowest replica, then the slowest rank's gradient exchange and
///   optimizer update. A rank's gradients are averaged by ring allreduces
///   (2(k−1)/k·bytes/β + 2(k−1)α among k ranks) over its holder sets: its layers
///   among the R replicas' holders, and the tied token table among every rank
///   holding a copy after the first and last stage of each pipeline have summed
///   their two copies. The update is sharded: each holder updates 1/k of what it
///   shares with k ranks, then an allgather ((k−1)/k·bytes/β + (k−1)α) hands
///   every holder the others' updated shards.
public struct StepTimeModel: Sendable {
    /// The model being planned.
    public let model: ModelCost
    /// The chips.
    public let inventory: DeviceInventory
    /// The links between them.
    public let network: NetworkModel

    /// Planning layers (embedding, blocks, head).
    let layerCount: Int
    /// `timing[profile][kind]`: the profile's curve for each layer kind (in `Kind.allCases` order).
    let timing: [[TimingCurve]]
    /// Prefix sums over planning layers: parameters (floats) and activation bytes per sequence.
    let parameterPrefix: [Int]
    let activationPrefix: [Int]
    /// Floats of the head's copy of the token table.
    let tiedParameters: Int

    /// Checks every input and prepares the model; throws `invalidArgument` naming the first problem.
    public init(model: ModelCost, inventory: DeviceInventory, network: NetworkModel) throws {
        try Self.validate(model: model)
        try Self.validate(inventory: inventory)
        try Self.validate(network: network)
        self.model = model
        self.inventory = inventory
        self.network = network
        layerCount = model.layers.count
        timing = inventory.profiles.map { profile in
            ModelCost.Layer.Kind.allCases.map { kind in TimingCurve(profile.timings.filter { $0.kind == kind }) }
        }
        var parameters = [0], activations = [0]
        for layer in model.layers {
            parameters.append(parameters.last! + layer.parameters)
            activations.append(activations.last! + layer.activationBytesPerSequence)
        }
        parameterPrefix = parameters
        activationPrefix = activations
        tiedParameters = model.layers.last!.tiedParameters
    }

    // MARK: Stages

    /// Predicted forward and backward milliseconds of a stage of chip type `profile` holding
    /// `layers` for one microbatch of `microbatch` sequences, sends to its neighbours included.
    public func stageTimes(profile: Int, layers: Range<Int>, microbatch: Int) -> (forwardMs: Double, backwardMs: Double) {
        let costs = StageCosts(self, microbatch: microbatch)
        return (costs.forwardMs(profile, layers.lowerBound, layers.upperBound),
                costs.backwardMs(profile, layers.lowerBound, layers.upperBound))
    }

    /// Device bytes a stage holding `layers` needs with `inFlight` microbatches of `microbatch` sequences.
    public func stageMemoryBytes(layers: Range<Int>, inFlight: Int, microbatch: Int) -> Int {
        StageCosts(self, microbatch: microbatch).memoryBytes(layers.lowerBound, layers.upperBound, inFlight: inFlight)
    }

    /// Milliseconds a rank holding `layers` spends in the gradient exchange.
    public func exchangeMs(layers: Range<Int>, holders: Holders) -> Double {
        StageCosts(self, microbatch: 1).exchangeMs(layers.lowerBound, layers.upperBound, holders)
    }

    /// Milliseconds a rank of chip type `profile` holding `layers` spends in its (sharded) AdamW update.
    public func optimizerMs(profile: Int, layers: Range<Int>, holders: Holders) -> Double {
        StageCosts(self, microbatch: 1).optimizerMs(profile, layers.lowerBound, layers.upperBound, holders)
    }

    /// How many ranks share each parameter: what sets the sizes of the exchange's rings.
    public struct Holders: Sendable, Hashable {
        /// Replicas: every planning layer is held once per replica.
        public var replicas: Int
        /// Ranks holding a copy of the tied token table: one per replica of one stage, two (the
        /// embedding's stage and the head's) per replica of several.
        public var table: Int

        public init(replicas: Int, table: Int) {
            self.replicas = replicas
            self.table = table
        }

        /// The holders of a plan whose replicas have `stageCounts[r]` stages.
        public init(stageCounts: [Int]) {
            self.init(replicas: stageCounts.count, table: stageCounts.reduce(0) { $0 + ($1 == 1 ? 1 : 2) })
        }
    }

    // MARK: Plans

    /// Evaluates `layout` run with `slack` (``Plan/slack``): every stage's times and memory, and
    /// the step's prediction.
    ///
    /// The returned plan has no left-out devices and a homogeneous throughput of 0
    /// (efficiency 0): those are the planner's to fill in. Memory is what each stage
    /// allocates for the microbatches it actually keeps in flight (``Plan/inFlight(stagesAfter:microbatches:slack:)``); a
    /// stage that does not fit shows negative `freeBytes`. Throws `invalidArgument` when the layout is
    /// not a plan: an empty replica, layers that do not cover the model once in
    /// order, a device used twice or not in the inventory, a replica without samples.
    public func evaluate(_ layout: PlanLayout, slack: Int = 0) throws -> Plan {
        try validate(layout)
        let b = layout.microbatchSize
        let costs = StageCosts(self, microbatch: b)
        let holders = Holders(stageCounts: layout.replicas.map(\.stages.count))
        var replicas: [Plan.Replica] = []
        var slowest = (ms: -1.0, bubble: 0.0)
        var critical = (ms: -1.0, exchange: 0.0, optimizer: 0.0)
        for replica in layout.replicas {
            let p = replica.stages.count
            let m = (replica.samples + b - 1) / b
            var stages: [Plan.Stage] = []
            var sum = 0.0, largest = 0.0
            for (s, stage) in replica.stages.enumerated() {
                let t = inventory.devices[stage.device]
                let (a, e) = (stage.layers.lowerBound, stage.layers.upperBound)
                let forward = costs.forwardMs(t, a, e), backward = costs.backwardMs(t, a, e)
                // What the stage allocates: a slot per microbatch actually in flight.
                let memory = costs.memoryBytes(a, e, inFlight: Plan.inFlight(stagesAfter: p - 1 - s, microbatches: m, slack: slack))
                stages.append(Plan.Stage(
                    device: stage.device, chip: inventory.profiles[t].chip, firstLayer: a, endLayer: e,
                    forwardMs: forward, backwardMs: backward, memoryBytes: memory,
                    freeBytes: inventory.profiles[t].memoryBytes - memory))
                sum += forward + backward
                largest = max(largest, forward + backward)
                let exchange = costs.exchangeMs(a, e, holders)
                let optimizer = costs.optimizerMs(t, a, e, holders)
                if exchange + optimizer > critical.ms { critical = (exchange + optimizer, exchange, optimizer) }
            }
            let pipeline = sum + Double(m - 1) * largest
            if pipeline > slowest.ms { slowest = (pipeline, 1 - Double(m) * sum / Double(p) / pipeline) }
            replicas.append(Plan.Replica(stages: stages, samples: replica.samples, microbatches: m))
        }
        let batch = layout.replicas.reduce(0) { $0 + $1.samples }
        let step = slowest.ms + critical.exchange + critical.optimizer
        let prediction = Plan.Prediction(
            stepMs: step, computeMs: slowest.ms, exchangeMs: critical.exchange, optimizerMs: critical.optimizer,
            bubbleFraction: slowest.bubble, tokensPerSecond: Double(batch * model.seq) / (step / 1000),
            homogeneousTokensPerSecond: 0, efficiency: 0)
        return Plan(slack: slack, globalBatch: batch, microbatchSize: b, replicas: replicas, leftOut: [], prediction: prediction)
    }

    private func validate(_ layout: PlanLayout) throws {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "plan layout: " + message) }
        guard layout.microbatchSize >= 1 else { throw fail("microbatch size must be at least 1, got \(layout.microbatchSize)") }
        guard !layout.replicas.isEmpty else { throw fail("no replicas") }
        var used = [Bool](repeating: false, count: inventory.devices.count)
        for (r, replica) in layout.replicas.enumerated() {
            guard !replica.stages.isEmpty else { throw fail("replica \(r) has no stages") }
            guard replica.samples >= 1 else { throw fail("replica \(r) trains \(replica.samples) sequences; it needs at least 1") }
            var next = 0
            for stage in replica.stages {
                guard stage.layers.lowerBound == next, stage.layers.upperBound > next else {
                    throw fail("replica \(r): a stage holds layers \(stage.layers) where layer \(next) should start a non-empty range")
                }
                next = stage.layers.upperBound
                guard stage.device >= 0 && stage.device < used.count else {
                    throw fail("replica \(r): device \(stage.device) is not in the inventory (\(used.count) devices)")
                }
                guard !used[stage.device] else { throw fail("device \(stage.device) is used twice") }
                used[stage.device] = true
            }
            guard next == layerCount else {
                throw fail("replica \(r) holds layers up to \(next), but the model has \(layerCount) planning layers")
            }
        }
    }
}

/// A layout of a plan before prediction: which device holds which layers in
/// which replica, how many sequences each replica trains, and the microbatch size.
public struct PlanLayout: Sendable, Hashable {
    /// One stage: a device (inventory index) and the planning layers it holds.
    public struct Stage: Sendable, Hashable {
        public var device: Int
        public var layers: Range<Int>
        public init(device: Int, layers: Range<Int>) {
            self.device = device
            self.layers = layers
        }
    }

    /// One pipeline and its share of the global batch.
    public struct Replica: Sendable, Hashable {
        public var stages: [Stage]
        public var samples: Int
        public init(stages: [Stage], samples: Int) {
            self.stages = stages
            self.samples = samples
        }
    }

    public var microbatchSize: Int
    public var replicas: [Replica]

    public init(microbatchSize: Int, replicas: [Replica]) {
        self.microbatchSize = microbatchSize
        self.replicas = replicas
    }
}

// MARK: - Costs at one microbatch size

/// A stage's costs in O(1) at one microbatch size: prefix sums over planning
/// layers per chip type. Layer ranges are `a..<e`; `t` is a profile index.
struct StageCosts {
    let model: StepTimeModel
    let microbatch: Int
    /// `forward[t][l]`: Σ forward ms of layers `0..<l` on type t at this microbatch; likewise backward.
    let forward: [[Double]]
    let backward: [[Double]]
    /// `send[l]`: ms to send layer l's output for one microbatch.
    let send: [Double]
    let alphaMs: Double
    let msPerByte: Double

    init(_ model: StepTimeModel, microbatch: Int) {
        self.model = model
        self.microbatch = microbatch
        let kinds = ModelCost.Layer.Kind.allCases
        var forward: [[Double]] = [], backward: [[Double]] = []
        for curves in model.timing {
            let perKind = curves.map { $0.ms(microbatch: microbatch) }
            var f = [0.0], g = [0.0]
            for layer in model.model.layers {
                let k = kinds.firstIndex(of: layer.kind)!
                f.append(f.last! + perKind[k].forward)
                g.append(g.last! + perKind[k].backward)
            }
            forward.append(f)
            backward.append(g)
        }
        self.forward = forward
        self.backward = backward
        alphaMs = model.network.latencySeconds * 1000
        msPerByte = 1000 / model.network.bytesPerSecond
        send = model.model.layers.map { [alphaMs, msPerByte] layer in
            alphaMs + Double(layer.outputBytesPerSequence * microbatch) * msPerByte
        }
    }

    var layerCount: Int { model.layerCount }

    func forwardMs(_ t: Int, _ a: Int, _ e: Int) -> Double {
        forward[t][e] - forward[t][a] + (e < layerCount ? send[e - 1] : 0)
    }

    func backwardMs(_ t: Int, _ a: Int, _ e: Int) -> Double {
        backward[t][e] - backward[t][a] + (a > 0 ? send[a - 1] : 0)
    }

    /// Forward plus backward ms of one microbatch, sends included.
    func ms(_ t: Int, _ a: Int, _ e: Int) -> Double { forwardMs(t, a, e) + backwardMs(t, a, e) }

    /// Forward plus backward ms without the sends: a lower bound that only grows as the range grows.
    func computeOnlyMs(_ t: Int, _ a: Int, _ e: Int) -> Double {
        forward[t][e] - forward[t][a] + backward[t][e] - backward[t][a]
    }

    /// Parameters the stage stores: the head's copy of the token table is stored once when the stage also holds the embedding.
    func storedParameters(_ a: Int, _ e: Int) -> Int {
        model.parameterPrefix[e] - model.parameterPrefix[a] - (a == 0 && e == layerCount ? model.tiedParameters : 0)
    }

    /// Activation bytes per sequence of a stage: its layers' and, after the first stage, its received input.
    func activationBytes(_ a: Int, _ e: Int) -> Int {
        model.activationPrefix[e] - model.activationPrefix[a] + (a > 0 ? model.model.layers[a - 1].outputBytesPerSequence : 0)
    }

    /// What the GPT stage allocates: parameters with their gradients and moments, activations for
    /// `inFlight` microbatches and their gradients for one, token ids and targets (4 bytes a position)
    /// for every sequence in flight, and a 4-byte scalar.
    func memoryBytes(_ a: Int, _ e: Int, inFlight: Int) -> Int {
        storedParameters(a, e) * model.model.bytesPerParameter + (inFlight + 1) * microbatch * activationBytes(a, e)
            + inFlight * microbatch * 8 * model.model.seq + 4
    }

    /// A lower bound of `memoryBytes` that only grows as the range grows (the received input left out).
    func memoryLowerBound(_ a: Int, _ e: Int, inFlight: Int) -> Int {
        storedParameters(a, e) * model.model.bytesPerParameter
            + (inFlight + 1) * microbatch * (model.activationPrefix[e] - model.activationPrefix[a])
    }

    func fits(_ t: Int, _ a: Int, _ e: Int, inFlight: Int) -> Bool {
        memoryBytes(a, e, inFlight: inFlight) <= model.inventory.profiles[t].memoryBytes
    }

    /// Ring allreduce of `bytes` among `ranks`, in ms (nothing to do alone or with nothing to
    /// send): a reduce-scatter and an allgather, each moving (k−1)/k of the bytes in k−1 hops.
    func ringMs(bytes: Int, ranks: Int) -> Double {
        2 * gatherMs(bytes: bytes, ranks: ranks)
    }

    /// Whether a stage holding `a..<e` keeps a copy of the tied table apart from its other
    /// parameters: it holds the embedding or the head, and some replica is cut into stages (then
    /// the table's holders differ from the other layers' holders).
    func sharesTableApart(_ a: Int, _ e: Int, _ holders: StepTimeModel.Holders) -> Bool {
        model.tiedParameters > 0 && (a == 0 || e == layerCount) && holders.table > holders.replicas
    }

    /// Gradient exchange of a rank holding `a..<e`: its layers among their `replicas` holders as one
    /// run; when it keeps the tied table apart, the table among its `table` holders, after the sum
    /// of the pipeline's two copies (a 2-rank allreduce) when the stage does not hold both ends.
    func exchangeMs(_ a: Int, _ e: Int, _ holders: StepTimeModel.Holders) -> Double {
        let stored = 4 * storedParameters(a, e)
        guard sharesTableApart(a, e, holders) else { return ringMs(bytes: stored, ranks: holders.replicas) }
        let table = 4 * model.tiedParameters
        let tie = a == 0 && e == layerCount ? 0 : ringMs(bytes: table, ranks: 2)
        return tie + ringMs(bytes: table, ranks: holders.table) + ringMs(bytes: stored - table, ranks: holders.replicas)
    }

    /// Ring allgather of `bytes` among `ranks` (each contributes 1/k), in ms.
    func gatherMs(bytes: Int, ranks: Int) -> Double {
        guard ranks > 1 && bytes > 0 else { return 0 }
        let k = Double(ranks)
        return (k - 1) / k * Double(bytes) * msPerByte + (k - 1) * alphaMs
    }

    /// The sharded AdamW update of a rank of type `t` holding `a..<e`: 1/k of what it shares with k
    /// ranks, then the allgather that gives every holder the updated values of the others' shards.
    func optimizerMs(_ t: Int, _ a: Int, _ e: Int, _ holders: StepTimeModel.Holders) -> Double {
        let stored = 4 * storedParameters(a, e)
        let rate = model.inventory.profiles[t].optimizerMsPerParameterByte
        guard sharesTableApart(a, e, holders) else {
            return Double(stored) / Double(holders.replicas) * rate + gatherMs(bytes: stored, ranks: holders.replicas)
        }
        let table = 4 * model.tiedParameters
        return (Double(table) / Double(holders.table) + Double(stored - table) / Double(holders.replicas)) * rate
            + gatherMs(bytes: table, ranks: holders.table) + gatherMs(bytes: stored - table, ranks: holders.replicas)
    }

    /// Exchange plus update of a rank: what the step waits for after compute.
    func updateMs(_ t: Int, _ a: Int, _ e: Int, _ holders: StepTimeModel.Holders) -> Double {
        exchangeMs(a, e, holders) + optimizerMs(t, a, e, holders)
    }
}
