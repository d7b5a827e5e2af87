import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

@testable import MedleyLaunch

/// `medley launch` end to end: real mpirun, real ranks, the real control channel.
@Suite("medley launch", .serialized)
struct LaunchTests {
    static let job = """
        name: launch-test
        model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
        train: {steps: 4, eval_every: 2}
        devices:
          - adapter: reference
          - adapter: sim
            options: {vendor: Acme, name: acme-x1}

        """

    static func write(_ yaml: String) throws -> (directory: String, job: String) {
        let directory = try TestSupport.temporaryDirectory("medley-launch")
        try yaml.write(toFile: directory + "/job.yaml", atomically: true, encoding: .utf8)
        return (directory, directory + "/job.yaml")
    }

    @Test("a run directory with the spec, the steps, the alerts and a summary naming every rank's chip")
    func runDirectory() throws {
        let (directory, job) = try Self.write(Self.job)
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run], timeout: 180)
        #expect(result.status == 0, "\(result.output)")
        for file in ["job.yaml", "steps.jsonl", "alerts.jsonl", "summary.json", "timeline.json", "supervisor.log",
                     "ranks/1/rank.0/stdout", "ranks/1/rank.1/stderr"] {
            #expect(FileManager.default.fileExists(atPath: run + "/" + file), "\(file) missing")
        }
        let steps = try String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(steps.count == 4)
        let summary = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
        let ranks = try #require(summary["ranks"] as? [[String: Any]])
        #expect(ranks.count == 2)
        #expect((ranks.last?["chip"] as? String)?.contains("acme-x1") == true, "\(ranks)")
        #expect((ranks.first?["chip"] as? String)?.contains("never") == false, "\(ranks)")
        #expect(result.output.contains("summary: 4 steps"), "\(result.output)")
        // The timeline of a data-parallel job: every rank's compute, wait, exchange and update spans.
        let trace = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/timeline.json"))) as? [String: Any])
        let spans = try #require(trace["traceEvents"] as? [[String: Any]]).filter { $0["ph"] as? String == "X" }
        for rank in 0..<2 {
            let names = Set(spans.filter { $0["tid"] as? Int == rank }.compactMap { $0["name"] as? String })
            #expect(names.isSuperset(of: ["compute 4", "wait 4", "exchange 4", "update 4", "eval 2"]), "rank \(rank): \(names.sorted())")
        }
        let log = try String(contentsOfFile: run + "/supervisor.log", encoding: .utf8)
        #expect(log.contains("step 4/4") && log.contains("summary: 4 steps"), "\(log)")
    }

    @Test("a rank killed with SIGKILL mid-run is an alert naming its rank, chip and host within 5 s")
    func killedRank() throws {
        let yaml = Self.job.replacingOccurrences(of: "train: {steps: 4, eval_every: 2}", with: "train: {steps: 100000, eval_every: 0}")
        let (directory, job) = try Self.write(yaml)
        let run = directory + "/run"
        let output = directory + "/out.txt"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.medleyExecutable)
        process.arguments = ["launch", job, "--run-dir", run, "--timeout", "120"]
        let marker = try TestSupport.temporaryDirectory("medley-launch-tmp")
        defer {
            for worker in Self.workers(marker: marker) { kill(worker.pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: marker)
        }
        process.environment = ProcessInfo.processInfo.environment.merging(["MEDLEY_SIM_OPTIONS": "speed=0.05", "TMPDIR": marker]) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        // Rank 1 (the sim) once the job trains.
        var victim: pid_t?
        for _ in 0..<600 where victim == nil && process.isRunning {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            if text.contains("step ") { victim = Self.workers(marker: marker).first(where: { $0.rank == 1 })?.pid }
            if victim == nil { Thread.sleep(forTimeInterval: 0.1) }
        }
        let pid = try #require(victim, "the job never started training: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        kill(pid, SIGKILL)
        let killedAt = Date()
        var alert: String?
        while alert == nil && Date().timeIntervalSince(killedAt) < 5 {
            let text = (try? String(contentsOfFile: run + "/alerts.jsonl", encoding: .utf8)) ?? ""
            alert = text.split(separator: "\n").first.map(String.init)
            if alert == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        let line = try #require(alert, "no alert within 5 s of the SIGKILL")
        #expect(line.contains("rank 1"), "\(line)")
        #expect(line.contains("acme-x1"), "\(line)")
        #expect(line.contains(ProcessInfo.processInfo.hostName), "\(line)")
        process.waitUntilExit()
        try handle.close()
        #expect(process.terminationStatus != 0)
    }

    @Test("SIGUSR1 mid-run checkpoints; SIGTERM: every rank stops together at a step boundary with a checkpoint, within 5 s, and --resume goes on")
    func stopOnSignal() throws {
        let yaml = Self.job.replacingOccurrences(of: "train: {steps: 4, eval_every: 2}", with: "train: {steps: 100000, eval_every: 0}")
        let (directory, job) = try Self.write(yaml)
        let run = directory + "/run"
        let output = directory + "/out.txt"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        let marker = try TestSupport.temporaryDirectory("medley-launch-tmp")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.medleyExecutable)
        process.arguments = ["launch", job, "--run-dir", run, "--timeout", "120"]
        process.environment = ProcessInfo.processInfo.environment.merging(["MEDLEY_SIM_OPTIONS": "speed=0.05", "TMPDIR": marker]) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for worker in Self.workers(marker: marker) { kill(worker.pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: marker)
        }
        var training = false
        for _ in 0..<600 where !training && process.isRunning {
            training = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").contains("\"step\"")
            if !training { Thread.sleep(forTimeInterval: 0.1) }
        }
        try #require(training, "the job never trained: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        // SIGUSR1: a checkpoint now, off the every-100-steps schedule.
        kill(process.processIdentifier, SIGUSR1)
        var asked: [Int] = []
        for _ in 0..<200 where asked.isEmpty {
            asked = CheckpointStore(directory: run + "/checkpoints").steps()
            if asked.isEmpty { Thread.sleep(forTimeInterval: 0.05) }
        }
        #expect(asked.count == 1, "no checkpoint 10 s after SIGUSR1")
        kill(process.processIdentifier, SIGTERM)
        let stopAt = Date()
        while process.isRunning && Date().timeIntervalSince(stopAt) < 10 { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!process.isRunning && Date().timeIntervalSince(stopAt) < 5)
        process.waitUntilExit()
        try handle.close()
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 75, "resumable: \(text)")
        #expect(text.contains("stopped together at a step boundary and wrote a checkpoint"), "\(text)")
        #expect(text.contains("resumable: `medley launch --resume \(run)`"), "\(text)")
        #expect(Self.workers(marker: marker).isEmpty, "ranks left behind")
        // The last step record is the step they stopped after; the timeline was written at the end.
        let records = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        let last = try #require(records.last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        let step = try #require(last["step"] as? Int)
        let rankLog = ((try? String(contentsOfFile: run + "/supervisor.log", encoding: .utf8)) ?? "")
        #expect(rankLog.contains("stopping after step \(step) of 100000"), "\(rankLog)")
        #expect(FileManager.default.fileExists(atPath: run + "/timeline.json"))
        let summary = (try? String(contentsOfFile: run + "/summary.json", encoding: .utf8)) ?? ""
        #expect(summary.contains("stopped"), "\(summary)")
        // The checkpoint of that step, and a resume in the same run directory that goes on from it.
        #expect(CheckpointStore(directory: run + "/checkpoints").steps().first == step)
        let resumed = try TestSupport.medley(
            ["launch", "--resume", run, "--steps", String(step + 3), "--timeout", "120"],
            environment: ["MEDLEY_SIM_OPTIONS": "speed=0.05"], timeout: 180)
        #expect(resumed.status == 0, "\(resumed.output)")
        #expect(resumed.output.contains("step \(step) done, 3 to go"), "\(resumed.output)")
        let all = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        let steps = all.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int }
        #expect(steps == Array(1...(step + 3)), "each step once in steps.jsonl: \(steps)")
    }

    @Test("a chip that crashes, loses its device or hangs mid-run is evicted, a spare takes its rank, and the job finishes every step",
          arguments: ["crash", "error", "hang"])
    func spareTakesOver(_ fault: String) throws {
        let yaml = """
            name: recover-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 6, eval_every: 0, checkpoint_every: 2, rebalance_every: 0}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: flaky, fault: '\(fault)@step=3'}
            spares:
              - adapter: sim
                options: {vendor: Borealis, name: spare-1}
            recovery: {max_restarts: 2, backoff: 0}

            """
        let (directory, job) = try Self.write(yaml)
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120", "--heartbeat-timeout", "2"], timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        let alerts = ((try? String(contentsOfFile: run + "/alerts.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        let kinds = alerts.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["kind"] as? String }
        #expect(kinds.contains(fault == "hang" ? "silent" : fault == "error" ? "fault" : "exited"), "\(alerts)")
        #expect(kinds.contains("evicted") && kinds.contains("replaced") && kinds.contains("restart"), "\(alerts)")
        #expect(alerts.contains { $0.contains("spare 0 (sim spare-1) takes the rank of device 1 (sim flaky)") }, "\(alerts)")
        // The healthy chip, ended by mpirun because of the crash, is not evicted.
        #expect(!alerts.contains { $0.contains("device 0 (reference) is evicted") }, "\(alerts)")
        #expect(result.output.contains("recovered: 1 restart; evicted device 1"), "\(result.output)")
        let records = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        let steps = records.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int }
        #expect(steps == [1, 2, 3, 4, 5, 6], "every step once: \(steps)")
        let spec = (try? String(contentsOfFile: run + "/job.yaml", encoding: .utf8)) ?? ""
        #expect(spec.contains("spare-1") && spec.contains("reference") && !spec.contains("@step=3"), "the restarted job runs the spare: \(spec)")
    }

    @Test("a NaN every rank reports rolls back to the checkpoint on the same chips; the same chip again after it is evicted and the spare finishes the job")
    func nanRollsBack() throws {
        let yaml = """
            name: nan-test
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 6, eval_every: 0, checkpoint_every: 2, rebalance_every: 0, shares: [2, 2]}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: flaky, fault: 'nan@step=3'}
            spares: [sim]
            recovery: {max_restarts: 2, backoff: 0}

            """
        let (directory, job) = try Self.write(yaml)
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120"], timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        let lines = result.output.split(separator: "\n").map(String.init)
        let first = try #require(lines.firstIndex { $0.contains("recovery: restart 1 on 2 chips") }, "\(result.output)")
        #expect(!lines[..<first].contains { $0.contains("is evicted") }, "the first NaN evicts nobody: \(result.output)")
        #expect(lines.contains { $0.contains("recovery: device 1 (sim flaky) is evicted:") && $0.contains("rank 1 (sim flaky) computed a non-finite loss") },
                "\(result.output)")
        #expect(result.output.contains("again after a roll-back to the checkpoint"), "\(result.output)")
        #expect(result.output.contains("recovery: restart 2 on 2 chips"), "\(result.output)")
        let records = ((try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
        let steps = records.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int }
        #expect(steps == [1, 2, 3, 4, 5, 6], "every step once: \(steps)")
    }

    @Test("a sim chip that hangs inside a call (its heartbeats go on) is a silent alert within the timeout + 1 s")
    func hungChip() throws {
        let yaml = Self.job
            .replacingOccurrences(of: "train: {steps: 4, eval_every: 2}", with: "train: {steps: 50, eval_every: 0}")
            .replacingOccurrences(of: "options: {vendor: Acme, name: acme-x1}", with: "options: {vendor: Acme, name: acme-x1, fault: 'hang@step=3'}")
        let hookFile = try TestSupport.temporaryDirectory("medley-launch-hook") + "/alerts-seen.jsonl"
        let (directory, job) = try Self.write(yaml + "supervise: {alert_command: \"cat >> '\(hookFile)'\", alert_timeout: 5}\n")
        let run = directory + "/run"
        let marker = try TestSupport.temporaryDirectory("medley-launch-tmp")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.medleyExecutable)
        let metricsPort = try Self.freePort()
        process.arguments = ["launch", job, "--run-dir", run, "--timeout", "120", "--heartbeat-timeout", "3", "--metrics-port", String(metricsPort)]
        process.environment = ProcessInfo.processInfo.environment.merging(["TMPDIR": marker]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            for worker in Self.workers(marker: marker) { kill(worker.pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: marker)
        }
        var alert: [String: Any]?
        let started = Date()
        while alert == nil && Date().timeIntervalSince(started) < 90 && process.isRunning {
            let text = (try? String(contentsOfFile: run + "/alerts.jsonl", encoding: .utf8)) ?? ""
            alert = text.split(separator: "\n").lazy.compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.first
            if alert == nil { Thread.sleep(forTimeInterval: 0.1) }
        }
        let found = try #require(alert, "no alert from a hung chip")
        #expect(found["kind"] as? String == "silent", "\(found)")
        #expect(found["rank"] as? Int == 1, "\(found)")
        #expect(found["chip"] as? String == "acme-x1", "\(found)")
        let message = found["message"] as? String ?? ""
        #expect(message.contains("no progress for"), "\(message)")
        // The rank's own count of seconds stuck, when the alert was raised: within the timeout + 1 s.
        let seconds = message.components(separatedBy: "no progress for ").dropFirst().first?.split(separator: " ").first.flatMap { Double($0) }
        let stuck = try #require(seconds, "\(message)")
        #expect(stuck >= 3 && stuck <= 4, "\(message)")  // printed to 0.1 s: 3.02 reads "3.0"
        // The alert_command got the same record on its standard input.
        var hooked = ""
        for _ in 0..<100 where !hooked.contains("no progress for") {
            hooked = (try? String(contentsOfFile: hookFile, encoding: .utf8)) ?? ""
            Thread.sleep(forTimeInterval: 0.05)
        }
        let record = try #require(hooked.split(separator: "\n").first.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] },
                                  "alert_command saw nothing: \(hooked)")
        #expect(record["kind"] as? String == "silent" && record["rank"] as? Int == 1 && record["message"] as? String == message)
        // /metrics and /status.json of the running job: every rank's chip, the hung one down.
        let metrics = try StatusServerTests.request(metricsPort, "/metrics")
        let samples = try #require(StatusServerTests.parse(metrics.body), "not Prometheus text: \(metrics.body)")
        func sample(_ name: String, rank: String) -> (labels: [String: String], value: Double)? {
            samples.first { $0.name == name && $0.labels["rank"] == rank }.map { ($0.labels, $0.value) }
        }
        #expect(sample("medley_rank_up", rank: "1")?.value == 0 && sample("medley_rank_up", rank: "1")?.labels["chip"] == "acme-x1")
        #expect(sample("medley_rank_up", rank: "0")?.labels["adapter"] == "reference")
        #expect((samples.first { $0.name == "medley_alerts_total" }?.value ?? 0) >= 1)
        for metric in StatusMetrics.all { #expect(samples.contains { $0.name == metric.name }, "\(metric.name) missing") }
        let status = try StatusServerTests.request(metricsPort, "/status.json")
        let snapshot = try JSONDecoder().decode(StatusSnapshot.self, from: Data(status.body.utf8))
        #expect(snapshot.ranks.count == 2 && snapshot.ranks[0].chip != nil && snapshot.ranks.last?.chip == "acme-x1", "\(snapshot.ranks)")
        #expect(snapshot.ranks.last?.status == "stalled" && !snapshot.steps.isEmpty && snapshot.alerts.first?.kind == .silent)
        // SIGTERM to medley launch stops every rank within 5 s.
        kill(process.processIdentifier, SIGTERM)
        let stopAt = Date()
        while process.isRunning && Date().timeIntervalSince(stopAt) < 10 { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!process.isRunning, "medley launch still running 10 s after SIGTERM")
        #expect(Date().timeIntervalSince(stopAt) < 5)
        #expect(Self.workers(marker: marker).isEmpty, "ranks left behind")
    }

    /// A TCP port nobody listens on now (the kernel's pick for port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        try #require(bound, "cannot bind a socket to find a free port")
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The `medley worker` processes whose command line mentions `marker` (a private TMPDIR
    /// holds the launcher's job file), with their rank from the environment mpirun gave them.
    static func workers(marker: String) -> [(pid: pid_t, rank: Int)] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> (pid_t, Int)? in
            guard let pid = pid_t(entry), let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
            let words = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard words.count > 1, words[1] == "worker", words.contains(where: { $0.contains(marker) }),
                  let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ")
            else { return nil }
            let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard let rank = variables.first(where: { $0.hasPrefix("OMPI_COMM_WORLD_RANK=") }).flatMap({ Int($0.dropFirst(21)) })
            else { return nil }
            return (pid, rank)
        }.sorted { $0.1 < $1.1 }
    }
}

