import Foundation
import MedleyAdapters
import MedleyComm
import MedleyCore
import MedleyModel
import MedleyPlanner

/// What `medley train` does before and around `mpirun`.
///
/// Everything that can be known without starting ranks is checked first, so a bad job fails
/// in a second with one line instead of after `mpirun` has started N processes: every
/// adapter loads and opens its device with the job's options, every device holds at least one
/// sequence, the devices together hold the global batch, pinned shares fit, the corpus exists
/// and is long enough. Then the job runs as `mpirun … medley worker`, one rank per device, and
/// rank 0's step lines are shown as they come (Open MPI's own banners are dropped unless
/// `verbose`).
public struct TrainLauncher {
    /// One rank as the preflight saw it.
    public struct RankPreview: Sendable, Equatable {
        /// The rank.
        public var rank: Int
        /// "cpu cpu-openblas (AMD EPYC …)".
        public var label: String
        /// The most sequences its memory holds (at most the global batch).
        public var capacity: Int
    }

    /// The job.
    public var spec: JobSpec
    /// A job across hosts: what each rank's host said about its chip (set by the launcher's own
    /// host preflight; nil = ask the hosts when needed).
    public var hostProbes: [HostPreflight.Probe]? = nil
    /// Steps to run instead of `train.steps`.
    public var steps: Int?
    /// Where the step records go (JSON Lines).
    public var logPath: String?
    /// Where the final weights go.
    public var weightsPath: String?
    /// Pinned shares.
    public var schedule: SharesSchedule
    /// mpirun's `--timeout`, seconds.
    public var timeoutSeconds: Int
    /// Show Open MPI's own output too.
    public var verbose: Bool
    /// Extra environment for the ranks.
    public var environment: [String: String]
    /// Extra `mpirun` arguments (placed before the program), e.g. `--output-filename DIR`.
    public var mpirunArguments: [String] = []
    /// Where rank 0 writes the Chrome-trace timeline (every plan).
    public var timelinePath: String?
    /// Makes the plan for `plan: auto` (profiles the chips and runs the planner).
    public var automaticPlanner: ((JobSpec) throws -> Plan)?
    /// At Ctrl-C or SIGTERM: asks the ranks to stop at a step boundary (the supervisor's `stop`)
    /// and returns the seconds to wait for that before mpirun's group is signalled. Nil: signal at once.
    public var askToStop: ((Int32) -> Double)?
    /// The exit status of a run stopped by a signal after every rank checkpointed: EX_TEMPFAIL
    /// (75, "try again"), so a scheduler's wrapper can requeue it with `--resume`.
    public static let resumableExitStatus: Int32 = 75
    /// Polled while the job runs: a reason to end it now (a supervisor that judged a rank lost),
    /// or nil. The job's group is then ended and the launch returns 1 with one line naming it.
    public var abortReason: (() -> String?)?
    /// Told how mpirun ended, before the launch returns its status (a signal to this process, a
    /// kill from outside, an abort: what the status alone cannot say).
    public var onOutcome: ((MPIRun.Outcome) -> Void)?
    /// Where the ranks write checkpoints, if anywhere.
    public var checkpointDirectory: String?
    /// Whether a checkpoint directory will be set after the preflight (`medley launch` makes it
    /// inside the run directory, which comes later): a 0-step run is then allowed.
    public var checkpointsLater = false
    /// A checkpoint to resume from (checked before mpirun starts).
    public var resumePath: String?
    /// Where `medley adapter check` records are read (see ``uncheckedAdapterWarnings()``).
    public var checkRecords = CheckRecordStore.default

