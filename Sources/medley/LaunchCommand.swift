import ArgumentParser
import Foundation
import MedleyCore
import MedleyLaunch
import MedleyPlanner
import MedleyProfile
import MedleyTrain

/// `medley launch`: the job under a supervisor that watches every rank over a control channel.
struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train JOB (or the built-in mixed job) under a supervisor: a run directory, heartbeats, alerts, a summary.",
        discussion: """
            Checks and plans the job as `medley train` does, makes a run directory (job.yaml, plan.json, \
            steps.jsonl, alerts.jsonl, summary.json), opens a TCP control channel with a random token, \
            and starts one rank per chip under mpirun. Every rank says hello (rank, chip, adapter, host, \
            pid) and heart-beats every second from a thread of its own; a rank that stops beating, \
            reports a fault or whose process disappears raises one alert line naming its rank, chip and \
            host. See docs/launch.md.
            """)

    @Argument(help: "A YAML job spec; leave out for the built-in mixed job.")
    var job: String?

    @Option(parsing: .unconditional, help: "Run this many steps instead of train.steps.")
    var steps: Int?

    @Option(help: "The run directory (default runs/<job>-<UTC time>).")
    var runDir: String?

    @Option(parsing: .unconditional, help: "TCP port of the control channel (0: any free port).")
    var controlPort = 0

    @Option(help: "Seconds without a heartbeat (or without progress) before a rank is reported silent (default supervise.heartbeat_timeout, 10).")
    var heartbeatTimeout: Double?

    @Option(parsing: .unconditional, help: "Serve /metrics and the status page on this port (default supervise.metrics_port; 0: not served).")
    var metricsPort: Int?

    @Flag(help: "Show only errors, alerts and the summary.")
    var quiet = false

    @Option(help: "Write the final weights here (float32, layout order; FILE.json names the tensors).")
    var saveWeights: String?

    @Option(parsing: .unconditional, help: "Stop the job after this many seconds (mpirun --timeout).")
    var timeout = 6 * 3600

    @Flag(help: "Show Open MPI's own messages too.")
    var verbose = false

    @Option(help: "Continue a run: its run directory (its job.yaml unless JOB is given; its newest checkpoint that verifies), a checkpoints directory or one step-… checkpoint.")
    var resume: String?

    @Flag(help: "Submit the job to Slurm (sbatch) as a requeueable batch job whose step runs medley launch, and follow it.")
    var slurm = false

    @Option(help: "With --slurm: the partition.")
    var partition: String?

    @Option(name: .customLong("time"), help: "With --slurm: the time limit (sbatch --time, e.g. 2:00:00).")
    var timeLimit: String?

    @Option(help: "With --slurm: CPUs for the job (its ranks share them; default one per rank).")
    var slurmCpus: Int?

    @Option(help: "With --slurm: one more sbatch argument (repeatable), e.g. --sbatch-arg=--qos=low.")
    var sbatchArg: [String] = []

    @Flag(help: "With --slurm: submit and print the job id, without following the job.")
    var noFollow = false

    func run() throws {
        guard (0...65535).contains(controlPort) else {
            throw MedleyError(.invalidArgument, "--control-port must be 0 to 65535, got \(controlPort)")
        }
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw MedleyError(.invalidArgument, "--metrics-port must be 0 (not served) to 65535, got \(metricsPort)")
        }
        // --resume RUN_DIR: that run's spec and directory, unless given.
        var jobPath = job
        var runDirectory = runDir
        if let resume, FileManager.default.fileExists(atPath: resume + "/job.yaml") {
            if jobPath == nil { jobPath = resume + "/job.yaml" }
            if runDirectory == nil { runDirectory = resume }
        }
        let spec = try JobSpec.load(path: jobPath)
        if slurm { return try submitToSlurm(spec: spec, runDirectory: runDirectory) }
        if partition != nil || timeLimit != nil || slurmCpus != nil || !sbatchArg.isEmpty || noFollow {
            throw MedleyError(.invalidArgument, "--partition, --time, --slurm-cpus, --sbatch-arg and --no-follow go with --slurm")
        }
        var supervise = spec.supervise
        if let heartbeatTimeout { supervise.heartbeatTimeout = heartbeatTimeout }
        if let metricsPort { supervise.metricsPort = metricsPort }
        do {
            try supervise.validate()
        } catch let error as MedleyError {
            let flag = error.message.contains("heartbeat_timeout") && heartbeatTimeout != nil ? "--heartbeat-timeout (" : nil
            throw flag.map { MedleyError(error.code, $0 + error.message + ")") } ?? error
        }
        let launcher = TrainLauncher(
            spec: spec, steps: steps, weightsPath: saveWeights, timeoutSeconds: timeout, verbose: verbose, resumePath: resume,
            automaticPlanner: {
                try JobProfiles.load(spec: $0, options: .atLaunch).plan(globalBatch: $0.model.globalBatch, options: Planner.Options(slack: $0.train.pipelineSlack))
            })
        let status = try JobLauncher(
            launcher: launcher, runDirectory: runDirectory, controlPort: controlPort, supervise: supervise,
            mode: LaunchConsole.mode(quiet: quiet)
        ).run(program: ChildProcess.currentExecutable) { text, isError in
            (isError ? FileHandle.standardError : FileHandle.standardOutput).write(Data(text.utf8))
        }
        if status != 0 { throw ExitCode(status > 128 || status == TrainLauncher.resumableExitStatus ? status : 1) }
    }
}

