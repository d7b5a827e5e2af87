import MedleyCore

/// Checks a backward op against central finite differences of its forward.
///
/// For random weights R shaped like the forward's first output, the loss is
/// L(x) = Σ R ⊙ forward(x), accumulated in double on the host. The backward,
/// given dout = R and zeroed gradient outputs, must return ∂L/∂x; sampled
/// coordinates of every differentiable input are compared with
/// (L(x + h) − L(x − h)) / 2h.
struct GradientProbe {
    var backward: String
    var forward: String
    var forwardInputs: [HostTensor]
    var forwardOutputs: [HostTensor]
    var attributes: [String: Double]
    /// Indices of the forward inputs whose gradients the backward returns, in output order.
    var differentiable: [Int]
    var gradientNames: [String]
    var weights: HostTensor
    var backwardAttributes: [String: Double]
    /// Backward inputs, from R, the forward inputs and the forward outputs.
    var backwardInputs: (_ weights: HostTensor, _ inputs: [HostTensor], _ outputs: [HostTensor]) -> [HostTensor]

    /// Step size, and the tolerance |fd − analytic| ≤ absolute + relative · |analytic|.
    static let step: Float = 5e-3
    static let absolute = 2e-3
    static let relative = 2e-2
    static let samplesPerInput = 6

    /// The worst sampled coordinate over all differentiable inputs.
    struct Outcome {
        var worstRatio: Double
        var detail: String
    }