    /// A launcher; see the properties.
    public init(spec: JobSpec, steps: Int? = nil, logPath: String? = nil, weightsPath: String? = nil,
                schedule: SharesSchedule = SharesSchedule(),
                timeoutSeconds: Int = 6 * 3600, verbose: Bool = false, environment: [String: String] = [:],
                timelinePath: String? = nil, checkpointDirectory: String? = nil, resumePath: String? = nil,
                automaticPlanner: ((JobSpec) throws -> Plan)? = nil) {
        self.timelinePath = timelinePath
        self.checkpointDirectory = checkpointDirectory
        self.resumePath = resumePath
        self.automaticPlanner = automaticPlanner
        self.spec = spec
        self.steps = steps
        self.logPath = logPath
        self.weightsPath = weightsPath
        self.schedule = schedule
        self.timeoutSeconds = timeoutSeconds
        self.verbose = verbose
        self.environment = environment
    }

    /// The plan the job asks for: nil for `plan: data`, the planner's for `plan: auto`, or the file's.
    public func resolvePlan() throws -> Plan? {
        switch spec.plan {
        case JobSpec.dataParallelPlan: return nil
        case JobSpec.automaticPlan:
            guard let automaticPlanner else {
                throw MedleyError(.invalidArgument, "plan: auto needs the planner, which this launcher was built without")
            }
            return try automaticPlanner(spec)
        default: return try Plan.load(path: spec.plan)
        }
    }

    /// Checks the job without starting any rank; throws one line naming what is wrong and what to do.
    @discardableResult
    public func preflight() throws -> [RankPreview] {
        try preflight(plan: try resolvePlan())
    }

