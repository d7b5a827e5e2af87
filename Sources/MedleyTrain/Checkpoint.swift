import Foundation
import MedleyCore
import MedleyModel

/// The whole training state of a job after one step, independent of the plan that made it.
///
/// Every tensor is whole and under its global name (`wte`, `h.3.attn.w`, …) with its shape:
/// the parameters and both AdamW moments. With the step (which fixes the data position and the
/// learning rate: the sampler and the schedule are functions of it and of the seed), AdamW's
/// step count, the shares in force, the spec and the plan, a run on any plan (other shares,
/// other chips or vendors, other shards of the optimizer state) continues from it. On disk it
/// is a directory (``CheckpointStore``): `tensors.bin` and a protobuf-c `MANIFEST`, written last.
public struct Checkpoint: Sendable, Equatable {
    /// The on-disk format this code writes and the only one it reads.
    public static let formatVersion: UInt32 = 1

    /// One parameter tensor and its two AdamW moments.
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var parameters: [Float]
        public var firstMoment: [Float]
        public var secondMoment: [Float]

        public init(name: String, shape: [Int], parameters: [Float], firstMoment: [Float], secondMoment: [Float]) {
            self.name = name
            self.shape = shape
            self.parameters = parameters
            self.firstMoment = firstMoment
            self.secondMoment = secondMoment
        }

        /// Elements in each of the three arrays.
        public var count: Int { shape.reduce(1, *) }
    }

    /// The job's name.
    public var job: String
    /// The last completed step; training resumes at `step + 1`.
    public var step: Int
    /// Steps the run that wrote it was started for.
    public var totalSteps: Int
    /// AdamW's step count (its bias correction).
    public var optimizerSteps: Int
    /// The shares of the global batch in force at `step`, one per rank of its plan.
    public var shares: [Int]
    /// The job spec as it ran (YAML).
    public var specYAML: String
    /// The plan as it ran (JSON), or empty for a plain data-parallel job.
    public var planJSON: String
    /// The sampler's seed (`data.seed`).
    public var dataSeed: UInt64
    /// Tokens trained on up to `step`.
    public var tokensSeen: UInt64
    /// When it was taken, milliseconds since 1970.
    public var createdUnixMillis: UInt64
    /// Every tensor of the model, in the full model's layout order.
    public var tensors: [Tensor]

    public init(job: String, step: Int, totalSteps: Int, optimizerSteps: Int, shares: [Int], specYAML: String,
                planJSON: String = "", dataSeed: UInt64, tokensSeen: UInt64,
                createdUnixMillis: UInt64 = UInt64(Date().timeIntervalSince1970 * 1000), tensors: [Tensor]) {
        self.job = job
        self.step = step
        self.totalSteps = totalSteps
        self.optimizerSteps = optimizerSteps
        self.shares = shares
        self.specYAML = specYAML
        self.planJSON = planJSON
        self.dataSeed = dataSeed
        self.tokensSeen = tokensSeen
        self.createdUnixMillis = createdUnixMillis
        self.tensors = tensors
    }

    /// Cuts flat arrays laid out by `layout` (the whole model's) into named tensors.
    public static func tensors(layout: ParameterLayout, parameters: [Float], firstMoment: [Float], secondMoment: [Float]) throws -> [Tensor] {
        guard parameters.count == layout.count, firstMoment.count == layout.count, secondMoment.count == layout.count else {
            throw MedleyError(
                .mismatch,
                "a checkpoint needs \(layout.count) values of each kind; got \(parameters.count) parameters, \(firstMoment.count) and \(secondMoment.count) moments")
        }
        return layout.entries.map {
            Tensor(name: $0.name, shape: $0.shape, parameters: Array(parameters[$0.range]),
                   firstMoment: Array(firstMoment[$0.range]), secondMoment: Array(secondMoment[$0.range]))
        }
    }

    /// The flat arrays for `layout` (a whole model's or one pipeline stage's), each tensor taken
    /// by its name; throws one line naming a tensor that is missing or has another shape.
    public func flat(for layout: ParameterLayout) throws -> (parameters: [Float], firstMoment: [Float], secondMoment: [Float]) {
        var byName: [String: Int] = [:]
        for (index, tensor) in tensors.enumerated() { byName[tensor.name] = index }
        var parameters = [Float](repeating: 0, count: layout.count)
        var first = parameters
        var second = parameters
        for entry in layout.entries {
            guard let index = byName[entry.name] else {
                throw MedleyError(
                    .mismatch,
                    "the checkpoint of step \(step) has no tensor '\(entry.name)'; it was written for another model (check model: in the spec)")
            }
            let tensor = tensors[index]
            guard tensor.shape == entry.shape else {
                throw MedleyError(
                    .mismatch,
                    "the checkpoint's '\(entry.name)' is \(tensor.shape) but this model's is \(entry.shape); it was written for another model (check model: in the spec)")
            }
            parameters.replaceSubrange(entry.range, with: tensor.parameters)
            first.replaceSubrange(entry.range, with: tensor.firstMoment)
            second.replaceSubrange(entry.range, with: tensor.secondMoment)
        }
        return (parameters, first, second)
    }
}
