import MedleyCore

/// One launch of one op with concrete inputs, used to compare a candidate with the reference.
struct OpCase {
    /// Op name.
    var op: String
    /// Short description of the sizes and of what the case varies, for the report.
    var label: String
    var inputs: [HostTensor]
    var inputNames: [String]
    /// Initial contents of the outputs: random for accumulating or in-out outputs, NaN otherwise.
    var outputs: [HostTensor]
    var outputNames: [String]
    var attributes: [String: Double]
    /// What the case stands for beyond its sizes, so that failures can be told apart.
    var variant = Variant()

    /// The dimensions a case varies that a diagnosis compares across cases.
    struct Variant {
        /// For ops with an optional bias: whether this case has one.
        var bias: Bool?
        /// A hard input the case was built to expose (e.g. "low-variance rows"); nil for ordinary inputs.
        var condition: Condition?
        /// Sequence length, for attention.
        var sequence: Int?
        /// An attribute set away from its usual value, and that value.
        var attribute: (name: String, value: Double)?
    }

    /// Inputs chosen to expose a kind of bug, with the hint a failure on them only gives.
    enum Condition: String {
        case lowVariance = "low-variance rows"
        case largeMean = "rows with a large mean"
        case largeLogits = "large logits"
        case largeInputs = "large inputs"
        case longSequence = "a long sequence"
        case longVector = "a long vector"
        case tinySecondMoment = "a second moment near 0"

        /// What a failure on these inputs alone most likely means.
        var hint: String {
            switch self {
            case .lowVariance:
                "epsilon handling: the kernel must add the eps attribute to the variance (a hard-coded or missing eps only shows when the variance is small)"
            case .largeMean:
                "a one-pass variance (E[x²] − E[x]²) cancels in fp32: subtract the mean first (two passes, or Welford)"
            case .largeLogits:
                "exp overflows or loses precision: subtract the row's maximum logit before exp"
            case .largeInputs:
                "the approximation overflows for large |x| (e.g. tanh of a large argument computed from exp)"
            case .longSequence:
                "the error grows with sequence length: keep the running maximum and sums of the softmax in fp32 and rescale them as keys arrive"
            case .longVector:
                "accumulation error grows with length: accumulate in blocks or in wider precision"
            case .tinySecondMoment:
                "the eps attribute is not applied as sqrt(v̂) + eps"
            }
        }
    }
}

/// Sizes of one family of cases: deliberately odd so that tiling bugs show.
struct CaseSizes {
    var B: Int, T: Int, C: Int, NH: Int, V: Int, maxT: Int, OC: Int
    var elementwise: [Int]

    static let all: [CaseSizes] = [
        CaseSizes(B: 3, T: 7, C: 24, NH: 3, V: 37, maxT: 9, OC: 20, elementwise: [7, 11, 13]),
        CaseSizes(B: 2, T: 5, C: 12, NH: 2, V: 19, maxT: 5, OC: 7, elementwise: [37]),
        // Wide enough to reach the fast paths real kernels take past a size: full GEMM tiles
        // with ragged edges (N = 66, C = 96, OC = 131), head size 32, rows of a multiple of 16
        // channels, and element-wise lengths past a vector block.
        CaseSizes(B: 2, T: 33, C: 96, NH: 3, V: 67, maxT: 40, OC: 131, elementwise: [67, 201]),
    ]
    /// A long sequence for attention: errors that grow with T show here.
    static let long = CaseSizes(B: 1, T: 64, C: 16, NH: 2, V: 19, maxT: 64, OC: 7, elementwise: [64])

    var label: String { "B=\(B) T=\(T) C=\(C) NH=\(NH) V=\(V) OC=\(OC)" }
}

