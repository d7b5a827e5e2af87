import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyModel
import MedleyPlanner

/// One rank of a job that runs a ``Plan`` with pipeline stages: the rank holds only its
/// stage's planning layers, on its own chip.
///
/// A step on a rank that is stage s of a replica with p stages and m microbatches:
///
/// 1. **1F1B schedule**: w = min((p − s − 1)(1 + slack), m) warm-up forwards, then one
///    forward and one backward in turn, then the remaining backwards. With the plan's
///    slack at 0 this is textbook 1F1B, where every hand-over between neighbours is on the
///    critical path; each unit of slack lets a stage run one more microbatch ahead of the
///    next, so a late microbatch on one side no longer stalls the other. Activations go to
///    stage s + 1 and their gradients come back from it through host memory as framed
///    messages (``StageLink``): an ``ActivationHeader`` checked on receipt (step,
///    microbatch, stage, shape, dtype), then the payload. Stage s keeps w + 1 microbatches
///    of activations (at most m), one slot each.
/// 2. **tie**: the first and last stages of a replica both hold `wte` (the head is tied to
///    the token table); they add their two parts of its gradient.
/// 3. **exchange**: each run of tensors held by the same set of ranks is averaged among
///    exactly those ranks, weighted by their replicas' samples (one communicator per set),
///    so replicas may be cut differently.
/// 4. **update**: every run is sharded among its holders; each rank clips by the global norm
///    and runs AdamW on its shards, then each run's holders gather the shards: every copy of
///    a tensor holds the same bits.
public final class PipelineWorker {
    /// Where this rank sits in the plan.
    struct Role {
        var replica: Int
        var stage: Int
        var stages: Int
        var samples: Int
        var layers: Range<Int>
        /// World ranks of the previous and next stages of this replica.
        var previous: Int?
        var next: Int?
    }

    /// A run of adjacent tensors in this rank's layout that the same set of ranks holds.
    struct Run {
        var range: Range<Int>
        var holders: [Int]
        var names: [String]
        /// The holders' communicator (nil when this rank is the only holder).
        var communicator: Communicator?
        var exchange: GradientExchange?
        /// Flat index of each bucket's first float.
        var bucketStarts: [Int]
        /// Each holder's shard of `range`, in holder order.
        var shards: [Range<Int>]
        /// Samples this rank stands for in the run's weighted average.
        var weight: Int
        var myShard: Range<Int> { shards[communicator?.rank ?? 0] }
    }

    /// What this rank owns: chip, communicator, data, log.
    let session: RankSession
    let options: RankSession.Options
    let spec: JobSpec
    let plan: Plan
    let world: Communicator
    let rank: Int
    let size: Int
    let role: Role
    let device: Device
    let labels: [String]
    let model: GPT
    let inFlight: Int
    var runs: [Run]
    /// The tie between the first and last stage of this replica (both hold `wte`).
    let tie: Communicator?
    let previousLink: StageLink?
    let nextLink: StageLink?
    var parameterHost: [Float]
    var timeline: Timeline
    /// Set at the first step any rank said the supervisor asked it to stop.
    var stopAgreed = false
    /// Set at a step where any rank said the supervisor asked for a checkpoint.
    var checkpointAgreed = false

