import MedleyAdapters
import MedleyCore

extension GPT {
    /// Runs the whole model on `batch` sequences and returns the mean cross-entropy.
    ///
    /// `tokens` and `targets` hold `batch · seq` ids each, row-major [batch, seq];
    /// tokens must lie in [0, vocab); a negative target is ignored (it adds 0 to
    /// the sum, which is still divided by all batch · seq positions); a target
    /// ≥ vocab is an error. `batch` may be anything from 1 to `config.maxBatch`.
    /// The activations are kept for `backward`.
    public func forward(tokens: [Int32], targets: [Int32], batch: Int) throws -> Float {
        guard holdsEmbedding && holdsHead else {
            throw MedleyError(
                .invalidArgument, "forward: this model holds only planning layers \(stage); use forwardStage")
        }
        try checkSlot(at: 0, batch: batch, what: "forward")
        try checkIDs(tokens, name: "token", batch: batch, allowNegative: false)
        try checkIDs(targets, name: "target", batch: batch, allowNegative: true)
        let sum = try forwardStage(at: 0, batch: batch, tokens: tokens, input: nil, targets: targets)
        lastBatch = batch
        return Float(sum! / Double(batch * config.seq))
    }

    /// Runs this model's planning layers forward on one microbatch of `batch` sequences,
    /// keeping its activations in sequences `at ..< at + batch` of the activation buffers
    /// (a pipeline stage keeps several microbatches in flight this way).
    ///
    /// - `tokens` (`batch · seq` ids): needed when the model holds the embedding.
    /// - `input` (`batch · seq · dim` floats): the residual stream entering the first held
    ///   block (or the head), needed when the model does not hold the embedding.
    /// - `targets` (`batch · seq` ids): needed when the model holds the head.
    ///
    /// Returns the SUM of the cross-entropy over the microbatch's positions when the model
    /// holds the head, nil otherwise (read the output with ``readStageOutput(at:batch:into:)``).
    @discardableResult
    public func forwardStage(
        at: Int, batch: Int, tokens: [Int32]?, input: UnsafeRawBufferPointer?, targets: [Int32]?
    ) throws -> Double? {
        try checkSlot(at: at, batch: batch, what: "forward")
        let (b, t, c, v) = (batch, config.seq, config.dim, config.vocab)
        sequenceBase = at
        if holdsEmbedding {
            guard let tokens else { throw MedleyError(.invalidArgument, "forward: the embedding stage needs tokens") }
            try checkIDs(tokens, name: "token", batch: batch, allowNegative: false)
            try tokenBuffer.write(tokens, at: at * t * 4)
            let wte = try layout.entry("wte"), wpe = try layout.entry("wpe")
            try device.launch(
                "encoder_forward", inputs: [ids(tokenBuffer, b), param(wte), param(wpe)],
                outputs: [act(plan.residual[0], [b, t, c])])
        } else {
            let expected = b * t * c * 4
            guard let input, input.count == expected else {
                throw MedleyError(
                    .invalidArgument,
                    "forward: stage \(stage) expects an input of \(expected) bytes (\(b)×\(t)×\(c) floats), got \(input?.count ?? 0)")
            }
            try activations.write(from: input, at: (plan.residual[0] + at * t * c) * 4)
        }

        for (i, p) in blocks.enumerated() {
            let a = plan.blocks[i]
            let x = act(plan.residual[i], [b, t, c])
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
                outputs: [act(plan.residual[i + 1], [b, t, c])])
        }

        guard holdsHead else { return nil }
        guard let targets else { throw MedleyError(.invalidArgument, "forward: the head stage needs targets") }
        try checkIDs(targets, name: "target", batch: batch, allowNegative: true)
        try targetBuffer.write(targets, at: at * t * 4)
        let wte = try layout.entry("wte")
        let lnfw = try layout.entry("lnf.w"), lnfb = try layout.entry("lnf.b")
        try device.launch(
            "layernorm_forward", inputs: [act(plan.residual[blocks.count], [b, t, c]), param(lnfw), param(lnfb)],
            outputs: [act(plan.lnf, [b, t, c]), act(plan.lnfMean, [b, t]), act(plan.lnfRstd, [b, t])])
        // The head is tied: logits = lnf · wteᵀ, no bias.
        try device.launch(
            "matmul_forward", inputs: [act(plan.lnf, [b, t, c]), param(wte)], outputs: [act(plan.logits, [b, t, v])])
        try device.launch(
            "crossentropy_forward", inputs: [act(plan.logits, [b, t, v]), ids(targetBuffer, b)],
            outputs: [act(plan.losses, [b, t]), act(plan.lossLse, [b, t])])

        let losses: [Float] = try activations.read(Float.self, count: b * t, at: (plan.losses + at * t) * 4)
        return losses.reduce(0.0) { $0 + Double($1) }
    }

    /// Copies the residual stream this stage hands on (`batch · seq · dim` floats of the
    /// microbatch at sequences `at ..< at + batch`) into `output`.
    public func readStageOutput(at: Int, batch: Int, into output: UnsafeMutableRawBufferPointer) throws {
        try checkSlot(at: at, batch: batch, what: "stage output")
        let count = batch * config.seq * config.dim
        guard output.count == count * 4 else {
            throw MedleyError(.invalidArgument, "stage output: buffer of \(output.count) bytes, expected \(count * 4)")
        }
        try activations.read(into: output, at: (plan.residual[blocks.count] + at * config.seq * config.dim) * 4)
    }

    /// Throws when `at ..< at + batch` is not inside the kept activations or exceeds one microbatch.
    func checkSlot(at: Int, batch: Int, what: String) throws {
        guard batch >= 1, batch <= config.maxBatch else {
            throw MedleyError(.invalidArgument, "\(what): batch \(batch) is outside 1...\(config.maxBatch) (config.maxBatch)")
        }
        guard at >= 0, at + batch <= activationSequences else {
            throw MedleyError(
                .invalidArgument,
                "\(what): sequences \(at)..<\(at + batch) are outside the \(activationSequences) kept activation sequences")
        }
    }

    /// Throws a clear `MedleyError` when ids do not fit the model.
    func checkIDs(_ ids: [Int32], name: String, batch: Int, allowNegative: Bool) throws {
        let expected = batch * config.seq
        guard ids.count == expected else {
            throw MedleyError(
                .invalidArgument,
                "forward: \(ids.count) \(name)s, expected \(expected) (batch \(batch) × seq \(config.seq))")
        }
        if allowNegative {
            if let bad = ids.first(where: { Int($0) >= config.vocab }) {
                throw MedleyError(.invalidArgument, "forward: \(name) \(bad) is not below the vocabulary size \(config.vocab)")
            }
        } else if let bad = ids.first(where: { $0 < 0 || Int($0) >= config.vocab }) {
            throw MedleyError(.invalidArgument, "forward: \(name) \(bad) is outside [0, \(config.vocab))")
        }
    }
}
