import Foundation
import Yams

/// A training job: the model, the data, the optimisation and the devices, one rank per device
/// instance. Written in YAML (see `docs/job-spec.md`); every field but `devices` has a default.
///
/// ``parse(yaml:source:)`` and ``load(path:)`` reject a spec with one readable line naming the
/// field and what to do: unknown keys, wrong types, sizes that are not positive, heads that do
/// not divide the width, an unknown schedule, no devices, a batch smaller than the ranks.
/// Whether an adapter exists, and whether shares fit device memory, is checked by the launcher.
public struct JobSpec: Codable, Sendable, Equatable {
    /// A name for logs and checkpoints.
    public var name: String
    /// The GPT's shape and the global batch.
    public var model: Model
    /// Where the text comes from and how it is split.
    public var data: DataSource
    /// The optimisation.
    public var train: Training
    /// The chips, in rank order.
    public var devices: [Device]
    /// How the job is laid out on the chips: `data` (every chip holds the whole model and
    /// trains on a measured share of each batch), `auto` (the planner chooses pipelines and
    /// replicas from the chips' profiles), or the path of a plan file written by
    /// `medley plan --json` (relative paths are relative to the job file).
    public var plan: String
    /// How `medley launch` watches the job (ignored by `medley train`).
    public var supervise: Supervise
    /// Chips held in reserve: when `medley launch` evicts a faulty chip, the first unused spare
    /// takes its rank (docs/launch.md, "Recovery").
    public var spares: [Device] = []
    /// How `medley launch` recovers from faults.
    public var recovery: Recovery = Recovery()
    /// How training watches for silent data corruption (docs/integrity.md).
    public var integrity: Integrity = Integrity()
    /// Refuse to start when an adapter's current build has not passed `medley adapter check`
    /// (false: start, with one warning line per such adapter). The reference adapter is exempt.
    public var requireChecked: Bool = false
    /// How ranks on different hosts reach each other (jobs whose devices name a `host`).
    public var network: Network = Network()

    enum CodingKeys: String, CodingKey {
        case name, model, data, train, devices, plan, supervise, spares, recovery, integrity, network
        case requireChecked = "require_checked"
    }

    /// Ranks on more than one host: the transport between them and how Open MPI starts them
    /// (docs/cluster.md).
    public struct Network: Codable, Sendable, Equatable {
        /// Interfaces Open MPI may use between hosts, by name (`eth0`) or subnet (`10.1.0.0/16`),
        /// for both MPI traffic (`btl_tcp_if_include`) and its own control (`oob_tcp_if_include`);
        /// empty = Open MPI's choice.
        public var interfaces: [String]
        /// The program that starts Open MPI's daemon on another host (`plm_rsh_agent`, ssh by
        /// default); a relative path is relative to the job file.
        public var rshAgent: String?
        /// Seconds after which a peer that stopped answering over TCP counts as gone (Open MPI's
        /// TCP keepalive on its connections); also bounds a rank's wait on a cut link.
        public var linkTimeout: Double

        public init(interfaces: [String] = [], rshAgent: String? = nil, linkTimeout: Double = 10) {
            self.interfaces = interfaces
            self.rshAgent = rshAgent
            self.linkTimeout = linkTimeout
        }

        enum CodingKeys: String, CodingKey {
            case interfaces
            case rshAgent = "rsh_agent"
            case linkTimeout = "link_timeout"
        }
    }

    /// Checks for chips that compute wrong numbers without an error (data-parallel jobs).
    public struct Integrity: Codable, Sendable, Equatable {
        /// Steps between exchanges whose payloads are checksummed (1 = every step); 0 = never.
        public var checksumEvery: Int
        /// Steps between comparisons of the replicas' parameter fingerprints (CRC-32C of every
        /// rank's parameters read back from its chip); 0 = only after the last step.
        public var fingerprintEvery: Int
        /// Steps between probe batches (one fixed sequence forward and backward on every chip,
        /// checked against the reference adapter on the host); 0 = never. A probe also runs
        /// before each checkpoint, so no checkpoint is written from a chip that fails it.
        public var probeEvery: Int
        /// The relative difference a chip's probe answer may have from the reference's; nil:
        /// by the chip's precision (fp32 1e-3, fp16 2e-2, bf16 1e-1).
        public var probeTolerance: Double?

        public init(checksumEvery: Int = 10, fingerprintEvery: Int = 100, probeEvery: Int = 100, probeTolerance: Double? = nil) {
            self.checksumEvery = checksumEvery
            self.fingerprintEvery = fingerprintEvery
            self.probeEvery = probeEvery
            self.probeTolerance = probeTolerance
        }

        enum CodingKeys: String, CodingKey {
            case checksumEvery = "checksum_every"
            case fingerprintEvery = "fingerprint_every"
            case probeEvery = "probe_every"
            case probeTolerance = "probe_tolerance"
        }
    }

    /// When to restart after a fault and when to give up.
    public struct Recovery: Codable, Sendable, Equatable {
        /// Restarts allowed in the whole run; 0 = a fault ends the job.
        public var maxRestarts: Int
        /// The job ends rather than run on fewer chips than this.
        public var minChips: Int
        /// Seconds before the first restart; each later one waits twice as long (at most 30 s).
        public var backoff: Double
        /// Seconds a chip that slowed down (a `slowdown` alert) stays out once a spare took its
        /// place; after that it may come back as a spare. 0: a chip that slows down is never
        /// swapped out (the rebalancer gives it less work).
        public var stragglerCooldown: Double
        /// What a batch whose loss or gradient is not finite does: roll the job back to the
        /// newest checkpoint (``nanRollback``), or skip that batch's update and go on
        /// (``nanSkipBatch``; three in a row are a fault, which rolls back).
        public var onNaN: String

        /// `on_nan` values.
        public static let nanRollback = "rollback"
        public static let nanSkipBatch = "skip_batch"
        /// Batches in a row that `skip_batch` skips before the NaN is treated as a fault.
        public static let maxSkippedInARow = 3

        public init(maxRestarts: Int = 3, minChips: Int = 1, backoff: Double = 1, stragglerCooldown: Double = 300,
                    onNaN: String = Recovery.nanRollback) {
            self.maxRestarts = maxRestarts
            self.minChips = minChips
            self.backoff = backoff
            self.stragglerCooldown = stragglerCooldown
            self.onNaN = onNaN
        }

        enum CodingKeys: String, CodingKey {
            case backoff
            case maxRestarts = "max_restarts"
            case minChips = "min_chips"
            case stragglerCooldown = "straggler_cooldown"
            case onNaN = "on_nan"
        }
    }

