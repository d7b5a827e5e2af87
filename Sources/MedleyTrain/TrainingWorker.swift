import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyModel

/// A failure every rank raises at the same point from the same gathered numbers: the ranks
/// can stop together (finalize and exit) instead of aborting, and one of them reports it.
public struct CollectiveFailure: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public var error: MedleyError
    /// The error's message.
    public var description: String { error.description }
}

/// One rank of a training job: the process `mpirun` starts for each chip (`medley worker`).
///
/// Every rank holds a full replica of the GPT on its own device and trains on its share of
/// every global batch. A step:
///
/// 1. **compute**: forward and backward on the rank's slice of global batch `s` (a rank with
///    share 0 computes nothing and contributes zero gradients);
/// 2. **wait**: a sleeping barrier (see `Communicator.barrier(timeoutSeconds:)`), so a rank that
///    finished early neither burns a core nor waits forever;
/// 3. **exchange**: gradients copied device → bucket, averaged over ranks weighted by samples
///    (`GradientExchange`), so the result is the gradient of the mean loss over the global batch;
/// 4. **update**: the flat parameter vector is cut into one contiguous shard per rank; each rank
///    clips (by the global norm, summed from every shard's part in rank order, so every rank uses
///    the same factor) and runs AdamW on its shard only, on its own device, then the shards are
///    gathered so every replica holds the same bits. Chips of different vendors round
///    differently; with one owner per parameter, replicas can never drift apart.
///
/// Ranks' step statistics are gathered every step, so every rank feeds the same measurements to
/// its `Rebalancer` and reaches the same shares without a coordinator.
public final class TrainingWorker {
    /// How the worker was asked to run.
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
        /// Where rank 0 writes the final weights (see ``TrainingWorker/saveWeights(to:)``), if anywhere.
        public var weightsPath: String?
        /// Where rank 0 writes the Chrome-trace timeline of every rank (pipeline plans), if anywhere.
        public var timelinePath: String?

