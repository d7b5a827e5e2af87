import ArgumentParser
import Foundation
import MedleyComm
import MedleyCore
import MedleyPlanner
import MedleyProfile
import MedleyTrain

/// `medley train`: run a job across this machine's chips under mpirun.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train one GPT across chips of different vendors (one MPI rank per chip).",
        discussion: """
            Runs JOB (a YAML job spec, see docs/job-spec.md) or, without one, the built-in mixed \
            job (one cpu chip and two simulated chips of different vendors and speeds) under \
            mpirun on this machine. Each rank measures its speed in a short warm-up; the global \
            batch is divided in proportion and re-divided every train.rebalance_every steps. One \
            line per step: step, loss, tokens/s, step time and each rank's share. --log writes \
            every step's record as JSON Lines.
            """)

    @Argument(help: "A YAML job spec; leave out for the built-in mixed job.")
    var job: String?

    // `.unconditional`: `--steps -5` is a bad value, not a missing one.
    @Option(parsing: .unconditional, help: "Run this many steps instead of train.steps.")
    var steps: Int?

    @Option(help: "Write one JSON record per step to this file (JSON Lines).")
    var log: String?

    @Option(
        name: .customLong("shares"),
        help: "Pin the shares: [STEP:]a,b,c gives rank i the i-th number of sequences from STEP (default 1) on. Repeatable."
    )
    var shares: [String] = []

    @Option(help: "Write the final weights here (float32, layout order; FILE.json names the tensors).")
    var saveWeights: String?

    @Option(help: "Write a timeline of every rank's spans here (Chrome trace JSON; open it in Perfetto).")
    var timeline: String?

    @Option(parsing: .unconditional, help: "Stop the job after this many seconds (mpirun --timeout).")
    var timeout = 6 * 3600

    @Option(help: "Write checkpoints here (every train.checkpoint_every steps and after the last; see docs/checkpoints.md).")
    var checkpointDir: String?

    @Option(help: "Resume from a checkpoint: one step-… directory, a directory of them, or a run directory (its newest that verifies).")
    var resume: String?

    @Flag(help: "Check the job (adapters, devices, memory, data) and print the ranks, without training.")
    var dryRun = false

    @Flag(help: "Show Open MPI's own messages too.")
    var verbose = false

    @Flag(help: "Print the built-in job's YAML and exit.")
    var printDefaultJob = false

    func run() throws {
        if printDefaultJob {
            print(JobSpec.defaultJobYAML, terminator: "")
            return
        }
        let spec = try JobSpec.load(path: job)
        let launcher = TrainLauncher(
            spec: spec, steps: steps, logPath: log, weightsPath: saveWeights, schedule: try SharesSchedule(parsing: shares),
            timeoutSeconds: timeout, verbose: verbose, timelinePath: timeline, checkpointDirectory: checkpointDir, resumePath: resume,
            automaticPlanner: {
                try JobProfiles.load(spec: $0, options: .atLaunch).plan(globalBatch: $0.model.globalBatch, options: Planner.Options(slack: $0.train.pipelineSlack))
            })
        if dryRun {
            let ranks = try launcher.preflight()
            for line in launcher.uncheckedAdapterWarnings() { FileHandle.standardError.write(Data((line + "\n").utf8)) }
            print("job \(spec.name): \(ranks.count) rank\(ranks.count == 1 ? "" : "s"), global batch \(spec.model.globalBatch) — ready to train")
            for rank in ranks { print("  \(rank.label): holds up to \(rank.capacity) sequences") }
            return
        }
        let status = try launcher.run(program: ChildProcess.currentExecutable) { line, isError in
            (isError ? FileHandle.standardError : FileHandle.standardOutput).write(Data((line + "\n").utf8))
        }
        if status != 0 { throw ExitCode(status > 128 || status == TrainLauncher.resumableExitStatus ? status : 1) }
    }
}

/// `medley worker`: one rank of a training job; `medley train` starts these under mpirun.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One rank of a training job (started by `medley train` under mpirun).",
        discussion: """
            Loads the rank's adapter and device from the job spec (rank r runs the r-th device), \
            builds the model and trains in step with the other ranks. Run `medley train` instead \
            of starting this by hand.
            """)

    @Option(help: "The job spec (YAML).")
    var job: String

    @Option(help: "Run this many steps instead of train.steps.")
    var steps: Int?

    @Option(help: "Rank 0 writes the step records here (JSON Lines).")
    var log: String?

    @Option(name: .customLong("shares"), help: "Pinned shares, [STEP:]a,b,c (repeatable).")
    var shares: [String] = []

    @Option(help: "Rank 0 writes the final weights here.")
    var saveWeights: String?

    @Option(help: "Rank 0 writes the timeline here (Chrome trace JSON).")
    var timeline: String?

    @Flag(help: "Do not print the per-step lines.")
    var quiet = false

    @Option(help: "Unix time at which the launcher stops the job; no wait on another rank lasts past it.")
    var deadline: Double?

    @Option(help: "Rank 0 writes checkpoints here.")
    var checkpointDir: String?

    @Option(help: "Resume from this checkpoint (or the newest that verifies in this directory).")
    var resume: String?

    func run() throws {
        let status = try WorkerMain.run(jobPath: job) { spec in
            RankSession.Options(
                spec: spec, steps: steps, logPath: log, schedule: try SharesSchedule(parsing: shares), printSteps: !quiet,
                weightsPath: saveWeights, timelinePath: timeline, deadline: deadline, checkpointDirectory: checkpointDir,
                resumePath: resume)
        }
        if status != 0 { throw ExitCode(status) }
    }
}
