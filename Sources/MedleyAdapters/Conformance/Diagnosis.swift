import MedleyCore

/// Likely causes of a failed op: the known mistakes a failure can be matched against.
///
/// Each test recomputes what a kernel with that mistake would have produced (the
/// gradient alone instead of added to the output, the output stored transposed, the
/// weight read transposed, the reference times a constant) and says so when the
/// candidate's output matches it; the cross-case tests compare which of an op's cases
/// failed (only without bias, only on hard inputs, only at a long sequence).
enum Diagnosis {
    /// Looser than the check's own tolerance: a hypothesis holds when it explains the
    /// output to about fp32 rounding of a different summation order.
    static func loose(_ tolerance: Tolerance) -> Tolerance {
        Tolerance(rtol: max(1e-3, 10 * tolerance.rtol), atol: max(1e-4, 10 * tolerance.atol))
    }

    private static func matches(_ got: [Float], _ expected: [Float], _ tolerance: Tolerance) -> Bool {
        got.count == expected.count && !got.isEmpty && compare(got, expected, tolerance: loose(tolerance)).passed
    }

    /// Ops whose outputs are accumulated into (`+=`): every backward, and sum_squares.
    static func accumulates(_ op: String) -> Bool { op.hasSuffix("_backward") || op == "sum_squares" }

    /// What one failed output of one case looks like.
    static func output(
        _ c: OpCase, index: Int, got: HostTensor, expected: HostTensor, tolerance: Tolerance
    ) -> [String] {
        let name = c.outputNames[index]
        let prefill = c.outputs[index].floats
        let g = got.floats, e = expected.floats
        var found: [String] = []
        let accumulating = accumulates(c.op) && prefill.allSatisfy(\.isFinite)
        if accumulating {
            if zip(g, prefill).allSatisfy({ $0.bitPattern == $1.bitPattern }) {
                return ["\(name) was never written (it still holds what was there before the launch)"]
            }
            let increment = zip(e, prefill).map { $0 - $1 }
            if matches(g, increment, tolerance) {
                return [
                    "overwrote instead of accumulating: \(name) holds the gradient alone, not what it held plus the "
                        + "gradient (backward ops use += into every output)"
                ]
            }
            let gotIncrement = zip(g, prefill).map { $0 - $1 }
            if let t = transposed(gotIncrement, got.shape), matches(t.values, increment, tolerance) {
                found.append("\(name) is written transposed (as \(t.shape) instead of \(shapeText(got.shape)))")
            } else if let k = factor(gotIncrement, increment, tolerance) {
                found.append("what was added to \(name) is the gradient × \(fmt(k))\(factorHint(k))")
            }
        } else if c.op != "adamw_update" {
            if g.allSatisfy(\.isNaN) && prefill.allSatisfy(\.isNaN) {
                return ["\(name) was never written (it is still the NaN it was filled with)"]
            }
            if let bad = g.indices.first(where: { !g[$0].isFinite && e[$0].isFinite }) {
                found.append(
                    "\(name) has \(fmt(g[bad])) at \(indexText(bad, got.shape)) where the reference is finite")
            }
            if let t = transposed(g, got.shape), matches(t.values, e, tolerance) {
                found.append("\(name) is written transposed (as \(t.shape) instead of \(shapeText(got.shape)))")
            } else if let k = factor(g, e, tolerance) {
                found.append("\(name) is the reference × \(fmt(k))\(factorHint(k))")
            }
        } else if let k = factor(zip(g, prefill).map { $0 - $1 }, zip(e, prefill).map { $0 - $1 }, tolerance) {
            found.append("the change to \(name) is the reference's × \(fmt(k))\(factorHint(k))")
        }
        if c.op.hasPrefix("matmul"), let text = transposedWeight(c, index: index, got: g, tolerance: tolerance) {
            found.append(text)
        }
        if c.op == "layernorm_forward", index == 0, let text = layernormEpsilon(c, got: g) {
            found.append(text)
        }
        return found
    }

