import Foundation

/// What one training step did, as `medley train` writes it to its JSON Lines log
/// (one object per line, keys in snake case).
public struct StepRecord: Codable, Sendable, Equatable {
    /// The step, from 1.
    public var step: Int
    /// Mean training cross-entropy over the global batch (weighted by each rank's samples).
    public var loss: Double
    /// Mean validation cross-entropy, on steps that evaluate; otherwise absent.
    public var valLoss: Double?
    /// The learning rate used.
    public var lr: Double
    /// Global gradient L2 norm before clipping.
    public var gradNorm: Double
    /// The factor the gradients were scaled by (1 = not clipped).
    public var clipScale: Double
    /// Tokens in the global batch.
    public var tokens: Int
    /// Tokens of the global batch per second of step wall time.
    public var tokensPerS: Double
    /// Wall milliseconds of the whole step (rank 0's clock).
    public var stepMs: Double
    /// Sequences each rank computed, in rank order.
    public var shares: [Int]
    /// Per rank: milliseconds of forward and backward.
    public var computeMs: [Double]
    /// Per rank: milliseconds waiting for the other ranks before the exchange.
    public var idleMs: [Double]
    /// Per rank: milliseconds of the gradient exchange (device copies and the weighted allreduce).
    public var exchangeMs: [Double]
    /// Per rank: milliseconds of the optimizer step on its parameter shard and the parameter gather.
    public var updateMs: [Double]
    /// Per rank: milliseconds of the exchange and the parameter gather spent copying between the
    /// device and host memory (the staging copies; part of `exchangeMs` and `updateMs`).
    public var stagingMs: [Double]?
    /// When the batch was re-divided after this step: the new shares, from the next step.
    public var nextShares: [Int]?
    /// Samples per second each rank was estimated at, on steps that re-divide (and the warm-up).
    public var throughputs: [Double]?
    /// On steps that close a re-measure window (`train.rebalance_every`): why the shares
    /// changed or stayed (the predicted drop, its noise, the payback; `Rebalancer.Decision`).
    public var rebalance: String?
    /// The plan's predicted step time, when the job runs a plan that has one.
    public var predictedStepMs: Double?
    /// Pipeline plans, per rank: milliseconds from the step's start to the end of its last
    /// backward (the 1F1B schedule, sends included); the largest is the pipeline's length.
    public var pipelineMs: [Double]?
    /// On steps that checkpoint: milliseconds training stood still for it on rank 0 (the
    /// snapshot to host memory and the moments' gather; the file is written in the background).
    public var checkpointMs: Double?
    /// On a step whose batch was skipped (`recovery.on_nan: skip_batch`): why. Its update was
    /// not made; the weights and moments are those of the step before.
    public var skipped: String?
    /// With `train.log_examples`: the training examples each rank trained on, in rank order.
    public var examples: [[Int]]?
    /// On steps that ran the silent-corruption checks (docs/integrity.md): milliseconds they
    /// took on rank 0 (the fingerprint, the probe batch on the chip and on the reference, and
    /// their allgather).
    public var integrityMs: Double?
    /// When rank 0 wrote the record (the step's end), milliseconds since the Unix epoch: the wall
    /// clock `medley bench recovery` lines faults, alerts and restarts up against.
    public var unixMillis: Int64?

    /// A record; see the properties.
    public init(
        step: Int, loss: Double, valLoss: Double?, lr: Double, gradNorm: Double, clipScale: Double, tokens: Int,
        tokensPerS: Double, stepMs: Double, shares: [Int], computeMs: [Double], idleMs: [Double], exchangeMs: [Double],
        updateMs: [Double], nextShares: [Int]?, throughputs: [Double]?, predictedStepMs: Double? = nil,
        pipelineMs: [Double]? = nil
    ) {
        self.pipelineMs = pipelineMs
        self.step = step
        self.loss = loss
        self.valLoss = valLoss
        self.lr = lr
        self.gradNorm = gradNorm
        self.clipScale = clipScale
        self.tokens = tokens
        self.tokensPerS = tokensPerS
        self.stepMs = stepMs
        self.shares = shares
        self.computeMs = computeMs
        self.idleMs = idleMs
        self.exchangeMs = exchangeMs
        self.updateMs = updateMs
        self.nextShares = nextShares
        self.throughputs = throughputs
        self.predictedStepMs = predictedStepMs
    }

    enum CodingKeys: String, CodingKey {
        case step, loss, lr, tokens, shares, throughputs, rebalance
        case valLoss = "val_loss"
        case gradNorm = "grad_norm"
        case clipScale = "clip_scale"
        case tokensPerS = "tokens_per_s"
        case stepMs = "step_ms"
        case computeMs = "compute_ms"
        case idleMs = "idle_ms"
        case exchangeMs = "exchange_ms"
        case updateMs = "update_ms"
        case stagingMs = "staging_ms"
        case nextShares = "next_shares"
        case predictedStepMs = "predicted_step_ms"
        case pipelineMs = "pipeline_ms"
        case checkpointMs = "checkpoint_ms"
        case skipped, examples
        case integrityMs = "integrity_ms"
        case unixMillis = "unix_millis"
    }

    /// The record as one line of JSON (no newline).
    public func jsonLine() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// Reads a JSON Lines log back (blank lines skipped).
    public static func read(jsonLines text: String) throws -> [StepRecord] {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }.map {
            try decoder.decode(StepRecord.self, from: Data($0.utf8))
        }
    }

    /// The console line: `step  12/50  loss 4.1234  val 4.2000  tok/s 12,345  step 123.4 ms  shares 7/3/2`.
    public func consoleLine(totalSteps: Int) -> String {
        let width = String(totalSteps).count
        var line = "step " + String(repeating: " ", count: max(0, width - String(step).count)) + "\(step)/\(totalSteps)"
        line += "  loss " + String(format: "%.4f", loss)
        if let valLoss { line += "  val " + String(format: "%.4f", valLoss) }
        line += "  tok/s " + String(format: "%8.0f", tokensPerS)
        line += "  " + String(format: "%7.1f", stepMs) + " ms"
        line += "  shares " + shares.map(String.init).joined(separator: "/")
        if let predictedStepMs { line += String(format: " (plan %.1f)", predictedStepMs) }
        if let nextShares { line += "  -> " + nextShares.map(String.init).joined(separator: "/") + " from next step" }
        if skipped != nil { line += "  (batch skipped: no update)" }
        return line
    }
}
