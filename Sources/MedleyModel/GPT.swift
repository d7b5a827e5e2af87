import Foundation
import MedleyAdapters
import MedleyCore

/// A GPT-2 style decoder that runs on one `Device`, built only from opset v1 ops.
///
/// Token and learned position embeddings; `layers` pre-LayerNorm blocks of
/// causal multi-head attention (qkv matmul with bias, attention, projection
/// with bias, residual) and a 4× MLP with tanh-GELU (fc with bias, gelu,
/// projection with bias, residual); a final LayerNorm; an output head tied to
/// the token embedding (`matmul_forward` with `wte` as the weight, no bias);
/// mean cross-entropy over all B·T positions.
///
/// Parameters live in ONE device buffer laid out by `layout`; their gradients,
/// and AdamW's first and second moments, live in one buffer each at the same
/// offsets. Activations (and their gradients) are allocated once for
/// `config.maxBatch`; a smaller batch uses the front of every activation tensor.
///
/// A `GPT` drives its device from one thread at a time, like `Device`.
public final class GPT {
    /// The model's shape.
    public let config: ModelConfig
    /// The device every tensor lives on.
    public let device: Device
    /// Where each named parameter tensor lives in the flat buffers.
    public let layout: ParameterLayout
    /// All parameters, `layout.count` floats.
    public let parameters: DeviceBuffer
    /// Gradients of the parameters, same layout.
    public let gradients: DeviceBuffer
    /// AdamW first moments, same layout.
    public let adamM: DeviceBuffer
    /// AdamW second moments, same layout.
    public let adamV: DeviceBuffer
    /// Number of `step` calls so far (AdamW's bias-correction step is `stepCount`).
    public private(set) var stepCount = 0
    /// Batch of the last `forward`, which `backward` differentiates; nil before any forward.
    public internal(set) var lastBatch: Int?

    /// The planning layers this model holds (0 = embedding, 1...L = blocks, L + 1 = head):
    /// all of them for a whole model, a contiguous part for a pipeline stage.
    public let stage: Range<Int>
    /// Sequences whose activations are kept at once (`config.maxBatch` unless a pipeline
    /// keeps several microbatches in flight); activation gradients are sized for `config.maxBatch`.
    public let activationSequences: Int

    /// Activation offsets, sized for `activationSequences`.
    let plan: ActivationPlan
    /// Activation-gradient offsets, sized for `config.maxBatch` (one microbatch at a time).
    let gradientPlan: ActivationPlan
    let activations: DeviceBuffer
    let activationGradients: DeviceBuffer
    let tokenBuffer: DeviceBuffer
    let targetBuffer: DeviceBuffer
    let scalar: DeviceBuffer
    /// The held blocks, in order; `blocks[i]` is model block `firstBlock + i`.
    let blocks: [BlockParameters]
    /// First sequence of the activation rows the running forward or backward uses.
    var sequenceBase = 0

    /// Whether this model holds the embedding (planning layer 0).
    public var holdsEmbedding: Bool { stage.contains(0) }
    /// Whether this model holds the head and the loss (planning layer L + 1).
    public var holdsHead: Bool { stage.contains(config.layers + 1) }
    /// Index (0-based, in the whole model) of the first block held.
    var firstBlock: Int { max(stage.lowerBound, 1) - 1 }