    private static func shapeText(_ shape: [Int]) -> String {
        "[" + shape.map(String.init).joined(separator: ", ") + "]"
    }

    /// `values` of shape [rows, last] read back as if stored [last, rows]: what a transposed store leaves.
    private static func transposed(_ values: [Float], _ shape: [Int]) -> (values: [Float], shape: String)? {
        guard shape.count >= 2, let last = shape.last, last > 1, values.count / last > 1 else { return nil }
        let rows = values.count / last
        var result = [Float](repeating: 0, count: values.count)
        for i in 0..<rows {
            for j in 0..<last { result[i * last + j] = values[j * rows + i] }
        }
        return (result, "[\(last), \(rows)]")
    }

    /// k when `got` ≈ k × `expected` for a k other than 1.
    private static func factor(_ got: [Float], _ expected: [Float], _ tolerance: Tolerance) -> Double? {
        var ge = 0.0, ee = 0.0
        for (g, e) in zip(got, expected) where g.isFinite && e.isFinite {
            ge += Double(g) * Double(e)
            ee += Double(e) * Double(e)
        }
        guard ee > 0 else { return nil }
        let k = ge / ee
        guard abs(k - 1) > 1e-3, k.isFinite, abs(k) > 1e-6 else { return nil }
        return matches(got, expected.map { Float(Double($0) * k) }, tolerance) ? k : nil
    }

    private static func factorHint(_ k: Double) -> String {
        if abs(k + 1) < 1e-3 { return " (the sign is flipped)" }
        return " (a scale applied twice, or not at all?)"
    }

    /// For matmul: whether the output matches the reference computed with the weight read as [C, OC].
    private static func transposedWeight(_ c: OpCase, index: Int, got: [Float], tolerance: Tolerance) -> String? {
        let forward = c.op == "matmul_forward"
        guard forward || index == 0 else { return nil }  // backward: only dx depends on the weight
        let x = c.inputs[forward ? 0 : 1], w = c.inputs[forward ? 1 : 2]
        let (OC, C) = (w.shape[0], w.shape[1])
        let N = x.count / C
        var alt = [Float](repeating: 0, count: forward ? N * OC : N * C)
        if forward {
            let bias = c.inputs.count > 2 ? c.inputs[2].floats : [Float](repeating: 0, count: OC)
            for n in 0..<N {
                for o in 0..<OC {
                    var sum = Double(bias[o])
                    for k in 0..<C { sum += Double(x.floats[n * C + k]) * Double(w.floats[k * OC + o]) }
                    alt[n * OC + o] = Float(sum)
                }
            }
        } else {
            let dout = c.inputs[0].floats
            let prefill = c.outputs[0].floats
            for n in 0..<N {
                for k in 0..<C {
                    var sum = Double(prefill[n * C + k])
                    for o in 0..<OC { sum += Double(dout[n * OC + o]) * Double(w.floats[k * OC + o]) }
                    alt[n * C + k] = Float(sum)
                }
            }
        }
        guard matches(got, alt, tolerance) else { return nil }
        return "matches the reference with weight read transposed (as [C, OC] = [\(C), \(OC)]): weight is "
            + "[OC, C], row o holding output channel o's \(C) weights"
    }

