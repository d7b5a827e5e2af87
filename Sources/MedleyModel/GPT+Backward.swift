import MedleyAdapters
import MedleyCore

extension GPT {
    /// Back-propagates the last `forward`, ADDING the parameter gradients into
    /// `gradients` (call `zeroGradients()` first unless accumulating micro-batches).
    ///
    /// `lossScale` is the derivative of the loss with respect to each position's
    /// cross-entropy: by default 1/(batch · seq), the gradient of the mean loss.
    public func backward(lossScale: Double? = nil) throws {
        guard let b = lastBatch else {
            throw MedleyError(.invalidArgument, "backward: no forward pass to differentiate (call forward first)")
        }
        let (t, c, v) = (config.seq, config.dim, config.vocab)
        let scale = lossScale ?? 1 / Double(b * t)
        guard scale.isFinite else { throw MedleyError(.invalidArgument, "backward: lossScale \(scale) is not finite") }

        // Activation gradients accumulate too: start them from zero.
        try activationGradients.fill(byte: 0)

        let wte = try layout.entry("wte"), wpe = try layout.entry("wpe")
        let lnfw = try layout.entry("lnf.w"), lnfb = try layout.entry("lnf.b")
        try device.launch(
            "crossentropy_backward",
            inputs: [act(plan.logits, [b, t, v]), targetBuffer.tensor(.i32, [b, t]), act(plan.lossLse, [b, t])],
            outputs: [dact(plan.logits, [b, t, v])], attributes: ["scale": scale])
        try device.launch(
            "matmul_backward", inputs: [dact(plan.logits, [b, t, v]), act(plan.lnf, [b, t, c]), param(wte)],
            outputs: [dact(plan.lnf, [b, t, c]), grad(wte)])
        let last = plan.residual[config.layers]
        try device.launch(
            "layernorm_backward",
            inputs: [
                dact(plan.lnf, [b, t, c]), act(last, [b, t, c]), param(lnfw), act(plan.lnfMean, [b, t]),
                act(plan.lnfRstd, [b, t]),
            ],
            outputs: [dact(last, [b, t, c]), grad(lnfw), grad(lnfb)])

        for (l, p) in blocks.enumerated().reversed() {
            let a = plan.blocks[l]
            // residual[l+1] = residualMid + mlpProj
            try device.launch(
                "residual_backward", inputs: [dact(plan.residual[l + 1], [b, t, c])],
                outputs: [dact(a.residualMid, [b, t, c]), dact(a.mlpProj, [b, t, c])])
            try device.launch(
                "matmul_backward",
                inputs: [dact(a.mlpProj, [b, t, c]), act(a.fcGelu, [b, t, 4 * c]), param(p.mlpProjw)],
                outputs: [dact(a.fcGelu, [b, t, 4 * c]), grad(p.mlpProjw), grad(p.mlpProjb)])
            try device.launch(
                "gelu_backward", inputs: [dact(a.fcGelu, [b, t, 4 * c]), act(a.fc, [b, t, 4 * c])],
                outputs: [dact(a.fc, [b, t, 4 * c])])
            try device.launch(
                "matmul_backward", inputs: [dact(a.fc, [b, t, 4 * c]), act(a.ln2, [b, t, c]), param(p.fcw)],
                outputs: [dact(a.ln2, [b, t, c]), grad(p.fcw), grad(p.fcb)])
            try device.launch(
                "layernorm_backward",
                inputs: [
                    dact(a.ln2, [b, t, c]), act(a.residualMid, [b, t, c]), param(p.ln2w), act(a.ln2Mean, [b, t]),
                    act(a.ln2Rstd, [b, t]),
                ],
                outputs: [dact(a.residualMid, [b, t, c]), grad(p.ln2w), grad(p.ln2b)])
            // residualMid = residual[l] + attnProj
            try device.launch(
                "residual_backward", inputs: [dact(a.residualMid, [b, t, c])],
                outputs: [dact(plan.residual[l], [b, t, c]), dact(a.attnProj, [b, t, c])])
            try device.launch(
                "matmul_backward", inputs: [dact(a.attnProj, [b, t, c]), act(a.attn, [b, t, c]), param(p.attnProjw)],
                outputs: [dact(a.attn, [b, t, c]), grad(p.attnProjw), grad(p.attnProjb)])
            try device.launch(
                "attention_backward",
                inputs: [
                    dact(a.attn, [b, t, c]), act(a.qkv, [b, t, 3 * c]), act(a.attn, [b, t, c]),
                    act(a.attnLse, [b, config.heads, t]),
                ],
                outputs: [dact(a.qkv, [b, t, 3 * c])], attributes: ["num_heads": Double(config.heads)])
            try device.launch(
                "matmul_backward", inputs: [dact(a.qkv, [b, t, 3 * c]), act(a.ln1, [b, t, c]), param(p.qkvw)],
                outputs: [dact(a.ln1, [b, t, c]), grad(p.qkvw), grad(p.qkvb)])
            try device.launch(
                "layernorm_backward",
                inputs: [
                    dact(a.ln1, [b, t, c]), act(plan.residual[l], [b, t, c]), param(p.ln1w), act(a.ln1Mean, [b, t]),
                    act(a.ln1Rstd, [b, t]),
                ],
                outputs: [dact(plan.residual[l], [b, t, c]), grad(p.ln1w), grad(p.ln1b)])
        }

        try device.launch(
            "encoder_backward", inputs: [dact(plan.residual[0], [b, t, c]), tokenBuffer.tensor(.i32, [b, t])],
            outputs: [grad(wte), grad(wpe)])
    }
}
