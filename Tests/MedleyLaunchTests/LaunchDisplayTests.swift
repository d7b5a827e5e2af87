import Foundation
import MedleyControl
import MedleySupervisor
import NIOConcurrencyHelpers
import Testing

@testable import MedleyLaunch

/// The live display's lines and the console's three modes, without a terminal.
@Suite("launch display and console")
struct LaunchDisplayTests {
    static func supervisor(chip0: String = "cpu-openblas") -> Supervisor {
        var s = Supervisor(configuration: SupervisorConfiguration(ranks: 2, heartbeatTimeout: 5), startedAt: 0)
        for r in 0..<2 {
            _ = s.handle(.hello(ControlHello(rank: r, adapter: r == 0 ? "cpu" : "sim", vendor: r == 0 ? "AMD" : "Acme",
                                             chip: r == 0 ? chip0 : "acme-x1", host: "node\(r)", pid: 100 + Int32(r),
                                             memoryBytes: 1 << 30), at: 1))
        }
        for step in 1...4 {
            for r in 0..<2 {
                _ = s.handle(.stepReport(ControlStepReport(rank: r, step: step, loss: 3 - Double(step) / 10, tokensPerSecond: 2000,
                                                           stepMs: 100, computeMs: r == 0 ? 90 : 60, idleMs: r == 0 ? 0 : 30,
                                                           exchangeMs: 10, share: r == 0 ? 6 : 2,
                                                           validationLoss: step == 4 ? 2.75 : nil), at: 1 + Double(step)))
            }
        }
        _ = s.handle(.heartbeat(ControlHeartbeat(rank: 1, step: 4, deviceMemoryUsedBytes: 3 << 20), at: 5.5))
        return s
    }

    @Test("header: step/total, ETA from the pace, loss, validation, tokens/s; a row per chip")
    func lines() {
        let lines = LaunchDisplay.lines(supervisor: Self.supervisor(), job: "demo", totalSteps: 10, elapsed: 65, now: 6)
        #expect(lines.count == 4, "\(lines)")
        #expect(lines[0] == "demo  step 4/10 [########............]  ETA 6s  loss 2.6000  val 2.7500  2000 tokens/s  elapsed 1m05s", "\(lines[0])")
        #expect(lines[1].hasPrefix("rank adapter"))
        #expect(lines[2].contains("cpu-openblas") && lines[2].contains("AMD") && lines[2].contains("node0") && lines[2].contains(" 0%"))
        #expect(lines[3].contains("acme-x1") && lines[3].contains("30%") && lines[3].contains("3.0 MiB/1.0 GiB") && lines[3].contains("0.5 s"),
                "\(lines[3])")
        #expect(lines[3].hasSuffix("ok"))
        let narrow = LaunchDisplay.lines(supervisor: Self.supervisor(), job: "demo", totalSteps: 10, elapsed: 65, now: 6, width: 40)
        #expect(narrow.allSatisfy { $0.count <= 40 })
        // 80 columns: every rank's row whole (no vendor or host), a long chip name cut in its column.
        let long = Self.supervisor(chip0: "cpu-openblas (AMD EPYC 7B13)")
        let eighty = LaunchDisplay.lines(supervisor: long, job: "demo", totalSteps: 10, elapsed: 65, now: 6, width: 80)
        #expect(eighty[1...].allSatisfy { $0.count <= 80 && !$0.hasSuffix("…") }, "\(eighty)")
        #expect(eighty[2].contains("cpu-openblas (…") && !eighty[2].contains("node0") && eighty[2].hasSuffix("ok"), "\(eighty[2])")
        #expect(eighty[3].contains("3.0 MiB/1.0 GiB") && eighty[3].contains("30%"), "\(eighty[3])")
        #expect(eighty[0] == "demo step 4/10 ETA 6s loss 2.6000 val 2.7500 2000 tok/s elapsed 1m05s", "\(eighty[0])")
        // Rank 0's step lines, padded or not, are the display's to show.
        #expect(LaunchConsole.isStepLine("step   7/5000  loss 3.1") && LaunchConsole.isStepLine("step 7/50  loss 3.1"))
        #expect(!LaunchConsole.isStepLine("step time is 7 ms") && !LaunchConsole.isStepLine("stepping"))
        let empty = Supervisor(configuration: SupervisorConfiguration(ranks: 1), startedAt: 0)
        let waiting = LaunchDisplay.lines(supervisor: empty, job: "demo", totalSteps: 10, elapsed: 1, now: 1)
        #expect(waiting[0].contains("waiting for the first step") && waiting[2].hasSuffix("waiting"))
    }

    final class Written: @unchecked Sendable {
        let box = NIOLockedValueBox<[(String, Bool)]>([])
        var text: String { box.withLockedValue { $0.map(\.0).joined() } }
        var errors: String { box.withLockedValue { $0.filter(\.1).map(\.0).joined() } }
    }

    @Test("live: step lines left to the display, other lines above it; plain: every line; quiet: errors, alerts, summary")
    func modes() {
        func console(_ mode: LaunchConsole.Mode) -> (LaunchConsole, Written) {
            let written = Written()
            return (LaunchConsole(mode: mode) { text, isError in written.box.withLockedValue { $0.append((text, isError)) } }, written)
        }
        let (live, shown) = console(.live)
        live.draw(["header", "row"])
        live.line("step 3/10  loss 2.5", isError: false)
        live.line("plan: rank 2 left out", isError: false)
        live.alert("rank 1 (…): no heartbeat")
        #expect(shown.text == "header\nrow\n" + "\u{1B}[2F\u{1B}[Jplan: rank 2 left out\nheader\nrow\n"
            + "\u{1B}[2F\u{1B}[J" + "alert: rank 1 (…): no heartbeat\nheader\nrow\n")
        #expect(shown.errors == "alert: rank 1 (…): no heartbeat\n")
        live.detach()
        live.always("summary: 10 steps")
        #expect(shown.text.hasSuffix("header\nrow\nsummary: 10 steps\n"))

        let (plain, lines) = console(.plain)
        plain.draw(["header"])
        plain.line("step 3/10  loss 2.5", isError: false)
        plain.line("Error: boom", isError: true)
        #expect(lines.text == "step 3/10  loss 2.5\nError: boom\n")

        let (quiet, few) = console(.quiet)
        quiet.line("step 3/10  loss 2.5", isError: false)
        quiet.line("Error: boom", isError: true)
        quiet.alert("a")
        quiet.always("summary")
        #expect(few.text == "Error: boom\nalert: a\nsummary\n")
        #expect(LaunchConsole.mode(quiet: true, terminal: true) == .quiet)
        #expect(LaunchConsole.mode(quiet: false, terminal: true) == .live)
        #expect(LaunchConsole.mode(quiet: false, terminal: false) == .plain)
    }
}
