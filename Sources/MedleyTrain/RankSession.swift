import Foundation
import MedleyAdapters
import MedleyComm
import MedleyControl
import MedleyCore
import MedleyModel

/// A failure every rank raises at the same point from the same gathered numbers: the ranks
/// can stop together (finalize and exit) instead of aborting, and one of them reports it.
public struct CollectiveFailure: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var error: MedleyError
    /// The ranks to blame, when a collective check named them (silent corruption); empty: none in particular.
    public var suspects: [Int] = []
    /// The error's message.
    public var description: String { error.description }
}

/// What one rank of a job owns, whichever worker drives it (``TrainingWorker`` for data
/// parallel jobs, ``PipelineWorker`` for plans with stages): its chip (adapter and device,
/// opened with the job's options on the CPUs the job gives it), the world communicator and
/// every rank's label, the data sampler and learning-rate schedule, the step-record log, and
/// the pieces of a step both workers share (gradient exchange into a shard, shard gather,
/// clipping, collective agreement on a failure, writing weights).
///
/// A rank's full training state is captured and restored here too (``captureState(of:step:)``,
/// ``restoreState(_:into:)``), so checkpoints are written once for both workers.
public final class RankSession {
    /// How a worker was asked to run.
    public struct Options: Sendable {
        /// The job.
        public var spec: JobSpec
        /// Steps to run (the spec's `train.steps` unless overridden).
        public var steps: Int
        /// Where rank 0 appends the step records as JSON Lines, if anywhere.
        public var logPath: String?
        /// Shares pinned by hand (`--shares`).
        public var schedule: SharesSchedule
        /// Rank 0 prints the per-step lines when true.
        public var printSteps: Bool
        /// Where rank 0 writes the final weights, if anywhere.
        public var weightsPath: String?
        /// Where rank 0 writes the Chrome-trace timeline of every rank (pipeline plans), if anywhere.
        public var timelinePath: String?
        /// When the launcher will stop the job (Unix seconds; mpirun's `--timeout` less a margin):
        /// no wait on another rank lasts past it, so a hung rank is named before mpirun kills all.
        public var deadline: Double?
        /// Where checkpoints go (every `train.checkpoint_every` steps, after the last and at an
        /// agreed stop), if anywhere.
        public var checkpointDirectory: String?
        /// A checkpoint to resume from (a run directory, a checkpoints directory or one checkpoint).
        public var resumePath: String?

        /// Options; see the properties.
        public init(spec: JobSpec, steps: Int? = nil, logPath: String? = nil, schedule: SharesSchedule = SharesSchedule(),
                    printSteps: Bool = true, weightsPath: String? = nil, timelinePath: String? = nil, deadline: Double? = nil,
                    checkpointDirectory: String? = nil, resumePath: String? = nil) {
            self.deadline = deadline
            self.checkpointDirectory = checkpointDirectory
            self.resumePath = resumePath
            self.timelinePath = timelinePath
            self.spec = spec
            self.steps = steps ?? spec.train.steps
            self.logPath = logPath
            self.schedule = schedule
            self.printSteps = printSteps
            self.weightsPath = weightsPath
        }
    }

    /// Largest gradient bucket.
    public static let bucketCapBytes = 4 << 20

    /// How the worker was asked to run.
    public let options: Options
    /// The job.
    public let spec: JobSpec
    /// Every rank of the job.
    public let world: Communicator
    /// This rank.
    public let rank: Int
    /// Ranks in the job.
    public let size: Int
    /// The chip this rank runs, as the spec lists it.
    public let rankDevice: JobSpec.RankDevice
    /// The chip's adapter.
    public let library: AdapterLibrary
    /// The chip.
    public let device: Device
    /// "rank 2 (sim sim-b)": this rank in messages.
    public let label: String
    /// Every rank's label, in rank order.
    public let labels: [String]
    /// The training and validation batches of every step.
    public var sampler: GlobalBatchSampler
    /// The learning rate of every step.
    public let schedule: LearningRateSchedule
    /// Rank 0's step-record log while ``run(_:)``-style loops have it open.
    var log: FileHandle?

