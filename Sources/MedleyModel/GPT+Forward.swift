import MedleyAdapters
import MedleyCore

extension GPT {
    /// Runs the model on `batch` sequences and returns the mean cross-entropy.
    ///
    /// `tokens` and `targets` hold `batch · seq` ids each, row-major [batch, seq];
    /// tokens must lie in [0, vocab); a negative target is ignored (it adds 0 to
    /// the sum, which is still divided by all batch · seq positions); a target
    /// ≥ vocab is an error. `batch` may be anything from 1 to `config.batch`.
    /// The activations are kept for `backward`.
    public func forward(tokens: [Int32], targets: [Int32], batch: Int) throws -> Float {
        try checkInputs(tokens: tokens, targets: targets, batch: batch)
        try tokenBuffer.write(tokens)
        try targetBuffer.write(targets)
        lastBatch = batch

        let (b, t, c, v) = (batch, config.seq, config.dim, config.vocab)
        let tok = tokenBuffer.tensor(.i32, [b, t])
        let wte = try layout.entry("wte"), wpe = try layout.entry("wpe")
        try device.launch("encoder_forward", inputs: [tok, param(wte), param(wpe)], outputs: [act(plan.residual[0], [b, t, c])])

        for (l, p) in blocks.enumerated() {
            let a = plan.blocks[l]
            let x = act(plan.residual[l], [b, t, c])
            try device.launch(
                "layernorm_forward", inputs: [x, param(p.ln1w), param(p.ln1b)],
                outputs: [act(a.ln1, [b, t, c]), act(a.ln1Mean, [b, t]), act(a.ln1Rstd, [b, t])])
            try device.launch(
                "matmul_forward", inputs: [act(a.ln1, [b, t, c]), param(p.qkvw), param(p.qkvb)],
                outputs: [act(a.qkv, [b, t, 3 * c])])
            try device.launch(
                "attention_forward", inputs: [act(a.qkv, [b, t, 3 * c])],
                outputs: [act(a.attn, [b, t, c]), act(a.attnLse, [b, config.heads, t])],
                attributes: ["num_heads": Double(config.heads)])
            try device.launch(
                "matmul_forward", inputs: [act(a.attn, [b, t, c]), param(p.attnProjw), param(p.attnProjb)],
                outputs: [act(a.attnProj, [b, t, c])])
            try device.launch(
                "residual_forward", inputs: [x, act(a.attnProj, [b, t, c])], outputs: [act(a.residualMid, [b, t, c])])
            try device.launch(
                "layernorm_forward", inputs: [act(a.residualMid, [b, t, c]), param(p.ln2w), param(p.ln2b)],
                outputs: [act(a.ln2, [b, t, c]), act(a.ln2Mean, [b, t]), act(a.ln2Rstd, [b, t])])
            try device.launch(
                "matmul_forward", inputs: [act(a.ln2, [b, t, c]), param(p.fcw), param(p.fcb)],
                outputs: [act(a.fc, [b, t, 4 * c])])
            try device.launch("gelu_forward", inputs: [act(a.fc, [b, t, 4 * c])], outputs: [act(a.fcGelu, [b, t, 4 * c])])
            try device.launch(
                "matmul_forward", inputs: [act(a.fcGelu, [b, t, 4 * c]), param(p.mlpProjw), param(p.mlpProjb)],
                outputs: [act(a.mlpProj, [b, t, c])])
            try device.launch(
                "residual_forward", inputs: [act(a.residualMid, [b, t, c]), act(a.mlpProj, [b, t, c])],
                outputs: [act(plan.residual[l + 1], [b, t, c])])
        }

        let lnfw = try layout.entry("lnf.w"), lnfb = try layout.entry("lnf.b")
        try device.launch(
            "layernorm_forward", inputs: [act(plan.residual[config.layers], [b, t, c]), param(lnfw), param(lnfb)],
            outputs: [act(plan.lnf, [b, t, c]), act(plan.lnfMean, [b, t]), act(plan.lnfRstd, [b, t])])
        // The head is tied: logits = lnf · wteᵀ, no bias.
        try device.launch(
            "matmul_forward", inputs: [act(plan.lnf, [b, t, c]), param(wte)], outputs: [act(plan.logits, [b, t, v])])
        try device.launch(
            "crossentropy_forward", inputs: [act(plan.logits, [b, t, v]), targetBuffer.tensor(.i32, [b, t])],
            outputs: [act(plan.losses, [b, t]), act(plan.lossLse, [b, t])])

        let losses: [Float] = try activations.read(Float.self, count: b * t, at: plan.losses * 4)
        let sum = losses.reduce(0.0) { $0 + Double($1) }
        return Float(sum / Double(b * t))
    }

    /// Throws a clear `MedleyError` when the batch or the ids do not fit the model.
    func checkInputs(tokens: [Int32], targets: [Int32], batch: Int) throws {
        guard batch >= 1, batch <= config.batch else {
            throw MedleyError(.invalidArgument, "forward: batch \(batch) is outside 1...\(config.batch) (config.batch)")
        }
        let expected = batch * config.seq
        guard tokens.count == expected, targets.count == expected else {
            throw MedleyError(
                .invalidArgument,
                "forward: \(tokens.count) tokens and \(targets.count) targets, expected \(expected) each "
                    + "(batch \(batch) × seq \(config.seq))")
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= config.vocab }) {
            throw MedleyError(.invalidArgument, "forward: token \(bad) is outside [0, \(config.vocab))")
        }
        if let bad = targets.first(where: { Int($0) >= config.vocab }) {
            throw MedleyError(.invalidArgument, "forward: target \(bad) is not below the vocabulary size \(config.vocab)")
        }
    }
}