    /// Builds the model on `device` and initialises its parameters from `seed`.
    ///
    /// Weights are N(0, 0.02) (the residual projections `attn.proj.w` and
    /// `mlp.proj.w` additionally scaled by 1/sqrt(2·layers)), biases 0,
    /// LayerNorm weights 1; AdamW moments start at 0. The same seed gives the
    /// same parameters on every device, and a stage's tensors hold exactly the
    /// values the whole model's tensors of the same names hold.
    ///
    /// - Parameters:
    ///   - stage: the planning layers to hold (nil: the whole model). A stage holding the
    ///     head without the embedding holds its own copy of the tied `wte`.
    ///   - activationSequences: sequences of activations to keep at once, at least
    ///     `config.maxBatch` (the default); a pipeline stage keeps one microbatch per slot.
    public init(
        config: ModelConfig, device: Device, seed: UInt64 = 0, stage: Range<Int>? = nil, activationSequences: Int? = nil
    ) throws {
        try config.validate()
        let stage = stage ?? 0..<(config.layers + 2)
        let sequences = activationSequences ?? config.maxBatch
        try Self.validate(stage: stage, activationSequences: sequences, config: config)
        self.config = config
        self.device = device
        self.stage = stage
        self.activationSequences = sequences
        let layout = ParameterLayout(config: config, stage: stage)
        self.layout = layout
        self.plan = ActivationPlan(config: config, stage: stage, sequences: sequences)
        self.gradientPlan = ActivationPlan(config: config, stage: stage, sequences: config.maxBatch)
        let bytes = max(layout.count, 1) * 4
        parameters = try device.allocate(bytes: bytes)
        gradients = try device.allocate(bytes: bytes)
        adamM = try device.allocate(bytes: bytes)
        adamV = try device.allocate(bytes: bytes)
        activations = try device.allocate(bytes: plan.count * 4)
        activationGradients = try device.allocate(bytes: gradientPlan.count * 4)
        tokenBuffer = try device.allocate(bytes: sequences * config.seq * 4)
        targetBuffer = try device.allocate(bytes: sequences * config.seq * 4)
        scalar = try device.allocate(bytes: 4)
        let first = max(stage.lowerBound, 1) - 1, end = min(stage.upperBound, config.layers + 1) - 1
        blocks = try (first..<max(first, end)).map { try BlockParameters(layout: layout, layer: $0) }
        let whole = ParameterLayout(config: config)
        let values = Self.initialParameters(layout: whole, config: config, seed: seed)
        var mine = [Float](repeating: 0, count: layout.count)
        for entry in layout.entries {
            let source = try whole.entry(entry.name)
            mine.replaceSubrange(entry.range, with: values[source.range])
        }
        if !mine.isEmpty { try parameters.write(mine) }
        try gradients.fill(byte: 0)
        try adamM.fill(byte: 0)
        try adamV.fill(byte: 0)
    }

    /// Throws naming the problem when `stage` is not a non-empty part of the planning layers
    /// or fewer activation sequences than `config.maxBatch` are asked for.
    static func validate(stage: Range<Int>, activationSequences: Int, config: ModelConfig) throws {
        let all = 0..<(config.layers + 2)
        guard !stage.isEmpty, stage.lowerBound >= 0, stage.upperBound <= all.upperBound else {
            throw MedleyError(
                .invalidArgument,
                "model stage: layers \(stage.lowerBound)..<\(stage.upperBound) are not a non-empty part of planning layers 0..<\(all.upperBound) (0 = embedding, 1...\(config.layers) = blocks, \(config.layers + 1) = head)")
        }
        guard activationSequences >= config.maxBatch else {
            throw MedleyError(
                .invalidArgument,
                "model stage: \(activationSequences) activation sequences is fewer than the microbatch of \(config.maxBatch)")
        }
    }

    /// The initial parameters for `seed`, in layout order (deterministic, host-side).
    public static func initialParameters(layout: ParameterLayout, config: ModelConfig, seed: UInt64) -> [Float] {
        var normal = GaussianSampler(seed: seed)
        let residualScale = 1 / Float(2 * config.layers).squareRoot()
        var values = [Float](repeating: 0, count: layout.count)
        for entry in layout.entries {
            if entry.shape.count == 2 {
                let isResidualProjection = entry.name.hasSuffix("attn.proj.w") || entry.name.hasSuffix("mlp.proj.w")
                let std: Float = 0.02 * (isResidualProjection ? residualScale : 1)
                for i in entry.range { values[i] = std * normal.next() }
            } else if entry.name.hasSuffix("ln1.w") || entry.name.hasSuffix("ln2.w") || entry.name == "lnf.w" {
                for i in entry.range { values[i] = 1 }
            }
        }
        return values
    }

    // MARK: Memory

    /// Device bytes the model allocates for `config` (parameters, gradients, AdamW moments,
    /// activations and their gradients, token/target buffers): what `init` asks the device for.
    public static func deviceBytes(config: ModelConfig) -> Int {
        deviceBytes(config: config, stage: nil, activationSequences: nil)
    }

    /// Device bytes a stage holding planning layers `stage` allocates when it keeps
    /// `activationSequences` sequences of activations (default `config.maxBatch`) and the
    /// activation gradients of one `config.maxBatch` microbatch.
    public static func deviceBytes(config: ModelConfig, stage: Range<Int>?, activationSequences: Int?) -> Int {
        let stage = stage ?? 0..<(config.layers + 2)
        let sequences = activationSequences ?? config.maxBatch
        let parameters = max(ParameterLayout(config: config, stage: stage).count, 1)
        let activations = ActivationPlan(config: config, stage: stage, sequences: sequences).count
        let gradients = ActivationPlan(config: config, stage: stage, sequences: config.maxBatch).count
        return 4 * (4 * parameters + activations + gradients + 2 * sequences * config.seq + 1)
    }