    /// Every spare's ranks' devices, in order (entries repeated `count` times), as ``rankDevices`` lists the job's.
    public var spareDevices: [Device] {
        spares.flatMap { device in
            (0..<max(device.count, 0)).map { _ in Device(adapter: device.adapter, options: device.options, cpus: device.cpus, host: device.host) }
        }
    }

    /// `plan: data`.
    public static let dataParallelPlan = "data"
    /// `plan: auto`.
    public static let automaticPlan = "auto"

    /// A job; see the properties for the meaning of each value.
    public init(
        name: String = "medley-job", model: Model = Model(), data: DataSource = DataSource(),
        train: Training = Training(), devices: [Device], plan: String = JobSpec.dataParallelPlan,
        supervise: Supervise = Supervise()
    ) {
        self.name = name
        self.model = model
        self.data = data
        self.train = train
        self.devices = devices
        self.plan = plan
        self.supervise = supervise
    }

    /// How `medley launch` watches the job: when a rank is silent or a straggler, what to run
    /// for each alert, and where to serve metrics. Flags of `medley launch` override these.
    public struct Supervise: Codable, Sendable, Equatable {
        /// Seconds without a heartbeat (or without progress, by the rank's beats) before a rank is reported silent.
        public var heartbeatTimeout: Double
        /// A rank whose compute time exceeds `stragglerFactor` × the other ranks' median for
        /// `stragglerSteps` steps in a row is reported as a straggler.
        public var stragglerFactor: Double
        public var stragglerSteps: Int
        /// A rank whose compute per sequence passes this × its own at the start, for
        /// `straggler_steps` steps in a row, has slowed down (a `slowdown` alert).
        public var slowdownFactor: Double
        /// Seconds a rank may take from the start to its hello.
        public var helloTimeout: Double
        /// A shell command run (by `/bin/sh -c`) for every alert, with the alert as one line of JSON on
        /// its standard input; nil: none.
        public var alertCommand: String?
        /// Seconds `alertCommand` may run before it is killed.
        public var alertTimeout: Double
        /// TCP port of `/metrics` and the status page; 0: not served.
        public var metricsPort: Int

        /// The highest port number.
        public static let maxPort = 65535

        public init(heartbeatTimeout: Double = 10, stragglerFactor: Double = 2, stragglerSteps: Int = 5, slowdownFactor: Double = 3,
                    helloTimeout: Double = 120, alertCommand: String? = nil, alertTimeout: Double = 10, metricsPort: Int = 0) {
            self.slowdownFactor = slowdownFactor
            self.heartbeatTimeout = heartbeatTimeout
            self.stragglerFactor = stragglerFactor
            self.stragglerSteps = stragglerSteps
            self.helloTimeout = helloTimeout
            self.alertCommand = alertCommand
            self.alertTimeout = alertTimeout
            self.metricsPort = metricsPort
        }

        enum CodingKeys: String, CodingKey {
            case heartbeatTimeout = "heartbeat_timeout"
            case stragglerFactor = "straggler_factor"
            case stragglerSteps = "straggler_steps"
            case slowdownFactor = "slowdown_factor"
            case helloTimeout = "hello_timeout"
            case alertCommand = "alert_command"
            case alertTimeout = "alert_timeout"
            case metricsPort = "metrics_port"
        }

