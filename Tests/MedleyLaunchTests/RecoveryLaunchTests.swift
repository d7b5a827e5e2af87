import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

@testable import MedleyLaunch

/// `medley launch` of a spec in the background, its output in a file, its ranks found by a
/// private TMPDIR (`marker`); ``cleanUp()`` kills whatever of it is left.
final class BackgroundLaunch {
    let run: String, output: String, marker: String
    let process = Process()
    let handle: FileHandle

    init(_ yaml: String) throws {
        let (directory, job) = try LaunchTests.write(yaml)
        run = directory + "/run"
        output = directory + "/out.txt"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        marker = try TestSupport.temporaryDirectory("medley-launch-tmp")
        process.executableURL = URL(fileURLWithPath: TestSupport.medleyExecutable)
        process.arguments = ["launch", job, "--run-dir", run, "--timeout", "120"]
        process.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": marker]) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        do {
            try process.run()
        } catch {
            cleanUp()
            throw error
        }
    }

    /// Kills the launch if it still runs, then every rank of it, and removes the marker.
    func cleanUp() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for worker in LaunchTests.workers(marker: marker) { kill(worker.pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: marker)
    }
}

/// Recovery under `medley launch` beyond the data-parallel basics in ``LaunchTests``: jobs that
/// run a plan, chips that slow down, a NaN batch skipped, mpirun killed by hand.
@Suite("medley launch recovery", .serialized)
struct RecoveryLaunchTests {
    static func alerts(_ run: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: run + "/alerts.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    static func steps(_ run: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test("a job that runs a plan: the crashed chip is evicted, the planner plans anew for the spare, and every step is trained once")
    func planJobRecovers() throws {
        let yaml = """
            name: plan-recover-test
            plan: auto
            model: {layers: 4, dim: 128, heads: 4, seq: 16, batch: 4}
            train: {steps: 6, eval_every: 0, checkpoint_every: 2}
            devices:
              - adapter: sim
                options: {vendor: Acme, name: steady, kernels: cpu, memory: 10MiB}
              - adapter: sim
                options: {vendor: Acme, name: flaky, kernels: cpu, memory: 10MiB, fault: 'crash@step=3'}
            spares:
              - adapter: sim
                options: {vendor: Borealis, name: spare-1, kernels: cpu, memory: 10MiB}
            recovery: {max_restarts: 2, backoff: 0}

            """
        let (directory, job) = try LaunchTests.write(yaml)
        let run = directory + "/run"
        let result = try TestSupport.medley(
            ["launch", job, "--run-dir", run, "--timeout", "120", "--heartbeat-timeout", "3"],
            environment: ["MEDLEY_CACHE_DIR": directory + "/cache"], timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        // Neither chip holds the model alone: both are stages of a pipeline, before and after.
        #expect(result.output.components(separatedBy: "supervising 2 ranks").count == 3, "\(result.output)")
        let alerts = Self.alerts(run)
        let kinds = alerts.compactMap { $0["kind"] as? String }
        #expect(kinds.contains("exited") && kinds.contains("evicted") && kinds.contains("replaced"), "\(alerts)")
        #expect(result.output.contains("spare 0 (sim spare-1) takes the rank of device 1 (sim flaky)"), "\(result.output)")
        let steps = Self.steps(run).compactMap { $0["step"] as? Int }
        #expect(steps == [1, 2, 3, 4, 5, 6], "every step once: \(steps)")
        let plan = (try? String(contentsOfFile: run + "/plan.json", encoding: .utf8)) ?? ""
        #expect(plan.contains("spare-1") && !plan.contains("flaky"), "plan.json is the new plan: \(plan.prefix(400))")
    }

    @Test("a chip that slows down is swapped for a spare for its cooldown; the job finishes every step")
    func slowChipSwapped() throws {
        let yaml = """
            name: slow-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 30, eval_every: 0, checkpoint_every: 4, rebalance_every: 0, shares: [2, 2]}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: throttled, speed: 0.3, fault: 'slow:10@step=8'}
            spares:
              - adapter: sim
                options: {vendor: Borealis, name: spare-1, speed: 0.3}
            supervise: {straggler_steps: 2}
            recovery: {max_restarts: 2, backoff: 0, straggler_cooldown: 600}

            """
        let (directory, job) = try LaunchTests.write(yaml)
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120"], timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        let alerts = Self.alerts(run)
        let kinds = alerts.compactMap { $0["kind"] as? String }
        #expect(kinds.contains("slowdown") && kinds.contains("evicted") && kinds.contains("replaced"), "\(alerts)")
        #expect(result.output.contains("device 1 (sim throttled) is evicted") && result.output.contains("out for its cooldown of 600 s"),
                "\(result.output)")
        #expect(result.output.contains("spare 0 (sim spare-1) takes the rank of device 1 (sim throttled)"), "\(result.output)")
        let steps = Self.steps(run).compactMap { $0["step"] as? Int }
        #expect(steps == Array(1...30), "every step once: \(steps)")
    }

    @Test("recovery.on_nan: skip_batch skips the batch of a NaN step and goes on; the fourth in a row is a fault that rolls back")
    func nanSkipsBatch() throws {
        func yaml(_ faults: String) -> String {
            """
            name: nan-skip-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 8, eval_every: 0, checkpoint_every: 2, rebalance_every: 0, shares: [2, 2]}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: flaky, fault: '\(faults)'}
            recovery: {max_restarts: 1, backoff: 0, on_nan: skip_batch}

            """
        }
        let (directory, job) = try LaunchTests.write(yaml("nan@step=3"))
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120"], timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("step 3: rank 1 (sim flaky) computed a non-finite loss"), "\(result.output)")
        #expect(result.output.contains("its batch is skipped (recovery.on_nan: skip_batch)"), "\(result.output)")
        let kinds = Self.alerts(run).compactMap { $0["kind"] as? String }
        #expect(kinds.filter { $0 != "straggler" && $0 != "recovered" } == ["skipped"], "one skipped alert, no restart: \(kinds)")
        let records = Self.steps(run)
        #expect(records.compactMap { $0["step"] as? Int } == Array(1...8))
        #expect(records.filter { $0["skipped"] != nil }.compactMap { $0["step"] as? Int } == [3], "\(records)")

        // NaN on four steps in a row: three are skipped, the fourth rolls back to the checkpoint.
        let (again, job2) = try LaunchTests.write(yaml("nan@step=3;nan@step=4;nan@step=5;nan@step=6"))
        let run2 = again + "/run"
        let second = try TestSupport.medley(["launch", job2, "--run-dir", run2, "--timeout", "120"], timeout: 240)
        #expect(second.output.contains("3 batches in a row skipped already"), "\(second.output)")
        #expect(second.output.contains("recovery: restart 1 on 2 chips"), "\(second.output)")
        #expect(!second.output.contains("is evicted"), "\(second.output)")
    }

    /// The pid of the `mpirun` whose parent is `parent`, if one runs.
    static func mpirun(childOf parent: pid_t) -> pid_t? {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).lazy.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.range(of: ") ", options: .backwards)
            else { return nil }
            let name = stat[stat.index(after: stat.firstIndex(of: "(")!)..<close.lowerBound]
            let fields = stat[close.upperBound...].split(separator: " ")
            return (name == "mpirun" || name == "orterun") && fields.count > 1 && pid_t(fields[1]) == parent ? pid : nil
        }.first
    }

    @Test("mpirun killed by hand: medley launch ends, no rank is left running, and --resume continues from the newest checkpoint")
    func mpirunKilledByHand() throws {
        let yaml = """
            name: kill-mpirun-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 100000, eval_every: 0, checkpoint_every: 5}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: acme-x1, speed: 0.05}

            """
        let launch = try BackgroundLaunch(yaml)
        defer { launch.cleanUp() }
        let (run, output, marker, process, handle) = (launch.run, launch.output, launch.marker, launch.process, launch.handle)

        // Once two checkpoints are whole, kill mpirun (not medley launch) with SIGKILL.
        var target: pid_t?
        for _ in 0..<900 where target == nil && process.isRunning {
            let whole = ((try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? []).filter { $0.hasPrefix("step-") }
            if whole.count >= 2 { target = Self.mpirun(childOf: process.processIdentifier) }
            if target == nil { Thread.sleep(forTimeInterval: 0.1) }
        }
        let pid = try #require(target, "no mpirun with checkpoints: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        kill(pid, SIGKILL)
        let killedAt = Date()
        while process.isRunning && Date().timeIntervalSince(killedAt) < 30 { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!process.isRunning, "medley launch still runs 30 s after its mpirun was killed")
        // Every rank goes within 10 s of its mpirun.
        var left = LaunchTests.workers(marker: marker)
        while !left.isEmpty && Date().timeIntervalSince(killedAt) < 10 {
            Thread.sleep(forTimeInterval: 0.1)
            left = LaunchTests.workers(marker: marker)
        }
        #expect(left.isEmpty, "ranks left running after mpirun was killed: \(left)")
        process.waitUntilExit()
        try handle.close()
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(process.terminationStatus != 0, "\(text)")
        #expect(text.contains("mpirun was killed by SIGKILL from outside; every rank it started was ended"), "\(text)")
        #expect(text.contains("resumable: `medley launch --resume \(run)`"), "\(text)")
        #expect(!text.contains("recovery: restart"), "killed by hand is not a fault to recover from: \(text)")

        // --resume continues from the newest checkpoint that verifies.
        let newest = try #require(((try? FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints")) ?? [])
            .filter { $0.hasPrefix("step-") }.compactMap { Int($0.dropFirst(5)) }.max())
        let resumed = try TestSupport.medley(
            ["launch", "--resume", run, "--steps", String(newest + 2), "--timeout", "120"], timeout: 240)
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("has checkpoints") || resumed.output.contains("resum"), "\(resumed.output)")
        let steps = Self.steps(run).compactMap { $0["step"] as? Int }
        #expect(steps.suffix(2) == [newest + 1, newest + 2], "\(steps.suffix(4))")
    }

    @Test("a rank killed with SIGKILL from outside: its chip is evicted, the spare takes its rank, and the job finishes every step once")
    func killedRankReplaced() throws {
        let yaml = """
            name: kill-rank-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 40, eval_every: 0, checkpoint_every: 5, rebalance_every: 0, shares: [2, 2]}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: victim, speed: 0.05}
            spares:
              - adapter: sim
                options: {vendor: Borealis, name: spare-1}
            recovery: {max_restarts: 2, backoff: 0}

            """
        let launch = try BackgroundLaunch(yaml)
        defer { launch.cleanUp() }
        let (run, output, marker, process, handle) = (launch.run, launch.output, launch.marker, launch.process, launch.handle)
        // Rank 1 once a checkpoint is whole.
        var victim: pid_t?
        for _ in 0..<900 where victim == nil && process.isRunning {
            if !CheckpointStore(directory: run + "/checkpoints").steps().isEmpty {
                victim = LaunchTests.workers(marker: marker).first { $0.rank == 1 }?.pid
            }
            if victim == nil { Thread.sleep(forTimeInterval: 0.1) }
        }
        let pid = try #require(victim, "no checkpoint: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        kill(pid, SIGKILL)
        let started = Date()
        while process.isRunning && Date().timeIntervalSince(started) < 120 { Thread.sleep(forTimeInterval: 0.1) }
        process.waitUntilExit()
        try handle.close()
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 0, "\(text)")
        let kinds = Self.alerts(run).compactMap { $0["kind"] as? String }
        #expect(kinds.contains("exited") && kinds.contains("evicted") && kinds.contains("replaced"), "\(kinds)")
        #expect(text.contains("device 1 (sim victim) is evicted: rank 1 (sim victim on"), "\(text)")
        #expect(!text.contains("device 0 (reference) is evicted"), "\(text)")
        let steps = Self.steps(run).compactMap { $0["step"] as? Int }
        #expect(steps == Array(1...40), "every step once: \(steps)")
    }

    @Test("a snapshot directory left by a launch that is gone is removed; a live one is kept")
    func staleSnapshots() throws {
        let root = try TestSupport.temporaryDirectory("medley-shm")
        defer { try? FileManager.default.removeItem(atPath: root) }
        // pid 2^22 + 1 is above Linux's largest pid: never running.
        let gone = root + "/medley-job-4194305-ABCD1234", alive = root + "/medley-job-\(getpid())-ABCD1234", other = root + "/other-1"
        for path in [gone, alive, other] { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
        JobLauncher.removeStaleSnapshots(in: root)
        #expect(!FileManager.default.fileExists(atPath: gone))
        #expect(FileManager.default.fileExists(atPath: alive) && FileManager.default.fileExists(atPath: other))
    }
}