    /// The fixed part (independent of the batch) and the per-sequence part of ``deviceBytes(config:)``.
    ///
    /// Both grow linearly with the blocks, so they are measured on one and two blocks and
    /// extrapolated: the answer costs the same for 2 blocks or a million (nothing is laid out
    /// per block), and a part too large for `Int` saturates at `Int.max` (it fits no device).
    public static func memoryModel(config: ModelConfig) -> (fixedBytes: Int, bytesPerSequence: Int) {
        guard config.layers > 2 else { return laidOutMemoryModel(config: config) }
        var c1 = config, c2 = config
        c1.layers = 1
        c2.layers = 2
        let one = laidOutMemoryModel(config: c1), two = laidOutMemoryModel(config: c2)
        func extrapolate(_ first: Int, _ second: Int) -> Int {
            let (grown, overflow) = (second - first).multipliedReportingOverflow(by: config.layers - 1)
            let (total, overflow2) = first.addingReportingOverflow(grown)
            return overflow || overflow2 ? Int.max : total
        }
        return (extrapolate(one.fixedBytes, two.fixedBytes), extrapolate(one.bytesPerSequence, two.bytesPerSequence))
    }

    /// ``memoryModel(config:)`` from the laid-out model (cost grows with the blocks).
    static func laidOutMemoryModel(config: ModelConfig) -> (fixedBytes: Int, bytesPerSequence: Int) {
        var one = config, two = config
        one.maxBatch = 1
        two.maxBatch = 2
        let perSequence = deviceBytes(config: two) - deviceBytes(config: one)
        return (deviceBytes(config: one) - perSequence, perSequence)
    }

    // MARK: Parameters

    /// Every parameter, in layout order.
    public func readParameters() throws -> [Float] {
        try parameters.read(Float.self, count: layout.count)
    }

    /// Replaces every parameter (`values.count` must be `layout.count`).
    public func writeParameters(_ values: [Float]) throws {
        guard values.count == layout.count else {
            throw MedleyError(
                .invalidArgument, "writeParameters: \(values.count) values, but the model has \(layout.count) parameters")
        }
        try parameters.write(values)
    }

    /// AdamW's two moments, in layout order, and the steps it has taken (a checkpoint's part).
    public func readOptimizerState() throws -> (firstMoment: [Float], secondMoment: [Float], steps: Int) {
        (try adamM.read(Float.self, count: layout.count), try adamV.read(Float.self, count: layout.count), stepCount)
    }

    /// Replaces AdamW's moments and step count (each moment `layout.count` values).
    public func writeOptimizerState(firstMoment: [Float], secondMoment: [Float], steps: Int) throws {
        guard firstMoment.count == layout.count, secondMoment.count == layout.count, steps >= 0 else {
            throw MedleyError(
                .invalidArgument,
                "writeOptimizerState: \(firstMoment.count) and \(secondMoment.count) moment values and step \(steps), but the model has \(layout.count) parameters")
        }
        try adamM.write(firstMoment)
        try adamV.write(secondMoment)
        stepCount = steps
    }

    /// Every parameter gradient, in layout order.
    public func readGradients() throws -> [Float] {
        try gradients.read(Float.self, count: layout.count)
    }

    /// A view of the parameter tensor called `name` inside `parameters`.
    public func parameter(_ name: String) throws -> TensorView {
        let entry = try layout.entry(name)
        return parameters.tensor(.f32, entry.shape, offset: entry.offset * 4)
    }

    /// A view of the gradient of the parameter called `name` inside `gradients`.
    public func gradient(_ name: String) throws -> TensorView {
        let entry = try layout.entry(name)
        return gradients.tensor(.f32, entry.shape, offset: entry.offset * 4)
    }

    // MARK: Optimiser

    /// Sets every parameter gradient to zero (call before each `backward`, which accumulates).
    public func zeroGradients() throws {
        try gradients.fill(byte: 0)
    }

    /// The squared L2 norm of all gradients (one `sum_squares` over the gradient buffer).
    public func gradientNormSquared() throws -> Double {
        try scalar.fill(byte: 0)
        try device.launch(
            "sum_squares", inputs: [gradients.tensor(.f32, [layout.count])], outputs: [scalar.tensor(.f32, [1])])
        return Double(try scalar.read(Float.self, count: 1)[0])
    }

