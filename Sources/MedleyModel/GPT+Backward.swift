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
        try backwardStage(at: 0, batch: b, outputGradient: nil, lossScale: lossScale ?? 1 / Double(b * config.seq))
    }

    /// Back-propagates the microbatch whose forward kept its activations at sequences
    /// `at ..< at + batch`, ADDING the parameter gradients into `gradients`.
    ///
    /// - `outputGradient` (`batch · seq · dim` floats): the gradient of the loss with respect
    ///   to this stage's output, needed when the model does not hold the head.
    /// - `lossScale`: the derivative of the loss with respect to each position's
    ///   cross-entropy (used when the model holds the head), e.g. 1/(global batch · seq).
    ///
    /// Afterwards, unless the model holds the embedding, ``readInputGradient(batch:into:)``
    /// gives the gradient to send to the previous stage.
    public func backwardStage(at: Int, batch: Int, outputGradient: UnsafeRawBufferPointer?, lossScale: Double) throws {
        try checkSlot(at: at, batch: batch, what: "backward")
        guard lossScale.isFinite else { throw MedleyError(.invalidArgument, "backward: lossScale \(lossScale) is not finite") }
        let (b, t, c, v) = (batch, config.seq, config.dim, config.vocab)
        sequenceBase = at
        let g = gradientPlan

        // Activation gradients accumulate too: start them from zero. The views start at
        // sequence 0 of each region, so only the first b sequences of each are used; zeroing
        // the whole buffer (sized for the model's capacity) cost a rank with a small share as
        // much as one with the largest.
        for region in g.regions where region.perSequence > 0 {
            try activationGradients.fill(byte: 0, offset: region.offset * 4, bytes: b * region.perSequence * 4)
        }

        let last = blocks.count
        if holdsHead {
            let wte = try layout.entry("wte")
            let lnfw = try layout.entry("lnf.w"), lnfb = try layout.entry("lnf.b")
            try device.launch(
                "crossentropy_backward",
                inputs: [act(plan.logits, [b, t, v]), ids(targetBuffer, b), act(plan.lossLse, [b, t])],
                outputs: [dact(g.logits, [b, t, v])], attributes: ["scale": lossScale])
            try device.launch(
                "matmul_backward", inputs: [dact(g.logits, [b, t, v]), act(plan.lnf, [b, t, c]), param(wte)],
                outputs: [dact(g.lnf, [b, t, c]), grad(wte)])
            try device.launch(
                "layernorm_backward",
                inputs: [
                    dact(g.lnf, [b, t, c]), act(plan.residual[last], [b, t, c]), param(lnfw), act(plan.lnfMean, [b, t]),
                    act(plan.lnfRstd, [b, t]),
                ],
                outputs: [dact(g.residual[last], [b, t, c]), grad(lnfw), grad(lnfb)])
        } else {
            let expected = b * t * c * 4
            guard let outputGradient, outputGradient.count == expected else {
                throw MedleyError(
                    .invalidArgument,
                    "backward: stage \(stage) expects an output gradient of \(expected) bytes, got \(outputGradient?.count ?? 0)")
            }
            try activationGradients.write(from: outputGradient, at: g.residual[last] * 4)
        }

        for (i, p) in blocks.enumerated().reversed() {
            let a = plan.blocks[i], d = g.blocks[i]
            // residual[i+1] = residualMid + mlpProj
            try device.launch(
                "residual_backward", inputs: [dact(g.residual[i + 1], [b, t, c])],
                outputs: [dact(d.residualMid, [b, t, c]), dact(d.mlpProj, [b, t, c])])
            try device.launch(
                "matmul_backward",
                inputs: [dact(d.mlpProj, [b, t, c]), act(a.fcGelu, [b, t, 4 * c]), param(p.mlpProjw)],
                outputs: [dact(d.fcGelu, [b, t, 4 * c]), grad(p.mlpProjw), grad(p.mlpProjb)])
            try device.launch(
                "gelu_backward", inputs: [dact(d.fcGelu, [b, t, 4 * c]), act(a.fc, [b, t, 4 * c])],
                outputs: [dact(d.fc, [b, t, 4 * c])])
            try device.launch(
                "matmul_backward", inputs: [dact(d.fc, [b, t, 4 * c]), act(a.ln2, [b, t, c]), param(p.fcw)],
                outputs: [dact(d.ln2, [b, t, c]), grad(p.fcw), grad(p.fcb)])
            try device.launch(
                "layernorm_backward",
                inputs: [
                    dact(d.ln2, [b, t, c]), act(a.residualMid, [b, t, c]), param(p.ln2w), act(a.ln2Mean, [b, t]),
                    act(a.ln2Rstd, [b, t]),
                ],
                outputs: [dact(d.residualMid, [b, t, c]), grad(p.ln2w), grad(p.ln2b)])
            // residualMid = residual[i] + attnProj
            try device.launch(
                "residual_backward", inputs: [dact(d.residualMid, [b, t, c])],
                outputs: [dact(g.residual[i], [b, t, c]), dact(d.attnProj, [b, t, c])])
            try device.launch(
                "matmul_backward", inputs: [dact(d.attnProj, [b, t, c]), act(a.attn, [b, t, c]), param(p.attnProjw)],
                outputs: [dact(d.attn, [b, t, c]), grad(p.attnProjw), grad(p.attnProjb)])
            try device.launch(
                "attention_backward",
                inputs: [
                    dact(d.attn, [b, t, c]), act(a.qkv, [b, t, 3 * c]), act(a.attn, [b, t, c]),
                    act(a.attnLse, [b, config.heads, t]),
                ],
                outputs: [dact(d.qkv, [b, t, 3 * c])], attributes: ["num_heads": Double(config.heads)])
            try device.launch(
                "matmul_backward", inputs: [dact(d.qkv, [b, t, 3 * c]), act(a.ln1, [b, t, c]), param(p.qkvw)],
                outputs: [dact(d.ln1, [b, t, c]), grad(p.qkvw), grad(p.qkvb)])
            try device.launch(
                "layernorm_backward",
                inputs: [
                    dact(d.ln1, [b, t, c]), act(plan.residual[i], [b, t, c]), param(p.ln1w), act(a.ln1Mean, [b, t]),
                    act(a.ln1Rstd, [b, t]),
                ],
                outputs: [dact(g.residual[i], [b, t, c]), grad(p.ln1w), grad(p.ln1b)])
        }

        if holdsEmbedding {
            let wte = try layout.entry("wte"), wpe = try layout.entry("wpe")
            try device.launch(
                "encoder_backward", inputs: [dact(g.residual[0], [b, t, c]), ids(tokenBuffer, b)],
                outputs: [grad(wte), grad(wpe)])
        }
    }

    /// Copies the gradient of the loss with respect to this stage's input (`batch · seq · dim`
    /// floats of the last ``backwardStage(at:batch:outputGradient:lossScale:)``) into `output`:
    /// what the previous stage's backward takes.
    public func readInputGradient(batch: Int, into output: UnsafeMutableRawBufferPointer) throws {
        let count = batch * config.seq * config.dim
        guard batch >= 1, batch <= config.maxBatch, output.count == count * 4 else {
            throw MedleyError(.invalidArgument, "input gradient: buffer of \(output.count) bytes for batch \(batch)")
        }
        try activationGradients.read(into: output, at: gradientPlan.residual[0] * 4)
    }
}
