import MedleyCore

/// One launch of one op with concrete inputs, used to compare a candidate with the reference.
struct OpCase {
    /// Op name.
    var op: String
    /// Short description of the sizes, for the report.
    var label: String
    var inputs: [HostTensor]
    /// Initial contents of the outputs: random for accumulating or in-out outputs, NaN otherwise.
    var outputs: [HostTensor]
    var outputNames: [String]
    var attributes: [String: Double]
}

/// Sizes of one family of cases: deliberately odd so that tiling bugs show.
struct CaseSizes {
    var B: Int, T: Int, C: Int, NH: Int, V: Int, maxT: Int, OC: Int
    var elementwise: [Int]

    static let all: [CaseSizes] = [
        CaseSizes(B: 3, T: 7, C: 24, NH: 3, V: 37, maxT: 9, OC: 20, elementwise: [7, 11, 13]),
        CaseSizes(B: 2, T: 5, C: 12, NH: 2, V: 19, maxT: 5, OC: 7, elementwise: [37]),
    ]

    var label: String { "B=\(B) T=\(T) C=\(C) NH=\(NH) V=\(V) OC=\(OC)" }
}

/// Builds the cases for every op of opset v1. Inputs that an op takes from its
/// forward (layernorm mean/rstd, attention out/lse, cross-entropy lse) are made
/// by running that forward on the reference, so each case is self-consistent.
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

    private mutating func tokens(_ shape: [Int], below bound: Int, ignoreOne: Bool = false) -> HostTensor {
        var ids = (0..<shape.reduce(1, *)).map { _ in Int32(rng.below(bound)) }
        if ids.count > 2 { ids[ids.count - 1] = ids[0] }  // a repeated token: gradients must add up
        if ignoreOne, ids.count > 3 { ids[1] = -1 }
        return HostTensor(shape, ints: ids)
    }

    /// Every case for `op`, one per size family.
    mutating func cases(for op: String) throws -> [OpCase] {
        var result: [OpCase] = []
        for (family, s) in CaseSizes.all.enumerated() {
            result.append(try makeCase(op, s, withBias: family == 0))
        }
        return result
    }

    private mutating func makeCase(_ op: String, _ s: CaseSizes, withBias: Bool) throws -> OpCase {
        let (B, T, C, NH, V, maxT, OC) = (s.B, s.T, s.C, s.NH, s.V, s.maxT, s.OC)
        let n = s.elementwise
        func make(_ ins: [HostTensor], _ outs: [HostTensor], _ names: [String], _ attrs: [String: Double] = [:])
            -> OpCase
        {
            OpCase(op: op, label: s.label, inputs: ins, outputs: outs, outputNames: names, attributes: attrs)
        }
        switch op {
        case "encoder_forward":
            return make([tokens([B, T], below: V), floats([V, C]), floats([maxT, C])], [nan([B, T, C])], ["out"])
        case "encoder_backward":
            return make(
                [floats([B, T, C]), tokens([B, T], below: V)], [floats([V, C]), floats([maxT, C])],
                ["dwte", "dwpe"])
        case "layernorm_forward":
            return make(
                [floats([B, T, C], -2, 2), floats([C], 0.5, 1.5), floats([C])],
                [nan([B, T, C]), nan([B, T]), nan([B, T])], ["out", "mean", "rstd"], ["eps": 1e-5])
        case "layernorm_backward":
            let x = floats([B, T, C], -2, 2)
            let w = floats([C], 0.5, 1.5)
            let stats = try forward(
                "layernorm_forward", [x, w, floats([C])], [nan([B, T, C]), nan([B, T]), nan([B, T])], ["eps": 1e-5])
            return make(
                [floats([B, T, C]), x, w, stats[1], stats[2]], [floats([B, T, C]), floats([C]), floats([C])],
                ["dx", "dweight", "dbias"])
        case "matmul_forward":
            let ins = [floats([B, T, C]), floats([OC, C]), floats([OC])]
            return make(withBias ? ins : Array(ins.prefix(2)), [nan([B, T, OC])], ["out"])
        case "matmul_backward":
            let outs = [floats([B, T, C]), floats([OC, C]), floats([OC])]
            return make(
                [floats([B, T, OC]), floats([B, T, C]), floats([OC, C])], withBias ? outs : Array(outs.prefix(2)),
                withBias ? ["dx", "dweight", "dbias"] : ["dx", "dweight"])
        case "attention_forward":
            return make(
                [floats([B, T, 3 * C], -2, 2)], [nan([B, T, C]), nan([B, NH, T])], ["out", "lse"],
                ["num_heads": Double(NH)])
        case "attention_backward":
            let qkv = floats([B, T, 3 * C], -2, 2)
            let saved = try forward(
                "attention_forward", [qkv], [nan([B, T, C]), nan([B, NH, T])], ["num_heads": Double(NH)])
            return make(
                [floats([B, T, C]), qkv, saved[0], saved[1]], [floats([B, T, 3 * C])], ["dqkv"],
                ["num_heads": Double(NH)])
        case "gelu_forward":
            return make([floats(n, -4, 4)], [nan(n)], ["out"])
        case "gelu_backward":
            return make([floats(n), floats(n, -4, 4)], [floats(n)], ["dx"])
        case "residual_forward":
            return make([floats(n), floats(n)], [nan(n)], ["out"])
        case "residual_backward":
            return make([floats(n)], [floats(n), floats(n)], ["da", "db"])
        case "crossentropy_forward":
            return make(
                [floats([B, T, V], -3, 3), tokens([B, T], below: V, ignoreOne: true)], [nan([B, T]), nan([B, T])],
                ["losses", "lse"])
        case "crossentropy_backward":
            let logits = floats([B, T, V], -3, 3)
            let targets = tokens([B, T], below: V, ignoreOne: true)
            let saved = try forward("crossentropy_forward", [logits, targets], [nan([B, T]), nan([B, T])], [:])
            return make(
                [logits, targets, saved[1]], [floats([B, T, V])], ["dlogits"], ["scale": 1.0 / Double(B * T)])
        case "adamw_update":
            return make(
                [floats(n)], [floats(n), floats(n, -0.1, 0.1), floats(n, 0, 0.01)], ["param", "m", "v"],
                [
                    "lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "step": 3,
                    "grad_scale": 0.5,
                ])
        case "sum_squares":
            return make([floats(n)], [floats([1])], ["out"])
        case "scale":
            return make([floats(n)], [nan(n)], ["out"], ["alpha": 0.37])
        default:
            throw MedleyError(.internalError, "the conformance kit has no case for op \(op)")
        }
    }
}
