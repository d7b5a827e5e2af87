import Foundation
import MedleyCore
import MedleyTestSupport
import MedleyTrain
import Testing

/// `medley launch` across two namespace hosts whose link is cut mid-run: the supervisor (in
/// hostA) stops hearing hostB's ranks, names them and their host, evicts them, and the job
/// finishes on hostA from its newest checkpoint.
@Suite("medley launch survives a cut link", .serialized, .enabled(if: geteuid() == 0, "network namespaces need root"))
struct LinkCutTests {
    static let scripts = TestSupport.repositoryRoot + "/scripts/cluster"

    @Test("a host whose link is cut is named within 15 s, and the job finishes on the other host from its checkpoint")
    func cutLink() throws {
        let prefix = "lc\(getpid() % 10000)"
        let up = try TestSupport.run("/bin/bash", [Self.scripts + "/netns-hosts.sh", "up", "--prefix", prefix], timeout: 60)
        defer { _ = try? TestSupport.run("/bin/bash", [Self.scripts + "/netns-hosts.sh", "down", "--prefix", prefix], timeout: 60) }
        try #require(up.status == 0, "\(up.output)")
        let dir = try TestSupport.temporaryDirectory("medley-linkcut")
        let run = dir + "/run", job = dir + "/job.yaml"
        try """
            name: linkcut
            model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}
            train: {steps: 300, lr: 0.003, warmup_steps: 3, rebalance_every: 0, eval_every: 0, checkpoint_every: 5}
            hosts:
              hostA: [cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]
              hostB: [reference, {adapter: sim, options: {vendor: Borealis, speed: 0.5}}]
            network: {interfaces: [mdl0], rsh_agent: \(Self.scripts)/netns-rsh, link_timeout: 6}
            supervise: {heartbeat_timeout: 4}
            recovery: {max_restarts: 2, min_chips: 1, backoff: 0}
            """.write(toFile: job, atomically: true, encoding: .utf8)

        // Cut the link once 10 steps are recorded (two checkpoints are behind it).
        let cutAt = LockedValue<Date?>(nil)
        let cutter = Thread {
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline {
                let lines = (try? String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8))?.split(separator: "\n").count ?? 0
                if lines >= 10 {
                    cutAt.set(Date())
                    _ = try? TestSupport.run("/bin/bash", [Self.scripts + "/netns-cut.sh", prefix], timeout: 30)
                    return
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        cutter.start()
        let namedAt = LockedValue<Date?>(nil)
        let outcome = try ChildProcess.run(
            "/bin/bash",
            [Self.scripts + "/netns-hosts.sh", "exec", "--prefix", prefix, "A", "--", TestSupport.medleyExecutable, "launch", job,
             "--run-dir", run, "--quiet", "--timeout", "200"],
            environment: ["MEDLEY_CACHE_DIR": dir + "/cache"], timeoutSeconds: 240, mergeOutput: true,
            onOutput: { text in
                if namedAt.get() == nil && text.contains("alert:") && text.contains("on hostB") { namedAt.set(Date()) }
            })
        let output = outcome.stdout
        try #require(outcome.status == 0, "\(output)")
        let cut = try #require(cutAt.get(), "the link was never cut: \(output)")
        let named = try #require(namedAt.get(), "no alert named hostB: \(output)")
        #expect(named.timeIntervalSince(cut) <= 15, "hostB named \(named.timeIntervalSince(cut)) s after the cut: \(output)")
        // hostB's two ranks were evicted, and only they; the job finished on hostA's two chips.
        #expect(output.contains("recovery: device 2 (reference) is evicted"), "\(output)")
        #expect(output.contains("recovery: device 3 (sim) is evicted"), "\(output)")
        #expect(!output.contains("device 0 (cpu) is evicted") && !output.contains("device 1 (sim) is evicted"), "\(output)")
        #expect(output.contains("restart 1 on 2 chips"), "\(output)")
        let records = try StepRecord.read(jsonLines: String(contentsOfFile: run + "/steps.jsonl", encoding: .utf8))
        #expect(records.last?.step == 300, "the job finished")
        #expect(records.last?.shares.count == 2, "on hostA's two chips")
        // The log keeps each step once: the first attempt's up to the checkpoint it resumed from
        // (at or before the cut, not step 0), then the second attempt's, on two chips.
        #expect(records.map(\.step) == Array(1...300))
        let resumedAt = try #require(records.first { $0.shares.count == 2 }?.step, "no resumed attempt in the records")
        #expect(resumedAt > 5 && (resumedAt - 1) % 5 == 0, "resumed after step \(resumedAt - 1)")
        #expect(records.prefix(resumedAt - 1).allSatisfy { $0.shares.count == 4 })
    }
}

/// A value shared between threads under a lock.
final class LockedValue<T>: @unchecked Sendable {
    // @unchecked: `value` is only touched under `lock`.
    private let lock = NSLock()
    private var value: T
    init(_ value: T) { self.value = value }
    func get() -> T {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
    func set(_ new: T) {
        lock.lock()
        value = new
        lock.unlock()
    }
}