    /// Opens this rank's device and builds its stage (collective: every rank calls it).
    public init(options: RankSession.Options, plan: Plan, communicator: Communicator) throws {
        self.options = options
        self.spec = options.spec
        self.plan = plan
        self.world = communicator
        self.rank = communicator.rank
        self.size = communicator.size
        let blocks = spec.model.layers
        try plan.validate(blocks: blocks, devices: size, globalBatch: spec.model.globalBatch)
        guard Set(plan.usedDevices) == Set(0..<size) else {
            throw MedleyError(.invalidArgument, "plan: it uses devices \(plan.usedDevices.sorted()) but mpirun started \(size) ranks; start it with `medley train`")
        }
        var found: Role?
        for (r, replica) in plan.replicas.enumerated() {
            for (s, stage) in replica.stages.enumerated() where stage.device == rank {
                found = Role(
                    replica: r, stage: s, stages: replica.stages.count, samples: replica.samples, layers: stage.layers,
                    previous: s > 0 ? replica.stages[s - 1].device : nil,
                    next: s + 1 < replica.stages.count ? replica.stages[s + 1].device : nil)
            }
        }
        role = found!
        timeline = Timeline(rank: rank)

        session = try RankSession(options: options, communicator: communicator)
        device = session.device
        labels = session.labels
        let label = session.label

        // The stage's model: microbatch-sized activation gradients, one activation slot per
        // microbatch in flight. A chip that cannot hold it stops every rank with its name.
        inFlight = plan.inFlight(replica: role.replica, stage: role.stage)
        let config = RankCapacity.modelConfig(spec.model, batch: plan.microbatchSize)
        var built: GPT?
        var failure = ""
        do {
            built = try GPT(
                config: config, device: device, seed: spec.train.seed, stage: role.layers,
                activationSequences: plan.microbatchSize * inFlight)
        } catch {
            let needed = RankCapacity.stageBytes(spec.model, plan: plan, layers: role.layers, inFlight: inFlight)
            failure = "\(label) cannot hold its stage (planning layers \(role.layers.lowerBound)..<\(role.layers.upperBound), \(inFlight) microbatch(es) of \(plan.microbatchSize) in flight): it needs \(ByteCount.describe(UInt64(needed))) of its \(ByteCount.describe(device.description.memoryBytes)) (\(error)); plan again with this chip's memory"
        }
        try session.agree(failure: failure)
        model = built!

        // Who holds what: every rank derives every rank's layout from the plan.
        var holders: [String: [Int]] = [:]
        for replica in plan.replicas {
            for stage in replica.stages {
                for entry in ParameterLayout(config: config, stage: stage.layers).entries {
                    holders[entry.name, default: []].append(stage.device)
                }
            }
        }
        for key in holders.keys { holders[key]!.sort() }
        // Every distinct holder set, in whole-model layout order, gets a communicator
        // (MPI_Comm_split is collective, so every rank walks the same list).
        var sets: [[Int]] = []
        for entry in ParameterLayout(config: config).entries {
            if let h = holders[entry.name], h.count > 1, !sets.contains(h) { sets.append(h) }
        }
        var communicators: [[Int]: Communicator] = [:]
        for set in sets {
            if let comm = try communicator.split(color: set.contains(rank) ? 0 : nil, key: rank) {
                communicators[set] = comm
            }
        }
        // The replica's tie: its first and last stages, when they differ.
        let replica = plan.replicas[role.replica]
        let ends = replica.stages.count > 1 ? [replica.stages.first!.device, replica.stages.last!.device] : []
        tie = try communicator.split(color: ends.contains(rank) ? role.replica : nil, key: role.stage)

        var runs: [Run] = []
        let stageLayout = model.layout
        for entry in stageLayout.entries {
            let h = holders[entry.name]!
            if var last = runs.last, last.holders == h, last.range.upperBound == entry.offset {
                last.range = last.range.lowerBound..<entry.range.upperBound
                last.names.append(entry.name)
                runs[runs.count - 1] = last
            } else {
                runs.append(Run(range: entry.range, holders: h, names: [entry.name], communicator: communicators[h],
                                exchange: nil, bucketStarts: [], shards: [], weight: 0))
            }
        }
        for i in runs.indices {
            let run = runs[i]
            let members = run.communicator?.size ?? 1
            runs[i].shards = (0..<members).map { k in
                (run.range.lowerBound + run.range.count * k / members)..<(run.range.lowerBound + run.range.count * (k + 1) / members)
            }
            // A tensor held twice in one replica (the tied wte) counts once: the stage holding the embedding.
            let primary = !(run.names.contains("wte") && role.stage > 0 && role.stages > 1)
            runs[i].weight = primary ? role.samples : 0
            guard let comm = run.communicator else { continue }
            let tensors = try run.names.map { name -> TensorMeta in
                let e = try stageLayout.entry(name)
                return TensorMeta(name: name, shape: e.shape, dtype: .float32)
            }
            let layout = try BucketLayout(tensors: tensors, capBytes: RankSession.bucketCapBytes, jobID: spec.name)
            runs[i].exchange = try GradientExchange(communicator: comm, layout: layout, options: .init(maxStepSamples: spec.model.globalBatch))
            runs[i].bucketStarts = try layout.buckets.map { try stageLayout.entry($0.tensors[0].name).offset }
        }
        self.runs = runs

        previousLink = try role.previous.map {
            try StageLink(communicator: communicator, peer: $0, sendTag: StageLink.gradientTag, receiveTag: StageLink.activationTag)
        }
        nextLink = try role.next.map {
            try StageLink(communicator: communicator, peer: $0, sendTag: StageLink.activationTag, receiveTag: StageLink.gradientTag)
        }

        parameterHost = [Float](repeating: 0, count: model.layout.count)
    }