/// Builds the cases for every op of opset v1. Inputs that an op takes from its
/// forward (layernorm mean/rstd, attention out/lse, cross-entropy lse) are made
/// by running that forward on the reference, so each case is self-consistent.
///
/// Besides random inputs of odd sizes, every op gets cases that set each of its
/// attributes away from its usual value (a kernel that hard-codes one fails) and
/// inputs chosen to expose precision bugs: low-variance rows and rows with a large
/// mean for layernorm, large logits for cross-entropy, a long sequence for attention,
/// large inputs for GELU, a long vector for sum_squares, a tiny second moment for AdamW.
struct OpCaseBuilder {
    typealias Forward = (_ op: String, _ inputs: [HostTensor], _ outputs: [HostTensor], _ attributes: [String: Double])
        throws -> [HostTensor]

    var rng: SeededGenerator
    /// Runs a forward op on the reference device.
    let forward: Forward

    private mutating func floats(_ shape: [Int], _ low: Float = -1, _ high: Float = 1) -> HostTensor {
        HostTensor(shape, floats: rng.floats(shape.reduce(1, *), low, high))
    }

    private func nan(_ shape: [Int]) -> HostTensor {
        HostTensor(shape, floats: [Float](repeating: .nan, count: shape.reduce(1, *)))
    }

    /// Rows (over the last dimension) each around its own centre in [-spread, spread], ± `noise`.
    private mutating func rows(_ shape: [Int], centre spread: Float, noise: Float, offset: Float = 0) -> HostTensor {
        let width = shape.last ?? 1
        var values: [Float] = []
        values.reserveCapacity(shape.reduce(1, *))
        for _ in 0..<(shape.reduce(1, *) / width) {
            let centre = offset + rng.floats(1, -spread, spread)[0]
            values += rng.floats(width, -noise, noise).map { centre + $0 }
        }
        return HostTensor(shape, floats: values)
    }

    private mutating func tokens(_ shape: [Int], below bound: Int, ignoreOne: Bool = false) -> HostTensor {
        var ids = (0..<shape.reduce(1, *)).map { _ in Int32(rng.below(bound)) }
        if ids.count > 2 { ids[ids.count - 1] = ids[0] }  // a repeated token: gradients must add up
        if ignoreOne, ids.count > 3 { ids[1] = -1 }
        return HostTensor(shape, ints: ids)
    }

    /// Every case for `op`: one per size family, then the variants that op has.
    mutating func cases(for op: String) throws -> [OpCase] {
        var result: [OpCase] = []
        let families = CaseSizes.all
        switch op {
        case "matmul_forward", "matmul_backward":
            // With and without bias on the same sizes, so that a broken no-bias path is told apart.
            for s in families {
                result.append(try makeCase(op, s, bias: true))
                result.append(try makeCase(op, s, bias: false))
            }
        case "attention_forward", "attention_backward":
            for s in families { result.append(try makeCase(op, s)) }
            var long = try makeCase(op, CaseSizes.long, condition: .longSequence)
            long.label = CaseSizes.long.label + ", " + OpCase.Condition.longSequence.rawValue
            result.append(long)
        default:
            for s in families { result.append(try makeCase(op, s)) }
            result += try variants(op, families[0], families[1])
        }
        for index in result.indices where op == "attention_forward" || op == "attention_backward" {
            result[index].variant.sequence = result[index].inputs[op == "attention_forward" ? 0 : 1].shape[1]
        }
        return result
    }