        /// Throws one line naming the first setting out of range (`supervise.NAME …`).
        public func validate() throws {
            func fail(_ name: String, _ rule: String, _ value: CustomStringConvertible) -> MedleyError {
                MedleyError(.invalidArgument, "supervise.\(name): must be \(rule), got \(value)")
            }
            guard heartbeatTimeout.isFinite, heartbeatTimeout > 0 else {
                throw fail("heartbeat_timeout", "a number of seconds above 0 (e.g. 10)", heartbeatTimeout)
            }
            guard stragglerFactor.isFinite, stragglerFactor > 1 else { throw fail("straggler_factor", "a number above 1 (e.g. 2)", stragglerFactor) }
            guard stragglerSteps >= 1 else { throw fail("straggler_steps", "a whole number of at least 1 (e.g. 5)", stragglerSteps) }
            guard slowdownFactor.isFinite, slowdownFactor > 1 else { throw fail("slowdown_factor", "a number above 1 (e.g. 3)", slowdownFactor) }
            guard helloTimeout.isFinite, helloTimeout > 0 else { throw fail("hello_timeout", "a number of seconds above 0 (e.g. 120)", helloTimeout) }
            if let alertCommand, alertCommand.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw fail("alert_command", "a shell command, or left out", "an empty command")
            }
            guard alertTimeout.isFinite, alertTimeout > 0, alertTimeout <= 600 else {
                throw fail("alert_timeout", "a number of seconds above 0 and at most 600 (e.g. 10)", alertTimeout)
            }
            guard (0...Self.maxPort).contains(metricsPort) else {
                throw fail("metrics_port", "a TCP port from 1 to \(Self.maxPort), or 0 for none", metricsPort)
            }
        }
    }

    /// The GPT's shape (a byte-level model: the vocabulary is the 256 byte values) and the global batch.
    public struct Model: ShapedModel, Codable, Sendable, Equatable {
        /// The architecture: layers, dim, heads, seq, vocab (read straight through: `model.dim`).
        public var shape: ModelShape
        /// Sequences in one global batch (`model.batch` in the YAML), divided among all ranks
        /// every step. A rank's part of it is its share; a model built on one device is sized
        /// for a batch of its own (`ModelConfig.maxBatch`).
        public var globalBatch: Int

        /// The only vocabulary size Medley trains: one token per byte value.
        public static let byteVocabulary = 256

        /// A model; the defaults are the small model of ``JobSpec/defaultJob``.
        public init(layers: Int = 2, dim: Int = 64, heads: Int = 4, seq: Int = 64, globalBatch: Int = 12, vocab: Int = 256) {
            shape = ModelShape(layers: layers, dim: dim, heads: heads, seq: seq, vocab: vocab)
            self.globalBatch = globalBatch
        }

        /// A model of `shape` trained on global batches of `globalBatch` sequences.
        public init(shape: ModelShape, globalBatch: Int) {
            self.shape = shape
            self.globalBatch = globalBatch
        }

        // The YAML (and JSON) form is flat, as a user writes it: layers, dim, heads, seq, batch, vocab.
        public init(from decoder: Decoder) throws {
            (shape, globalBatch) = try ModelShape.decodeFlat(from: decoder)
        }

        public func encode(to encoder: Encoder) throws {
            try shape.encodeFlat(batch: globalBatch, to: encoder)
        }
    }

    /// The text corpus and its split.
    public struct DataSource: Codable, Sendable, Equatable {
        /// A text file or a directory of text files (see ``ByteDataset``).
        public var path: String
        /// Share of the corpus kept for validation, in [0, 1).
        public var validationFraction: Double
        /// Seed of the example order (the shuffle of each epoch).
        public var seed: UInt64

        /// A data source; the defaults read Debian's fortunes corpus and keep a tenth for validation.
        public init(path: String = ByteDataset.defaultPath, validationFraction: Double = 0.1, seed: UInt64 = 1) {
            self.path = path
            self.validationFraction = validationFraction
            self.seed = seed
        }

        enum CodingKeys: String, CodingKey {
            case path, seed
            case validationFraction = "validation_fraction"
        }
    }

    /// The optimisation: AdamW with a learning-rate schedule and global gradient-norm clipping.
    public struct Training: Codable, Sendable, Equatable {
        /// Optimiser steps to run.
        public var steps: Int
        /// Peak learning rate (reached after warmup).
        public var lr: Double
        /// Shape of the learning rate after warmup.
        public var lrSchedule: LearningRateSchedule.Kind
        /// Steps of linear warmup from 0 to `lr`.
        public var warmupSteps: Int
        /// The rate a cosine schedule ends at; at most `lr`.
        public var minLR: Double
        /// AdamW decoupled weight decay, applied to 2-D weights only (not to biases, gains or norms).
        public var weightDecay: Double
        /// Largest global gradient L2 norm; larger gradients are scaled down to it. 0 = no clipping.
        public var gradClip: Double
        /// Evaluate the validation loss every this many steps. 0 = never.
        public var evalEvery: Int
        /// Re-measure throughput and re-divide the batch every this many steps. 0 = never.
        public var rebalanceEvery: Int
        /// Seed of the parameter initialisation.
        public var seed: UInt64
        /// Validation batches (each one global batch) averaged at every evaluation.
        public var evalBatches: Int
        /// Seconds a rank waits for the others at one step before the job stops with a timeout.
        public var stepTimeout: Double
        /// Fixed shares of the global batch, one per rank; `nil` = measure throughput and divide by it.
        public var shares: [Int]?
        /// Pipeline plans: extra microbatches each stage runs ahead of the next (0 = textbook
        /// 1F1B; 1 absorbs a stage's jitter at the cost of one more microbatch of activations).
        public var pipelineSlack: Int
        /// Write a checkpoint every this many steps (and after the last), where the run has a
        /// checkpoint directory (`medley launch` always does). 0 = only after the last step.
        public var checkpointEvery: Int
        /// Checkpoints kept: the newest this many; older ones are deleted once a newer one is whole.
        public var checkpointKeep: Int
        /// Start from this checkpoint's parameters (fresh optimizer state, from step 1): a
        /// `step-…` directory, a directory of them or a run directory; relative to the job file.
        public var initFrom: String?
        /// Each step record lists the training examples every rank trained on (data-parallel
        /// jobs): the sampler's record, to check that each example of an epoch is seen once.
        public var logExamples: Bool = false

        /// The default ``pipelineSlack``.
        public static let defaultPipelineSlack = 1
        /// The largest ``pipelineSlack`` accepted.
        public static let maxPipelineSlack = 16

        /// AdamW's first-moment decay (β1), fixed.
        public static let adamBeta1 = 0.9
        /// AdamW's second-moment decay (β2), fixed.
        public static let adamBeta2 = 0.95
        /// AdamW's denominator epsilon, fixed.
        public static let adamEpsilon = 1e-8

        /// Training settings; `minLR` defaults to a tenth of `lr`.
        public init(
            steps: Int = 100, lr: Double = 1e-3, lrSchedule: LearningRateSchedule.Kind = .cosine,
            warmupSteps: Int = 0, minLR: Double? = nil, weightDecay: Double = 0.1, gradClip: Double = 1.0,
            evalEvery: Int = 0, rebalanceEvery: Int = 10, seed: UInt64 = 1, evalBatches: Int = 4,
            stepTimeout: Double = 600, shares: [Int]? = nil, pipelineSlack: Int = Training.defaultPipelineSlack,
            checkpointEvery: Int = 100, checkpointKeep: Int = 3, initFrom: String? = nil
        ) {
            self.steps = steps
            self.lr = lr
            self.lrSchedule = lrSchedule
            self.warmupSteps = warmupSteps
            self.minLR = minLR ?? lr / 10
            self.weightDecay = weightDecay
            self.gradClip = gradClip
            self.evalEvery = evalEvery
            self.rebalanceEvery = rebalanceEvery
            self.seed = seed
            self.evalBatches = evalBatches
            self.stepTimeout = stepTimeout
            self.shares = shares
            self.pipelineSlack = pipelineSlack
            self.checkpointEvery = checkpointEvery
            self.checkpointKeep = checkpointKeep
            self.initFrom = initFrom
        }

        enum CodingKeys: String, CodingKey {
            case steps, lr, seed
            case lrSchedule = "lr_schedule"
            case warmupSteps = "warmup_steps"
            case minLR = "min_lr"
            case weightDecay = "weight_decay"
            case gradClip = "grad_clip"
            case evalEvery = "eval_every"
            case rebalanceEvery = "rebalance_every"
            case evalBatches = "eval_batches"
            case stepTimeout = "step_timeout"
            case shares
            case pipelineSlack = "pipeline_slack"
            case checkpointEvery = "checkpoint_every"
            case checkpointKeep = "checkpoint_keep"
            case initFrom = "init_from"
            case logExamples = "log_examples"
        }
    }

    /// A kind of chip, and how many ranks use one.
    public struct Device: Codable, Sendable, Equatable {
        /// An adapter name (found on the adapter search path, e.g. `cpu`, `sim`) or a path to its library.
        public var adapter: String
        /// Options passed to the adapter when it opens the device (`key: value`, values as text).
        public var options: [String: String]
        /// Ranks (device instances) of this kind, each with the same options.
        public var count: Int
        /// Host CPUs (0-based) the rank's process may run on; empty = wherever the OS puts it.
        public var cpus: [Int]
        /// The host that owns the chip, as Open MPI reaches it (a name or address); nil = the
        /// host `medley` runs on. Its ranks run there.
        public var host: String?

        /// A device entry.
        public init(adapter: String, options: [String: String] = [:], count: Int = 1, cpus: [Int] = [], host: String? = nil) {
            self.adapter = adapter
            self.options = options
            self.count = count
            self.cpus = cpus
            self.host = host
        }
    }

    /// One rank's device: the entry it comes from and which instance of it.
    public struct RankDevice: Sendable, Equatable {
        /// The MPI rank.
        public var rank: Int
        /// Index of the entry in ``JobSpec/devices``.
        public var entry: Int
        /// Which of the entry's `count` instances (0-based).
        public var instance: Int
        /// The adapter name or path.
        public var adapter: String
        /// The adapter options.
        public var options: [String: String]
        /// Host CPUs the rank may run on (empty = any).
        public var cpus: [Int]
        /// The host the rank runs on (nil = the launching host).
        public var host: String? = nil
    }

    /// Whether any device names a host: the ranks are placed by host and talk over TCP.
    public var isMultiHost: Bool { devices.contains { $0.host != nil } }

    /// Each rank's host, in rank order (nil = the launching host).
    public var rankHosts: [String?] { rankDevices.map(\.host) }

    /// Number of ranks: the sum of the devices' counts.
    public var rankCount: Int { devices.reduce(0) { $0 + $1.count } }

    /// Every rank's device, in rank order (entries in order, each repeated `count` times).
    public var rankDevices: [RankDevice] {
        var ranks: [RankDevice] = []
        for (entry, device) in devices.enumerated() {
            for instance in 0..<max(device.count, 0) {
                ranks.append(
                    RankDevice(
                        rank: ranks.count, entry: entry, instance: instance, adapter: device.adapter,
                        options: device.options, cpus: device.cpus, host: device.host))
            }
        }
        return ranks
    }

    /// The learning-rate schedule of ``train``.
    public var learningRateSchedule: LearningRateSchedule {
        LearningRateSchedule(
            kind: train.lrSchedule, peak: train.lr, minimum: train.minLR, warmupSteps: train.warmupSteps,
            totalSteps: train.steps)
    }
}