    // MARK: Running

    /// Trains for `options.steps` steps (collective). Rank 0 prints and logs.
    public func run() throws {
        defer { session.closeLog() }
        if rank == 0 { printHeader() }
        // Resuming: each stage takes its tensors from the checkpoint by name, both moments
        // whole (each holder then updates only its own shard of each run).
        var firstStep = 1
        if let checkpoint = try session.resumeCheckpoint() {
            firstStep = try session.restore(checkpoint, into: model)
        }
        if firstStep == 1, let initial = try session.initialParameters(for: model.layout) { try model.writeParameters(initial) }
        try session.openLog(resumingAfter: firstStep > 1 ? firstStep - 1 : nil)
        _ = try session.awaitEveryRank(step: 0, what: "start (building every stage)")
        if options.steps == 0 {
            // A 0-step run writes the initial state: a checkpoint of step 0 and the whole model's weights.
            if options.checkpointDirectory != nil { _ = try checkpoint(step: 0, shares: []) }
            session.finishCheckpoints()
            let values = try model.readParameters()
            if let path = options.weightsPath { try saveWholeModel(values, to: path) }
            session.printInitialState()
            return
        }
        timeline.start(enabled: options.timelinePath != nil)
        var lastValidation: Double?
        var tokensPerSecond: [Double] = []
        let start = MPIRuntime.wallTime()
        defer { session.finishCheckpoints() }
        for step in firstStep...options.steps {
            var record = try trainStep(step)
            if spec.train.evalEvery > 0 && (step % spec.train.evalEvery == 0 || step == options.steps) {
                record.valLoss = try validationLoss(step: step)
                lastValidation = record.valLoss
            }
            if session.checkpointsAfter(step: step) || ((stopAgreed || checkpointAgreed) && options.checkpointDirectory != nil) {
                record.checkpointMs = try checkpoint(step: step, shares: record.shares)
            }
            tokensPerSecond.append(record.tokensPerS)
            session.report(record)
            if rank == 0 { try emit(record) }
            if stopAgreed && step < options.steps {
                session.printStop(step: step, of: options.steps)
                break
            }
        }
        let seconds = MPIRuntime.wallTime() - start
        let values = try model.readParameters()
        try verifyCopies(values)
        if let path = options.weightsPath { try saveWholeModel(values, to: path) }
        if let path = options.timelinePath { try timeline.write(to: path, world: world, labels: labels) }
        session.printDone(seconds: seconds, tokensPerSecond: tokensPerSecond, lastValidation: lastValidation)
    }

