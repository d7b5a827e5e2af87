import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

/// `medley launch --slurm` on a private one-node Slurm cluster (scripts/cluster/slurm-cluster.sh:
/// slurmctld, slurmd and munged started for the test under a temporary directory, two partitions,
/// `low` preemptible with REQUEUE): the job runs as a step, a high-priority job preempts it, it
/// checkpoints within the grace time, is requeued, resumes, and ends bitwise equal to a run that
/// was never interrupted.
@Suite(
    "medley launch under Slurm", .serialized,
    .enabled(if: geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/slurmctld"), "needs root and slurm-wlm"))
struct SlurmTests {
    static let scripts = TestSupport.repositoryRoot + "/scripts/cluster"

    @Test("preempted by a high-priority job, it checkpoints, is requeued, resumes and finishes bitwise equal to an uninterrupted run")
    func preemptRequeueResume() throws {
        let dir = try TestSupport.temporaryDirectory("medley-slurm")
        let cluster = dir + "/cluster"
        let port = 7100 + Int(getpid() % 400) * 2
        let up = try TestSupport.run(
            "/bin/bash", [Self.scripts + "/slurm-cluster.sh", "up", "--dir", cluster, "--port", String(port), "--requeue-delay", "5"],
            timeout: 60)
        defer { _ = try? TestSupport.run("/bin/bash", [Self.scripts + "/slurm-cluster.sh", "down", "--dir", cluster], timeout: 60) }
        try #require(up.status == 0, "\(up.output)")
        var settings = ["SLURM_CONF": cluster + "/slurm.conf", "MEDLEY_CACHE_DIR": dir + "/cache"]
        settings["PATH"] = ProcessInfo.processInfo.environment["PATH"]
        let environment = settings

        let job = dir + "/job.yaml"
        try """
            name: slurmjob
            model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}
            train: {steps: 150, lr: 0.003, warmup_steps: 3, rebalance_every: 0, eval_every: 0, checkpoint_every: 10, shares: [8, 4], log_examples: true}
            devices: [cpu, {adapter: sim, options: {vendor: Acme, speed: 0.25}}]
            """.write(toFile: job, atomically: true, encoding: .utf8)

        // The same job, never interrupted, outside Slurm.
        let reference = try TestSupport.medley(
            ["launch", job, "--run-dir", dir + "/reference", "--save-weights", dir + "/reference.bin", "--quiet"],
            environment: environment, timeout: 180)
        try #require(reference.status == 0, "\(reference.output)")

        // Submitted to the low partition and followed, in the background.
        let run = dir + "/run"
        let followed = LockedValue<ChildProcess.Outcome?>(nil)
        let follower = Thread {
            followed.set(try? ChildProcess.run(
                TestSupport.medleyExecutable,
                ["launch", job, "--slurm", "--partition", "low", "--slurm-cpus", "1", "--run-dir", run,
                 "--save-weights", dir + "/slurm.bin", "--quiet"],
                environment: environment, timeoutSeconds: 240, mergeOutput: true))
        }
        follower.start()
        // Once it has trained 30 steps: a job in the high partition that needs the whole node.
        let deadline = Date().addingTimeInterval(120)
        var trained = 0
        while Date() < deadline && trained < 30 {
            trained = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").count
            Thread.sleep(forTimeInterval: 0.05)
        }
        try #require(trained >= 30, "the Slurm job never trained 30 steps")
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let high = try TestSupport.run(
            "/usr/bin/sbatch", ["-p", "high", "--cpus-per-task=\(cpus)", "--output", dir + "/high-%j.out", "--wrap", "sleep 3"], environment: environment, timeout: 30)
        #expect(high.status == 0, "\(high.output)")
        while followed.get() == nil && Date() < deadline.addingTimeInterval(120) { Thread.sleep(forTimeInterval: 0.1) }
        let outcome = try #require(followed.get(), "medley launch --slurm did not finish")
        let output = outcome.stdout
        #expect(outcome.status == 0, "\(output)")
        #expect(output.contains("submitted Slurm job"), "\(output)")
        #expect(output.contains("stopped by SIGTERM: every rank stopped together at a step boundary and wrote a checkpoint"), "\(output)")
        #expect(output.contains("was requeued (restart 1"), "\(output)")
        #expect(output.contains("is COMPLETED"), "\(output)")

        // Nothing lost: every step once, every sample once, and the same parameters to the bit.
        let records = try StepRecord.read(jsonLines: String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8))
        let uninterrupted = try StepRecord.read(jsonLines: String(contentsOfFile: dir + "/reference/steps.jsonl", encoding: .utf8))
        #expect(records.map(\.step) == Array(1...150))
        #expect(records.map(\.examples) == uninterrupted.map(\.examples), "the same samples, in the same steps")
        let weights = try Data(contentsOf: URL(fileURLWithPath: dir + "/slurm.bin"))
        let expected = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference.bin"))
        #expect(!weights.isEmpty && weights == expected, "parameters differ from the uninterrupted run")
    }
}