    /// For layernorm: the epsilon the output implies, when it is not the attribute's.
    private static func layernormEpsilon(_ c: OpCase, got: [Float]) -> String? {
        guard let eps = c.attributes["eps"], c.variant.condition == .lowVariance else { return nil }
        let x = c.inputs[0].floats, w = c.inputs[1].floats, b = c.inputs[2].floats
        let C = w.count
        var estimates: [Double] = []
        for row in 0..<(x.count / C) {
            let values = x[(row * C)..<((row + 1) * C)].map(Double.init)
            let mean = values.reduce(0, +) / Double(C)
            let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(C)
            guard let j = values.indices.max(by: { abs(values[$0] - mean) < abs(values[$1] - mean) }) else { continue }
            let r = (Double(got[row * C + j]) - Double(b[j])) / (Double(w[j]) * (values[j] - mean))
            if r.isFinite, r > 0 { estimates.append(1 / (r * r) - variance) }
        }
        guard !estimates.isEmpty else { return nil }
        let estimate = estimates.sorted()[estimates.count / 2]
        if estimate < eps * 1e-3 { return "behaves as eps = 0 (the eps attribute is \(fmt(eps))): add eps to the variance" }
        guard estimate < eps / 2 || estimate > eps * 2 else { return nil }
        return "behaves as eps ≈ \(fmt(estimate)) (the eps attribute is \(fmt(eps))): use the attribute, not a constant"
    }

    /// What comparing an op's cases says: which variants fail and which pass.
    static func acrossCases(_ outcomes: [(OpCase, passed: Bool, ratio: Double)]) -> [String] {
        let failed = outcomes.filter { !$0.passed }.map(\.0)
        let passed = outcomes.filter(\.passed).map(\.0)
        guard !failed.isEmpty else { return [] }
        var found: [String] = []
        if !passed.isEmpty, failed.allSatisfy({ $0.variant.bias == false }), passed.contains(where: { $0.variant.bias == true }) {
            let path = failed[0].op == "matmul_forward" ? "2 inputs" : "2 outputs"
            found.append("only the variant without bias fails: the no-bias path (\(path)) is broken")
        }
        if !passed.isEmpty, failed.allSatisfy({ $0.variant.bias == true }), passed.contains(where: { $0.variant.bias == false }) {
            found.append("only the variant with bias fails: check the bias (or dbias) term")
        }
        let sequences = outcomes.compactMap { o in o.0.variant.sequence.map { (t: $0, ratio: o.ratio, passed: o.passed) } }
        if sequences.count == outcomes.count, let shortestFailing = failed.compactMap(\.variant.sequence).min(),
            let longestPassing = passed.compactMap(\.variant.sequence).max(), longestPassing < shortestFailing
        {
            let byLength = Dictionary(sequences.map { ($0.t, $0.ratio) }, uniquingKeysWith: max).sorted { $0.key < $1.key }
            let ratios = byLength.map { "T=\($0.key): \(fmt($0.value))" }.joined(separator: ", ")
            found.append(
                "the error grows with sequence length: passes at T ≤ \(longestPassing), fails at T ≥ \(shortestFailing) "
                    + "(worst error / tolerance: \(ratios)); keep the softmax's running maximum and sums in fp32 and "
                    + "rescale them as keys arrive")
        } else if let condition = failed[0].variant.condition, failed.allSatisfy({ $0.variant.condition == condition }),
            passed.contains(where: { $0.variant.condition == nil })
        {
            found.append("fails only on \(condition.rawValue) (passes on ordinary inputs): \(condition.hint)")
        }
        let attributes = Set(failed.compactMap { $0.variant.attribute?.name })
        if attributes.count == 1, let name = attributes.first,
            failed.allSatisfy({ $0.variant.attribute?.name == name }),
            passed.contains(where: { $0.variant.attribute == nil })
        {
            let values = failed.compactMap { $0.variant.attribute?.value }.map { fmt($0) }.joined(separator: ", ")
            found.append("fails only when \(name) = \(values) (passes at its usual value): the kernel probably does not read '\(name)'")
        }
        return found
    }

    /// A different, still valid value of an attribute, to see whether the kernel reads it.
    static func perturbed(_ name: String, _ value: Double) -> Double? {
        switch name {
        case "num_heads": nil  // changes the shapes
        case "step": value + 7
        case "beta1", "beta2": value * 0.5
        default: value == 0 ? 0.2 : value * 3
        }
    }
}