    /// The attribute and hard-input cases of `op`.
    private mutating func variants(_ op: String, _ s: CaseSizes, _ small: CaseSizes) throws -> [OpCase] {
        let (B, T, C, V) = (s.B, s.T, s.C, s.V)
        let n = s.elementwise
        func named(_ c: OpCase, _ suffix: String, condition: OpCase.Condition? = nil, attribute: (String, Double)? = nil)
            -> OpCase
        {
            var c = c
            c.label += ", " + suffix
            c.variant.condition = condition
            if let attribute { c.variant.attribute = (attribute.0, attribute.1) }
            return c
        }
        switch op {
        case "layernorm_forward":
            // Variance about 1e-6, well below eps: a kernel that does not use the eps it is given shows here.
            let lowVariance = rows([B, T, C], centre: 0.05, noise: 2e-3)
            let largeMean = rows([B, T, C], centre: 1, noise: 0.1, offset: 4)
            let w = floats([C], 0.5, 1.5), b = floats([C])
            let outs = [nan([B, T, C]), nan([B, T]), nan([B, T])]
            let ordinary = floats([small.B, small.T, small.C], -2, 2)
            return [
                named(
                    layernormForward([lowVariance, w, b], outs, eps: 1e-5, s), "low-variance rows, eps=1e-5",
                    condition: .lowVariance),
                named(
                    layernormForward([lowVariance, w, b], outs, eps: 1e-3, s), "low-variance rows, eps=1e-3",
                    condition: .lowVariance, attribute: ("eps", 1e-3)),
                named(layernormForward([largeMean, w, b], outs, eps: 1e-5, s), "rows around 4", condition: .largeMean),
                named(
                    layernormForward(
                        [ordinary, floats([small.C], 0.5, 1.5), floats([small.C])],
                        [nan([small.B, small.T, small.C]), nan([small.B, small.T]), nan([small.B, small.T])],
                        eps: 0.5, small),
                    "eps=0.5", attribute: ("eps", 0.5)),
            ]
        case "layernorm_backward":
            let x = rows([B, T, C], centre: 0.05, noise: 2e-3)
            let w = floats([C], 0.5, 1.5)
            let stats = try forward(
                "layernorm_forward", [x, w, floats([C])], [nan([B, T, C]), nan([B, T]), nan([B, T])], ["eps": 1e-5])
            var c = layernormBackward([floats([B, T, C]), x, w, stats[1], stats[2]], s)
            c.label += ", low-variance rows"
            c.variant.condition = .lowVariance
            return [c]
        case "gelu_forward":
            return [named(make(op, s, [floats(n, -12, 12)], ["x"], [nan(n)], ["out"]), "x in [-12, 12]", condition: .largeInputs)]
        case "gelu_backward":
            return [
                named(
                    make(op, s, [floats(n), floats(n, -12, 12)], ["dout", "x"], [floats(n)], ["dx"]), "x in [-12, 12]",
                    condition: .largeInputs)
            ]
        case "crossentropy_forward":
            return [
                named(
                    make(
                        op, s, [floats([B, T, V], 95, 105), tokens([B, T], below: V, ignoreOne: true)],
                        ["logits", "targets"], [nan([B, T]), nan([B, T])], ["losses", "lse"]),
                    "logits in [95, 105]", condition: .largeLogits)
            ]
        case "crossentropy_backward":
            func backward(_ low: Float, _ high: Float, scale: Double) throws -> OpCase {
                let logits = floats([B, T, V], low, high)
                let targets = tokens([B, T], below: V, ignoreOne: true)
                let saved = try forward("crossentropy_forward", [logits, targets], [nan([B, T]), nan([B, T])], [:])
                return make(
                    op, s, [logits, targets, saved[1]], ["logits", "targets", "lse"], [floats([B, T, V])], ["dlogits"],
                    ["scale": scale])
            }
            return [
                named(try backward(95, 105, scale: 1.0 / Double(B * T)), "logits in [95, 105]", condition: .largeLogits),
                named(try backward(-3, 3, scale: 0.37), "scale=0.37", attribute: ("scale", 0.37)),
            ]
        case "adamw_update":
            var cases: [OpCase] = []
            func adamw(_ label: String, _ changes: [String: Double], v: HostTensor? = nil,
                       condition: OpCase.Condition? = nil) -> OpCase
            {
                var attributes = Self.adamwDefaults
                attributes.merge(changes) { $1 }
                let state = [floats(n), floats(n, -0.1, 0.1), v ?? floats(n, 0, 0.01)]
                var c = make(op, s, [floats(n)], ["grad"], state, ["param", "m", "v"], attributes)
                c.label += ", " + label
                c.variant.condition = condition
                if changes.count == 1, let (name, value) = changes.first { c.variant.attribute = (name, value) }
                return c
            }
            cases.append(adamw("beta1=0.8", ["beta1": 0.8]))
            cases.append(adamw("beta2=0.99", ["beta2": 0.99]))
            cases.append(adamw("eps=1e-3, v near 0", ["eps": 1e-3], v: floats(n, 0, 1e-8), condition: .tinySecondMoment))
            cases.append(adamw("weight_decay=0", ["weight_decay": 0]))
            cases.append(adamw("weight_decay=0.3", ["weight_decay": 0.3]))
            cases.append(adamw("step=1", ["step": 1]))
            cases.append(adamw("step=1000", ["step": 1000]))
            cases.append(adamw("grad_scale=1", ["grad_scale": 1]))
            cases.append(adamw("lr=3e-2", ["lr": 3e-2]))
            return cases
        case "sum_squares":
            return [named(make(op, s, [floats([65_537])], ["x"], [floats([1])], ["out"]), "n=65537", condition: .longVector)]
        case "scale":
            return [
                named(make(op, s, [floats(n)], ["x"], [nan(n)], ["out"], ["alpha": -1.75]), "alpha=-1.75",
                      attribute: ("alpha", -1.75))
            ]
        default:
            return []
        }
    }

