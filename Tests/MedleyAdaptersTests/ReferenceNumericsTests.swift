import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

@testable import MedleyAdapters

/// The reference adapter is the oracle, so its numbers are checked against
/// independent host formulas (forward ops) and finite differences (backward ops).
@Suite("Reference numerics")
struct ReferenceNumericsTests {
    let runner: OpRunner
    var offsets = SeededGenerator(seed: 99)

    init() throws {
        let device = try AdapterLibrary.load("reference", searchPath: TestSupport.buildSearchPath).openDevice(0)
        runner = OpRunner(device: device)
    }

    private mutating func run(
        _ op: String, _ inputs: [HostTensor], _ outputs: [HostTensor], _ attrs: [String: Double] = [:]
    ) throws -> [[Float]] {
        let result = try runner.run(op, inputs: inputs, outputs: outputs, attributes: attrs, offsets: &offsets)
        #expect(result.violations.isEmpty, "\(op): \(result.violations)")
        return result.outputs.map(\.floats)
    }

    private func close(_ a: [Float], _ b: [Double], tol: Double = 2e-5, _ what: String) {
        #expect(a.count == b.count)
        let scale = max(1, b.map(abs).max() ?? 1)
        let worst = zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
        #expect(worst <= tol * scale, "\(what): worst |diff| \(worst)")
    }

    private static func zeros(_ shape: [Int]) -> HostTensor {
        HostTensor(shape, floats: [Float](repeating: 0, count: shape.reduce(1, *)))
    }

    @Test("every backward op matches finite differences of its forward")
    func finiteDifferences() throws {
        var rng = SeededGenerator(seed: 4242)
        let probes = GradientProbe.all(rng: &rng)
        #expect(Set(probes.map(\.backward)) == Set(AdapterABI.opset.map(\.name).filter { $0.hasSuffix("_backward") }))
        for probe in probes {
            let outcome = try probe.run(on: runner, rng: &rng)
            #expect(outcome.worstRatio <= 1, "\(probe.backward): \(outcome.detail)")
        }
    }