    /// Runs step `step` (1-based) through the pipeline and returns its record.
    func trainStep(_ step: Int) throws -> StepRecord {
        let t0 = MPIRuntime.wallTime()
        try device.beginStep(step)
        try model.zeroGradients()
        let sizes = plan.microbatchSizes(samples: role.samples)
        var batch: TokenBatch?
        if role.samples > 0 && (model.holdsEmbedding || model.holdsHead) {
            batch = try session.sampler.slice(step: step - 1, shares: plan.replicas.map(\.samples), rank: role.replica)
        }
        let clock = StepClock()
        let m = sizes.count
        let warm = plan.warmupForwards(replica: role.replica, stage: role.stage)
        let lossScale = 1 / Double(max(role.samples, 1) * spec.model.seq)
        var lossSum = 0.0
        for k in 0..<warm { lossSum += try forward(step: step, header: UInt64(step), microbatch: k, sizes: sizes, batch: batch, clock: clock) }
        for k in 0..<(m - warm) {
            lossSum += try forward(step: step, header: UInt64(step), microbatch: warm + k, sizes: sizes, batch: batch, clock: clock)
            try backward(step: step, microbatch: k, sizes: sizes, lossScale: lossScale, clock: clock)
        }
        for k in (m - warm)..<m {
            try backward(step: step, microbatch: k, sizes: sizes, lossScale: lossScale, clock: clock)
        }
        for link in [previousLink, nextLink].compactMap({ $0 }) {
            try link.finishSends(timeoutSeconds: session.waitSeconds, what: "step \(step): \(labels[rank]) sending to \(labels[link.peer])")
        }
        let t1 = MPIRuntime.wallTime()

        // Exchange: the tied wte's two parts, then every shared run among its holders.
        var shardSquares = 0.0
        if let tie {
            let wte = try model.layout.entry("wte")
            try parameterHost.withUnsafeMutableBufferPointer { host in
                let part = UnsafeMutableBufferPointer(rebasing: host[wte.range])
                try model.gradients.read(into: UnsafeMutableRawBufferPointer(part), at: wte.offset * 4)
                try tie.allreduce(inPlace: part, op: .sum)
                try model.gradients.write(from: UnsafeRawBufferPointer(part), at: wte.offset * 4)
            }
        }
        for run in runs {
            guard let exchange = run.exchange else {
                let values = try model.gradients.read(Float.self, count: run.range.count, at: run.range.lowerBound * 4)
                shardSquares += values.reduce(0.0) { $0 + Double($1) * Double($1) }
                continue
            }
            shardSquares += try session.exchangeGradients(
                exchange, step: step, sampleCount: run.weight, gradients: model.gradients, bucketStarts: run.bucketStarts,
                shard: run.myShard)
        }
        let t2 = MPIRuntime.wallTime()
        timeline.span("exchange", category: "exchange", from: t1, to: t2)

        // Everyone's numbers, summed in rank order on every rank.
        let lastStage = model.holdsHead
        let mine = [
            clock.compute * 1000, clock.wait * 1000, (t2 - t1) * 1000, lastStage ? lossSum : 0,
            lastStage ? Double(role.samples) : 0, shardSquares, Double(role.samples), (t1 - t0) * 1000,
            // Whether the supervisor asked this rank to stop; all stop together.
            RankControl.stopRequested(rank: rank) ? 1 : 0, RankControl.checkpointRequested() ? 1 : 0,
        ]
        let all = try world.allgather(mine)
        let row = { (r: Int, k: Int) in all[r * mine.count + k] }
        stopAgreed = stopAgreed || (0..<size).contains { row($0, 8) > 0 }
        checkpointAgreed = session.agreesToCheckpoint(step: step, requested: (0..<size).contains { row($0, 9) > 0 })
        var losses = 0.0, squares = 0.0
        for r in 0..<size {
            losses += row(r, 3)
            squares += row(r, 5)
        }
        let badLoss = (0..<size).first { !row($0, 3).isFinite }.map { labels[$0] }
        let lr = session.schedule.rate(atStep: step - 1)
        let tokens = spec.model.globalBatch * spec.model.seq
        if let skipped = try session.skipReason(step: step, badLoss: badLoss, squares: squares) {
            // recovery.on_nan: skip_batch: no update, the weights and moments as they were.
            let seconds = MPIRuntime.wallTime() - t0
            var record = StepRecord(
                step: step, loss: losses / Double(tokens), valLoss: nil, lr: lr, gradNorm: squares.squareRoot(), clipScale: 0,
                tokens: tokens, tokensPerS: Double(tokens) / seconds, stepMs: seconds * 1000,
                shares: (0..<size).map { Int(row($0, 6)) }, computeMs: (0..<size).map { row($0, 0) },
                idleMs: (0..<size).map { row($0, 1) }, exchangeMs: (0..<size).map { row($0, 2) },
                updateMs: Array(repeating: 0, count: size), nextShares: nil, throughputs: nil,
                predictedStepMs: plan.prediction.stepMs > 0 ? plan.prediction.stepMs : nil, pipelineMs: (0..<size).map { row($0, 7) })
            record.skipped = skipped
            _ = session.takeStagingSeconds()
            return record
        }
        let (gradNorm, clip) = try session.clipScale(squares: squares, step: step)

        // Update: AdamW on this rank's shard of every run, then each run's holders gather.
        for (i, run) in runs.enumerated() {
            try session.update(model, lr: lr, clip: clip, range: run.myShard, countsStep: i == 0)
            try gather(run)
        }
        let t3 = MPIRuntime.wallTime()
        timeline.span("update", category: "update", from: t2, to: t3)
        let (updateMs, stagingMs) = try session.gatherUpdateAndStaging(updateMs: (t3 - t2) * 1000)
        let seconds = t3 - t0
        var record = StepRecord(
            step: step, loss: losses / Double(tokens), valLoss: nil, lr: lr, gradNorm: gradNorm, clipScale: clip,
            tokens: tokens, tokensPerS: Double(tokens) / seconds, stepMs: seconds * 1000,
            shares: (0..<size).map { Int(row($0, 6)) }, computeMs: (0..<size).map { row($0, 0) },
            idleMs: (0..<size).map { row($0, 1) }, exchangeMs: (0..<size).map { row($0, 2) }, updateMs: updateMs,
            nextShares: nil, throughputs: nil, predictedStepMs: plan.prediction.stepMs > 0 ? plan.prediction.stepMs : nil,
            pipelineMs: (0..<size).map { row($0, 7) })
        record.stagingMs = stagingMs
        return record
    }