// MARK: - Default job

extension JobSpec {
    /// The job `medley train` runs without a spec: one `cpu` chip and two simulated chips of
    /// different vendors and speeds, training a small model on the fortunes corpus.
    public static let defaultJobYAML = """
        # Medley's built-in job: three chips of three kinds train one small byte-level GPT.
        name: mixed-default
        model:
          layers: 2
          dim: 64
          heads: 4
          seq: 64
          batch: 14
        data:
          path: /usr/share/games/fortunes
          validation_fraction: 0.1
          seed: 1
        train:
          steps: 50
          lr: 0.001
          lr_schedule: cosine
          warmup_steps: 5
          min_lr: 0.0001
          weight_decay: 0.1
          grad_clip: 1.0
          eval_every: 25
          rebalance_every: 10
          seed: 1
        devices:
          - adapter: cpu
          - adapter: sim
            options:
              vendor: Acme
              name: acme-x1
              kernels: cpu
              speed: 0.5
          - adapter: sim
            options:
              vendor: Borealis
              name: borealis-b2
              kernels: cpu
              speed: 0.25

        """

    /// ``defaultJobYAML``, parsed.
    public static var defaultJob: JobSpec {
        // The embedded text is covered by tests; failing here is a bug in Medley.
        do { return try parse(yaml: defaultJobYAML, source: "the built-in default job") } catch {
            preconditionFailure("the built-in default job does not parse: \(error)")
        }
    }
}

// MARK: - Parsing

extension JobSpec {
    /// The keys each section accepts, in documentation order.
    static let topKeys = [
        "name", "model", "data", "train", "devices", "hosts", "network", "plan", "supervise", "spares", "recovery", "integrity",
        "require_checked",
    ]
    static let networkKeys = ["interfaces", "rsh_agent", "link_timeout"]
    static let integrityKeys = ["checksum_every", "fingerprint_every", "probe_every", "probe_tolerance"]
    static let recoveryKeys = ["max_restarts", "min_chips", "backoff", "straggler_cooldown", "on_nan"]
    static let superviseKeys = [
        "heartbeat_timeout", "straggler_factor", "straggler_steps", "slowdown_factor", "hello_timeout", "alert_command", "alert_timeout",
        "metrics_port",
    ]
    static let modelKeys = ["layers", "dim", "heads", "seq", "batch", "vocab"]
    static let dataKeys = ["path", "validation_fraction", "seed"]
    static let trainKeys = [
        "steps", "lr", "lr_schedule", "warmup_steps", "min_lr", "weight_decay", "grad_clip", "eval_every",
        "rebalance_every", "seed", "eval_batches", "step_timeout", "shares", "pipeline_slack", "checkpoint_every",
        "checkpoint_keep", "init_from", "log_examples",
    ]
    static let deviceKeys = ["adapter", "options", "count", "cpus", "host"]