    /// One AdamW step over every parameter.
    ///
    /// Weight decay applies only to 2-D tensors (embeddings and matmul
    /// weights), never to biases or LayerNorm parameters: one `adamw_update`
    /// launch per maximal run of adjacent tensors with the same rule.
    /// `gradScale` multiplies the gradients first (e.g. 1/world size, or a clip factor).
    public func step(
        lr: Double, weightDecay: Double = 0, beta1: Double = 0.9, beta2: Double = 0.95, eps: Double = 1e-8,
        gradScale: Double = 1
    ) throws {
        try step(
            lr: lr, weightDecay: weightDecay, beta1: beta1, beta2: beta2, eps: eps, gradScale: gradScale,
            range: 0..<layout.count)
    }

    /// One AdamW step over the parameters at flat indices `range` only (a shard this rank
    /// owns); the others, and their moments, are left as they are. `stepCount` advances
    /// once per call whatever the range (unless `countsStep` is false: a further shard of the
    /// same step), so every rank keeps the same bias correction.
    public func step(
        lr: Double, weightDecay: Double = 0, beta1: Double = 0.9, beta2: Double = 0.95, eps: Double = 1e-8,
        gradScale: Double = 1, range: Range<Int>, countsStep: Bool = true
    ) throws {
        guard range.lowerBound >= 0, range.upperBound <= layout.count else {
            throw MedleyError(.invalidArgument, "AdamW: range \(range) is outside the \(layout.count) parameters")
        }
        let checks: [(String, Bool)] = [
            ("lr", lr >= 0 && lr.isFinite), ("weightDecay", weightDecay >= 0 && weightDecay.isFinite),
            ("beta1", beta1 >= 0 && beta1 < 1), ("beta2", beta2 >= 0 && beta2 < 1), ("eps", eps > 0 && eps.isFinite),
            ("gradScale", gradScale.isFinite),
        ]
        if let bad = checks.first(where: { !$0.1 }) {
            throw MedleyError(.invalidArgument, "AdamW: \(bad.0) is out of range")
        }
        if countsStep || stepCount == 0 { stepCount += 1 }
        for group in layout.decayGroups {
            let part = group.range.clamped(to: range)
            if part.isEmpty { continue }
            let offset = part.lowerBound * 4
            let shape = [part.count]
            try device.launch(
                "adamw_update",
                inputs: [gradients.tensor(.f32, shape, offset: offset)],
                outputs: [
                    parameters.tensor(.f32, shape, offset: offset), adamM.tensor(.f32, shape, offset: offset),
                    adamV.tensor(.f32, shape, offset: offset),
                ],
                attributes: [
                    "lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                    "weight_decay": group.decays ? weightDecay : 0, "step": Double(stepCount), "grad_scale": gradScale,
                ])
        }
    }

    // MARK: Views

    /// A float view of activation region `offset` (in floats, from `plan`), starting at
    /// sequence `sequenceBase` (every activation tensor is batch-major).
    func act(_ offset: Int, _ shape: [Int]) -> TensorView {
        let perSequence = shape.dropFirst().reduce(1, *)
        return activations.tensor(.f32, shape, offset: (offset + sequenceBase * perSequence) * 4)
    }

    /// The gradient of activation region `offset` (from `gradientPlan`, always from sequence 0).
    func dact(_ offset: Int, _ shape: [Int]) -> TensorView {
        activationGradients.tensor(.f32, shape, offset: offset * 4)
    }

    /// Token or target ids of the running microbatch.
    func ids(_ buffer: DeviceBuffer, _ b: Int) -> TensorView {
        buffer.tensor(.i32, [b, config.seq], offset: sequenceBase * config.seq * 4)
    }

    /// A parameter view of a layout entry.
    func param(_ entry: ParameterLayout.Entry) -> TensorView {
        parameters.tensor(.f32, entry.shape, offset: entry.offset * 4)
    }

    /// A gradient view of a layout entry.
    func grad(_ entry: ParameterLayout.Entry) -> TensorView {
        gradients.tensor(.f32, entry.shape, offset: entry.offset * 4)
    }
}

/// The layout entries of one transformer block, looked up once.
struct BlockParameters {
    let ln1w, ln1b, qkvw, qkvb, attnProjw, attnProjb, ln2w, ln2b, fcw, fcb, mlpProjw, mlpProjb: ParameterLayout.Entry