    /// Seconds spent computing and waiting on neighbours during one step.
    final class StepClock {
        var compute = 0.0
        var wait = 0.0
    }

    /// Forward of microbatch `k`: receive (unless first), compute, send (unless last).
    /// Returns the microbatch's loss sum on the last stage, 0 elsewhere.
    func forward(step: Int, header: UInt64, microbatch k: Int, sizes: [Int], batch: TokenBatch?, clock: StepClock) throws -> Double {
        let b = sizes[k]
        let rows = (k * plan.microbatchSize * spec.model.seq)..<((k * plan.microbatchSize + b) * spec.model.seq)
        let sum = try receive(
            from: previousLink, stage: role.stage - 1, header: header, microbatch: k, batch: b, span: "recv F\(k)", clock: clock,
            what: "step \(step): stage \(role.stage) of replica \(role.replica) (\(labels[rank])) waiting for microbatch \(k)'s activation"
        ) { input in
            try compute("F\(k)", category: "forward", clock: clock) {
                let tokens = batch.map { Array($0.tokens[rows]) }, targets = batch.map { Array($0.targets[rows]) }
                return try model.forwardStage(
                    at: slot(k), batch: b, tokens: model.holdsEmbedding ? tokens : nil, input: input,
                    targets: model.holdsHead ? targets : nil)
            }
        }
        try send(to: nextLink, header: header, microbatch: k, batch: b, span: "send F\(k)") {
            try model.readStageOutput(at: slot(k), batch: b, into: $0)
        }
        return sum ?? 0
    }

    /// Backward of microbatch `k`: receive the output gradient (unless last), compute, send
    /// the input gradient (unless first).
    func backward(step: Int, microbatch k: Int, sizes: [Int], lossScale: Double, clock: StepClock) throws {
        let b = sizes[k]
        try receive(
            from: nextLink, stage: role.stage + 1, header: UInt64(step), microbatch: k, batch: b, span: "recv B\(k)", clock: clock,
            what: "step \(step): stage \(role.stage) of replica \(role.replica) (\(labels[rank])) waiting for microbatch \(k)'s gradient"
        ) { outputGradient in
            try compute("B\(k)", category: "backward", clock: clock) {
                try model.backwardStage(at: slot(k), batch: b, outputGradient: outputGradient, lossScale: lossScale)
            }
        }
        try send(to: previousLink, header: UInt64(step), microbatch: k, batch: b, span: "send B\(k)") {
            try model.readInputGradient(batch: b, into: $0)
        }
    }

    /// Runs `body` on the chip, waits for the chip to finish, and counts the time as compute
    /// (a `category` span named `name` on the timeline).
    func compute<R>(_ name: @autoclosure () -> String, category: String, clock: StepClock, _ body: () throws -> R) throws -> R {
        let t0 = MPIRuntime.wallTime()
        let result = try body()
        try device.synchronize()
        let t1 = MPIRuntime.wallTime()
        clock.compute += t1 - t0
        timeline.span(name(), category: category, from: t0, to: t1)
        return result
    }

