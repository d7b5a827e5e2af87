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
                try JobProfiles.load(spec: $0).plan(globalBatch: $0.model.globalBatch, options: Planner.Options(slack: $0.train.pipelineSlack))
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