extension Launch {
    /// `--slurm`: the run directory and a batch script in it, `sbatch`, then the job followed.
    func submitToSlurm(spec: JobSpec, runDirectory: String?) throws {
        if resume != nil { throw MedleyError(.invalidArgument, "--resume does not go with --slurm: give --run-dir of the run to continue") }
        if let slurmCpus, slurmCpus < 1 { throw MedleyError(.invalidArgument, "--slurm-cpus must be at least 1, got \(slurmCpus)") }
        func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: TimeZone(identifier: "UTC")!, formatOptions: [.withYear, .withMonth, .withDay, .withTime])
        let directory = absolute(runDirectory ?? "runs/\(spec.name)-slurm-\(stamp)")
        try JobLauncher.makeRunDirectory(directory)
        // The job as the batch job will read it, even if the file changes before it runs again:
        // the spec as loaded, whose paths relative to the job file are already resolved.
        let specPath = directory + "/slurm-job.yaml"
        try spec.yamlString().write(toFile: specPath, atomically: true, encoding: .utf8)
        var arguments = [specPath]
        if let steps { arguments += ["--steps", String(steps)] }
        if let heartbeatTimeout { arguments += ["--heartbeat-timeout", String(heartbeatTimeout)] }
        if let metricsPort { arguments += ["--metrics-port", String(metricsPort)] }
        if controlPort != 0 { arguments += ["--control-port", String(controlPort)] }
        if let saveWeights { arguments += ["--save-weights", absolute(saveWeights)] }
        if quiet { arguments.append("--quiet") }
        if verbose { arguments.append("--verbose") }
        arguments += ["--timeout", String(timeout)]
        let job = SlurmJob(partition: partition, time: timeLimit, cpus: slurmCpus ?? spec.rankCount, extraArguments: sbatchArg)
        let script = directory + "/slurm.sbatch"
        try CacheDirectory.writeAtomically(
            Data(job.script(medley: ChildProcess.currentExecutable, launchArguments: arguments, runDirectory: directory,
                            jobName: "medley-\(spec.name)").utf8), to: script)
        let id = try job.submit(scriptPath: script)
        print("submitted Slurm job \(id)\(partition.map { " to partition \($0)" } ?? ""); run directory \(directory)")
        if noFollow { return }
        print("following it (Ctrl-C stops following; the job goes on)")
        let interrupted = LockedInterrupt()
        let status = try SlurmJob.follow(id, outputPath: directory + "/slurm-\(id).out", stop: { interrupted.caught }) { text, isError in
            (isError ? FileHandle.standardError : FileHandle.standardOutput).write(Data(text.utf8))
        }
        if status != 0 { throw ExitCode(status) }
    }
}

/// Whether a Ctrl-C arrived while following a Slurm job (the job itself is not touched).
final class LockedInterrupt: @unchecked Sendable {
    // @unchecked: the flag is a LockedFlag; the source only keeps the handler alive.
    private let flag = LockedFlag()
    private let source: DispatchSourceSignal

    init() {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: DispatchQueue(label: "medley.slurm-follow"))
        source.setEventHandler { [flag] in flag.set() }
        source.resume()
    }

    var caught: Bool { flag.isSet }
}