/// Every example job under `medley launch`: the ones that can run, run; the one built not to fit
/// fails with one line before mpirun starts.
@Suite("medley launch: the examples", .serialized)
struct LaunchExampleTests {
    static func example(_ name: String) -> String { TestSupport.repositoryRoot + "/examples/" + name }

    @Test("every example is covered here", arguments: [0])
    func everyExampleIsListed(_: Int) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: TestSupport.repositoryRoot + "/examples")
            .filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names == ["mixed.yaml", "plan-impossible.yaml", "plan-small-memory.yaml"], "list the new example in LaunchExampleTests")
    }

    @Test("runs: mixed.yaml (data parallel) and plan-small-memory.yaml (plan: auto, a pipeline)",
          arguments: ["mixed.yaml", "plan-small-memory.yaml"])
    func runs(_ name: String) throws {
        let run = try TestSupport.temporaryDirectory("medley-launch-example") + "/run"
        let result = try TestSupport.medley(["launch", Self.example(name), "--steps", "3", "--run-dir", run], timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("summary: 3 steps"), "\(result.output)")
        let summary = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/summary.json"))) as? [String: Any])
        #expect(summary["steps"] as? Int == 3)
        #expect((summary["alerts"] as? [Any])?.isEmpty == true, "\(summary)")
        #expect(FileManager.default.fileExists(atPath: run + "/timeline.json"))
    }

    @Test("plan-impossible.yaml: one Error: line naming the shortfall, non-zero, no rank started")
    func impossible() throws {
        let run = try TestSupport.temporaryDirectory("medley-launch-example") + "/run"
        let result = try TestSupport.medley(["launch", Self.example("plan-impossible.yaml"), "--run-dir", run], timeout: 300)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines.first?.hasPrefix("Error: ") == true, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: run), "the run directory was made before the job could start")
    }
}