    /// AdamW's attributes in the ordinary case; each variant changes one.
    static let adamwDefaults: [String: Double] = [
        "lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "step": 3, "grad_scale": 0.5,
    ]

    private func make(
        _ op: String, _ s: CaseSizes, _ ins: [HostTensor], _ inNames: [String], _ outs: [HostTensor],
        _ outNames: [String], _ attrs: [String: Double] = [:]
    ) -> OpCase {
        let label = Self.elementwise.contains(op) ? "n=\(ins[0].shape.map(String.init).joined(separator: "x"))" : s.label
        return OpCase(
            op: op, label: label, inputs: ins, inputNames: inNames, outputs: outs, outputNames: outNames,
            attributes: attrs)
    }

    private static let elementwise: Set<String> = [
        "gelu_forward", "gelu_backward", "residual_forward", "residual_backward", "adamw_update", "sum_squares", "scale",
    ]

    private func layernormForward(_ ins: [HostTensor], _ outs: [HostTensor], eps: Double, _ s: CaseSizes) -> OpCase {
        make("layernorm_forward", s, ins, ["x", "weight", "bias"], outs, ["out", "mean", "rstd"], ["eps": eps])
    }

    private mutating func layernormBackward(_ ins: [HostTensor], _ s: CaseSizes) -> OpCase {
        let shape = ins[1].shape
        let c = shape.last ?? 1
        return make(
            "layernorm_backward", s, ins, ["dout", "x", "weight", "mean", "rstd"],
            [floats(shape), floats([c]), floats([c])], ["dx", "dweight", "dbias"])
    }