    /// Reads and checks a job spec from YAML text.
    ///
    /// `source` names the text in messages (a path, or "job spec"). Throws `invalidArgument`
    /// with one line (`source: field: problem; what to do`) for any unknown key, wrong type or
    /// invalid value; see ``validate()``.
    public static func parse(yaml: String, source: String = "job spec") throws -> JobSpec {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "\(source): \(message)") }
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw fail("not valid YAML: \(SpecReader.describe(yamlError: error))")
        }
        guard let root, !SpecReader.isNull(root) else {
            throw fail("the spec is empty; it needs at least a devices list (see docs/job-spec.md)")
        }
        do {
            let spec = try SpecReader.job(root)
            try spec.validate()
            return spec
        } catch let error as MedleyError {
            throw fail(error.message)
        }
    }

    /// Reads and checks the job spec in the file at `path` (see ``parse(yaml:source:)``).
    ///
    /// Throws `notFound` when there is no such file and `io` when it cannot be read.
    public static func load(path: String) throws -> JobSpec {
        guard FileManager.default.fileExists(atPath: path) else {
            throw MedleyError(
                .notFound, "job spec \(path) does not exist; give the path of a YAML job spec (see docs/job-spec.md)")
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw MedleyError(.io, "cannot read job spec \(path): \(error.localizedDescription)")
        }
        var spec = try parse(yaml: text, source: path)
        if let initFrom = spec.train.initFrom, !initFrom.hasPrefix("/") {
            spec.train.initFrom = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(initFrom).standardizedFileURL.path
        }
        if ![dataParallelPlan, automaticPlan].contains(spec.plan) && !spec.plan.hasPrefix("/") {
            spec.plan = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(spec.plan).standardizedFileURL.path
        }
        // An agent given as a path (not a bare program name found on PATH, such as ssh).
        if let agent = spec.network.rshAgent, agent.contains("/"), !agent.hasPrefix("/") {
            spec.network.rshAgent = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(agent).standardizedFileURL.path
        }
        return spec
    }

    /// The job spec at `path`, or ``defaultJob`` when there is none (`medley train` with no JOB).
    public static func load(path: String?) throws -> JobSpec {
        try path.map { try load(path: $0) } ?? defaultJob
    }

    /// The spec as YAML (keys sorted), which ``parse(yaml:source:)`` reads back to an equal spec.
    public func yamlString() throws -> String {
        let encoder = YAMLEncoder()
        encoder.options.sortKeys = true
        return try encoder.encode(self)
    }

    /// Checks every value, throwing `invalidArgument` with a line that names the field and what to do.
    public func validate() throws {
        func fail(_ field: String, _ message: String) -> MedleyError {
            MedleyError(.invalidArgument, "\(field): \(message)")
        }
        func positive(_ field: String, _ value: Int) throws {
            if value <= 0 { throw fail(field, "must be a whole number greater than 0, got \(value)") }
        }
        func atLeastZero(_ field: String, _ value: Int, _ zero: String) throws {
            if value < 0 { throw fail(field, "must be 0 or more (\(zero)), got \(value)") }
        }
        if name.trimmingCharacters(in: .whitespaces).isEmpty { throw fail("name", "must not be empty") }

        try positive("model.layers", model.layers)
        try positive("model.dim", model.dim)
        try positive("model.heads", model.heads)
        try positive("model.seq", model.seq)
        try positive("model.batch", model.globalBatch)
        if model.dim % model.heads != 0 {
            let divisors = (1...min(model.dim, 16)).filter { model.dim % $0 == 0 }.map(String.init)
            throw fail(
                "model.heads",
                "\(model.heads) heads do not divide model.dim \(model.dim); pick a divisor of \(model.dim) such as \(divisors.suffix(3).joined(separator: ", "))"
            )
        }
        if model.vocab != Model.byteVocabulary {
            throw fail("model.vocab", "must be \(Model.byteVocabulary) (one token per byte), got \(model.vocab); leave it out")
        }
        // Sizes per sequence (a rank's share is checked when its model is built), then the
        // global batch's tokens, all with checked arithmetic.
        try model.shape.validate(batch: 1, fieldPrefix: "model.")
        if model.globalBatch > ModelShape.maxSize {
            throw fail("model.batch", "\(model.globalBatch) sequences is too large: at most \(ModelShape.maxSize)")
        }

        if data.path.isEmpty { throw fail("data.path", "must not be empty; leave it out to use \(ByteDataset.defaultPath)") }
        let fraction = data.validationFraction
        if !(fraction.isFinite && fraction >= 0 && fraction < 1) {
            throw fail("data.validation_fraction", "must be at least 0 and below 1 (e.g. 0.1), got \(fraction)")
        }

        try positive("train.steps", train.steps)
        if !(train.lr.isFinite && train.lr > 0) {
            throw fail("train.lr", "must be a number greater than 0 (e.g. 0.001), got \(train.lr)")
        }
        try atLeastZero("train.warmup_steps", train.warmupSteps, "0 = no warmup")
        if train.warmupSteps > train.steps {
            throw fail("train.warmup_steps", "\(train.warmupSteps) is more than train.steps \(train.steps); lower it")
        }
        if !(train.minLR.isFinite && train.minLR >= 0 && train.minLR <= train.lr) {
            throw fail("train.min_lr", "must be between 0 and train.lr \(train.lr), got \(train.minLR)")
        }
        if !(train.weightDecay.isFinite && train.weightDecay >= 0) {
            throw fail("train.weight_decay", "must be 0 or more (e.g. 0.1), got \(train.weightDecay)")
        }
        if !(train.gradClip.isFinite && train.gradClip >= 0) {
            throw fail("train.grad_clip", "must be 0 (no clipping) or more (e.g. 1.0), got \(train.gradClip)")
        }
        try atLeastZero("train.eval_every", train.evalEvery, "0 = never")
        if train.evalEvery > 0 && fraction == 0 {
            throw fail(
                "train.eval_every",
                "evaluation needs validation data but data.validation_fraction is 0; set eval_every to 0 or validation_fraction above 0"
            )
        }
        try atLeastZero("train.rebalance_every", train.rebalanceEvery, "0 = never")
        try positive("train.eval_batches", train.evalBatches)
        try atLeastZero("train.checkpoint_every", train.checkpointEvery, "0 = only after the last step")
        if train.logExamples && plan != Self.dataParallelPlan {
            throw fail("train.log_examples", "is recorded by data-parallel jobs (plan: data) only; a job that runs a plan does not record its examples yet, so leave it out")
        }
        guard train.checkpointKeep >= 1 && train.checkpointKeep <= 1000 else {
            throw fail("train.checkpoint_keep", "must be 1 to 1000 checkpoints kept, got \(train.checkpointKeep); 3 is the default")
        }
        guard train.pipelineSlack >= 0 && train.pipelineSlack <= Training.maxPipelineSlack else {
            throw fail(
                "train.pipeline_slack",
                "must be 0 (textbook 1F1B) to \(Training.maxPipelineSlack) extra microbatches in flight, got \(train.pipelineSlack); 1 is the default")
        }
        if !(train.stepTimeout.isFinite && train.stepTimeout > 0) {
            throw fail("train.step_timeout", "must be a number of seconds above 0 (e.g. 600), got \(train.stepTimeout)")
        }

        if devices.isEmpty {
            throw fail("devices", "the job has no devices; list at least one, e.g. `devices: [{adapter: cpu}]`")
        }
        for (index, device) in devices.enumerated() {
            if device.adapter.trimmingCharacters(in: .whitespaces).isEmpty {
                throw fail("devices[\(index)].adapter", "must name an adapter (e.g. cpu, sim) or the path of one")
            }
            if device.count < 1 {
                throw fail("devices[\(index)].count", "must be at least 1, got \(device.count); remove the entry instead")
            }
            if let cpu = device.cpus.first(where: { $0 < 0 }) {
                throw fail("devices[\(index)].cpus", "CPU numbers start at 0, got \(cpu)")
            }
        }
        for (index, device) in (devices + spares).enumerated() {
            guard let host = device.host else { continue }
            let field = index < devices.count ? "devices[\(index)].host" : "spares[\(index - devices.count)].host"
            let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-_"))
            if host.isEmpty || host.unicodeScalars.contains(where: { !allowed.contains($0) }) || host.hasPrefix("-") {
                throw fail(field, "'\(host)' is not a host name or address; use the name or IPv4 address Open MPI reaches the host by (letters, digits, '.', '-', '_')")
            }
        }
        if !(network.linkTimeout.isFinite && network.linkTimeout >= 1 && network.linkTimeout <= 3600) {
            throw fail("network.link_timeout", "must be 1 to 3600 seconds, got \(network.linkTimeout); 10 is the default")
        }
        if let agent = network.rshAgent, agent.trimmingCharacters(in: .whitespaces).isEmpty {
            throw fail("network.rsh_agent", "must name a program (e.g. ssh, or the path of an agent); leave it out for ssh")
        }
        if let bad = network.interfaces.first(where: { $0.isEmpty || $0.contains(",") || $0.contains(" ") }) {
            throw fail("network.interfaces", "'\(bad)' is not an interface name (eth0) or subnet (10.1.0.0/16)")
        }
        for (index, device) in spares.enumerated() {
            if device.adapter.trimmingCharacters(in: .whitespaces).isEmpty {
                throw fail("spares[\(index)].adapter", "must name an adapter (e.g. cpu, sim) or the path of one")
            }
            if device.count < 1 { throw fail("spares[\(index)].count", "must be at least 1, got \(device.count); remove the entry instead") }
        }
        guard (0...100).contains(recovery.maxRestarts) else {
            throw fail("recovery.max_restarts", "must be 0 (a fault ends the job) to 100, got \(recovery.maxRestarts); 3 is the default")
        }
        guard (0...1_000_000).contains(integrity.checksumEvery) else {
            throw fail("integrity.checksum_every", "must be 0 (never) to 1000000 steps, got \(integrity.checksumEvery); 10 is the default")
        }
        guard (0...1_000_000).contains(integrity.fingerprintEvery) else {
            throw fail("integrity.fingerprint_every", "must be 0 (only after the last step) to 1000000 steps, got \(integrity.fingerprintEvery); 100 is the default")
        }
        guard (0...1_000_000).contains(integrity.probeEvery) else {
            throw fail("integrity.probe_every", "must be 0 (never) to 1000000 steps, got \(integrity.probeEvery); 100 is the default")
        }
        if let tolerance = integrity.probeTolerance, !(tolerance.isFinite && tolerance > 0 && tolerance <= 1) {
            throw fail("integrity.probe_tolerance", "must be a relative difference above 0 and at most 1, got \(tolerance); leave it out to go by each chip's precision")
        }
        guard recovery.minChips >= 1 else { throw fail("recovery.min_chips", "must be at least 1, got \(recovery.minChips)") }
        guard recovery.backoff.isFinite && recovery.backoff >= 0 && recovery.backoff <= 600 else {
            throw fail("recovery.backoff", "must be 0 to 600 seconds, got \(recovery.backoff); 1 is the default")
        }
        guard recovery.stragglerCooldown.isFinite && recovery.stragglerCooldown >= 0 && recovery.stragglerCooldown <= 86_400 else {
            throw fail("recovery.straggler_cooldown", "must be 0 (never swap out a chip that slowed down) to 86400 seconds, got \(recovery.stragglerCooldown); 300 is the default")
        }
        guard [Recovery.nanRollback, Recovery.nanSkipBatch].contains(recovery.onNaN) else {
            throw fail("recovery.on_nan", "must be rollback (to the newest checkpoint) or skip_batch (skip that batch's update), got \(recovery.onNaN)")
        }
        if model.globalBatch < rankCount {
            throw fail(
                "model.batch",
                "the global batch of \(model.globalBatch) sequences is smaller than the \(rankCount) ranks; raise model.batch to at least \(rankCount) or list fewer devices"
            )
        }
        if plan.trimmingCharacters(in: .whitespaces).isEmpty {
            throw fail("plan", "is empty; use data, auto, or the path of a plan file from `medley plan --json`")
        }
        if let shares = train.shares {
            try Self.checkShares(shares, field: "train.shares", ranks: rankCount, globalBatch: model.globalBatch)
        }
        try supervise.validate()
    }
}

