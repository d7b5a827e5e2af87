import MedleyCore

extension ModelCost {
    /// The cost of Medley's GPT (`MedleyModel.GPT`) with `layers` blocks of `dim`
    /// channels and `heads` heads, `seq` positions and a `vocab`-token vocabulary,
    /// by formula (no device, nothing allocated).
    ///
    /// With T = `seq`, C = `dim`, H = `heads`, V = `vocab` (floats are 4 bytes):
    ///
    /// | planning layer | parameters | activation bytes per sequence | output bytes per sequence |
    /// | --- | --- | --- | --- |
    /// | embedding (`wte`, `wpe`) | V·C + T·C | 4·T·C | 4·T·C |
    /// | block (ln1, qkv, proj, ln2, fc, proj) | 12·C² + 13·C | 4·(18·T·C + 4·T + H·T) | 4·T·C |
    /// | head (`lnf`, output tied to `wte`, loss) | 2·C + V·C (V·C tied) | 4·(T·C + T·V + 4·T) | 0 |
    ///
    /// Activations follow the model's `ActivationPlan`: each layer keeps what its
    /// backward reads (the embedding its output; a block the LayerNorm outputs with
    /// their means and reciprocal deviations, qkv, the attention output and its
    /// per-head log-sum-exp, both projections, the mid-block residual, fc before and
    /// after GELU, and the residual it hands on; the head the final LayerNorm, the
    /// logits, the losses and their log-sum-exp). A stage that does not start with
    /// the embedding also keeps its received input (the previous layer's output).
    /// How many sequences of them a stage holds, with their gradients, token ids and
    /// targets, is ``StepTimeModel``'s business; for the whole model on one device it
    /// comes to `GPT.deviceBytes`: `bytesPerParameter` (16: value, gradient and
    /// AdamW's two moments) per parameter, and per sequence twice the activations
    /// plus 8·T bytes of token ids and targets.
    ///
    /// The head owns its own copy of the token table (`tiedParameters` = V·C): when
    /// it sits on another stage than the embedding, that stage stores the table too
    /// and the two copies' gradients are summed every step. A block hands the
    /// residual stream (T·C floats) to the next layer; the head hands nothing on.
    ///
    /// Values below 1 are a programmer's mistake (the callers validate user input).
    public static func gpt(layers: Int, dim: Int, heads: Int, seq: Int, vocab: Int) -> ModelCost {
        precondition(layers >= 1 && dim >= 1 && heads >= 1 && seq >= 1 && vocab >= 1, "ModelCost.gpt: sizes must be positive")
        let (t, c, h, v) = (seq, dim, heads, vocab)
        let stream = 4 * t * c
        let embedding = Layer(
            kind: .embedding, parameters: v * c + t * c, activationBytesPerSequence: stream,
            outputBytesPerSequence: stream)
        let block = Layer(
            kind: .block, parameters: 12 * c * c + 13 * c, activationBytesPerSequence: 4 * (18 * t * c + 4 * t + h * t),
            outputBytesPerSequence: stream)
        let head = Layer(
            kind: .head, parameters: 2 * c + v * c, tiedParameters: v * c,
            activationBytesPerSequence: 4 * (t * c + t * v + 4 * t), outputBytesPerSequence: 0)
        return ModelCost(layers: [embedding] + Array(repeating: block, count: layers) + [head], seq: seq)
    }

    /// Trainable floats of the whole model, counting the tied token table once.
    public var parameterCount: Int {
        layers.reduce(0) { $0 + $1.parameters - $1.tiedParameters }
    }

    /// Bytes of activations one sequence leaves across the whole model (their gradients not counted).
    public var activationBytesPerSequence: Int {
        layers.reduce(0) { $0 + $1.activationBytesPerSequence }
    }
}