    /// Pins this rank to its CPUs, opens its chip, learns every rank's label and loads the data
    /// (collective: every rank calls it).
    public init(options: Options, communicator: Communicator) throws {
        self.options = options
        spec = options.spec
        world = communicator
        rank = communicator.rank
        size = communicator.size
        let ranks = spec.rankDevices
        guard rank < ranks.count else {
            throw MedleyError(
                .invalidArgument,
                "the job lists \(ranks.count) devices but mpirun started \(size) ranks; start it with `medley train`")
        }
        rankDevice = ranks[rank]
        try CPUAffinity.pin(to: rankDevice.cpus)
        (library, device) = try Self.open(rankDevice)
        // On a job across hosts, each rank says where it runs: faults and notes then name the host.
        label = Self.label(
            rank: rank, adapter: library.info.name, chip: device.description.name,
            host: spec.isMultiHost ? rankDevice.host ?? ProcessInfo.processInfo.hostName : nil)
        labels = try communicator.allgatherv(Array(label.utf8).map { Int8(bitPattern: $0) })
            .map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        (sampler, schedule) = try Self.data(for: spec, steps: options.steps)
        let described = device.description
        RankControl.start(hello: ControlHello(
            rank: rank, adapter: library.info.name, vendor: described.vendor, chip: described.name,
            host: ProcessInfo.processInfo.hostName, pid: getpid(), memoryBytes: described.memoryBytes))
    }

    /// Loads a rank's adapter and opens its device with the job's options.
    /// How a rank is named in every line about it: "rank 2 (opencl <chip>)", with " on <host>" for
    /// a job across hosts.
    static func label(rank: Int, adapter: String, chip: String, host: String?) -> String {
        "rank \(rank) (\(adapter) \(chip)\(host.map { " on \($0)" } ?? ""))"
    }

