import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyModel

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
    /// How the worker was asked to run (shared with ``PipelineWorker``).
    public typealias Options = RankSession.Options

    /// Timed warm-up iterations per rank (after one untimed one); their median sets the speed.
    static let warmupIterations = 5
    /// What this rank owns: chip, communicator, data, log.
    let session: RankSession
    let options: Options
    let spec: JobSpec
    let world: Communicator
    let rank: Int
    let size: Int
    let device: Device
    let labels: [String]
    let capacities: [Int]
    let model: GPT
    let exchange: GradientExchange
    /// Per bucket, the flat float index of its first gradient.
    let bucketStarts: [Int]
    /// Per rank, the parameters it updates.
    let shards: [Range<Int>]
    /// Host copy of the parameters used to gather the shards.
    var parameterHost: [Float]
    /// This rank's spans (compute, wait, exchange, update, eval), kept when a timeline was asked for.
    var timeline: Timeline
    /// Set at the first step any rank said the supervisor asked it to stop.
    var stopAgreed = false
    /// Set at a step where any rank said the supervisor asked for a checkpoint.
    var checkpointAgreed = false
    /// The probe batch against the reference adapter (`integrity.probe_every` > 0).
    let probe: IntegrityProbe?

    /// Opens this rank's device, loads the data and builds the model (collective: every rank calls it).
    public init(options: Options, communicator: Communicator) throws {
        self.options = options
        self.spec = options.spec
        self.world = communicator
        self.rank = communicator.rank
        self.size = communicator.size
        self.timeline = Timeline(rank: communicator.rank)
        let ranks = spec.rankDevices
        guard ranks.count == size else {
            throw MedleyError(
                .invalidArgument,
                "the job lists \(ranks.count) devices but mpirun started \(size) ranks; start it with `medley train`")
        }
        session = try RankSession(options: options, communicator: communicator)
        device = session.device
        labels = session.labels

        // Everyone learns everyone's capacity.
        let capacity = RankCapacity.sequences(memoryBytes: device.description.memoryBytes, model: spec.model)
        if capacity < 1 {
            throw MedleyError(
                .outOfMemory, RankCapacity.tooSmall(label: session.label, memoryBytes: device.description.memoryBytes, model: spec.model))
        }
        // Every rank's capacity is at most the global batch (RankCapacity clamps it): a larger
        // or negative one is corrupt, and refusing it keeps the sum from overflowing.
        let claimed = try communicator.allgather([Int64(capacity)])
        let globalBatch = options.spec.model.globalBatch
        if let bad = claimed.indices.first(where: { claimed[$0] < 0 || claimed[$0] > Int64(globalBatch) }) {
            throw CollectiveFailure(error: MedleyError(
                .corruption,
                "rank \(bad) reported a capacity of \(claimed[bad]) sequences, outside 0...\(globalBatch) (the global batch); its process is corrupt"))
        }
        capacities = claimed.map(Int.init)
        let total = capacities.reduce(0, +)
        if total < spec.model.globalBatch {
            throw CollectiveFailure(error: MedleyError(
                .outOfMemory,
                "the devices hold \(total) sequences in all but the global batch is \(spec.model.globalBatch); lower model.batch or add memory"))
        }

        model = try GPT(config: RankCapacity.modelConfig(spec.model, batch: capacity), device: device, seed: spec.train.seed)
        let tensors = model.layout.entries.map { TensorMeta(name: $0.name, shape: $0.shape, dtype: .float32) }
        let layout = try BucketLayout(tensors: tensors, capBytes: RankSession.bucketCapBytes, jobID: spec.name)
        // A peer's sample count above the global batch is corrupt: the exchange refuses it by name.
        exchange = try GradientExchange(
            communicator: communicator, layout: layout,
            options: .init(maxStepSamples: spec.model.globalBatch))
        probe = spec.integrity.probeEvery > 0
            ? try IntegrityProbe(spec: spec, rankDevice: session.rankDevice, sampler: session.sampler, withReference: communicator.rank == 0)
            : nil
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

    // MARK: Running

    /// Trains for `options.steps` steps (collective). Rank 0 prints and logs.
    public func run() throws {
        defer { session.closeLog() }
        let batch = spec.model.globalBatch
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
                    globalBatch: batch, every: spec.train.rebalanceEvery, caps: capacities.map { Optional($0) }, labels: labels,
                    totalSteps: options.steps),
                shares: shares, throughputs: warmup)
        if rank == 0 { printHeader(warmup: warmup, shares: shares) }

        var lastValidation: Double?
        var tokensPerSecond: [Double] = []
        // Resuming: the whole state from the checkpoint (every rank takes all of it; each
        // updates its own shard of the moments from here on), and its shares when they fit.
        var firstStep = 1
        if let checkpoint = try session.resumeCheckpoint() {
            firstStep = try session.restore(checkpoint, into: model)
            let pinned = schedule.shares(atStep: firstStep)
            if let pinned {
                shares = pinned
            } else if checkpoint.shares.count == size, checkpoint.shares.reduce(0, +) == batch,
                      zip(checkpoint.shares, capacities).allSatisfy({ $0 <= $1 }) {
                shares = checkpoint.shares
                if var r = rebalancer {
                    r = try Rebalancer(configuration: r.configuration, shares: shares, throughputs: warmup)
                    rebalancer = r
                }
            }
        }
        if firstStep == 1, let initial = try session.initialParameters(for: model.layout) { try model.writeParameters(initial) }
        try session.openLog(resumingAfter: firstStep > 1 ? firstStep - 1 : nil)
        if options.steps == 0 {
            // A 0-step run writes the initial state: a checkpoint of step 0 and the weights.
            if options.checkpointDirectory != nil { _ = try checkpoint(step: 0, shares: shares) }
            session.finishCheckpoints()
            let initial = try model.readParameters()
            if rank == 0, let path = options.weightsPath { try session.saveWeights(initial, layout: model.layout, to: path) }
            session.printInitialState()
            return
        }
        _ = try world.barrier(timeoutSeconds: spec.train.stepTimeout, what: "the start of step \(firstStep)")
        timeline.start(enabled: options.timelinePath != nil)
        let start = MPIRuntime.wallTime()
        defer { session.finishCheckpoints() }
        // Speeds behind the measured shares (the warm-up's, then the rebalancer's), for the note
        // on a rank left with no work.
        var estimates = warmup
        for step in firstStep...options.steps {
            let pinnedNow = schedule.shares(atStep: step)
            if let pinnedNow { shares = pinnedNow } else { noteIdleRanks(shares: shares, throughputs: estimates) }
            var record = try trainStep(step, shares: shares)
            if spec.train.evalEvery > 0 && (step % spec.train.evalEvery == 0 || step == options.steps) {
                let before = MPIRuntime.wallTime()
                record.valLoss = try validationLoss(shares: shares)
                timeline.span("eval \(step)", category: "eval", from: before, to: MPIRuntime.wallTime())
                lastValidation = record.valLoss
            }
            if var r = rebalancer, pinnedNow == nil {
                let measurements = zip(record.computeMs, record.shares).map {
                    Rebalancer.StepMeasurement(computeMilliseconds: $0, samples: $1)
                }
                let decided = r.lastDecision
                if case .reshard(let change) = try r.record(step: step, measurements: measurements) {
                    record.nextShares = change.shares
                    record.throughputs = change.throughputs
                    shares = change.shares
                    estimates = change.throughputs
                }
                if r.lastDecision != decided { record.rebalance = r.lastDecision?.reason }
                rebalancer = r
            }
            if step == firstStep && record.throughputs == nil { record.throughputs = warmup }
            let checkpointing = session.checkpointsAfter(step: step) || ((stopAgreed || checkpointAgreed) && options.checkpointDirectory != nil)
            let due = Integrity.due(step: step, integrity: spec.integrity, checkpoint: checkpointing)
            if due.probe || due.fingerprint {
                let before = MPIRuntime.wallTime()
                try checkIntegrity(step: step, probe: due.probe, fingerprint: due.fingerprint)
                record.integrityMs = (MPIRuntime.wallTime() - before) * 1000
            }
            if checkpointing {
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
        if let path = options.timelinePath { try timeline.write(to: path, world: world, labels: labels) }
        let finalParameters = try model.readParameters()
        try verifyReplicas(finalParameters)
        if rank == 0, let path = options.weightsPath { try session.saveWeights(finalParameters, layout: model.layout, to: path) }
        session.printDone(seconds: seconds, tokensPerSecond: tokensPerSecond, lastValidation: lastValidation)
    }

    /// Checkpoints the state after `step` (collective): every rank's shard of the moments
    /// gathered to rank 0, which snapshots the parameters (identical on every rank) and hands it
    /// all to the background writer. Returns rank 0's stall in milliseconds.
    func checkpoint(step: Int, shares: [Int]) throws -> Double {
        let since = MPIRuntime.wallTime()
        let optimizer = try model.readOptimizerState()
        let shard = shards[rank]
        let mine = Array(optimizer.firstMoment[shard]) + Array(optimizer.secondMoment[shard])
        let all = try world.allgatherv(mine, maxCountPerRank: 2 * (model.layout.count / size + 1))
        guard rank == 0 else { return 0 }
        var first = [Float](repeating: 0, count: model.layout.count)
        var second = first
        for r in 0..<size {
            let range = shards[r]
            guard all[r].count == 2 * range.count else {
                throw CollectiveFailure(error: MedleyError(
                    .corruption, "\(labels[r]) sent \(all[r].count) moment values for a shard of \(range.count) parameters"))
            }
            first.replaceSubrange(range, with: all[r][0..<range.count])
            second.replaceSubrange(range, with: all[r][range.count...])
        }
        let tensors = try Checkpoint.tensors(
            layout: model.layout, parameters: try model.readParameters(), firstMoment: first, secondMoment: second)
        return session.submitCheckpoint(step: step, tensors: tensors, optimizerSteps: optimizer.steps, shares: shares, since: since)
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
                "after \(session.stepsRun) steps \(labels[odd])'s parameters differ from \(labels[0])'s; the replicas diverged (a bug: please report it)"))
        }
    }

    /// The silent-corruption checks after `step` (collective; docs/integrity.md): the replicas'
    /// parameter fingerprints (read back from every chip) and, with `probe`, the probe batch on
    /// every chip against the reference adapter. Throws naming the suspects when any fails.
    func checkIntegrity(step: Int, probe runProbe: Bool, fingerprint: Bool) throws {
        let parameters = try model.readParameters()
        let fields = 4
        var mine = [Double](repeating: 0, count: fields)
        mine[0] = Double(Integrity.fingerprint(parameters))
        let probing = runProbe && probe != nil
        if probing, let probe {
            let chip = try probe.answer(on: model)
            mine[1] = chip.loss
            mine[2] = chip.gradientNorm
            mine[3] = probe.tolerance
        }
        let all = try world.allgather(mine)
        let row = { (r: Int, k: Int) in all[r * fields + k] }
        var suspects: [Int] = []
        var findings: [String] = []
        if probing, let probe {
            let answers = (0..<size).map { Integrity.ProbeAnswer(loss: row($0, 1), gradientNorm: row($0, 2)) }
            let tolerances = (0..<size).map { row($0, 3) }
            // Chips that agree with one another need no judge; otherwise rank 0 asks the reference.
            if !Integrity.agree(answers: answers, tolerances: tolerances) {
                var judged = [0.0, 0.0]
                if rank == 0 {
                    let reference = try probe.reference(parameters: parameters)
                    judged = [reference.loss, reference.gradientNorm]
                }
                let verdicts = try world.allgather(judged)
                let reference = Integrity.ProbeAnswer(loss: verdicts[0], gradientNorm: verdicts[1])
                let references = Array(repeating: reference, count: size)
                for r in Integrity.probeSuspects(answers: answers, references: references, tolerances: tolerances) {
                    let d = Integrity.outside(answers[r], reference: reference, tolerance: tolerances[r]).difference
                    suspects.append(r)
                    findings.append(String(
                        format: "on the probe batch %@ gives loss %g and gradient norm %g where the reference adapter gives %g and %g (relative difference %.3g, tolerance %g)",
                        labels[r], answers[r].loss, answers[r].gradientNorm, reference.loss, reference.gradientNorm, d, tolerances[r]))
                }
            }
        }
        if fingerprint {
            let prints = (0..<size).map { UInt32(row($0, 0)) }
            func hex(_ r: Int) -> String { "0x" + String(prints[r], radix: 16) }
            switch Integrity.compare(fingerprints: prints) {
            case .agree: break
            case .outliers(let odd):
                for r in odd where !suspects.contains(r) { suspects.append(r) }
                findings.append("the parameters on \(odd.map { labels[$0] }.joined(separator: ", ")) differ from the other replicas' (CRC-32C \(odd.map(hex).joined(separator: ", ")) vs the majority's)")
            case .split(let ranks):
                if suspects.isEmpty && !probing && probe != nil {
                    // No majority: the probe may say which chip is wrong.
                    return try checkIntegrity(step: step, probe: true, fingerprint: true)
                }
                if suspects.isEmpty {
                    suspects = ranks
                    findings.append("the replicas' parameters differ (\(ranks.map { "\(labels[$0]) CRC-32C \(hex($0))" }.joined(separator: ", "))) with no majority and no probe that tells which is wrong; blaming all of them")
                } else {
                    findings.append("the replicas' parameters differ with no majority")
                }
            }
        }
        guard !suspects.isEmpty else { return }
        suspects.sort()
        let who = suspects.map { labels[$0] }.joined(separator: ", ")
        throw CollectiveFailure(
            error: MedleyError(
                .corruption,
                "step \(step): silent corruption: \(findings.joined(separator: "; ")); \(who) \(suspects.count == 1 ? "computes" : "compute") wrong numbers without an error"),
            suspects: suspects)
    }

    // MARK: One step

    /// Runs step `step` (1-based; global batch `step - 1`) with `shares`, returns its record.
    func trainStep(_ step: Int, shares: [Int]) throws -> StepRecord {
        let t0 = MPIRuntime.wallTime()
        try device.beginStep(step)
        let samples = shares[rank]
        try model.zeroGradients()
        var loss = 0.0
        var examples: [Int] = []
        if samples > 0 {
            let slice = try session.sampler.slice(step: step - 1, shares: shares, rank: rank)
            examples = slice.examples
            loss = Double(try model.forward(tokens: slice.tokens, targets: slice.targets, batch: samples))
            try model.backward()
            try device.synchronize()
        }
        let t1 = MPIRuntime.wallTime()
        let idle = try session.awaitEveryRank(step: step, what: "step \(step)")
        let t2 = MPIRuntime.wallTime()

        // Exchange: device → buckets, weighted average, own shard back to the device.
        let shardSquares: Double
        let checksumEvery = spec.integrity.checksumEvery
        exchange.options.checksums = checksumEvery > 0 && step % checksumEvery == 0
        do {
            shardSquares = try session.exchangeGradients(
                exchange, step: step, sampleCount: samples, gradients: model.gradients, bucketStarts: bucketStarts,
                shard: shards[rank])
        } catch let error as MedleyError where error.code == .corruption && exchange.checksumSuspects != nil {
            // The exchange's checksums failed: the same verdict on every rank.
            let suspects = exchange.checksumSuspects ?? []
            // Nobody named (the sum did not add up): the probe may say whose chip it is.
            if suspects.isEmpty && probe != nil { try checkIntegrity(step: step, probe: true, fingerprint: false) }
            let named = suspects.map { labels[$0] }.joined(separator: ", ")
            throw CollectiveFailure(
                error: MedleyError(.corruption, "step \(step): gradient exchange: \(error.message)\(named.isEmpty ? "" : "; blaming \(named)")"),
                suspects: suspects)
        }
        let t3 = MPIRuntime.wallTime()

        // Everyone learns everyone's numbers; the sums are taken in rank order on every rank.
        // The last number: whether the supervisor asked this rank to stop; all stop together.
        // And whether it was asked for a checkpoint: all checkpoint after this step.
        let mine = [(t1 - t0) * 1000, Double(samples), loss * Double(samples), idle * 1000, (t3 - t2) * 1000, shardSquares,
                    RankControl.stopRequested(rank: rank) ? 1 : 0, RankControl.checkpointRequested() ? 1 : 0]
        let all = try world.allgather(mine)
        let row = { (r: Int, k: Int) in all[r * mine.count + k] }
        stopAgreed = stopAgreed || (0..<size).contains { row($0, 6) > 0 }
        checkpointAgreed = session.agreesToCheckpoint(step: step, requested: (0..<size).contains { row($0, 7) > 0 })
        var lossSum = 0.0, sampleSum = 0.0, squares = 0.0
        for r in 0..<size {
            lossSum += row(r, 2)
            sampleSum += row(r, 1)
            squares += row(r, 5)
        }
        // The sampler's record: what each rank trained on (one more collective, when asked for).
        let consumed = try spec.train.logExamples
            ? world.allgatherv(examples.map(Int64.init), maxCountPerRank: spec.model.globalBatch).map { $0.map(Int.init) } : nil
        let badLoss = (0..<size).first { row($0, 1) > 0 && !row($0, 2).isFinite }.map { labels[$0] }
        let lr = session.schedule.rate(atStep: step - 1)
        let tokens = spec.model.globalBatch * spec.model.seq
        if probe != nil && (badLoss != nil || !squares.squareRoot().isFinite) {
            // A defective chip often shows first as a bad loss or gradient: the probe says whose chip it is.
            try checkIntegrity(step: step, probe: true, fingerprint: false)
        }
        if let skipped = try session.skipReason(step: step, badLoss: badLoss, squares: squares) {
            // recovery.on_nan: skip_batch: no update, the weights and moments as they were.
            let stepSeconds = MPIRuntime.wallTime() - t0
            timeline.span("compute \(step)", category: "compute", from: t0, to: t1)
            var record = StepRecord(
                step: step, loss: lossSum / sampleSum, valLoss: nil, lr: lr, gradNorm: squares.squareRoot(), clipScale: 0,
                tokens: tokens, tokensPerS: Double(tokens) / stepSeconds, stepMs: stepSeconds * 1000, shares: shares,
                computeMs: (0..<size).map { row($0, 0) }, idleMs: (0..<size).map { row($0, 3) },
                exchangeMs: (0..<size).map { row($0, 4) }, updateMs: Array(repeating: 0, count: size), nextShares: nil, throughputs: nil)
            record.skipped = skipped
            record.examples = consumed
            _ = session.takeStagingSeconds()
            return record
        }
        let (gradNorm, clip) = try session.clipScale(squares: squares, step: step)

        // Update: AdamW on this rank's shard only, then every rank gathers every shard.
        try session.update(model, lr: lr, clip: clip, range: shards[rank])
        try gatherParameters()
        let t4 = MPIRuntime.wallTime()

        timeline.span("compute \(step)", category: "compute", from: t0, to: t1)
        timeline.span("wait \(step)", category: "idle", from: t1, to: t2)
        timeline.span("exchange \(step)", category: "exchange", from: t2, to: t3)
        timeline.span("update \(step)", category: "update", from: t3, to: t4)
        let (updateMs, stagingMs) = try session.gatherUpdateAndStaging(updateMs: (t4 - t3) * 1000)
        let stepSeconds = t4 - t0
        var record = StepRecord(
            step: step, loss: lossSum / sampleSum, valLoss: nil, lr: lr, gradNorm: gradNorm, clipScale: clip,
            tokens: tokens, tokensPerS: Double(tokens) / stepSeconds, stepMs: stepSeconds * 1000, shares: shares,
            computeMs: (0..<size).map { row($0, 0) }, idleMs: (0..<size).map { row($0, 3) },
            exchangeMs: (0..<size).map { row($0, 4) }, updateMs: updateMs, nextShares: nil, throughputs: nil)
        record.stagingMs = stagingMs
        record.examples = consumed
        return record
    }

    /// Gathers every rank's updated shard into every replica.
    func gatherParameters() throws {
        try parameterHost.withUnsafeMutableBufferPointer { host in
            try session.gatherShards(parameters: model.parameters, host: host, base: 0, shards: shards, communicator: world)
        }
    }

    // MARK: Warm-up and evaluation

    /// Every rank times forward + backward on a slice of the first global batch and reports
    /// samples per second; the gradients are thrown away and the weights are untouched.
    func measureWarmup() throws -> [Double] {
        let batch = spec.model.globalBatch
        let samples = min(capacities[rank], max(1, (batch + size - 1) / size))
        let first = session.sampler.globalBatch(step: 0)
        let count = samples * spec.model.seq
        let tokens = Array(first.tokens.prefix(count)), targets = Array(first.targets.prefix(count))
        // The median of the timed runs, not the fastest: a sim chip runs some launches fast on time
        // it overslept before, and on a shared host the fastest run is a lucky one (a warm-up
        // rated a 0.5 chip at 0.8 by its best of two).
        var times: [Double] = []
        for iteration in 0...Self.warmupIterations {
            try model.zeroGradients()
            let t0 = MPIRuntime.wallTime()
            _ = try model.forward(tokens: tokens, targets: targets, batch: samples)
            try model.backward()
            try device.synchronize()
            if iteration > 0 { times.append(MPIRuntime.wallTime() - t0) }
        }
        try model.zeroGradients()
        _ = try session.awaitEveryRank(step: 0, what: "warm-up (measuring every rank's speed)")
        let typical = Rebalancer.median(times)
        return try world.allgather([Double(samples) / max(typical, 1e-9)])
    }

    /// Mean validation loss over `train.eval_batches` global validation batches.
    func validationLoss(shares: [Int]) throws -> Double {
        var lossSum = 0.0, samplesSum = 0.0
        for index in 0..<spec.train.evalBatches {
            var mine = [0.0, 0.0]
            if shares[rank] > 0 {
                let slice = try session.sampler.validationSlice(index: index, shares: shares, rank: rank)
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
            "job \(spec.name): \(size) rank\(size == 1 ? "" : "s"), \(config.layers) layers x \(config.dim) dim x \(config.heads) heads, seq \(config.seq), global batch \(spec.model.globalBatch), \(model.layout.count) parameters, \(options.steps) steps"
        )
        for r in 0..<size {
            let rate = String(format: "%.1f", warmup[r] * Double(spec.model.seq))
            Console.line("  \(labels[r]): holds up to \(capacities[r]) sequences, warm-up \(rate) tokens/s, share \(shares[r])")
        }
    }

    func emit(_ record: StepRecord) throws { try session.emit(record) }

    /// Ranks already told about (``noteIdleRanks(shares:throughputs:)``).
    var notedIdle = Set<Int>()

    /// Rank 0 prints one line, once per job, for each rank the measured shares give no sequence:
    /// it is too slow for this batch (its speed beside the fastest rank's, and what one sequence
    /// on it would cost beside the whole step), and what to do about it.
    func noteIdleRanks(shares: [Int], throughputs: [Double]) {
        guard rank == 0, options.printSteps, throughputs.count == shares.count else { return }
        for line in Self.idleRankNotes(shares: shares, throughputs: throughputs, labels: labels, skipping: notedIdle) {
            Console.line(line.text)
            notedIdle.insert(line.rank)
        }
    }

    /// The note for every rank with share 0 not in `skipping`.
    static func idleRankNotes(shares: [Int], throughputs: [Double], labels: [String], skipping: Set<Int> = [])
        -> [(rank: Int, text: String)]
    {
        guard let fastest = throughputs.indices.max(by: { throughputs[$0] < throughputs[$1] }), throughputs[fastest] > 0 else { return [] }
        let step = ShareAllocator.predictedStepTime(shares: shares, throughputs: throughputs)
        let batch = shares.reduce(0, +)
        return shares.indices.compactMap { r in
            guard shares[r] == 0, !skipping.contains(r), throughputs[r] > 0, labels.indices.contains(r) else { return nil }
            let relative = throughputs[r] / throughputs[fastest]
            let cost = step > 0 ? (1 / throughputs[r]) / step : .infinity
            func number(_ value: Double) -> String {
                value >= 100 ? String(format: "%.0f", value) : String(format: "%.3g", value)
            }
            return (r, "note: \(labels[r]) gets 0 of the \(batch) sequences of each batch: it is too slow for this batch "
                + "(measured at \(number(relative))× the speed of the fastest, \(labels[fastest]); one sequence on it would take "
                + "\(number(cost))× the whole step), so it trains nothing; give it a share with --shares, or leave it out of the job "
                + "(plan: auto already leaves out a chip that would not help)")
        }
    }
}