    func run(on runner: OpRunner, rng: inout SeededGenerator) throws -> Outcome {
        var offsets = SeededGenerator(seed: 7)
        func loss(_ inputs: [HostTensor]) throws -> Double {
            let out = try runner.run(
                forward, inputs: inputs, outputs: forwardOutputs, attributes: attributes, offsets: &offsets)
            return zip(out.outputs[0].floats, weights.floats).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        let base = try runner.run(
            forward, inputs: forwardInputs, outputs: forwardOutputs, attributes: attributes, offsets: &offsets)
        let gradientShapes = differentiable.map { forwardInputs[$0] }
        let zeros = gradientShapes.map { HostTensor($0.shape, floats: [Float](repeating: 0, count: $0.count)) }
        let analytic = try runner.run(
            backward, inputs: backwardInputs(weights, forwardInputs, base.outputs), outputs: zeros,
            attributes: backwardAttributes, offsets: &offsets
        ).outputs

        var worst = Outcome(worstRatio: 0, detail: "")
        for (slot, inputIndex) in differentiable.enumerated() {
            let input = forwardInputs[inputIndex]
            for _ in 0..<Self.samplesPerInput {
                let k = rng.below(input.count)
                var plus = forwardInputs
                var minus = forwardInputs
                plus[inputIndex].floats[k] += Self.step
                minus[inputIndex].floats[k] -= Self.step
                let h = Double(plus[inputIndex].floats[k]) - Double(minus[inputIndex].floats[k])
                let numeric = (try loss(plus) - loss(minus)) / h
                let exact = Double(analytic[slot].floats[k])
                let allowed = Self.absolute + Self.relative * abs(exact)
                let ratio = abs(numeric - exact) / allowed
                if ratio >= worst.worstRatio {
                    worst = Outcome(
                        worstRatio: ratio,
                        detail: "\(gradientNames[slot])[\(k)]: analytic \(fmt(exact)), finite difference "
                            + "\(fmt(numeric)) (|diff| \(fmt(abs(numeric - exact))), tolerance \(fmt(allowed)))")
                }
            }
        }
        return worst
    }

    /// One probe per backward op of opset v1.
    static func all(rng: inout SeededGenerator) -> [GradientProbe] {
        let (B, T, C, NH, V, maxT, OC) = (2, 5, 12, 3, 11, 6, 9)
        func floats(_ shape: [Int], _ low: Float = -1, _ high: Float = 1) -> HostTensor {
            HostTensor(shape, floats: rng.floats(shape.reduce(1, *), low, high))
        }
        func empty(_ shape: [Int]) -> HostTensor {
            HostTensor(shape, floats: [Float](repeating: .nan, count: shape.reduce(1, *)))
        }
        let tokens = HostTensor([B, T], ints: (0..<(B * T)).map { Int32(($0 * 7 + 3) % V) })
        var targetValues = (0..<(B * T)).map { Int32(($0 * 5 + 1) % V) }
        targetValues[2] = -1
        let targets = HostTensor([B, T], ints: targetValues)
        let ceScale = 1.0 / Double(B * T)

        return [
            GradientProbe(
                backward: "encoder_backward", forward: "encoder_forward",
                forwardInputs: [tokens, floats([V, C]), floats([maxT, C])], forwardOutputs: [empty([B, T, C])],
                attributes: [:], differentiable: [1, 2], gradientNames: ["dwte", "dwpe"],
                weights: floats([B, T, C]), backwardAttributes: [:],
                backwardInputs: { r, x, _ in [r, x[0]] }),
            GradientProbe(
                backward: "layernorm_backward", forward: "layernorm_forward",
                forwardInputs: [floats([B, T, C], -2, 2), floats([C], 0.5, 1.5), floats([C])],
                forwardOutputs: [empty([B, T, C]), empty([B, T]), empty([B, T])], attributes: ["eps": 1e-5],
                differentiable: [0, 1, 2], gradientNames: ["dx", "dweight", "dbias"],
                weights: floats([B, T, C]), backwardAttributes: [:],
                backwardInputs: { r, x, y in [r, x[0], x[1], y[1], y[2]] }),
            GradientProbe(
                backward: "matmul_backward", forward: "matmul_forward",
                forwardInputs: [floats([B, T, C]), floats([OC, C]), floats([OC])],
                forwardOutputs: [empty([B, T, OC])], attributes: [:], differentiable: [0, 1, 2],
                gradientNames: ["dx", "dweight", "dbias"], weights: floats([B, T, OC]), backwardAttributes: [:],
                backwardInputs: { r, x, _ in [r, x[0], x[1]] }),
            GradientProbe(
                backward: "attention_backward", forward: "attention_forward",
                forwardInputs: [floats([B, T, 3 * C], -1.5, 1.5)],
                forwardOutputs: [empty([B, T, C]), empty([B, NH, T])], attributes: ["num_heads": Double(NH)],
                differentiable: [0], gradientNames: ["dqkv"], weights: floats([B, T, C]),
                backwardAttributes: ["num_heads": Double(NH)],
                backwardInputs: { r, x, y in [r, x[0], y[0], y[1]] }),
            GradientProbe(
                backward: "gelu_backward", forward: "gelu_forward",
                forwardInputs: [floats([B, T, C], -4, 4)], forwardOutputs: [empty([B, T, C])], attributes: [:],
                differentiable: [0], gradientNames: ["dx"], weights: floats([B, T, C]), backwardAttributes: [:],
                backwardInputs: { r, x, _ in [r, x[0]] }),
            GradientProbe(
                backward: "residual_backward", forward: "residual_forward",
                forwardInputs: [floats([B, T, C]), floats([B, T, C])], forwardOutputs: [empty([B, T, C])],
                attributes: [:], differentiable: [0, 1], gradientNames: ["da", "db"], weights: floats([B, T, C]),
                backwardAttributes: [:], backwardInputs: { r, _, _ in [r] }),
            GradientProbe(
                backward: "crossentropy_backward", forward: "crossentropy_forward",
                forwardInputs: [floats([B, T, V], -3, 3), targets], forwardOutputs: [empty([B, T]), empty([B, T])],
                attributes: [:], differentiable: [0], gradientNames: ["dlogits"],
                weights: HostTensor([B, T], floats: [Float](repeating: Float(ceScale), count: B * T)),
                backwardAttributes: ["scale": ceScale],
                backwardInputs: { _, x, y in [x[0], x[1], y[1]] }),
        ]
    }
}