extension JobSpec {
    /// Checks fixed shares: one whole number ≥ 0 per rank, summing to the global batch.
    public static func checkShares(_ shares: [Int], field: String, ranks: Int, globalBatch: Int) throws {
        func fail(_ message: String) -> MedleyError { MedleyError(.invalidArgument, "\(field): \(message)") }
        if shares.count != ranks {
            throw fail("\(shares.count) shares for \(ranks) ranks; give one share per rank, in rank order")
        }
        if let negative = shares.first(where: { $0 < 0 }) {
            throw fail("a share is \(negative); shares are sequences per step, 0 or more")
        }
        let sum = shares.reduce(0, +)
        if sum != globalBatch {
            throw fail("the shares sum to \(sum) but the global batch (model.batch) is \(globalBatch); make them add up")
        }
    }
}

/// Reads a composed YAML tree into a ``JobSpec``, rejecting unknown keys and wrong types.
/// Errors are `MedleyError`s whose message starts with the field's dotted path.
enum SpecReader {
    /// A YAML mapping being read, with the dotted path that names it in messages.
    struct Section {
        let path: String
        let entries: [(key: String, value: Node)]

        init(_ node: Node, path: String, known: [String]) throws {
            guard case .mapping(let mapping) = node else {
                throw MedleyError(
                    .invalidArgument,
                    "\(path.isEmpty ? "the spec" : path): expected a mapping of \(known.joined(separator: ", "))\(SpecReader.line(node))"
                )
            }
            self.path = path
            var entries: [(String, Node)] = []
            for (keyNode, value) in mapping {
                let key = keyNode.string ?? ""
                let field = path.isEmpty ? key : "\(path).\(key)"
                guard known.contains(key) else {
                    let hint = SpecReader.suggestion(for: key, among: known).map { "; did you mean \($0)?" }
                        ?? "; known keys: \(known.joined(separator: ", "))"
                    throw MedleyError(.invalidArgument, "\(field): unknown key\(SpecReader.line(keyNode))\(hint)")
                }
                if entries.contains(where: { $0.0 == key }) {
                    throw MedleyError(.invalidArgument, "\(field): given twice\(SpecReader.line(keyNode)); keep one")
                }
                entries.append((key, value))
            }
            self.entries = entries
        }

        /// The value of `key`, or nil when absent or null.
        func value(_ key: String) -> Node? {
            guard let node = entries.first(where: { $0.key == key })?.value, !SpecReader.isNull(node) else { return nil }
            return node
        }

        func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

        func int(_ key: String, _ fallback: Int) throws -> Int {
            guard let node = value(key) else { return fallback }
            guard case .scalar = node, let int = node.int else { throw SpecReader.typeError(field(key), "a whole number", node) }
            return int
        }

