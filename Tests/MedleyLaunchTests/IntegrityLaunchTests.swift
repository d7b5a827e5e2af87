import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

/// `medley launch` against silent data corruption: a defective chip is found, blamed, evicted
/// and replaced by a spare, and the job finishes every step.
@Suite("medley launch: silent corruption", .serialized)
struct IntegrityLaunchTests {
    static func write(_ yaml: String) throws -> (directory: String, job: String) {
        let directory = try TestSupport.temporaryDirectory("medley-integrity-launch")
        try yaml.write(toFile: directory + "/job.yaml", atomically: true, encoding: .utf8)
        return (directory, directory + "/job.yaml")
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    static func objects(_ path: String) -> [[String: Any]] {
        lines(path).compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test("a defective chip (the sim's corrupt@step=3) is detected, evicted, a spare takes its rank, and the job finishes every step",
          arguments: [1, 4])
    func defectEvicted(_ probeEvery: Int) throws {
        let yaml = """
            name: integrity-launch
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 4}
            train: {steps: 6, eval_every: 0, checkpoint_every: 2, rebalance_every: 0, shares: [2, 2]}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: defective, fault: 'corrupt@step=3'}
            spares:
              - adapter: sim
                options: {vendor: Borealis, name: spare-1}
            recovery: {max_restarts: 2, backoff: 0}
            integrity: {probe_every: \(probeEvery)}

            """
        let (directory, job) = try Self.write(yaml)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120"], timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        let alerts = Self.objects(run + "/alerts.jsonl")
        let raw = Self.lines(run + "/alerts.jsonl")
        // The fault: every rank reports the same verdict, blaming rank 1.
        let fault = try #require(alerts.first { $0["kind"] as? String == "fault" }, "\(raw)")
        #expect((fault["message"] as? String)?.contains("silent corruption") == true, "\(fault)")
        #expect(fault["suspects"] as? [Int] == [1], "\(fault)")
        // The eviction of the defective chip, never of the healthy one, and the spare in its place.
        #expect(raw.contains { $0.contains("\"evicted\"") && $0.contains("device 1 (sim defective) is evicted") }, "\(raw)")
        #expect(!raw.contains { $0.contains("device 0 (reference) is evicted") }, "\(raw)")
        #expect(raw.contains { $0.contains("\"replaced\"") && $0.contains("spare 0 (sim spare-1) takes the rank of device 1 (sim defective)") },
                "\(raw)")
        #expect(result.output.contains("recovered: 1 restart; evicted device 1"), "\(result.output)")
        // Every step once, the last ones trained on the spare.
        let steps = Self.objects(run + "/steps.jsonl").compactMap { $0["step"] as? Int }
        #expect(steps == [1, 2, 3, 4, 5, 6], "every step once: \(steps)")
        let spec = (try? String(contentsOfFile: run + "/job.yaml", encoding: .utf8)) ?? ""
        #expect(spec.contains("spare-1") && !spec.contains("corrupt@step=3"), "the restarted job runs the spare: \(spec)")
    }

    @Test("no corruption: bf16 and fp16 sims with every check at every step raise no alert")
    func noFalseAlarm() throws {
        let yaml = """
            name: integrity-clean
            model: {layers: 1, dim: 16, heads: 2, seq: 16, batch: 6}
            train: {steps: 6, eval_every: 0, checkpoint_every: 2, rebalance_every: 0}
            devices:
              - adapter: reference
              - adapter: sim
                options: {vendor: Acme, name: half, precision: fp16}
              - adapter: sim
                options: {vendor: Borealis, name: brain, precision: bf16, kernels: cpu}
            integrity: {probe_every: 1, fingerprint_every: 1, checksum_every: 1}

            """
        let (directory, job) = try Self.write(yaml)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = directory + "/run"
        let result = try TestSupport.medley(["launch", job, "--run-dir", run, "--timeout", "120"], timeout: 240)
        #expect(result.status == 0, "\(result.output)")
        #expect(Self.lines(run + "/alerts.jsonl").isEmpty, "\(Self.lines(run + "/alerts.jsonl"))")
        #expect(result.output.contains("summary: 6 steps"), "\(result.output)")
    }
}