/// Bad input to `medley launch`: one line naming the problem, a non-zero exit, before mpirun.
@Suite("medley launch: bad input")
struct LaunchBadInputTests {
    @Test("a bad spec, an unknown adapter, bad flags and supervise values, an unwritable run directory")
    func oneLineEach() throws {
        let (directory, job) = try LaunchTests.write(LaunchTests.job)
        let unknown = directory + "/unknown.yaml"
        try LaunchTests.job.replacingOccurrences(of: "adapter: reference", with: "adapter: no-such-chip")
            .write(toFile: unknown, atomically: true, encoding: .utf8)
        let badSupervise = directory + "/supervise.yaml"
        try (LaunchTests.job + "supervise: {straggler_factor: 0.5}\n").write(toFile: badSupervise, atomically: true, encoding: .utf8)
        let badSpec = directory + "/bad.yaml"
        try "model: {layers: two}\ndevices: [cpu]\n".write(toFile: badSpec, atomically: true, encoding: .utf8)
        let blocker = directory + "/a-file"
        try "x".write(toFile: blocker, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["launch", badSpec], "model.layers"),
            (["launch", unknown], "no-such-chip"),
            (["launch", badSupervise], "supervise.straggler_factor"),
            (["launch", job, "--heartbeat-timeout", "0"], "--heartbeat-timeout"),
            (["launch", job, "--metrics-port", "70000"], "--metrics-port"),
            (["launch", job, "--control-port", "-1"], "--control-port"),
            (["launch", job, "--run-dir", blocker + "/run"], "--run-dir"),
            (["launch", directory + "/missing.yaml"], "does not exist"),
        ]
        for (arguments, fragment) in cases {
            let result = try TestSupport.medley(arguments, timeout: 120)
            #expect(result.status != 0, "\(arguments)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(fragment), "\(arguments): \(result.stderr)")
            #expect(!result.output.contains("mpirun") || result.output.contains("mpirun --"), "\(arguments): \(result.output)")
        }
    }
}