        func seed(_ key: String, _ fallback: UInt64) throws -> UInt64 {
            guard let node = value(key) else { return fallback }
            guard case .scalar(let scalar) = node, let seed = UInt64(scalar.string) else {
                throw SpecReader.typeError(field(key), "a whole number from 0 to \(UInt64.max)", node)
            }
            return seed
        }

        func double(_ key: String, _ fallback: Double?) throws -> Double? {
            guard let node = value(key) else { return fallback }
            guard case .scalar = node, let number = node.float else { throw SpecReader.typeError(field(key), "a number", node) }
            return number
        }

        /// A list of whole numbers (`[1, 2]` or a one-number shorthand `3`), or nil when absent.
        func intList(_ key: String) throws -> [Int]? {
            guard let node = value(key) else { return nil }
            if case .scalar = node, let int = node.int { return [int] }
            guard case .sequence(let items) = node else { throw SpecReader.typeError(field(key), "a list of whole numbers", node) }
            return try items.map { item in
                guard case .scalar = item, let int = item.int else {
                    throw SpecReader.typeError(field(key), "a list of whole numbers", item)
                }
                return int
            }
        }

        /// A list of strings (`[a, b]` or a one-string shorthand `a`), or nil when absent.
        func stringList(_ key: String) throws -> [String]? {
            guard let node = value(key) else { return nil }
            if case .scalar(let scalar) = node { return [scalar.string] }
            guard case .sequence(let items) = node else { throw SpecReader.typeError(field(key), "a list of names", node) }
            return try items.map { item in
                guard case .scalar(let scalar) = item else { throw SpecReader.typeError(field(key), "a list of names", item) }
                return scalar.string
            }
        }

        func string(_ key: String, _ fallback: String) throws -> String {
            guard let node = value(key) else { return fallback }
            guard case .scalar(let scalar) = node else { throw SpecReader.typeError(field(key), "a single value", node) }
            return scalar.string
        }

        func bool(_ key: String, _ fallback: Bool) throws -> Bool {
            guard let node = value(key) else { return fallback }
            guard case .scalar(let scalar) = node, let bool = ["true": true, "false": false][scalar.string.lowercased()] else {
                throw SpecReader.typeError(field(key), "true or false", node)
            }
            return bool
        }
    }

    static func job(_ root: Node) throws -> JobSpec {
        let top = try Section(root, path: "", known: JobSpec.topKeys)
        let modelSection = try top.value("model").map { try Section($0, path: "model", known: JobSpec.modelKeys) }
        let dataSection = try top.value("data").map { try Section($0, path: "data", known: JobSpec.dataKeys) }
        let trainSection = try top.value("train").map { try Section($0, path: "train", known: JobSpec.trainKeys) }
        let superviseSection = try top.value("supervise").map { try Section($0, path: "supervise", known: JobSpec.superviseKeys) }

        let m = JobSpec.Model()
        var model = m
        if let s = modelSection {
            model = JobSpec.Model(
                layers: try s.int("layers", m.layers), dim: try s.int("dim", m.dim), heads: try s.int("heads", m.heads),
                seq: try s.int("seq", m.seq), globalBatch: try s.int("batch", m.globalBatch), vocab: try s.int("vocab", m.vocab))
        }

        let d = JobSpec.DataSource()
        var data = d
        if let s = dataSection {
            data = JobSpec.DataSource(
                path: try s.string("path", d.path),
                validationFraction: try s.double("validation_fraction", d.validationFraction)!,
                seed: try s.seed("seed", d.seed))
        }

        let t = JobSpec.Training()
        var train = t
        if let s = trainSection {
            let scheduleName = try s.string("lr_schedule", t.lrSchedule.rawValue)
            guard let schedule = LearningRateSchedule.Kind(rawValue: scheduleName) else {
                let known = LearningRateSchedule.Kind.allCases.map(\.rawValue)
                let hint = suggestion(for: scheduleName, among: known).map { " (did you mean \($0)?)" } ?? ""
                throw MedleyError(
                    .invalidArgument,
                    "train.lr_schedule: unknown schedule '\(scheduleName)'\(hint); use \(known.joined(separator: " or "))")
            }
            let lr = try s.double("lr", t.lr)!
            train = JobSpec.Training(
                steps: try s.int("steps", t.steps), lr: lr, lrSchedule: schedule,
                warmupSteps: try s.int("warmup_steps", t.warmupSteps), minLR: try s.double("min_lr", nil),
                weightDecay: try s.double("weight_decay", t.weightDecay)!, gradClip: try s.double("grad_clip", t.gradClip)!,
                evalEvery: try s.int("eval_every", t.evalEvery), rebalanceEvery: try s.int("rebalance_every", t.rebalanceEvery),
                seed: try s.seed("seed", t.seed), evalBatches: try s.int("eval_batches", t.evalBatches),
                stepTimeout: try s.double("step_timeout", t.stepTimeout)!, shares: try s.intList("shares"),
                pipelineSlack: try s.int("pipeline_slack", t.pipelineSlack),
                checkpointEvery: try s.int("checkpoint_every", t.checkpointEvery),
                checkpointKeep: try s.int("checkpoint_keep", t.checkpointKeep),
                initFrom: try s.string("init_from", ""))
            if train.initFrom?.isEmpty == true { train.initFrom = nil }
            train.logExamples = try s.bool("log_examples", t.logExamples)
        }

        var devices: [JobSpec.Device] = []
        if let node = top.value("devices") {
            guard case .sequence(let list) = node else {
                throw typeError("devices", "a list of devices (each `- adapter: NAME`)", node)
            }
            for (index, item) in list.enumerated() {
                devices.append(try device(item, path: "devices[\(index)]"))
            }
        }
        let u = JobSpec.Supervise()
        var supervise = u
        if let s = superviseSection {
            supervise = JobSpec.Supervise(
                heartbeatTimeout: try s.double("heartbeat_timeout", u.heartbeatTimeout)!,
                stragglerFactor: try s.double("straggler_factor", u.stragglerFactor)!,
                stragglerSteps: try s.int("straggler_steps", u.stragglerSteps),
                slowdownFactor: try s.double("slowdown_factor", u.slowdownFactor)!,
                helloTimeout: try s.double("hello_timeout", u.helloTimeout)!,
                alertCommand: try s.value("alert_command").map { _ in try s.string("alert_command", "") },
                alertTimeout: try s.double("alert_timeout", u.alertTimeout)!,
                metricsPort: try s.int("metrics_port", u.metricsPort))
        }
        if let node = top.value("hosts") {
            // `hosts: {hostA: [cpu, sim], hostB: [opencl]}`: each host's devices, in order.
            guard top.value("devices") == nil else {
                throw MedleyError(.invalidArgument, "hosts: and devices: are both given; list the devices under hosts:, or give each device a host: in devices:")
            }
            guard case .mapping(let mapping) = node else {
                throw typeError("hosts", "a mapping of host names to lists of devices (e.g. `hosts: {node1: [cpu], node2: [opencl]}`)", node)
            }
            for (keyNode, listNode) in mapping {
                let host = keyNode.string ?? ""
                guard case .sequence(let list) = listNode else {
                    throw typeError("hosts.\(host)", "a list of devices (each `- adapter: NAME`)", listNode)
                }
                for (index, item) in list.enumerated() {
                    var d = try device(item, path: "hosts.\(host)[\(index)]")
                    if let other = d.host, other != host {
                        throw MedleyError(.invalidArgument, "hosts.\(host)[\(index)].host: says \(other) under host \(host); leave it out")
                    }
                    d.host = host
                    devices.append(d)
                }
            }
        }
        var spec = JobSpec(
            name: try top.string("name", "medley-job"), model: model, data: data, train: train, devices: devices,
            plan: try top.string("plan", JobSpec.dataParallelPlan), supervise: supervise)
        if let node = top.value("spares") {
            guard case .sequence(let list) = node else {
                throw typeError("spares", "a list of devices (each `- adapter: NAME`), as devices:", node)
            }
            spec.spares = try list.enumerated().map { try device($0.element, path: "spares[\($0.offset)]") }
        }
        spec.requireChecked = try top.bool("require_checked", false)
        if let section = try top.value("network").map({ try Section($0, path: "network", known: JobSpec.networkKeys) }) {
            let n = JobSpec.Network()
            spec.network = JobSpec.Network(
                interfaces: try section.stringList("interfaces") ?? [],
                rshAgent: try section.value("rsh_agent").map { _ in try section.string("rsh_agent", "") },
                linkTimeout: try section.double("link_timeout", n.linkTimeout)!)
        }
        if let section = try top.value("integrity").map({ try Section($0, path: "integrity", known: JobSpec.integrityKeys) }) {
            let i = JobSpec.Integrity()
            spec.integrity = JobSpec.Integrity(
                checksumEvery: try section.int("checksum_every", i.checksumEvery), fingerprintEvery: try section.int("fingerprint_every", i.fingerprintEvery),
                probeEvery: try section.int("probe_every", i.probeEvery), probeTolerance: try section.double("probe_tolerance", nil))
        }
        if let section = try top.value("recovery").map({ try Section($0, path: "recovery", known: JobSpec.recoveryKeys) }) {
            let r = JobSpec.Recovery()
            spec.recovery = JobSpec.Recovery(
                maxRestarts: try section.int("max_restarts", r.maxRestarts), minChips: try section.int("min_chips", r.minChips),
                backoff: try section.double("backoff", r.backoff)!,
                stragglerCooldown: try section.double("straggler_cooldown", r.stragglerCooldown)!,
                onNaN: try section.string("on_nan", r.onNaN))
        }
        return spec
    }