    private mutating func makeCase(
        _ op: String, _ s: CaseSizes, bias: Bool = true, condition: OpCase.Condition? = nil
    ) throws -> OpCase {
        let (B, T, C, NH, V, maxT, OC) = (s.B, s.T, s.C, s.NH, s.V, s.maxT, s.OC)
        let n = s.elementwise
        func make(
            _ ins: [HostTensor], _ inNames: [String], _ outs: [HostTensor], _ names: [String],
            _ attrs: [String: Double] = [:]
        ) -> OpCase {
            var c = self.make(op, s, ins, inNames, outs, names, attrs)
            c.variant.condition = condition
            return c
        }
        switch op {
        case "encoder_forward":
            return make(
                [tokens([B, T], below: V), floats([V, C]), floats([maxT, C])], ["tokens", "wte", "wpe"],
                [nan([B, T, C])], ["out"])
        case "encoder_backward":
            return make(
                [floats([B, T, C]), tokens([B, T], below: V)], ["dout", "tokens"], [floats([V, C]), floats([maxT, C])],
                ["dwte", "dwpe"])
        case "layernorm_forward":
            return make(
                [floats([B, T, C], -2, 2), floats([C], 0.5, 1.5), floats([C])], ["x", "weight", "bias"],
                [nan([B, T, C]), nan([B, T]), nan([B, T])], ["out", "mean", "rstd"], ["eps": 1e-5])
        case "layernorm_backward":
            let x = floats([B, T, C], -2, 2)
            let w = floats([C], 0.5, 1.5)
            let stats = try forward(
                "layernorm_forward", [x, w, floats([C])], [nan([B, T, C]), nan([B, T]), nan([B, T])], ["eps": 1e-5])
            return layernormBackward([floats([B, T, C]), x, w, stats[1], stats[2]], s)
        case "matmul_forward":
            let ins = [floats([B, T, C]), floats([OC, C]), floats([OC])]
            var c = make(
                bias ? ins : Array(ins.prefix(2)), bias ? ["x", "weight", "bias"] : ["x", "weight"], [nan([B, T, OC])],
                ["out"])
            c.label += bias ? ", bias" : ", no bias"
            c.variant.bias = bias
            return c
        case "matmul_backward":
            let outs = [floats([B, T, C]), floats([OC, C]), floats([OC])]
            var c = make(
                [floats([B, T, OC]), floats([B, T, C]), floats([OC, C])], ["dout", "x", "weight"],
                bias ? outs : Array(outs.prefix(2)), bias ? ["dx", "dweight", "dbias"] : ["dx", "dweight"])
            c.label += bias ? ", bias" : ", no bias"
            c.variant.bias = bias
            return c
        case "attention_forward":
            return make(
                [floats([B, T, 3 * C], -2, 2)], ["qkv"], [nan([B, T, C]), nan([B, NH, T])], ["out", "lse"],
                ["num_heads": Double(NH)])
        case "attention_backward":
            let qkv = floats([B, T, 3 * C], -2, 2)
            let saved = try forward(
                "attention_forward", [qkv], [nan([B, T, C]), nan([B, NH, T])], ["num_heads": Double(NH)])
            return make(
                [floats([B, T, C]), qkv, saved[0], saved[1]], ["dout", "qkv", "out", "lse"], [floats([B, T, 3 * C])],
                ["dqkv"], ["num_heads": Double(NH)])
        case "gelu_forward":
            return make([floats(n, -4, 4)], ["x"], [nan(n)], ["out"])
        case "gelu_backward":
            return make([floats(n), floats(n, -4, 4)], ["dout", "x"], [floats(n)], ["dx"])
        case "residual_forward":
            return make([floats(n), floats(n)], ["a", "b"], [nan(n)], ["out"])
        case "residual_backward":
            return make([floats(n)], ["dout"], [floats(n), floats(n)], ["da", "db"])
        case "crossentropy_forward":
            return make(
                [floats([B, T, V], -3, 3), tokens([B, T], below: V, ignoreOne: true)], ["logits", "targets"],
                [nan([B, T]), nan([B, T])], ["losses", "lse"])
        case "crossentropy_backward":
            let logits = floats([B, T, V], -3, 3)
            let targets = tokens([B, T], below: V, ignoreOne: true)
            let saved = try forward("crossentropy_forward", [logits, targets], [nan([B, T]), nan([B, T])], [:])
            return make(
                [logits, targets, saved[1]], ["logits", "targets", "lse"], [floats([B, T, V])], ["dlogits"],
                ["scale": 1.0 / Double(B * T)])
        case "adamw_update":
            return make(
                [floats(n)], ["grad"], [floats(n), floats(n, -0.1, 0.1), floats(n, 0, 0.01)], ["param", "m", "v"],
                Self.adamwDefaults)
        case "sum_squares":
            return make([floats(n)], ["x"], [floats([1])], ["out"])
        case "scale":
            return make([floats(n)], ["x"], [nan(n)], ["out"], ["alpha": 0.37])
        default:
            throw MedleyError(.internalError, "the conformance kit has no case for op \(op)")
        }
    }
}