    init(layout: ParameterLayout, layer: Int) throws {
        let p = "h.\(layer)."
        ln1w = try layout.entry(p + "ln1.w")
        ln1b = try layout.entry(p + "ln1.b")
        qkvw = try layout.entry(p + "attn.qkv.w")
        qkvb = try layout.entry(p + "attn.qkv.b")
        attnProjw = try layout.entry(p + "attn.proj.w")
        attnProjb = try layout.entry(p + "attn.proj.b")
        ln2w = try layout.entry(p + "ln2.w")
        ln2b = try layout.entry(p + "ln2.b")
        fcw = try layout.entry(p + "mlp.fc.w")
        fcb = try layout.entry(p + "mlp.fc.b")
        mlpProjw = try layout.entry(p + "mlp.proj.w")
        mlpProjb = try layout.entry(p + "mlp.proj.b")
    }
}

/// Offsets (in floats) of every activation tensor of the layers a model holds in one
/// buffer, each sized for `sequences` sequences (batch-major, so the rows of one
/// microbatch are one contiguous run inside every tensor).
struct ActivationPlan {
    /// The activations saved by one block.
    struct Block {
        var ln1 = 0, ln1Mean = 0, ln1Rstd = 0, qkv = 0, attn = 0, attnLse = 0, attnProj = 0, residualMid = 0
        var ln2 = 0, ln2Mean = 0, ln2Rstd = 0, fc = 0, fcGelu = 0, mlpProj = 0
    }

    /// `residual[i]` is the residual stream entering held block i; `residual[blocks.count]`
    /// leaves the last held block. `residual[0]` is the embedding's output or the stage's
    /// input; the last entry is the stage's output or the head's input.
    var residual: [Int] = []
    var blocks: [Block] = []
    /// The head's tensors (zero-sized when the head is not held).
    var lnf = 0, lnfMean = 0, lnfRstd = 0, logits = 0, losses = 0, lossLse = 0
    /// Total floats.
    var count = 0
    /// Every region as (first float, floats per sequence); each holds `sequences` of them,
    /// batch-major, so a microbatch of b sequences from sequence 0 uses the first b·perSequence.
    var regions: [(offset: Int, perSequence: Int)] = []

    init(config: ModelConfig, stage: Range<Int>? = nil, sequences: Int? = nil) {
        let stage = stage ?? 0..<(config.layers + 2)
        let sequences = sequences ?? config.maxBatch
        let rows = sequences * config.seq
        let c = config.dim
        let heldBlocks = stage.clamped(to: 1..<(config.layers + 1)).count
        func take(_ floats: Int) -> Int {
            regions.append((count, floats / sequences))
            defer { count += floats }
            return count
        }
        residual = [take(rows * c)]
        for _ in 0..<heldBlocks {
            var b = Block()
            b.ln1 = take(rows * c)
            b.ln1Mean = take(rows)
            b.ln1Rstd = take(rows)
            b.qkv = take(rows * 3 * c)
            b.attn = take(rows * c)
            b.attnLse = take(sequences * config.heads * config.seq)
            b.attnProj = take(rows * c)
            b.residualMid = take(rows * c)
            b.ln2 = take(rows * c)
            b.ln2Mean = take(rows)
            b.ln2Rstd = take(rows)
            b.fc = take(rows * 4 * c)
            b.fcGelu = take(rows * 4 * c)
            b.mlpProj = take(rows * c)
            blocks.append(b)
            residual.append(take(rows * c))
        }
        if stage.contains(config.layers + 1) {
            lnf = take(rows * c)
            lnfMean = take(rows)
            lnfRstd = take(rows)
            logits = take(rows * config.vocab)
            losses = take(rows)
            lossLse = take(rows)
        }
    }
}

/// Standard normal samples by Box–Muller over a `SeededGenerator`.
struct GaussianSampler {
    private var rng: SeededGenerator
    private var spare: Float?

    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }

    /// The next N(0, 1) sample.
    mutating func next() -> Float {
        if let spare {
            self.spare = nil
            return spare
        }
        // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
        let u1 = (Double(rng.next() >> 11) + 1) / 9_007_199_254_740_992.0
        let u2 = Double(rng.next() >> 11) / 9_007_199_254_740_992.0
        let radius = (-2 * Foundation.log(u1)).squareRoot()
        spare = Float(radius * Foundation.sin(2 * Double.pi * u2))
        return Float(radius * Foundation.cos(2 * Double.pi * u2))
    }
}