        /// Options; see the properties.
        public init(spec: JobSpec, steps: Int? = nil, logPath: String? = nil, schedule: SharesSchedule = SharesSchedule(),
                    printSteps: Bool = true, weightsPath: String? = nil, timelinePath: String? = nil) {
            self.timelinePath = timelinePath
            self.spec = spec
            self.steps = steps ?? spec.train.steps
            self.logPath = logPath
            self.schedule = schedule
            self.printSteps = printSteps
            self.weightsPath = weightsPath
        }
    }

    /// Timed warm-up iterations per rank (after one untimed one).
    static let warmupIterations = 2
    /// Largest gradient bucket.
    static let bucketCapBytes = 4 << 20

    let options: Options
    let spec: JobSpec
    let world: Communicator
    let rank: Int
    let size: Int
    let rankDevice: JobSpec.RankDevice
    let library: AdapterLibrary
    let device: Device
    let label: String
    let labels: [String]
    let capacities: [Int]
    let model: GPT
    let exchange: GradientExchange
    var sampler: GlobalBatchSampler
    let schedule: LearningRateSchedule
    /// Per bucket, the flat float index of its first gradient.
    let bucketStarts: [Int]
    /// Per rank, the parameters it updates.
    let shards: [Range<Int>]
    /// Host copy of the parameters used to gather the shards.
    var parameterHost: [Float]
    var log: FileHandle?

    /// Opens this rank's device, loads the data and builds the model (collective: every rank calls it).
    public init(options: Options, communicator: Communicator) throws {
        self.options = options
        self.spec = options.spec
        self.world = communicator
        self.rank = communicator.rank
        self.size = communicator.size
        let ranks = spec.rankDevices
        guard ranks.count == size else {
            throw MedleyError(
                .invalidArgument,
                "the job lists \(ranks.count) devices but mpirun started \(size) ranks; start it with `medley train`")
        }
        rankDevice = ranks[rank]
        try CPUAffinity.pin(to: rankDevice.cpus)

        (library, device) = try Self.open(rankDevice)
        label = "rank \(rank) (\(library.info.name) \(device.description.name))"

        // Everyone learns everyone's name and capacity.
        let capacity = RankCapacity.sequences(memoryBytes: device.description.memoryBytes, model: spec.model)
        if capacity < 1 {
            throw MedleyError(
                .outOfMemory, RankCapacity.tooSmall(label: label, memoryBytes: device.description.memoryBytes, model: spec.model))
        }
        capacities = try communicator.allgather([Int64(capacity)]).map(Int.init)
        let nameBytes = Array(label.utf8).map { Int8(bitPattern: $0) }
        labels = try communicator.allgatherv(nameBytes).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        let total = capacities.reduce(0, +)
        if total < spec.model.batch {
            throw CollectiveFailure(error: MedleyError(
                .outOfMemory,
                "the devices hold \(total) sequences in all but the global batch is \(spec.model.batch); lower model.batch or add memory"))
        }

        (sampler, schedule) = try Self.data(for: spec, steps: options.steps)

        model = try GPT(config: RankCapacity.modelConfig(spec.model, batch: capacity), device: device, seed: spec.train.seed)
        let tensors = model.layout.entries.map { TensorMeta(name: $0.name, shape: $0.shape, dtype: .float32) }
        let layout = try BucketLayout(tensors: tensors, capBytes: Self.bucketCapBytes, jobID: spec.name)
        // A peer's sample count above the global batch is corrupt: the exchange refuses it by name.
        exchange = try GradientExchange(communicator: communicator, layout: layout, options: .init(maxStepSamples: spec.model.batch))
        // Buckets follow the parameter layout in order with no gaps, so bucket b is one
        // contiguous run of the flat gradient buffer: one device copy per bucket.
        var starts: [Int] = []
        for bucket in layout.buckets {
            let first = try model.layout.entry(bucket.tensors[0].name).offset
            for tensor in bucket.tensors where try model.layout.entry(tensor.name).offset * 4 != first * 4 + tensor.byteOffset {
                throw MedleyError(.internalError, "gradient bucket \(bucket.index) is not contiguous at '\(tensor.name)'")
            }
            starts.append(first)
        }
        bucketStarts = starts
        let count = model.layout.count
        let ranksCount = size
        shards = (0..<ranksCount).map { r in (count * r / ranksCount)..<(count * (r + 1) / ranksCount) }
        parameterHost = [Float](repeating: 0, count: count)
    }

    /// Loads a rank's adapter and opens its device with the job's options.
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

    // MARK: Running

    /// Trains for `options.steps` steps (collective). Rank 0 prints and logs.
    public func run() throws {
        if rank == 0, let path = options.logPath {
            log = try Self.openLog(path)
        }
        defer { try? log?.close() }
        let batch = spec.model.batch
        // The job's fixed shares hold from step 1 until a --shares entry takes over; while
        // anything is pinned, nothing re-divides.
        let schedule = options.schedule.starting(with: spec.train.shares)
        do {
            try schedule.validate(ranks: size, globalBatch: batch, caps: capacities)
        } catch let error as MedleyError {
            throw CollectiveFailure(error: error)
        }

        let warmup = try measureWarmup()
        var shares =
            try schedule.shares(atStep: 1)
            ?? ShareAllocator.shares(
                globalBatch: batch, throughputs: warmup, caps: capacities.map { Optional($0) }, labels: labels)
        var rebalancer: Rebalancer? =
            spec.train.rebalanceEvery == 0
            ? nil
            : try Rebalancer(
                configuration: Rebalancer.Configuration(
                    globalBatch: batch, every: spec.train.rebalanceEvery, caps: capacities.map { Optional($0) }, labels: labels),
                shares: shares, throughputs: warmup)
        if rank == 0 { printHeader(warmup: warmup, shares: shares) }

        var lastValidation: Double?
        var tokensPerSecond: [Double] = []
        let start = MPIRuntime.wallTime()
        for step in 1...options.steps {
            let pinnedNow = schedule.shares(atStep: step)
            if let pinnedNow { shares = pinnedNow }
            var record = try trainStep(step, shares: shares)
            if spec.train.evalEvery > 0 && (step % spec.train.evalEvery == 0 || step == options.steps) {
                record.valLoss = try validationLoss(shares: shares)
                lastValidation = record.valLoss
            }
            if var r = rebalancer, pinnedNow == nil {
                let measurements = zip(record.computeMs, record.shares).map {
                    Rebalancer.StepMeasurement(computeMilliseconds: $0, samples: $1)
                }
                if case .reshard(let change) = try r.record(step: step, measurements: measurements) {
                    record.nextShares = change.shares
                    record.throughputs = change.throughputs
                    shares = change.shares
                }
                rebalancer = r
            }
            if step == 1 && record.throughputs == nil { record.throughputs = warmup }
            tokensPerSecond.append(record.tokensPerS)
            if rank == 0 { try emit(record) }
        }
        let seconds = MPIRuntime.wallTime() - start
        let finalParameters = try model.readParameters()
        try verifyReplicas(finalParameters)
        if rank == 0, let path = options.weightsPath { try saveWeights(finalParameters, to: path) }
        if rank == 0 && options.printSteps {
            let sorted = tokensPerSecond.sorted()
            let median = sorted[sorted.count / 2]
            var line = String(format: "done: %d steps in %.1f s, median %.0f tokens/s", options.steps, seconds, median)
            if let lastValidation { line += String(format: ", validation loss %.4f", lastValidation) }
            if let path = options.logPath { line += "; step records in \(path)" }
            Console.line(line)
        }
    }

    /// The parameters of this replica (identical on every rank after each step).
    public func parameters() throws -> [Float] { try model.readParameters() }

    /// Checks that every replica holds the same parameter bits (collective); throws naming the odd rank.
    func verifyReplicas(_ parameters: [Float]) throws {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for value in parameters {
            var bits = UInt64(value.bitPattern)
            for _ in 0..<4 {
                hash = (hash ^ (bits & 0xff)) &* 0x0000_0100_0000_01b3
                bits >>= 8
            }
        }
        let hashes = try world.allgather([hash])
        if let odd = hashes.indices.first(where: { hashes[$0] != hashes[0] }) {
            throw CollectiveFailure(error: MedleyError(
                .mismatch,
                "after \(options.steps) steps \(labels[odd])'s parameters differ from \(labels[0])'s; the replicas diverged (a bug: please report it)"))
        }
    }

    /// Writes `values` (the parameters) to `path` atomically: little-endian float32 in layout
    /// order, with `path.json` beside it naming every tensor's shape and offset.
    func saveWeights(_ values: [Float], to path: String) throws {
        try Self.saveWeights(values, layout: model.layout, steps: options.steps, job: spec.name, to: path)
    }

    /// Writes `values` laid out by `layout` to `path` atomically (see ``saveWeights(_:to:)``).
    static func saveWeights(_ values: [Float], layout: ParameterLayout, steps: Int, job: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let index: [[String: Any]] = layout.entries.map { ["name": $0.name, "shape": $0.shape, "offset": $0.offset] }
        let meta: [String: Any] = [
            "format": "float32-le", "count": values.count, "steps": steps, "job": job, "tensors": index,
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

    // MARK: One step

    /// Runs step `step` (1-based; global batch `step - 1`) with `shares`, returns its record.
    func trainStep(_ step: Int, shares: [Int]) throws -> StepRecord {
        let t0 = MPIRuntime.wallTime()
        try device.beginStep(step)
        let samples = shares[rank]
        try model.zeroGradients()
        var loss = 0.0
        if samples > 0 {
            let slice = try sampler.slice(step: step - 1, shares: shares, rank: rank)
            loss = Double(try model.forward(tokens: slice.tokens, targets: slice.targets, batch: samples))
            try model.backward()
            try device.synchronize()
        }
        let t1 = MPIRuntime.wallTime()
        let idle = try world.barrier(
            timeoutSeconds: spec.train.stepTimeout, what: "step \(step): waiting for every rank to finish its share")
        let t2 = MPIRuntime.wallTime()

        // Exchange: device → buckets, weighted average, own shard back to the device.
        let shardSquares = try Self.exchange(
            exchange, step: step, sampleCount: samples, gradients: model.gradients, bucketStarts: bucketStarts,
            shard: shards[rank])
        let t3 = MPIRuntime.wallTime()

        // Everyone learns everyone's numbers; the sums are taken in rank order on every rank.
        let mine = [(t1 - t0) * 1000, Double(samples), loss * Double(samples), idle * 1000, (t3 - t2) * 1000, shardSquares]
        let all = try world.allgather(mine)
        let row = { (r: Int, k: Int) in all[r * mine.count + k] }
        var lossSum = 0.0, sampleSum = 0.0, squares = 0.0
        for r in 0..<size {
            lossSum += row(r, 2)
            sampleSum += row(r, 1)
            squares += row(r, 5)
        }
        for r in 0..<size where row(r, 1) > 0 && !row(r, 2).isFinite {
            throw CollectiveFailure(error: MedleyError(
                .corruption,
                "step \(step): \(labels[r]) computed a non-finite loss (\(row(r, 2))); its device or adapter is producing bad numbers"))
        }
        let (gradNorm, clip) = try Self.clipScale(squares: squares, gradClip: spec.train.gradClip, step: step)
        let lr = schedule.rate(atStep: step - 1)

        // Update: AdamW on this rank's shard only, then every rank gathers every shard.
        try model.step(
            lr: lr, weightDecay: spec.train.weightDecay, beta1: JobSpec.Training.adamBeta1,
            beta2: JobSpec.Training.adamBeta2, eps: JobSpec.Training.adamEpsilon, gradScale: clip, range: shards[rank])
        try gatherParameters()
        let t4 = MPIRuntime.wallTime()

        let updateMs = try world.allgather([(t4 - t3) * 1000])
        let stepSeconds = t4 - t0
        let tokens = spec.model.batch * spec.model.seq
        return StepRecord(
            step: step, loss: lossSum / sampleSum, valLoss: nil, lr: lr, gradNorm: gradNorm, clipScale: clip,
            tokens: tokens, tokensPerS: Double(tokens) / stepSeconds, stepMs: stepSeconds * 1000, shares: shares,
            computeMs: (0..<size).map { row($0, 0) }, idleMs: (0..<size).map { row($0, 3) },
            exchangeMs: (0..<size).map { row($0, 4) }, updateMs: updateMs, nextShares: nil, throughputs: nil)
    }

    /// Copies the gradients bucket by bucket from `gradients` (bucket b starts at float
    /// `bucketStarts[b]`), runs the weighted exchange, writes only `shard` of the averaged
    /// gradient back to the device and returns that shard's sum of squares.
    static func exchange(
        _ exchange: GradientExchange, step: Int, sampleCount: Int, gradients: DeviceBuffer, bucketStarts: [Int],
        shard: Range<Int>
    ) throws -> Double {
        for b in 0..<exchange.layout.buckets.count {
            try exchange.withBucket(b) { raw in try gradients.read(into: raw, at: bucketStarts[b] * 4) }
        }
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
                try gradients.write(
                    from: UnsafeRawBufferPointer(rebasing: raw[(local.lowerBound * 4)..<(local.upperBound * 4)]),
                    at: part.lowerBound * 4)
            }
        }
        return squares
    }

    /// The training sampler and learning-rate schedule of `spec` over `steps` steps.
    static func data(for spec: JobSpec, steps: Int) throws -> (GlobalBatchSampler, LearningRateSchedule) {
        let dataset = try ByteDataset(path: spec.data.path)
        let split = try TrainValidationSplit(
            dataset: dataset, sequenceLength: spec.model.seq, validationFraction: spec.data.validationFraction)
        let sampler = try GlobalBatchSampler(split: split, globalBatch: spec.model.batch, seed: spec.data.seed)
        let schedule = LearningRateSchedule(
            kind: spec.train.lrSchedule, peak: spec.train.lr, minimum: spec.train.minLR,
            warmupSteps: spec.train.warmupSteps, totalSteps: steps)
        return (sampler, schedule)
    }

    /// Gathers every rank's updated shard into every replica.
    func gatherParameters() throws {
        try parameterHost.withUnsafeMutableBufferPointer { host in
            try Self.gather(parameters: model.parameters, host: host, base: 0, shards: shards, rank: rank, communicator: world)
        }
    }

    /// Gathers the updated shards of the parameters `base..<base + host.count` among
    /// `communicator`'s ranks (rank r holds `shards[r]`, absolute float offsets): this rank's
    /// shard goes from the device into `host`, the allgather fills in the others', and the
    /// others' are written back to the device (this rank's own is already there).
    static func gather(
        parameters: DeviceBuffer, host: UnsafeMutableBufferPointer<Float>, base: Int, shards: [Range<Int>], rank: Int,
        communicator: Communicator
    ) throws {
        let local = shards.map { ($0.lowerBound - base)..<($0.upperBound - base) }
        try parameters.read(
            into: UnsafeMutableRawBufferPointer(UnsafeMutableBufferPointer(rebasing: host[local[rank]])), at: shards[rank].lowerBound * 4)
        try communicator.allgather(inPlace: host, ranges: local)
        for (r, range) in local.enumerated() where r != rank && !range.isEmpty {
            try parameters.write(
                from: UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: host[range])), at: shards[r].lowerBound * 4)
        }
    }

    /// The global gradient norm from every rank's sum of squares, and the clip scale it calls
    /// for; a norm that is not finite stops the job before it reaches the weights.
    static func clipScale(squares: Double, gradClip: Double, step: Int) throws -> (gradNorm: Double, clip: Double) {
        let gradNorm = squares.squareRoot()
        guard gradNorm.isFinite else {
            throw CollectiveFailure(error: MedleyError(
                .corruption, "step \(step): the averaged gradient is not finite (norm \(gradNorm)); stopping before it reaches the weights"))
        }
        return (gradNorm, gradClip > 0 && gradNorm > gradClip ? gradClip / gradNorm : 1)
    }

    // MARK: Warm-up and evaluation

    /// Every rank times forward + backward on a slice of the first global batch and reports
    /// samples per second; the gradients are thrown away and the weights are untouched.
    func measureWarmup() throws -> [Double] {
        let batch = spec.model.batch
        let samples = min(capacities[rank], max(1, (batch + size - 1) / size))
        let first = sampler.globalBatch(step: 0)
        let count = samples * spec.model.seq
        let tokens = Array(first.tokens.prefix(count)), targets = Array(first.targets.prefix(count))
        var best = Double.infinity
        for iteration in 0...Self.warmupIterations {
            try model.zeroGradients()
            let t0 = MPIRuntime.wallTime()
            _ = try model.forward(tokens: tokens, targets: targets, batch: samples)
            try model.backward()
            try device.synchronize()
            if iteration > 0 { best = min(best, MPIRuntime.wallTime() - t0) }
        }
        try model.zeroGradients()
        try world.barrier(timeoutSeconds: spec.train.stepTimeout, what: "warm-up: waiting for every rank to measure its speed")
        return try world.allgather([Double(samples) / max(best, 1e-9)])
    }

    /// Mean validation loss over `train.eval_batches` global validation batches.
    func validationLoss(shares: [Int]) throws -> Double {
        var lossSum = 0.0, samplesSum = 0.0
        for index in 0..<spec.train.evalBatches {
            var mine = [0.0, 0.0]
            if shares[rank] > 0 {
                let slice = try sampler.validationSlice(index: index, shares: shares, rank: rank)
                let loss = Double(try model.forward(tokens: slice.tokens, targets: slice.targets, batch: shares[rank]))
                mine = [loss * Double(shares[rank]), Double(shares[rank])]
            }
            let all = try world.allgather(mine)
            for r in 0..<size {
                lossSum += all[2 * r]
                samplesSum += all[2 * r + 1]
            }
        }
        return lossSum / samplesSum
    }

    // MARK: Output

    func printHeader(warmup: [Double], shares: [Int]) {
        guard options.printSteps else { return }
        let config = model.config
        Console.line(
            "job \(spec.name): \(size) rank\(size == 1 ? "" : "s"), \(config.layers) layers x \(config.dim) dim x \(config.heads) heads, seq \(config.seq), global batch \(spec.model.batch), \(model.layout.count) parameters, \(options.steps) steps"
        )
        for r in 0..<size {
            let rate = String(format: "%.1f", warmup[r] * Double(spec.model.seq))
            Console.line("  \(labels[r]): holds up to \(capacities[r]) sequences, warm-up \(rate) tokens/s, share \(shares[r])")
        }
    }

    func emit(_ record: StepRecord) throws {
        try Self.emit(record, totalSteps: options.steps, print: options.printSteps, log: log)
    }

    /// Prints `record`'s line (when `print`) and appends it to `log` (when open).
    static func emit(_ record: StepRecord, totalSteps: Int, print: Bool, log: FileHandle?) throws {
        if print { Console.line(record.consoleLine(totalSteps: totalSteps)) }
        if let log { try log.write(contentsOf: Data((try record.jsonLine() + "\n").utf8)) }
    }

    /// Creates (or truncates) the log file, making its directory.
    static func openLog(_ path: String) throws -> FileHandle {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw MedleyError(.io, "cannot create the step log \(path); pick a writable --log path")
            }
            return try FileHandle(forWritingTo: url)
        } catch {
            throw MedleyError(.io, "cannot write the step log \(path): \(error.localizedDescription); pick a writable --log path")
        }
    }
}

/// Unbuffered lines on standard output, so mpirun forwards each one as it is written.
enum Console {
    static func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}