    static func open(_ rankDevice: JobSpec.RankDevice) throws -> (AdapterLibrary, Device) {
        let library = try AdapterLibrary.load(rankDevice.adapter)
        let available = try library.deviceCount()
        guard available > 0 else {
            throw MedleyError(.notFound, "adapter \(library.info.name) reports no devices on this host")
        }
        let device = try library.openDevice(
            rankDevice.instance % available, options: rankDevice.options.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        return (library, device)
    }

    /// The training sampler and learning-rate schedule of `spec` over `steps` steps.
    static func data(for spec: JobSpec, steps: Int) throws -> (GlobalBatchSampler, LearningRateSchedule) {
        let dataset = try ByteDataset(path: spec.data.path)
        let split = try TrainValidationSplit(
            dataset: dataset, sequenceLength: spec.model.seq, validationFraction: spec.data.validationFraction)
        let sampler = try GlobalBatchSampler(split: split, globalBatch: spec.model.globalBatch, seed: spec.data.seed)
        let schedule = LearningRateSchedule(
            kind: spec.train.lrSchedule, peak: spec.train.lr, minimum: spec.train.minLR,
            warmupSteps: spec.train.warmupSteps, totalSteps: steps)
        return (sampler, schedule)
    }

    // MARK: Waiting on other ranks

    /// How long a wait on other ranks may last now: `train.step_timeout`, or less when the
    /// job's deadline is nearer (then `byDeadline`).
    public func waitBudget() -> (seconds: Double, byDeadline: Bool) {
        let stepTimeout = spec.train.stepTimeout
        guard let deadline = options.deadline else { return (stepTimeout, false) }
        let left = max(deadline - Date().timeIntervalSince1970, 0.5)
        return left < stepTimeout ? (left, true) : (stepTimeout, false)
    }

    /// Seconds a wait on other ranks may last now (see ``waitBudget()``).
    public var waitSeconds: Double { waitBudget().seconds }

    /// Waits until every rank has reached `step` (see `Communicator.awaitEveryRank`) and
    /// returns the seconds waited; when the time runs out, throws one line naming the ranks
    /// that never arrived: "step 3: rank 2 (sim acme-x1) did not finish within 600 s …".
    public func awaitEveryRank(step: Int, what: String) throws -> Double {
        let (seconds, byDeadline) = waitBudget()
        do {
            return try world.awaitEveryRank(step: Int64(step), timeoutSeconds: seconds)
        } catch let timeout as Communicator.ArrivalTimeout {
            let names = timeout.missing.map { labels[$0] }.joined(separator: ", ")
            let limit =
                byDeadline
                ? "(the job's --timeout is nearly up)" : "(train.step_timeout \(String(format: "%g", spec.train.stepTimeout)) s)"
            let verb = timeout.missing.count == 1 ? "it is" : "they are"
            throw MedleyError(
                .timeout,
                "\(what): \(names) did not get there within \(String(format: "%.0f", timeout.seconds)) s \(limit); \(verb) hung or far slower than the rest")
        }
    }

    // MARK: Agreement

    /// Every rank learns whether any rank failed (a non-empty `failure`); the first failure, in
    /// rank order, stops all of them together as a `code` error.
    public func agree(failure: String, code: MedleyError.Code = .outOfMemory) throws {
        let all = try world.allgatherv(Array(failure.utf8).map { Int8(bitPattern: $0) })
        if let first = all.first(where: { !$0.isEmpty }) {
            throw CollectiveFailure(error: MedleyError(code, String(decoding: first.map { UInt8(bitPattern: $0) }, as: UTF8.self)))
        }
    }

    // MARK: Gradients and parameters

    /// Copies the gradients bucket by bucket from `gradients` (bucket b starts at float
    /// `bucketStarts[b]`), runs the weighted exchange, writes only `shard` of the averaged
    /// gradient back to the device and returns that shard's sum of squares.
    ///
    /// Staging: each bucket is copied once, device → the exchange's own MPI buffer, with every
    /// bucket's copy queued before one synchronize (a device with its own memory chains them),
    /// and only the shard goes back. The seconds spent copying add to ``stagingSeconds``.
    public func exchangeGradients(
        _ exchange: GradientExchange, step: Int, sampleCount: Int, gradients: DeviceBuffer, bucketStarts: [Int],
        shard: Range<Int>
    ) throws -> Double {
        let s0 = MPIRuntime.wallTime()
        for b in 0..<exchange.layout.buckets.count {
            try exchange.withBucket(b) { raw in try gradients.enqueueRead(into: raw, at: bucketStarts[b] * 4) }
        }
        try gradients.device.synchronize()
        stagingSeconds += MPIRuntime.wallTime() - s0
        try exchange.exchange(step: UInt64(step), sampleCount: sampleCount)
        var squares = 0.0
        for b in 0..<exchange.layout.buckets.count {
            let bucketRange = bucketStarts[b]..<(bucketStarts[b] + exchange.layout.buckets[b].payloadBytes / 4)
            let part = bucketRange.clamped(to: shard)
            if part.isEmpty { continue }
            try exchange.withBucket(b) { raw in
                let floats = raw.bindMemory(to: Float.self)
                let local = (part.lowerBound - bucketRange.lowerBound)..<(part.upperBound - bucketRange.lowerBound)
                for i in local {
                    let g = Double(floats[i])
                    squares += g * g
                }
                let s1 = MPIRuntime.wallTime()
                try gradients.write(
                    from: UnsafeRawBufferPointer(rebasing: raw[(local.lowerBound * 4)..<(local.upperBound * 4)]),
                    at: part.lowerBound * 4)
                stagingSeconds += MPIRuntime.wallTime() - s1
            }
        }
        return squares
    }

    /// Gathers the updated shards of the parameters `base..<base + host.count` among
    /// `communicator`'s ranks (rank r holds `shards[r]`, absolute float offsets): this rank's
    /// shard goes from the device into `host`, the allgather fills in the others', and the
    /// others' are written back to the device (this rank's own is already there).
    public func gatherShards(
        parameters: DeviceBuffer, host: UnsafeMutableBufferPointer<Float>, base: Int, shards: [Range<Int>],
        communicator: Communicator
    ) throws {
        let rank = communicator.rank
        let local = shards.map { ($0.lowerBound - base)..<($0.upperBound - base) }
        let s0 = MPIRuntime.wallTime()
        try parameters.read(
            into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: host[local[rank]])), at: shards[rank].lowerBound * 4)
        stagingSeconds += MPIRuntime.wallTime() - s0
        try communicator.allgather(inPlace: host, ranges: local)
        let s1 = MPIRuntime.wallTime()
        for (r, range) in local.enumerated() where r != rank && !range.isEmpty {
            try parameters.write(
                from: UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: host[range])), at: shards[r].lowerBound * 4)
        }
        stagingSeconds += MPIRuntime.wallTime() - s1
    }

    /// Seconds this rank spent copying gradients and parameters between its device and host
    /// memory for the exchange and the parameter gather, since the last ``takeStagingSeconds()``.
    public private(set) var stagingSeconds = 0.0

    /// Every rank's milliseconds of this step's update and of its staging copies (collective: one
    /// allgather after the update, which also ends the step's staging).
    func gatherUpdateAndStaging(updateMs: Double) throws -> (update: [Double], staging: [Double]) {
        let all = try world.allgather([updateMs, takeStagingSeconds() * 1000])
        return ((0..<size).map { all[$0 * 2] }, (0..<size).map { all[$0 * 2 + 1] })
    }

    /// The staging seconds so far, and starts counting again from zero.
    public func takeStagingSeconds() -> Double {
        defer { stagingSeconds = 0 }
        return stagingSeconds
    }

    /// The step after which the last `checkpoint now` was taken.
    private var lastRequestedCheckpoint: Int?

    /// Whether the ranks checkpoint after `step` for a `checkpoint now` (`requested`: some rank
    /// had one, from the per-step allgather; every rank decides alike). The command reaches the
    /// ranks at slightly different times, so one rank may see it a step after the others did:
    /// a request the step after one was taken is that same request, not a second checkpoint.
    func agreesToCheckpoint(step: Int, requested: Bool) -> Bool {
        guard requested, lastRequestedCheckpoint != step - 1 else { return false }
        lastRequestedCheckpoint = step
        return true
    }

    /// Batches skipped in a row (`recovery.on_nan: skip_batch`).
    var skippedInARow = 0

    /// Judges a step's numbers before the update (every rank alike, from the allgathered values):
    /// nil when the loss (`badLoss` names the rank whose loss is not finite, if one is) and the
    /// gradient norm are finite. Otherwise, with `recovery.on_nan: skip_batch` and fewer than
    /// ``JobSpec/Recovery/maxSkippedInARow`` skipped in a row, the reason to skip this batch's
    /// update; else throws the fault (which rolls the job back to its newest checkpoint).
    public func skipReason(step: Int, badLoss: String?, squares: Double) throws -> String? {
        let problem: String
        if let badLoss {
            problem = "step \(step): \(badLoss) computed a non-finite loss; its device or adapter is producing bad numbers"
        } else if !squares.squareRoot().isFinite {
            problem = Self.nonFiniteGradient(step: step, norm: squares.squareRoot())
        } else {
            skippedInARow = 0
            return nil
        }
        let limit = JobSpec.Recovery.maxSkippedInARow
        guard spec.recovery.onNaN == JobSpec.Recovery.nanSkipBatch else { throw CollectiveFailure(error: MedleyError(.corruption, problem)) }
        guard skippedInARow < limit else {
            throw CollectiveFailure(error: MedleyError(
                .corruption, "\(problem) (\(limit) batches in a row skipped already: recovery.on_nan skip_batch gives up on it)"))
        }
        skippedInARow += 1
        if rank == 0 && options.printSteps { Console.line("  \(problem): its batch is skipped (recovery.on_nan: skip_batch)") }
        return problem
    }

    /// The global gradient norm from every rank's sum of squares, and the clip scale it calls
    /// for; a norm that is not finite stops the job before it reaches the weights.
    public func clipScale(squares: Double, step: Int) throws -> (gradNorm: Double, clip: Double) {
        let gradClip = spec.train.gradClip
        let gradNorm = squares.squareRoot()
        guard gradNorm.isFinite else {
            throw CollectiveFailure(error: MedleyError(.corruption, Self.nonFiniteGradient(step: step, norm: gradNorm)))
        }
        return (gradNorm, gradClip > 0 && gradNorm > gradClip ? gradClip / gradNorm : 1)
    }

    /// The words for an averaged gradient whose norm is not finite.
    static func nonFiniteGradient(step: Int, norm: Double) -> String {
        "step \(step): the averaged gradient is not finite (norm \(norm)); stopping before it reaches the weights"
    }

    /// One AdamW step with the job's hyper-parameters on `range` of `model`.
    public func update(_ model: GPT, lr: Double, clip: Double, range: Range<Int>, countsStep: Bool = true) throws {
        try model.step(
            lr: lr, weightDecay: spec.train.weightDecay, beta1: JobSpec.Training.adamBeta1,
            beta2: JobSpec.Training.adamBeta2, eps: JobSpec.Training.adamEpsilon, gradScale: clip, range: range,
            countsStep: countsStep)
    }

    // MARK: Checkpoints

    /// Rank 0's background writer, when the run has a checkpoint directory.
    public private(set) lazy var checkpointWriter: CheckpointWriter? = {
        guard rank == 0, let directory = options.checkpointDirectory else { return nil }
        let snapshot = ProcessInfo.processInfo.environment[CheckpointStore.snapshotVariable].flatMap { $0.isEmpty ? nil : $0 }
        return CheckpointWriter(store: CheckpointStore(directory: directory, keep: spec.train.checkpointKeep),
                                snapshot: snapshot.map { CheckpointStore(directory: $0, keep: 1) })
    }()

    /// Whether the run checkpoints after `step`: every `train.checkpoint_every` steps and after
    /// the last, when it has a checkpoint directory.
    public func checkpointsAfter(step: Int) -> Bool {
        guard options.checkpointDirectory != nil else { return false }
        let every = spec.train.checkpointEvery
        return step == options.steps || (every > 0 && step > 0 && step % every == 0)
    }

    /// The checkpoint to resume from, when the run was asked to (collective: every rank reads
    /// it and they check they read the same step). Rank 0 says which and why newer ones were not used.
    public func resumeCheckpoint() throws -> Checkpoint? {
        guard let path = options.resumePath else { return nil }
        let found: (checkpoint: Checkpoint, path: String, skipped: [String])
        do {
            found = try CheckpointStore.resolve(path)
        } catch let error as MedleyError {
            throw CollectiveFailure(error: error)
        }
        let steps = try world.allgather([UInt64(found.checkpoint.step)])
        guard steps.allSatisfy({ $0 == steps[0] }) else {
            throw CollectiveFailure(error: MedleyError(
                .mismatch, "the ranks found different checkpoints in \(path) (steps \(steps)); is another run writing there?"))
        }
        guard found.checkpoint.step < options.steps else {
            throw CollectiveFailure(error: MedleyError(
                .invalidArgument,
                "the checkpoint in \(found.path) is at step \(found.checkpoint.step), and this run has \(options.steps) steps; nothing is left to train (raise --steps or train.steps)"))
        }
        if rank == 0 {
            for line in found.skipped { Console.line("warning: \(line)") }
            Console.line("resuming from \(found.path): step \(found.checkpoint.step) done, \(options.steps - found.checkpoint.step) to go")
        }
        return found.checkpoint
    }

    /// The parameters of `train.init_from`'s checkpoint for `layout` (collective: the ranks
    /// check they read the same step), when the spec has one and the run does not resume.
    public func initialParameters(for layout: ParameterLayout) throws -> [Float]? {
        guard options.resumePath == nil, let path = spec.train.initFrom else { return nil }
        let found: (checkpoint: Checkpoint, path: String, skipped: [String])
        let flat: [Float]
        do {
            found = try CheckpointStore.resolve(path)
            flat = try found.checkpoint.flat(for: layout).parameters
        } catch let error as MedleyError {
            throw CollectiveFailure(error: MedleyError(error.code, "train.init_from: " + error.message))
        }
        let steps = try world.allgather([UInt64(found.checkpoint.step)])
        guard steps.allSatisfy({ $0 == steps[0] }) else {
            throw CollectiveFailure(error: MedleyError(.mismatch, "train.init_from: the ranks found different checkpoints in \(path) (steps \(steps))"))
        }
        if rank == 0 {
            for line in found.skipped { Console.line("warning: \(line)") }
            Console.line("starting from the weights of \(found.path) (step \(found.checkpoint.step) of job \(found.checkpoint.job)); the optimizer starts afresh")
        }
        return flat
    }

    /// A 0-step run, after the initial state was checkpointed (or saved): rank 0 says where it went.
    public func printInitialState() {
        guard rank == 0 && options.printSteps else { return }
        var line = "done: 0 steps; the initial state"
        if let directory = options.checkpointDirectory { line += " is checkpoint \(CheckpointStore.name(step: 0)) in \(directory)" }
        if let path = options.weightsPath { line += options.checkpointDirectory == nil ? " is in \(path)" : ", its weights in \(path)" }
        Console.line(line)
    }

    /// Puts `checkpoint`'s state into `model` (a whole model or one stage: its tensors by name):
    /// the parameters, both moments whole (each rank then updates only its own shards) and
    /// AdamW's step count. Returns the step to train next.
    public func restore(_ checkpoint: Checkpoint, into model: GPT) throws -> Int {
        let state: (parameters: [Float], firstMoment: [Float], secondMoment: [Float])
        do {
            state = try checkpoint.flat(for: model.layout)
        } catch let error as MedleyError {
            throw CollectiveFailure(error: error)
        }
        try model.writeParameters(state.parameters)
        try model.writeOptimizerState(firstMoment: state.firstMoment, secondMoment: state.secondMoment, steps: checkpoint.optimizerSteps)
        resumedAfter = checkpoint.step
        RankControl.resumed(after: checkpoint.step)
        return checkpoint.step + 1
    }

    /// Rank 0: the checkpoint of `step` from whole tensors; queued for writing. Returns the
    /// milliseconds spent from `since` (the snapshot's start) until it was handed over.
    func submitCheckpoint(step: Int, tensors: [Checkpoint.Tensor], optimizerSteps: Int, shares: [Int], planJSON: String = "",
                          since: Double) -> Double {
        guard let writer = checkpointWriter else { return 0 }
        let checkpoint = Checkpoint(
            job: spec.name, step: step, totalSteps: options.steps, optimizerSteps: optimizerSteps, shares: shares,
            specYAML: (try? spec.yamlString()) ?? "", planJSON: planJSON, dataSeed: spec.data.seed,
            tokensSeen: UInt64(step * spec.model.globalBatch * spec.model.seq), tensors: tensors)
        // A checkpoint due while the previous one is still being written waits for it (part of
        // the stall). It is handed to the writer once its step's record is in the log (``emit``):
        // a job ended in between must not leave a checkpoint of a step the log lacks.
        writer.waitUntilIdle()
        heldCheckpoint = checkpoint
        return (MPIRuntime.wallTime() - since) * 1000
    }

    /// Rank 0's checkpoint waiting for its step's record to be written.
    private var heldCheckpoint: Checkpoint?

    /// Hands the held checkpoint, if any, to the writer.
    func releaseCheckpoint() {
        guard let checkpoint = heldCheckpoint else { return }
        heldCheckpoint = nil
        checkpointWriter?.submit(checkpoint)
    }

    /// Waits for the last checkpoint to be written (rank 0).
    public func finishCheckpoints() {
        releaseCheckpoint()
        checkpointWriter?.finish()
    }

    // MARK: Training state

    /// Everything this rank's part of the model needs to continue training from `step`:
    /// parameters, both AdamW moments and the optimizer's step count, under the model's layout.
    /// (The data position and the learning rate follow from the step: the sampler and the
    /// schedule are functions of it.)
    public func captureState(of model: GPT, step: Int) throws -> RankState {
        try RankState(capturing: model, step: step)
    }

    /// Puts a captured state back into `model` (same layout); throws naming what differs.
    public func restoreState(_ state: RankState, into model: GPT) throws {
        try state.restore(into: model)
    }

    // MARK: Output

    /// Opens rank 0's step log, when the job has one (other ranks keep none).
    /// `resumingAfter`: the checkpoint's step, when the run resumes (the log is kept up to it and appended to).
    public func openLog(resumingAfter step: Int? = nil) throws {
        guard rank == 0, let path = options.logPath else { return }
        log = try step.map { try OutputPaths.openLog(path, resumingAfter: $0) } ?? OutputPaths.openLog(path)
    }

    /// Closes the step log.
    public func closeLog() {
        try? log?.close()
        log = nil
    }

    /// Every rank, after every step: its row of `record` to the supervisor, when there is one.
    public func report(_ record: StepRecord) {
        RankControl.report(record, rank: rank, deviceMemoryUsedBytes: device.bytesInUse)
    }

    /// Prints `record`'s line (when the options say so) and appends it to the log (when open).
    public func emit(_ record: StepRecord) throws {
        if options.printSteps { Console.line(record.consoleLine(totalSteps: options.steps)) }
        if let log {
            var stamped = record
            if stamped.unixMillis == nil { stamped.unixMillis = Int64((Date().timeIntervalSince1970 * 1000).rounded()) }
            try log.write(contentsOf: Data((try stamped.jsonLine() + "\n").utf8))
        }
        if heldCheckpoint?.step == record.step { releaseCheckpoint() }
    }

    /// The closing line: steps, wall time, median tokens/s, the last validation loss and where
    /// the outputs went.
    /// The step training stopped at early because the supervisor asked (nil: it ran them all).
    public private(set) var stoppedAtStep: Int?

    /// The steps trained: all of them, or up to the agreed stop (counted from step 1).
    public var stepsRun: Int { stoppedAtStep ?? options.steps }
    /// The checkpoint's step, when the run resumed from one.
    public private(set) var resumedAfter: Int?

    /// Every rank, at the step they agreed to stop after; rank 0 says so.
    func printStop(step: Int, of total: Int) {
        stoppedAtStep = step
        guard rank == 0 else { return }
        let reason = RankControl.requestedStopReason.map { " (\($0))" } ?? ""
        Console.line("stopping after step \(step) of \(total): the supervisor asked every rank to stop\(reason)")
    }

    public func printDone(seconds: Double, tokensPerSecond: [Double], lastValidation: Double?) {
        guard rank == 0 && options.printSteps else { return }
        let sorted = tokensPerSecond.sorted()
        var line = String(format: "done: %d steps in %.1f s, median %.0f tokens/s", stepsRun, seconds, sorted[sorted.count / 2])
        if let resumedAfter {
            line = String(format: "done: steps %d-%d (resumed after %d) in %.1f s, median %.0f tokens/s",
                          resumedAfter + 1, stepsRun, resumedAfter, seconds, sorted[sorted.count / 2])
        }
        if let lastValidation { line += String(format: ", validation loss %.4f", lastValidation) }
        if let path = options.logPath { line += "; step records in \(path)" }
        if let path = options.timelinePath { line += "; timeline in \(path)" }
        Console.line(line)
    }

    /// Writes `values` laid out by `layout` to `path` atomically: little-endian float32 in
    /// layout order, with `path.json` beside it naming every tensor's shape and offset.
    public func saveWeights(_ values: [Float], layout: ParameterLayout, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let index: [[String: Any]] = layout.entries.map { ["name": $0.name, "shape": $0.shape, "offset": $0.offset] }
        let meta: [String: Any] = [
            "format": "float32-le", "count": values.count, "steps": stepsRun, "job": spec.name, "tensors": index,
        ]
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try values.withUnsafeBytes { try Data($0).write(to: url, options: .atomic) }
            try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys])
                .write(to: URL(fileURLWithPath: path + ".json"), options: .atomic)
        } catch {
            throw MedleyError(.io, "cannot write the weights to \(path): \(error.localizedDescription); pick a writable --save-weights path")
        }
    }
}