    /// ``preflight()`` for an already resolved plan (nil: data parallelism with measured shares).
    @discardableResult
    public func preflight(plan: Plan?) throws -> [RankPreview] {
        try spec.validate()
        if let steps, steps < 0 || (steps == 0 && checkpointDirectory == nil && weightsPath == nil && !checkpointsLater) {
            throw MedleyError(
                .invalidArgument,
                "--steps must be at least 1 (or 0 with --checkpoint-dir or --save-weights, to write the initial state), got \(steps)")
        }
        guard timeoutSeconds > 0 else { throw MedleyError(.invalidArgument, "--timeout must be at least 1 second, got \(timeoutSeconds)") }
        try schedule.validate(steps: steps ?? spec.train.steps)
        // Every file the job writes, before any step runs: a job must not train for hours and
        // then fail to save.
        for (path, flag) in [(logPath, "--log"), (weightsPath, "--save-weights"), (timelinePath, "--timeline")] {
            if let path { try OutputPaths.checkWritable(path, flag: flag) }
        }
        if let weightsPath { try OutputPaths.checkWritable(weightsPath + ".json", flag: "--save-weights") }
        if let checkpointDirectory { try OutputPaths.checkWritableDirectory(checkpointDirectory, flag: "--checkpoint-dir") }
        if let initFrom = spec.train.initFrom, resumePath == nil {
            do {
                let found = try CheckpointStore.resolve(initFrom)
                _ = try found.checkpoint.flat(for: ParameterLayout(config: RankCapacity.modelConfig(spec.model, batch: 1)))
            } catch let error as MedleyError {
                throw MedleyError(error.code, "train.init_from: " + error.message)
            }
        }
        if let resumePath {
            // Before any rank starts: a checkpoint that is not there, or is of another model, is one line now.
            let found = try CheckpointStore.resolve(resumePath)
            let layout = ParameterLayout(config: RankCapacity.modelConfig(spec.model, batch: 1))
            _ = try found.checkpoint.flat(for: layout)
            let total = steps ?? spec.train.steps
            guard found.checkpoint.step < total else {
                throw MedleyError(
                    .invalidArgument,
                    "the checkpoint in \(found.path) is at step \(found.checkpoint.step), and this run has \(total) steps; nothing is left to train (raise --steps or train.steps)")
            }
        }

        if let plan {
            try plan.validate(blocks: spec.model.layers, devices: spec.rankCount, globalBatch: spec.model.globalBatch)
            if !schedule.isEmpty || spec.train.shares != nil {
                throw MedleyError(
                    .invalidArgument,
                    "--shares and train.shares apply to plan: data; this job runs a plan, whose replicas' samples are in the plan")
            }
        }
        var previews: [RankPreview] = []
        var memories: [UInt64] = []
        var libraries: [String: AdapterLibrary] = [:]
        // A job across hosts: each chip as its own host saw it (HostPreflight), not opened here.
        var probes = hostProbes
        if spec.isMultiHost && probes?.count != spec.rankCount {
            probes = try HostPreflight.run(job: spec, program: ChildProcess.currentExecutable)
        }
        if spec.isMultiHost, let probes, let first = HostPreflight.problems(probes, spec: spec).first {
            throw MedleyError(.notFound, "preflight: \(first.line)")
        }
        for rank in spec.rankDevices {
            let field = "devices[\(rank.entry)]"
            if spec.isMultiHost, let probe = probes?[rank.rank] {
                let label = RankSession.label(
                    rank: rank.rank, adapter: probe.adapter ?? rank.adapter, chip: probe.chip ?? "?", host: rank.host ?? probe.hostname)
                let memoryBytes = probe.memoryBytes ?? 0
                let capacity = RankCapacity.sequences(memoryBytes: memoryBytes, model: spec.model)
                if plan == nil && capacity < 1 {
                    throw MedleyError(.outOfMemory, "\(field): " + RankCapacity.tooSmall(label: label, memoryBytes: memoryBytes, model: spec.model))
                }
                previews.append(RankPreview(rank: rank.rank, label: label, capacity: capacity))
                memories.append(memoryBytes)
                continue
            }
            try CPUAffinity.check(rank.cpus, field: field + ".cpus")
            let library: AdapterLibrary
            if let loaded = libraries[rank.adapter] {
                library = loaded
            } else {
                do {
                    library = try AdapterLibrary.load(rank.adapter)
                } catch let error as MedleyError {
                    throw MedleyError(error.code, "\(field).adapter: \(error.message)")
                }
                libraries[rank.adapter] = library
            }
            let device: Device
            do {
                let count = try library.deviceCount()
                guard count > 0 else {
                    throw MedleyError(.notFound, "adapter \(library.info.name) reports no devices on this host")
                }
                device = try library.openDevice(
                    rank.instance % count, options: rank.options.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
            } catch let error as MedleyError {
                throw MedleyError(error.code, "\(field) (\(rank.adapter)): \(error.message)")
            }
            let label = RankSession.label(rank: rank.rank, adapter: library.info.name, chip: device.description.name, host: nil)
            let capacity = RankCapacity.sequences(memoryBytes: device.description.memoryBytes, model: spec.model)
            try device.close()
            if plan != nil {
                previews.append(RankPreview(rank: rank.rank, label: label, capacity: capacity))
                memories.append(device.description.memoryBytes)
                continue
            }
            if capacity < 1 {
                throw MedleyError(
                    .outOfMemory,
                    "\(field): " + RankCapacity.tooSmall(label: label, memoryBytes: device.description.memoryBytes, model: spec.model))
            }
            previews.append(RankPreview(rank: rank.rank, label: label, capacity: capacity))
        }
        try refuseUncheckedAdapters()
        if let plan {
            try checkMemory(plan: plan, previews: previews, memories: memories)
            try checkData()
            return previews
        }
        let total = previews.reduce(0) { $0 + $1.capacity }
        if total < spec.model.globalBatch {
            let each = previews.map { "\($0.label): \($0.capacity)" }.joined(separator: ", ")
            throw MedleyError(
                .outOfMemory,
                "model.batch: the devices hold \(total) sequences in all (\(each)) but the global batch is \(spec.model.globalBatch); lower model.batch, shrink the model or give the devices more memory"
            )
        }
        let caps = previews.map(\.capacity)
        try schedule.validate(ranks: spec.rankCount, globalBatch: spec.model.globalBatch, caps: caps)
        if let fixed = spec.train.shares, let r = fixed.indices.first(where: { fixed[$0] > caps[$0] }) {
            throw MedleyError(
                .outOfMemory,
                "train.shares: \(previews[r].label) is given \(fixed[r]) sequences but its memory holds at most \(caps[r]); lower its share")
        }
        try checkData()
        return previews
    }

    /// A job across hosts: asks every rank's host about its chip (``HostPreflight``) and returns
    /// this launcher with the answers, after naming each host that cannot take part in one line.
    /// A data-parallel job without fixed shares trains without those chips; any other job (a
    /// plan or fixed shares name every chip), or one left without chips, fails with one line.
    func withHostsChecked(program: String, plan: Plan?, print: (String, _ isError: Bool) -> Void) throws -> TrainLauncher {
        var launcher = self
        let probes = try HostPreflight.run(job: spec, program: program)
        launcher.hostProbes = probes
        let problems = HostPreflight.problems(probes, spec: spec)
        guard !problems.isEmpty else { return launcher }
        let out = Set(problems.map(\.rank))
        let droppable = plan == nil && spec.train.shares == nil && schedule.isEmpty && out.count < spec.rankCount
        guard droppable else {
            let more = problems.count > 1 ? " (and \(problems.count - 1) more)" : ""
            let why = out.count == spec.rankCount
                ? "no chip is left to train on" : "the job's plan or fixed shares name every chip"
            throw MedleyError(.notFound, "preflight: \(problems[0].line)\(more); the job cannot start: \(why)")
        }
        for problem in problems { print("preflight: \(problem.line)", true) }
        let kept = spec.rankDevices.filter { !out.contains($0.rank) }
        launcher.spec.devices = kept.map {
            JobSpec.Device(adapter: $0.adapter, options: $0.options, count: 1, cpus: $0.cpus, host: $0.host)
        }
        launcher.hostProbes = kept.enumerated().map { index, rank in
            var probe = probes[rank.rank]
            probe.rank = index
            return probe
        }
        print("preflight: training on the other \(kept.count) of \(spec.rankCount) chips", true)
        return launcher
    }

    /// The corpus exists and is long enough for the split.
    func checkData() throws {
        let dataset = try ByteDataset(path: spec.data.path)
        _ = try TrainValidationSplit(
            dataset: dataset, sequenceLength: spec.model.seq, validationFraction: spec.data.validationFraction)
    }

    /// Every stage of `plan` fits its device: parameters, gradients, AdamW moments, one
    /// activation slot per microbatch in flight (with the plan's slack) and one microbatch of
    /// activation gradients.
    func checkMemory(plan: Plan, previews: [RankPreview], memories: [UInt64]) throws {
        for (r, replica) in plan.replicas.enumerated() {
            for (s, stage) in replica.stages.enumerated() {
                let inFlight = plan.inFlight(replica: r, stage: s)
                let needed = RankCapacity.stageBytes(spec.model, plan: plan, layers: stage.layers, inFlight: inFlight)
                let memory = memories[stage.device]
                if UInt64(needed) > memory {
                    throw MedleyError(
                        .outOfMemory,
                        "plan: \(previews[stage.device].label) cannot hold planning layers \(stage.firstLayer)..<\(stage.endLayer) with \(inFlight) microbatch(es) of \(plan.microbatchSize) in flight: it needs \(ByteCount.describe(UInt64(needed))) but has \(ByteCount.describe(memory)), \(ByteCount.describe(UInt64(needed) - memory)) short; give it fewer layers or a smaller microbatch\(plan.slack > 0 && inFlight > 1 ? ", or plan with a lower train.pipeline_slack" : "")")
                }
            }
        }
    }

    /// Runs the job under mpirun and returns its exit status (0 = trained every step).
    ///
    /// `program` is the `medley` executable the ranks run; `print` receives what the user sees.
    public func run(program: String, print: @escaping (String, _ isError: Bool) -> Void) throws -> Int32 {
        try run(program: program, resolvedPlan: try resolvePlan(), print: print)
    }

    /// ``run(program:print:)`` with the plan already resolved (``resolvePlan()``): nil runs data parallel.
    public func run(program: String, resolvedPlan: Plan?, print: @escaping (String, _ isError: Bool) -> Void) throws -> Int32 {
        if spec.isMultiHost && hostProbes?.count != spec.rankCount {
            return try withHostsChecked(program: program, plan: resolvedPlan, print: print)
                .run(program: program, resolvedPlan: resolvedPlan, print: print)
        }
        let plan = resolvedPlan
        try preflight(plan: plan)
        for line in uncheckedAdapterWarnings() { print(line, true) }
        let directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("medley-train-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let jobFile = directory.appendingPathComponent("job.yaml").path
        var job = spec
        var ranks = spec.rankCount
        if var plan {
            // Devices the plan leaves out are not started: the ranks are the used devices, renumbered.
            let used = plan.usedDevices.sorted()
            if used.count < spec.rankCount {
                let all = spec.rankDevices
                job.devices = used.map {
                    JobSpec.Device(adapter: all[$0].adapter, options: all[$0].options, count: 1, cpus: all[$0].cpus, host: all[$0].host)
                }
                plan = plan.renumbered(Dictionary(uniqueKeysWithValues: used.enumerated().map { ($1, $0) }))
                for out in plan.leftOut { print("plan: device \(out.device) (\(out.chip)) is left out: \(out.reason)", false) }
            }
            ranks = used.count
            let planFile = directory.appendingPathComponent("plan.json")
            try plan.jsonData().write(to: planFile, options: .atomic)
            job.plan = planFile.path
        }
        try job.yamlString().write(toFile: jobFile, atomically: true, encoding: .utf8)

        var arguments = ["worker", "--job", jobFile]
        if let steps { arguments += ["--steps", String(steps)] }
        if let logPath { arguments += ["--log", URL(fileURLWithPath: logPath).standardizedFileURL.path] }
        if let weightsPath { arguments += ["--save-weights", URL(fileURLWithPath: weightsPath).standardizedFileURL.path] }
        if let timelinePath { arguments += ["--timeline", URL(fileURLWithPath: timelinePath).standardizedFileURL.path] }
        if let checkpointDirectory { arguments += ["--checkpoint-dir", URL(fileURLWithPath: checkpointDirectory).standardizedFileURL.path] }
        if let resumePath { arguments += ["--resume", URL(fileURLWithPath: resumePath).standardizedFileURL.path] }
        // The ranks stop waiting on each other a little before mpirun's --timeout, so a hung
        // rank is named by the others instead of everything being killed without a word.
        let margin = min(30, max(2, Double(timeoutSeconds) / 10))
        arguments += ["--deadline", String(format: "%.3f", Date().timeIntervalSince1970 + Double(timeoutSeconds) - margin)]
        arguments += schedule.arguments
        let filter = LauncherOutputFilter(verbose: verbose, print: print)
        var mpirun = MPIRun(ranks: ranks, timeoutSeconds: timeoutSeconds, extraArguments: mpirunArguments, environment: environment)
        if SlurmSignal.insideJob { mpirun.shieldingExecutable = program }
        mpirun.place(job)
        let outcome = try mpirun
            .run(program: program, arguments: arguments, forwardSignals: true, askToStop: askToStop,
                 abortWhen: abortReason.map { reason in { reason() != nil } }, onOutput: { filter.feed($0) })
        filter.finish()
        onOutcome?(outcome)
        if outcome.aborted {
            print("Error: the job was ended: \(abortReason?() ?? "the supervisor ended it")", true)
            return 1
        }
        if let signal = outcome.interruptedBy {
            let name = [SIGINT: "SIGINT", SIGTERM: "SIGTERM", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
            if outcome.status == 0 && checkpointDirectory != nil {
                print("stopped by \(name): every rank stopped together at a step boundary and wrote a checkpoint; the job is resumable (--resume)", true)
                return Self.resumableExitStatus
            } else if outcome.status == 0 {
                print("Error: stopped by \(name): every rank stopped together at a step boundary and wrote its records; the job did not finish", true)
            } else {
                print("Error: stopped by \(name): mpirun and every rank were ended; the job did not finish", true)
            }
            return 128 + signal
        }
        if let signal = outcome.killedFromOutside {
            let name = [SIGKILL: "SIGKILL", SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGHUP: "SIGHUP"][signal] ?? "signal \(signal)"
            let resume = checkpointDirectory.map { "; the newest whole checkpoint in \($0) resumes it (--resume)" } ?? ""
            print("Error: mpirun was killed by \(name) from outside; every rank it started was ended\(resume)", true)
            return 128 + signal
        }
        if outcome.status != 0 && !filter.sawError {
            if outcome.killedAtDeadline || outcome.output.contains("timeout") && outcome.output.contains("--timeout") {
                print("Error: the job ran past --timeout \(timeoutSeconds) s and was stopped; raise --timeout for longer jobs", true)
            } else {
                let said = filter.firstRuntimeLine.map { "; Open MPI said: \"\($0)\"" } ?? ""
                print(
                    "Error: the training job failed (mpirun exit status \(outcome.status))\(said); rerun with --verbose to see Open MPI's output",
                    true)
            }
        }
        return outcome.status
    }
}

/// Passes rank output through line by line, dropping Open MPI's banners (unless verbose) and
/// repeated error lines (every rank may report the same collective failure).
final class LauncherOutputFilter {
    let verbose: Bool
    let print: (String, Bool) -> Void
    private var partial = ""
    private var inBanner = false
    private var errors = Set<String>()
    private(set) var sawError = false
    /// The first line of Open MPI's own messages that was not shown (the gist of a failure
    /// in mpirun itself, named in the launcher's one-line error).
    private(set) var firstRuntimeLine: String?

    init(verbose: Bool, print: @escaping (String, Bool) -> Void) {
        self.verbose = verbose
        self.print = print
    }

    func feed(_ text: String) {
        partial += text
        while let newline = partial.firstIndex(of: "\n") {
            let line = String(partial[..<newline])
            partial = String(partial[partial.index(after: newline)...])
            handle(line)
        }
    }

    func finish() {
        if !partial.isEmpty { handle(partial) }
        partial = ""
    }

    private func handle(_ line: String) {
        if line.hasPrefix("Error:") {
            sawError = true
            // The same failure reported by several ranks: show it once.
            let key = line.replacingOccurrences(of: #"rank \d+( \([^)]*\))?: "#, with: "", options: .regularExpression)
            if errors.insert(key).inserted { print(line, true) }
            return
        }
        if verbose {
            print(line, false)
            return
        }
        if line.count >= 20 && line.allSatisfy({ $0 == "-" }) {
            inBanner.toggle()
            return
        }
        if inBanner {
            remember(line)
            return
        }
        // "[host:12345] …" lines are Open MPI's runtime talking.
        if Self.isRuntimeLine(line) {
            remember(line)
            return
        }
        print(line, false)
    }

    /// Whether `line` starts "[host:12345] " (by hand: a regular expression per line of a fast
    /// job's output was most of the launcher's CPU).
    static func isRuntimeLine(_ line: String) -> Bool {
        let utf8 = line.utf8
        guard utf8.first == UInt8(ascii: "["), let close = utf8.firstIndex(of: UInt8(ascii: "]")) else { return false }
        let after = utf8.index(after: close)
        guard after < utf8.endIndex, utf8[after] == UInt8(ascii: " ") else { return false }
        let inside = utf8[utf8.index(after: utf8.startIndex)..<close]
        guard let colon = inside.lastIndex(of: UInt8(ascii: ":")), colon > inside.startIndex else { return false }
        let digits = inside[inside.index(after: colon)...]
        return !digits.isEmpty && digits.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
    }

    private func remember(_ line: String) {
        let text = line.trimmingCharacters(in: .whitespaces)
        if firstRuntimeLine == nil && !text.isEmpty { firstRuntimeLine = text }
    }
}