    /// Receives microbatch `k`'s tensor (`batch` × seq × dim floats) from `link`'s neighbour,
    /// checking its header, counts the wait, and runs `body` on the payload where it landed.
    /// Without a link (no neighbour on that side) `body` runs on nil.
    func receive<R>(
        from link: StageLink?, stage fromStage: Int, header: UInt64, microbatch k: Int, batch b: Int, span: @autoclosure () -> String,
        clock: StepClock, what: @autoclosure () -> String, _ body: (UnsafeRawBufferPointer?) throws -> R
    ) throws -> R {
        guard let link else { return try body(nil) }
        let t = MPIRuntime.wallTime()
        return try link.receive(
            expected: ActivationHeader(step: header, microbatch: k, stage: fromStage, shape: [b, spec.model.seq, spec.model.dim], dtype: .float32),
            timeoutSeconds: session.waitSeconds, what: what() + " from \(labels[link.peer])"
        ) { payload in
            let now = MPIRuntime.wallTime()
            clock.wait += now - t
            timeline.span(span(), category: "recv", from: t, to: now)
            return try body(payload)
        }
    }

    /// Posts microbatch `k`'s tensor to `link`'s neighbour (nothing without a link), `read`
    /// writing it straight into the link's send buffer.
    func send(
        to link: StageLink?, header: UInt64, microbatch k: Int, batch b: Int, span: @autoclosure () -> String,
        read: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        guard let link else { return }
        let t = MPIRuntime.wallTime()
        try link.send(
            ActivationHeader(step: header, microbatch: k, stage: role.stage, shape: [b, spec.model.seq, spec.model.dim], dtype: .float32),
            fill: read)
        timeline.span(span(), category: "send", from: t, to: MPIRuntime.wallTime())
    }

    /// The activation slot (first sequence) of microbatch `k`.
    func slot(_ k: Int) -> Int { (k % inFlight) * plan.microbatchSize }

    /// Gathers a run's updated shards into every holder.
    func gather(_ run: Run) throws {
        guard let comm = run.communicator else { return }
        try parameterHost.withUnsafeMutableBufferPointer { all in
            try session.gatherShards(
                parameters: model.parameters, host: UnsafeMutableBufferPointer(rebasing: all[run.range]), base: run.range.lowerBound,
                shards: run.shards, communicator: comm)
        }
    }

    // MARK: Evaluation and checks

    /// Mean validation loss over `train.eval_batches` global batches, forward only through the pipeline.
    func validationLoss(step: Int) throws -> Double {
        var sum = 0.0
        let sizes = plan.microbatchSizes(samples: role.samples)
        let clock = StepClock()
        for index in 0..<spec.train.evalBatches {
            var batch: TokenBatch?
            if role.samples > 0 && (model.holdsEmbedding || model.holdsHead) {
                batch = try session.sampler.validationSlice(index: index, shares: plan.replicas.map(\.samples), rank: role.replica)
            }
            // Validation headers carry the step with the top bit set, so they never pass for training ones.
            let header = UInt64(step) | (1 << 63) | (UInt64(index) << 32)
            for k in sizes.indices {
                sum += try forward(step: step, header: header, microbatch: k, sizes: sizes, batch: batch, clock: clock)
            }
        }
        for link in [previousLink, nextLink].compactMap({ $0 }) {
            try link.finishSends(timeoutSeconds: session.waitSeconds, what: "step \(step) evaluation: sending to \(labels[link.peer])")
        }
        let total = try world.allgather([model.holdsHead ? sum : 0]).reduce(0, +)
        return total / Double(spec.train.evalBatches * spec.model.globalBatch * spec.model.seq)
    }

    /// Checks that every holder of every shared run holds the same bits (collective per run).
    func verifyCopies(_ values: [Float]) throws {
        var odd = ""
        for run in runs {
            guard let comm = run.communicator else { continue }
            let hash = Checksum.hash64(values[run.range].withUnsafeBytes { Array($0) })
            let hashes = try comm.allgather([hash])
            if hashes.contains(where: { $0 != hashes[0] }) {
                odd = "after \(session.stepsRun) steps the copies of \(run.names.first!)… differ between ranks \(run.holders); the replicas diverged (a bug: please report it)"
            }
        }
        try session.agree(failure: odd, code: .mismatch)
    }

