import Foundation
import MedleyCore
import MedleySupervisor
import MedleyTestSupport
import NIOConcurrencyHelpers
import Testing

@testable import MedleyLaunch

/// The `alert_command` hook with a real shell: what it receives, a hook that hangs, a storm.
@Suite("alert hook: real processes", .serialized)
struct AlertHookTests {
    static let alert = SupervisorAlert(kind: .silent, rank: 1, chip: "acme-x1", adapter: "sim", host: "host1", step: 3, at: 12.5,
                                       message: "rank 1 (sim acme-x1 on host1, pid 101): no heartbeat for 10.2 s")

    final class Problems: @unchecked Sendable {
        let box = NIOLockedValueBox<[String]>([])
        func add(_ line: String) { box.withLockedValue { $0.append(line) } }
        var all: [String] { box.withLockedValue { $0 } }
    }

    @Test("the command gets the alert as one line of JSON on stdin, and its kind and rank in the environment")
    func receivesTheAlert() throws {
        let directory = try TestSupport.temporaryDirectory("medley-hook")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let problems = Problems()
        let hook = AlertHook(command: "cat >> '\(directory)/got'; echo \"$MEDLEY_ALERT_KIND $MEDLEY_ALERT_RANK\" >> '\(directory)/env'",
                             timeoutSeconds: 10) { problems.add($0) }
        hook.fire(Self.alert)
        hook.fire(Self.alert)
        #expect(hook.drain(seconds: 20))
        let lines = try String(contentsOfFile: directory + "/got", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let decoded = try JSONDecoder().decode(SupervisorAlert.self, from: Data(lines[0].utf8))
        #expect(decoded == Self.alert)
        #expect(try String(contentsOfFile: directory + "/env", encoding: .utf8) == "silent 1\nsilent 1\n")
        #expect(hook.counts == AlertHook.Counts(inFlight: 0, succeeded: 2, failed: 0, dropped: 0))
        #expect(problems.all.isEmpty)
    }

    @Test("a hook that hangs is killed at alert_timeout with what it started, and said once; a failing one names its status")
    func hangingAndFailingHooks() throws {
        let marker = "medley-hook-\(UUID().uuidString.prefix(8))"
        let problems = Problems()
        let hanging = AlertHook(command: "sleep 60 # \(marker)", timeoutSeconds: 0.5) { problems.add($0) }
        let start = Date()
        hanging.fire(Self.alert)
        #expect(hanging.drain(seconds: 10))
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(hanging.counts.failed == 1)
        #expect(problems.all.count == 1 && problems.all[0].contains("alert_timeout"), "\(problems.all)")
        Thread.sleep(forTimeInterval: 0.2)
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { entry in
            guard Int32(entry) != nil, let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return false }
            return String(decoding: raw, as: UTF8.self).contains(marker)
        }
        #expect(left.isEmpty, "the hook's processes outlived it: \(left)")

        let failing = AlertHook(command: "echo 'pager is down' >&2; exit 3", timeoutSeconds: 5) { problems.add($0) }
        failing.fire(Self.alert)
        #expect(failing.drain(seconds: 10))
        #expect(problems.all.last == "alert_command exited with status 3: pager is down", "\(problems.all)")
    }

    @Test("an alert storm beyond the queue is dropped and counted; fire never blocks")
    func stormIsBounded() throws {
        let hook = AlertHook(command: "sleep 0.2", timeoutSeconds: 5, queueLimit: 4) { _ in }
        let start = Date()
        for _ in 0..<100 { hook.fire(Self.alert) }
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(hook.counts.dropped == 96)
        #expect(hook.drain(seconds: 20))
        #expect(hook.counts.succeeded == 4)
    }
}
