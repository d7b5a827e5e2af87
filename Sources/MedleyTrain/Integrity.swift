import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyModel

/// The judgements of Medley's silent-corruption checks (docs/integrity.md), kept pure so they
/// are tested without chips or processes.
public enum Integrity {
    /// What comparing the replicas' parameter fingerprints says.
    public enum FingerprintVerdict: Equatable, Sendable {
        /// Every replica holds the same bits.
        case agree
        /// A strict majority agrees; these ranks differ from it.
        case outliers([Int])
        /// No strict majority (e.g. 2 ranks that differ): these ranks' fingerprints differ from
        /// one another and the fingerprints alone cannot say which is wrong.
        case split([Int])
    }

    /// The ranks whose fingerprint differs from the majority's.
    public static func compare(fingerprints: [UInt32]) -> FingerprintVerdict {
        guard let first = fingerprints.first, fingerprints.contains(where: { $0 != first }) else { return .agree }
        var counts: [UInt32: Int] = [:]
        for f in fingerprints { counts[f, default: 0] += 1 }
        let (top, n) = counts.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }!
        if 2 * n > fingerprints.count {
            return .outliers(fingerprints.indices.filter { fingerprints[$0] != top })
        }
        return .split(Array(fingerprints.indices))
    }

    /// CRC-32C of parameters as their float32 bytes: one replica's fingerprint.
    public static func fingerprint(_ parameters: [Float]) -> UInt32 {
        parameters.withUnsafeBytes { Checksum.crc32c($0) }
    }

    /// One chip's answer to the probe batch: the loss of the probe sequence and the norm of its gradient.
    public struct ProbeAnswer: Equatable, Sendable {
        public var loss: Double
        public var gradientNorm: Double
        public init(loss: Double, gradientNorm: Double) {
            self.loss = loss
            self.gradientNorm = gradientNorm
        }
    }

    /// The relative difference a chip computing in `precision` (the sim's `precision=`; nil or
    /// unknown: fp32) may show on the probe against the fp32 reference: fp32 1e-3 (other kernels
    /// sum in other orders), fp16 2e-2, bf16 1e-1 (every op's outputs rounded to 11 or 8 bits).
    public static func tolerance(precision: String?) -> Double {
        switch precision?.lowercased() {
        case "bf16"?: 1e-1
        case "fp16"?: 2e-2
        default: 1e-3
        }
    }

    /// |a - b| relative to the reference b (with an absolute floor of `tolerance` · 1e-3, so a
    /// reference near 0 is not impossible to meet); infinite when a is not finite.
    public static func relativeDifference(_ a: Double, reference b: Double, tolerance: Double) -> Double {
        guard a.isFinite else { return .infinity }
        return abs(a - b) / max(abs(b), tolerance * 1e-3, 1e-30)
    }

    /// Whether `answer` is outside `tolerance` of `reference`, and by how much (the larger of the
    /// loss's and the gradient norm's relative differences). A reference that is not finite
    /// judges nothing (the parameters themselves are bad; that is not the chip's doing).
    public static func outside(_ answer: ProbeAnswer, reference: ProbeAnswer, tolerance: Double) -> (bad: Bool, difference: Double) {
        guard reference.loss.isFinite && reference.gradientNorm.isFinite else { return (false, 0) }
        let d = max(relativeDifference(answer.loss, reference: reference.loss, tolerance: tolerance),
                    relativeDifference(answer.gradientNorm, reference: reference.gradientNorm, tolerance: tolerance))
        return (d > tolerance || d.isNaN, d)
    }

    /// Whether every chip's answer is finite and within the sum of their two tolerances of every
    /// other's: then no reference is needed to clear them (a defective chip disagrees with the
    /// healthy ones; with one chip there is nothing to compare, and the reference always runs).
    public static func agree(answers: [ProbeAnswer], tolerances: [Double]) -> Bool {
        guard answers.count > 1 else { return false }
        for i in answers.indices {
            guard answers[i].loss.isFinite && answers[i].gradientNorm.isFinite else { return false }
            for j in answers.indices where j > i {
                let t = tolerances[i] + tolerances[j]
                if outside(answers[i], reference: answers[j], tolerance: t).bad || outside(answers[j], reference: answers[i], tolerance: t).bad {
                    return false
                }
            }
        }
        return true
    }

    /// The ranks whose chips' answers are outside their tolerances of the reference's.
    public static func probeSuspects(answers: [ProbeAnswer], references: [ProbeAnswer], tolerances: [Double]) -> [Int] {
        answers.indices.filter { outside(answers[$0], reference: references[$0], tolerance: tolerances[$0]).bad }
    }

    /// When the checks run after `step`: the probe every `probeEvery` steps and before every
    /// checkpoint (so none is written from a chip that fails it); the fingerprint every
    /// `fingerprintEvery` steps (the last step's is ``TrainingWorker``'s closing check).
    public static func due(step: Int, integrity: JobSpec.Integrity, checkpoint: Bool) -> (probe: Bool, fingerprint: Bool) {
        let probe = integrity.probeEvery > 0 && (step % integrity.probeEvery == 0 || checkpoint)
        let fingerprint = integrity.fingerprintEvery > 0 && (step % integrity.fingerprintEvery == 0 || checkpoint)
        return (probe, fingerprint)
    }
}

/// One rank's probe: a fixed sequence (the first of the first global batch) run forward and
/// backward on the rank's chip with its current parameters; on rank 0 also on the reference
/// adapter, loaded in this process, with the same parameters, when the chips' answers need a judge.
final class IntegrityProbe {
    /// The reference adapter's model (rank 0 only).
    let model: GPT?
    let tokens: [Int32]
    let targets: [Int32]
    /// The chip's tolerance (``Integrity/tolerance(precision:)`` or `integrity.probe_tolerance`).
    let tolerance: Double

    init(spec: JobSpec, rankDevice: JobSpec.RankDevice, sampler: GlobalBatchSampler, withReference: Bool) throws {
        do {
            if withReference {
                let device = try AdapterLibrary.load("reference").openDevice(0, options: [])
                model = try GPT(config: RankCapacity.modelConfig(spec.model, batch: 1), device: device, seed: spec.train.seed)
            } else {
                model = nil
            }
        } catch let error as MedleyError {
            throw MedleyError(error.code, "integrity probe: cannot open the reference adapter on the host (\(error.message)); set integrity.probe_every: 0 to train without probes")
        }
        var sampler = sampler
        let first = sampler.globalBatch(step: 0)
        tokens = Array(first.tokens.prefix(spec.model.seq))
        targets = Array(first.targets.prefix(spec.model.seq))
        tolerance = spec.integrity.probeTolerance ?? Integrity.tolerance(precision: rankDevice.options["precision"])
    }

    /// The probe's answer on `model` (the rank's chip): its gradients are overwritten (every step zeroes them first).
    func answer(on model: GPT) throws -> Integrity.ProbeAnswer {
        try model.zeroGradients()
        let loss = Double(try model.forward(tokens: tokens, targets: targets, batch: 1))
        try model.backward()
        let squares = try model.gradientNormSquared()
        try model.device.synchronize()
        try model.zeroGradients()
        return Integrity.ProbeAnswer(loss: loss, gradientNorm: squares.squareRoot())
    }

    /// The reference adapter's answer with `parameters` (rank 0).
    func reference(parameters: [Float]) throws -> Integrity.ProbeAnswer {
        guard let model else { throw MedleyError(.internalError, "integrity probe: only rank 0 holds the reference model") }
        try model.writeParameters(parameters)
        return try answer(on: model)
    }
}
