import Foundation
import MedleyCore

/// `medley launch --slurm`: writes a batch script that runs `medley launch` as a Slurm job step,
/// submits it with `sbatch`, and follows the job (its state, requeues and output) until it ends.
///
/// The step is what makes preemption safe: Slurm sends SIGTERM to every process of the job's
/// steps as soon as it decides to preempt (the batch shell itself only when the grace time is
/// over), so `medley launch`, the ranks and mpirun hear it at once. The ranks stop together at
/// the next step boundary and checkpoint into the run directory; `medley launch` exits as
/// resumable (75). With `PreemptMode=REQUEUE` Slurm puts the job back in the queue, and when it
/// runs again the same script starts `medley launch` on the same run directory, which continues
/// from its newest checkpoint (docs/cluster.md, "Slurm").
public struct SlurmJob {
    /// The partition (`sbatch --partition`); nil = the cluster's default.
    public var partition: String?
    /// The time limit (`sbatch --time`, e.g. `2:00:00`); nil = the partition's.
    public var time: String?
    /// CPUs for the job's one task (its ranks share them).
    public var cpus: Int
    /// More `sbatch` arguments, as given.
    public var extraArguments: [String]

    public init(partition: String? = nil, time: String? = nil, cpus: Int = 1, extraArguments: [String] = []) {
        self.partition = partition
        self.time = time
        self.cpus = cpus
        self.extraArguments = extraArguments
    }