    /// Checkpoints the state after `step` (collective): every rank sends its stage's parameters
    /// and the moments of the shards it updates (zero elsewhere: exactly one holder updates each
    /// element), rank 0 puts them together under the whole model's layout and hands them to the
    /// background writer. Returns rank 0's stall in milliseconds.
    func checkpoint(step: Int, shares: [Int]) throws -> Double {
        let since = MPIRuntime.wallTime()
        let count = model.layout.count
        let optimizer = try model.readOptimizerState()
        var payload = try model.readParameters()
        var first = [Float](repeating: 0, count: count)
        var second = first
        for run in runs {
            let shard = run.myShard
            first.replaceSubrange(shard, with: optimizer.firstMoment[shard])
            second.replaceSubrange(shard, with: optimizer.secondMoment[shard])
        }
        payload += first
        payload += second
        let all = try world.allgatherv(payload)
        guard rank == 0 else { return 0 }
        let config = RankCapacity.modelConfig(spec.model, batch: plan.microbatchSize)
        let whole = ParameterLayout(config: config)
        var parameters = [Float](repeating: 0, count: whole.count)
        var wholeFirst = parameters
        var wholeSecond = parameters
        for replica in plan.replicas {
            for stage in replica.stages {
                let layout = ParameterLayout(config: config, stage: stage.layers)
                let values = all[stage.device]
                guard values.count == 3 * layout.count else {
                    throw CollectiveFailure(error: MedleyError(
                        .corruption, "\(labels[stage.device]) sent \(values.count) checkpoint values for a stage of \(layout.count) parameters"))
                }
                for entry in layout.entries {
                    let target = try whole.entry(entry.name).range
                    parameters.replaceSubrange(target, with: values[entry.range])
                    for (i, j) in zip(target, entry.range) {
                        wholeFirst[i] += values[layout.count + j]
                        wholeSecond[i] += values[2 * layout.count + j]
                    }
                }
            }
        }
        let tensors = try Checkpoint.tensors(layout: whole, parameters: parameters, firstMoment: wholeFirst, secondMoment: wholeSecond)
        let planJSON = (try? String(decoding: plan.jsonData(), as: UTF8.self)) ?? ""
        return session.submitCheckpoint(step: step, tensors: tensors, optimizerSteps: optimizer.steps, shares: shares,
                                        planJSON: planJSON, since: since)
    }

    /// Gathers every stage's parameters (collective) and, on rank 0, writes the whole model in
    /// its usual layout, as a data-parallel job would.
    func saveWholeModel(_ values: [Float], to path: String) throws {
        let all = try world.allgatherv(values)
        guard rank == 0 else { return }
        let config = RankCapacity.modelConfig(spec.model, batch: plan.microbatchSize)
        let whole = ParameterLayout(config: config)
        var out = [Float](repeating: 0, count: whole.count)
        for replica in plan.replicas {
            for stage in replica.stages {
                let layout = ParameterLayout(config: config, stage: stage.layers)
                for entry in layout.entries {
                    let target = try whole.entry(entry.name)
                    out.replaceSubrange(target.range, with: all[stage.device][entry.range])
                }
            }
        }
        try session.saveWeights(out, layout: whole, to: path)
    }

    // MARK: Output

    func printHeader() {
        guard options.printSteps else { return }
        let c = spec.model
        Console.line(
            "job \(spec.name): \(size) rank\(size == 1 ? "" : "s") in \(plan.replicas.count) replica\(plan.replicas.count == 1 ? "" : "s"), \(c.layers) layers x \(c.dim) dim x \(c.heads) heads, seq \(c.seq), global batch \(c.globalBatch) in microbatches of \(plan.microbatchSize), \(options.steps) steps, schedule \(plan.schedule) with slack \(plan.slack)")
        for (r, replica) in plan.replicas.enumerated() {
            let stages = replica.stages.map { "[\(labels[$0.device]): layers \($0.firstLayer)-\($0.endLayer - 1)]" }
            Console.line("  replica \(r) (\(replica.samples) sequences, \(replica.microbatches) microbatches): " + stages.joined(separator: " "))
        }
    }

    func emit(_ record: StepRecord) throws {
        try session.emit(record)
    }
}
