import Foundation
import MedleyTestSupport
import MedleyTrain
import Testing

/// Jobs across hosts: two network namespaces joined by a veth pair stand in for two machines
/// (scripts/cluster/netns-hosts.sh), and an rsh agent starts Open MPI's daemon in the other
/// namespace instead of over ssh (scripts/cluster/netns-rsh). mpirun runs in hostA.
@Suite("medley train across two hosts", .serialized, .enabled(if: geteuid() == 0, "network namespaces need root"))
struct MultiHostTests {
    static let scripts = TestSupport.repositoryRoot + "/scripts/cluster"

    /// Two fresh namespace hosts for `body`, torn down afterwards even when it fails.
    static func withHosts<R>(_ body: (_ prefix: String) throws -> R) throws -> R {
        let prefix = "mh\(getpid() % 10000)"
        let up = try TestSupport.run("/bin/bash", [scripts + "/netns-hosts.sh", "up", "--prefix", prefix], timeout: 60)
        defer { _ = try? TestSupport.run("/bin/bash", [scripts + "/netns-hosts.sh", "down", "--prefix", prefix], timeout: 60) }
        try #require(up.status == 0, "\(up.output)")
        return try body(prefix)
    }

    /// Runs `medley train` inside hostA.
    static func train(prefix: String, _ yaml: String, _ extra: [String] = [], environment: [String: String] = [:]) throws -> TrainJobTests.Run {
        let dir = try TestSupport.temporaryDirectory("medley-hosts")
        let jobPath = dir + "/job.yaml", log = dir + "/steps.jsonl", weights = dir + "/weights.bin"
        try yaml.write(toFile: jobPath, atomically: true, encoding: .utf8)
        let result = try TestSupport.run(
            "/bin/bash",
            [scripts + "/netns-hosts.sh", "exec", "--prefix", prefix, "A", "--", TestSupport.medleyExecutable, "train", jobPath,
             "--log", log, "--save-weights", weights, "--timeout", "240"] + extra,
            environment: environment, timeout: 300)
        let records = (try? String(contentsOfFile: log, encoding: .utf8)).map { try? StepRecord.read(jsonLines: $0) } ?? nil
        let data = (try? Data(contentsOf: URL(fileURLWithPath: weights))) ?? Data()
        return TrainJobTests.Run(result: result, records: records ?? [], weights: data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
    }

    static func job(hosts: String, train: String = "") -> String {
        TrainJobTests.job(devices: "[]", train: train).replacingOccurrences(of: "devices: []", with: hosts)
            + "\nnetwork: {interfaces: [mdl0], rsh_agent: \(scripts)/netns-rsh}\n"
    }

    @Test("a mixed job across two hosts over TCP learns what the same chips learn on one host")
    func acrossHostsEqualsOneHost() throws {
        let schedule = ["1:5,2,3,2", "9:0,6,6,0", "15:3,3,3,3"].flatMap { ["--shares", $0] }
        // hostB's last chip is found through MEDLEY_ADAPTER_PATH, which must reach its host.
        let extra = try TestSupport.temporaryDirectory("medley-hosts-adapters")
        try FileManager.default.copyItem(
            atPath: TestSupport.productsDirectory + "/libmedley-adapter-reference.so", toPath: extra + "/libmedley-adapter-ref2.so")
        let cache = ["MEDLEY_CACHE_DIR": try TestSupport.temporaryDirectory("medley-hosts-cache"), "MEDLEY_ADAPTER_PATH": extra]
        let devices = ["cpu", "{adapter: sim, options: {vendor: Acme, speed: 0.5}}", "opencl", "ref2"]
        let oneHost = try TrainJobTests.train(
            TrainJobTests.job(devices: "[\(devices.joined(separator: ", "))]"), schedule, environment: cache)
        try #require(oneHost.result.status == 0, "\(oneHost.result.output)")
        try Self.withHosts { prefix in
            let log = try TestSupport.temporaryDirectory("medley-hosts-agent") + "/agent.log"
            let yaml = Self.job(hosts: "hosts:\n  hostA: [\(devices[0]), \(devices[1])]\n  hostB: [\(devices[2]), \(devices[3])]")
            var environment = cache
            environment["NETNS_RSH_LOG"] = log
            let twoHosts = try Self.train(prefix: prefix, yaml, schedule, environment: environment)
            try #require(twoHosts.result.status == 0, "\(twoHosts.result.output)")
            #expect(twoHosts.result.output.contains("rank 2 (opencl"), "\(twoHosts.result.output)")
            #expect(twoHosts.result.output.contains("on hostB)"), "\(twoHosts.result.output)")
            // Open MPI started its daemon in hostB's namespace through the agent.
            let calls = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            #expect(calls.contains("ns=\(prefix)-hostB"), "agent calls: \(calls)")
            try #require(twoHosts.records.count == 20 && oneHost.records.count == 20)
            for (a, b) in zip(oneHost.records, twoHosts.records) {
                #expect(abs(a.loss - b.loss) <= 1e-4 * abs(a.loss), "step \(a.step): loss \(a.loss) one host vs \(b.loss) two hosts")
            }
            #expect(twoHosts.weights.count == oneHost.weights.count && !twoHosts.weights.isEmpty)
        }
    }

    @Test("a host whose adapter is missing is named in one line before training; without fixed shares the job trains on the rest")
    func missingAdapterOnOneHost() throws {
        try Self.withHosts { prefix in
            // The library exists on hostA but not on hostB: `ip netns exec` mounts hostB's
            // /etc/netns/<ns>/ entries over /etc, so an empty directory there hides it.
            let name = "medley-test-\(UUID().uuidString.prefix(8))"
            let visible = "/etc/\(name)", hidden = "/etc/netns/\(prefix)-hostB/\(name)"
            try FileManager.default.createDirectory(atPath: visible, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: hidden, withIntermediateDirectories: true)
            defer {
                try? FileManager.default.removeItem(atPath: visible)
                try? FileManager.default.removeItem(atPath: hidden)
            }
            let library = visible + "/libmedley-adapter-extra.so"
            try FileManager.default.copyItem(atPath: TestSupport.productsDirectory + "/libmedley-adapter-reference.so", toPath: library)
            let hosts = "hosts:\n  hostA: [cpu, {adapter: '\(library)'}]\n  hostB: [{adapter: '\(library)'}, reference]"
            let cache = ["MEDLEY_CACHE_DIR": try TestSupport.temporaryDirectory("medley-hosts-cache")]

            // Fixed shares name every chip: one line naming hostB, and nothing trains.
            let refused = try Self.train(prefix: prefix, Self.job(hosts: hosts, train: "steps: 3"), ["--shares", "1:3,3,3,3"], environment: cache)
            #expect(refused.result.status != 0)
            let errors = refused.result.output.split(separator: "\n").filter { $0.hasPrefix("Error:") }
            #expect(errors.count == 1, "\(refused.result.output)")
            #expect(errors.first?.contains("preflight: host hostB: devices[2]") == true, "\(refused.result.output)")
            #expect(errors.first?.contains("does not exist") == true, "\(refused.result.output)")
            #expect(!refused.result.output.contains("step 1/"), "\(refused.result.output)")

            // Measured shares: hostB's missing chip is named, left out, and the rest train.
            let trained = try Self.train(prefix: prefix, Self.job(hosts: hosts, train: "steps: 3"), environment: cache)
            #expect(trained.result.status == 0, "\(trained.result.output)")
            #expect(trained.result.output.contains("preflight: host hostB: devices[2]"), "\(trained.result.output)")
            #expect(trained.result.output.contains("training on the other 3 of 4 chips"), "\(trained.result.output)")
            #expect(trained.records.count == 3 && trained.records.allSatisfy { $0.shares.count == 3 })
        }
    }
}