    static func device(_ node: Node, path: String) throws -> JobSpec.Device {
        if case .scalar(let scalar) = node, !isNull(node) {  // shorthand: `- cpu`
            return JobSpec.Device(adapter: scalar.string)
        }
        let s = try Section(node, path: path, known: JobSpec.deviceKeys)
        guard let adapterNode = s.value("adapter") else {
            throw MedleyError(.invalidArgument, "\(path).adapter: missing; name an adapter (e.g. cpu, sim) or the path of one")
        }
        guard case .scalar(let adapter) = adapterNode else { throw typeError("\(path).adapter", "a name or path", adapterNode) }
        var options: [String: String] = [:]
        if let optionsNode = s.value("options") {
            guard case .mapping(let mapping) = optionsNode else {
                throw typeError("\(path).options", "a mapping of option names to values", optionsNode)
            }
            for (keyNode, valueNode) in mapping {
                let key = keyNode.string ?? ""
                guard case .scalar(let value) = valueNode else {
                    throw typeError("\(path).options.\(key)", "a single value", valueNode)
                }
                if options[key] != nil {
                    throw MedleyError(.invalidArgument, "\(path).options.\(key): given twice\(line(keyNode)); keep one")
                }
                options[key] = isNull(valueNode) ? "" : value.string
            }
        }
        let host = try s.value("host").map { _ in try s.string("host", "") }
        return JobSpec.Device(
            adapter: adapter.string, options: options, count: try s.int("count", 1), cpus: try s.intList("cpus") ?? [],
            host: host)
    }

    /// A YAML syntax error on one line: where, what, and in what construct.
    static func describe(yamlError error: any Error) -> String {
        let (mark, context, problem): (Mark?, YamlError.Context?, String)
        switch error as? YamlError {
        case .scanner(let c, let p, let m, _), .parser(let c, let p, let m, _), .composer(let c, let p, let m, _):
            (mark, context, problem) = (m, c, p)
        default:
            return String(describing: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        }
        var line = "line \(mark!.line), column \(mark!.column): \(problem)"
        if let context { line += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))" }
        return line
    }

    /// Whether `node` is YAML null (`~`, `null`, or nothing).
    static func isNull(_ node: Node) -> Bool {
        guard case .scalar(let scalar) = node, scalar.style == .plain else { return false }
        return NSNull.construct(from: scalar) != nil
    }

    /// " (line N)" for a node with a source mark.
    static func line(_ node: Node) -> String { node.mark.map { " (line \($0.line))" } ?? "" }

    static func typeError(_ field: String, _ expected: String, _ node: Node) -> MedleyError {
        let got: String
        switch node {
        case .scalar(let scalar): got = "'\(scalar.string)'"
        case .mapping: got = "a mapping"
        case .sequence: got = "a list"
        }
        return MedleyError(.invalidArgument, "\(field): expected \(expected), got \(got)\(line(node))")
    }

    /// The known key closest to `key`, if it is close enough to be a likely typo.
    static func suggestion(for key: String, among known: [String]) -> String? {
        let lowered = key.lowercased()
        let scored = known.map { ($0, editDistance(lowered, $0)) }
        if let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, best.0.count / 3) { return best.0 }
        // A fragment of a key ("schedule" for lr_schedule, "warmup" for warmup_steps).
        return known.first { lowered.count >= 3 && ($0.contains(lowered) || lowered.contains($0) && $0.count >= 3) }
    }

    /// Levenshtein distance between two strings.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