/// One rank's training state: what a checkpoint holds for it.
public struct RankState: Sendable, Equatable {
    /// The last completed step (the next one to run is `step + 1`).
    public var step: Int
    /// The tensor names of the model's layout, in order (so a state cannot land on another layout).
    public var tensorNames: [String]
    /// Parameters, AdamW's first and second moments, in layout order.
    public var parameters: [Float]
    public var firstMoment: [Float]
    public var secondMoment: [Float]
    /// AdamW steps taken (its bias correction).
    public var optimizerSteps: Int

    /// Reads `model`'s state off its device after step `step`.
    public init(capturing model: GPT, step: Int) throws {
        self.step = step
        tensorNames = model.layout.entries.map(\.name)
        let optimizer = try model.readOptimizerState()
        parameters = try model.readParameters()
        firstMoment = optimizer.firstMoment
        secondMoment = optimizer.secondMoment
        optimizerSteps = optimizer.steps
    }

    /// Writes this state into `model`, whose layout must be the one it was captured from.
    public func restore(into model: GPT) throws {
        let names = model.layout.entries.map(\.name)
        guard names == tensorNames, parameters.count == model.layout.count else {
            throw MedleyError(
                .mismatch,
                "the saved state holds \(tensorNames.count) tensors (\(parameters.count) parameters) but this rank's model has \(names.count) (\(model.layout.count)); it was captured under another layout")
        }
        try model.writeParameters(parameters)
        try model.writeOptimizerState(firstMoment: firstMoment, secondMoment: secondMoment, steps: optimizerSteps)
    }
}

/// Unbuffered lines on standard output, so mpirun forwards each one as it is written.
enum Console {
    static func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