    /// The batch script: `medley launch` with `launchArguments` on `runDirectory`, as one step.
    public func script(medley: String, launchArguments: [String], runDirectory: String, jobName: String) -> String {
        func quote(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        var lines = [
            "#!/bin/bash",
            "# Written by medley launch --slurm. Each run (the first, and every requeue) starts",
            "# medley launch on the same run directory, which continues from its newest checkpoint.",
            "#SBATCH --job-name=\(jobName)",
            "#SBATCH --output=\(runDirectory)/slurm-%j.out",
            "#SBATCH --open-mode=append",
            "#SBATCH --requeue",
            "#SBATCH --ntasks=1",
            "#SBATCH --cpus-per-task=\(cpus)",
        ]
        if let partition { lines.append("#SBATCH --partition=\(partition)") }
        if let time { lines.append("#SBATCH --time=\(time)") }
        lines += [
            "echo \"medley: Slurm job $SLURM_JOB_ID, run ${SLURM_RESTART_COUNT:-0}, on $(hostname), $(date -u +%FT%TZ)\"",
            "# As a step, so that Slurm's early SIGTERM (preemption, scancel, time limit) reaches medley.",
            "srun --ntasks=1 --cpus-per-task=\(cpus) --mpi=none --kill-on-bad-exit=1 "
                + ([medley, "launch"] + launchArguments + ["--run-dir", runDirectory]).map(quote).joined(separator: " "),
            "status=$?",
            "echo \"medley: medley launch exited with status $status\"",
            "# 75: every rank stopped at a step boundary and checkpointed (Slurm's SIGTERM: preemption,",
            "# the time limit). Back in the queue; the next run continues from that checkpoint. (After an",
            "# scancel the job is already ending and the requeue is refused.)",
            "if [ \"$status\" -eq 75 ] && scontrol requeue \"$SLURM_JOB_ID\"; then",
            "  echo \"medley: requeued job $SLURM_JOB_ID\"",
            "  sleep 60  # Slurm ends this run now",
            "fi",
            "exit $status",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    /// Submits `scriptPath` and returns the job id.
    public func submit(scriptPath: String) throws -> Int {
        let sbatch = try Self.tool("sbatch")
        let result = try ChildProcess.run(sbatch, ["--parsable"] + extraArguments + [scriptPath], timeoutSeconds: 60)
        guard result.status == 0 else {
            let said = result.output.split(separator: "\n").first.map(String.init) ?? "exit status \(result.status)"
            throw MedleyError(.invalidArgument, "sbatch refused the job: \(said)")
        }
        let text = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let id = Int(text.split(separator: ";").first ?? "") else {
            throw MedleyError(.internalError, "sbatch printed '\(text)', not a job id")
        }
        return id
    }

    /// What `scontrol show job` says of a job.
    public struct State: Equatable, Sendable {
        public var state: String
        public var restarts: Int
        public var exitCode: String
        public var reason: String
    }

    /// The job's state, or nil once Slurm no longer knows it.
    public static func state(of id: Int) throws -> State? {
        let result = try ChildProcess.run(try tool("scontrol"), ["show", "job", "-o", String(id)], timeoutSeconds: 30)
        guard result.status == 0 else { return nil }
        return parse(showJob: result.stdout)
    }

    /// Reads `scontrol show job -o` output (one line of Key=Value fields).
    static func parse(showJob text: String) -> State? {
        var fields: [String: String] = [:]
        for word in text.split(whereSeparator: \.isWhitespace) {
            guard let equals = word.firstIndex(of: "=") else { continue }
            let key = String(word[..<equals])
            if fields[key] == nil { fields[key] = String(word[word.index(after: equals)...]) }
        }
        guard let state = fields["JobState"] else { return nil }
        return State(
            state: state, restarts: Int(fields["Restarts"] ?? "0") ?? 0, exitCode: fields["ExitCode"] ?? "0:0",
            reason: fields["Reason"] ?? "None")
    }

    /// States a job does not leave.
    static let finalStates: Set<String> = [
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
    ]

    /// Follows job `id` until it ends: prints its state changes and requeues, and the lines its
    /// output file (`outputPath`) gains; returns 0 when it completed, else 1. `stop` ends the
    /// following early (the job keeps running).
    public static func follow(
        _ id: Int, outputPath: String, poll: Double = 1, stop: () -> Bool = { false }, print: (String, Bool) -> Void
    ) throws -> Int32 {
        var last: State?
        var offset: UInt64 = 0
        var pending = ""
        func drainOutput() {
            guard let handle = FileHandle(forReadingAtPath: outputPath) else { return }
            defer { try? handle.close() }
            try? handle.seek(toOffset: offset)
            let data = handle.readDataToEndOfFile()
            offset += UInt64(data.count)
            pending += String(decoding: data, as: UTF8.self)
            while let newline = pending.firstIndex(of: "\n") {
                print(String(pending[..<newline]) + "\n", false)
                pending = String(pending[pending.index(after: newline)...])
            }
        }
        var misses = 0
        while !stop() {
            drainOutput()
            guard let now = try state(of: id) else {
                // Gone from Slurm's memory (MinJobAge): its last state stands.
                misses += 1
                if misses < 3 {
                    Thread.sleep(forTimeInterval: poll)
                    continue
                }
                guard let last else { throw MedleyError(.notFound, "Slurm does not know job \(id)") }
                return last.state == "COMPLETED" && last.exitCode == "0:0" ? 0 : 1
            }
            misses = 0
            if now.restarts > (last?.restarts ?? 0) {
                print("slurm: job \(id) was requeued (restart \(now.restarts), \(now.reason)); when it runs again it continues from its newest checkpoint\n", true)
            }
            if now.state != last?.state {
                print("slurm: job \(id) is \(now.state)\(now.reason == "None" ? "" : " (\(now.reason))")\n", false)
            }
            last = now
            if finalStates.contains(now.state) {
                drainOutput()
                if now.state == "COMPLETED" && now.exitCode == "0:0" { return 0 }
                print("Error: Slurm job \(id) ended \(now.state) (exit code \(now.exitCode)); its output is in \(outputPath)\n", true)
                return 1
            }
            Thread.sleep(forTimeInterval: poll)
        }
        return 0
    }

    /// A Slurm client program on PATH.
    static func tool(_ name: String) throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw MedleyError(.notFound, "\(name) not found on PATH: --slurm needs Slurm's client commands (Debian: slurm-client)")
    }
}