    @Test("forward ops equal their formulas computed on the host in double")
    mutating func forwardFormulas() throws {
        var rng = SeededGenerator(seed: 7)
        let (B, T, C, NH, V) = (2, 5, 8, 2, 13)
        let hs = C / NH
        func t(_ shape: [Int], _ lo: Float = -1, _ hi: Float = 1) -> HostTensor {
            HostTensor(shape, floats: rng.floats(shape.reduce(1, *), lo, hi))
        }
        let x = t([B, T, C], -3, 3)

        // gelu (tanh form)
        let gelu = try run("gelu_forward", [x], [Self.zeros([B, T, C])])[0]
        close(gelu, x.floats.map { v in
            let d = Double(v)
            return 0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)))
        }, "gelu")

        // layernorm with biased variance
        let w = t([C]), b = t([C])
        let ln = try run("layernorm_forward", [x, w, b], [Self.zeros([B, T, C]), Self.zeros([B, T]), Self.zeros([B, T])], ["eps": 1e-5])
        var expected: [Double] = []
        for row in 0..<(B * T) {
            let r = x.floats[(row * C)..<((row + 1) * C)].map(Double.init)
            let mean = r.reduce(0, +) / Double(C)
            let variance = r.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(C)
            let rstd = 1 / (variance + 1e-5).squareRoot()
            for c in 0..<C { expected.append((r[c] - mean) * rstd * Double(w.floats[c]) + Double(b.floats[c])) }
        }
        close(ln[0], expected, "layernorm")

        // matmul with bias
        let OC = 6
        let wm = t([OC, C]), bm = t([OC])
        let mm = try run("matmul_forward", [x, wm, bm], [Self.zeros([B, T, OC])])[0]
        var mmExpected: [Double] = []
        for row in 0..<(B * T) {
            for o in 0..<OC {
                var s = Double(bm.floats[o])
                for c in 0..<C { s += Double(x.floats[row * C + c]) * Double(wm.floats[o * C + c]) }
                mmExpected.append(s)
            }
        }
        close(mm, mmExpected, "matmul")

        // causal attention
        let qkv = t([B, T, 3 * C], -2, 2)
        let att = try run("attention_forward", [qkv], [Self.zeros([B, T, C]), Self.zeros([B, NH, T])], ["num_heads": Double(NH)])
        var attOut = [Double](repeating: 0, count: B * T * C)
        var lse = [Double](repeating: 0, count: B * NH * T)
        func q(_ b: Int, _ t: Int, _ part: Int, _ c: Int) -> Double { Double(qkv.floats[(b * T + t) * 3 * C + part * C + c]) }
        for bb in 0..<B {
            for h in 0..<NH {
                for tq in 0..<T {
                    let scores = (0...tq).map { tk in
                        (0..<hs).reduce(0.0) { $0 + q(bb, tq, 0, h * hs + $1) * q(bb, tk, 1, h * hs + $1) } / Double(hs).squareRoot()
                    }
                    let m = scores.max()!
                    let sum = scores.map { exp($0 - m) }.reduce(0, +)
                    lse[(bb * NH + h) * T + tq] = m + log(sum)
                    for c in 0..<hs {
                        attOut[(bb * T + tq) * C + h * hs + c] = (0...tq).reduce(0.0) {
                            $0 + exp(scores[$1] - m) / sum * q(bb, $1, 2, h * hs + c)
                        }
                    }
                }
            }
        }
        close(att[0], attOut, "attention out")
        close(att[1], lse, "attention lse")

        // cross-entropy with an ignored target
        let logits = t([B, T, V], -3, 3)
        var targets = (0..<(B * T)).map { Int32($0 % V) }
        targets[3] = -1
        let ce = try run("crossentropy_forward", [logits, HostTensor([B, T], ints: targets)], [Self.zeros([B, T]), Self.zeros([B, T])])
        var losses: [Double] = []
        for row in 0..<(B * T) {
            let r = logits.floats[(row * V)..<((row + 1) * V)].map(Double.init)
            let m = r.max()!
            let l = m + log(r.map { exp($0 - m) }.reduce(0, +))
            losses.append(targets[row] < 0 ? 0 : l - r[Int(targets[row])])
        }
        close(ce[0], losses, "cross-entropy")

        // encoder, residual, scale, sum_squares
        let wte = t([V, C]), wpe = t([T + 2, C])
        let ids = (0..<(B * T)).map { Int32(($0 * 3) % V) }
        let enc = try run("encoder_forward", [HostTensor([B, T], ints: ids), wte, wpe], [Self.zeros([B, T, C])])[0]
        close(enc, (0..<(B * T * C)).map { i in
            let (bt, c) = (i / C, i % C)
            return Double(wte.floats[Int(ids[bt]) * C + c]) + Double(wpe.floats[(bt % T) * C + c])
        }, "encoder")
        let y = t([B, T, C])
        close(try run("residual_forward", [x, y], [Self.zeros([B, T, C])])[0], zip(x.floats, y.floats).map { Double($0) + Double($1) }, "residual")
        close(try run("scale", [x], [Self.zeros([B, T, C])], ["alpha": -0.25])[0], x.floats.map { -0.25 * Double($0) }, "scale")
        let start = HostTensor([1], floats: [2])
        close(try run("sum_squares", [x], [start])[0], [2 + x.floats.reduce(0.0) { $0 + Double($1) * Double($1) }], "sum_squares")
    }

    @Test("adamw_update follows the AdamW formulas with bias correction and decoupled weight decay")
    mutating func adamw() throws {
        var rng = SeededGenerator(seed: 11)
        let n = 33
        let grad = rng.floats(n), param = rng.floats(n), m = rng.floats(n, -0.1, 0.1), v = rng.floats(n, 0, 0.01)
        let (lr, b1, b2, eps, wd, step, gs) = (1e-2, 0.9, 0.95, 1e-8, 0.1, 4.0, 0.5)
        let out = try run(
            "adamw_update", [HostTensor([n], floats: grad)],
            [HostTensor([n], floats: param), HostTensor([n], floats: m), HostTensor([n], floats: v)],
            ["lr": lr, "beta1": b1, "beta2": b2, "eps": eps, "weight_decay": wd, "step": step, "grad_scale": gs])
        var p = [Double](), mm = [Double](), vv = [Double]()
        for i in 0..<n {
            let g = Double(grad[i]) * gs
            let m1 = b1 * Double(m[i]) + (1 - b1) * g
            let v1 = b2 * Double(v[i]) + (1 - b2) * g * g
            let mhat = m1 / (1 - pow(b1, step)), vhat = v1 / (1 - pow(b2, step))
            p.append(Double(param[i]) - lr * (mhat / (vhat.squareRoot() + eps) + wd * Double(param[i])))
            mm.append(m1)
            vv.append(v1)
        }
        close(out[0], p, "param")
        close(out[1], mm, "m")
        close(out[2], vv, "v")
    }

    @Test("backward ops accumulate into their outputs")
    mutating func accumulates() throws {
        let dout = HostTensor([4], floats: [1, 2, 3, 4])
        let start = HostTensor([4], floats: [10, 10, 10, 10])
        let out = try run("residual_backward", [dout], [start, start])
        #expect(out[0] == [11, 12, 13, 14])
        #expect(out[1] == [11, 12, 13, 14])
    }
}
