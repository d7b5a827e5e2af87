import Foundation
import MedleyControl
import MedleyCore
import MedleySupervisor

/// What `medley launch` draws on a terminal: a header (step/total, ETA, loss, tokens/s) and a
/// row per chip (adapter, vendor, chip, share, step ms, idle %, memory, heartbeat age, status).
///
/// Pure: it reads a ``Supervisor`` and returns lines; ``LaunchConsole`` draws them.
public enum LaunchDisplay {
    /// The display's lines for `supervisor` at `now` (the supervisor's clock), `elapsed` seconds
    /// into a job of `totalSteps` steps named `job`; each line is cut to `width` characters.
    public static func lines(supervisor: Supervisor, job: String, totalSteps: Int, elapsed: Double, now: Double,
                             width: Int = 120) -> [String] {
        let steps = supervisor.steps
        let last = steps.last
        // The header's parts; on a narrow terminal the bar goes and the spacing tightens.
        var parts = ["\(job)", "step \(last?.step ?? 0)/\(totalSteps)"]
        var bar: String?
        if let last, totalSteps > 0 {
            let done = min(1, max(0, Double(last.step) / Double(totalSteps)))
            let filled = Int((done * 20).rounded(.down))
            bar = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 20 - filled) + "]"
            if let eta = eta(steps: steps, totalSteps: totalSteps) { parts.append("ETA \(duration(eta))") }
            parts.append("loss " + number(last.loss, 4))
            if let validation = steps.last(where: { $0.validationLoss != nil })?.validationLoss {
                parts.append("val " + number(validation, 4))
            }
            parts.append("\(Int(last.tokensPerSecond.isFinite ? last.tokensPerSecond.rounded() : 0)) tokens/s")
        } else {
            parts.append("waiting for the first step")
        }
        parts.append("elapsed \(duration(elapsed))")
        var wide = parts
        if let bar { wide[1] += " " + bar }
        var head = wide.joined(separator: "  ")
        if head.count > width {
            head = parts.map { $0.hasSuffix(" tokens/s") ? String($0.dropLast(8)) + "tok/s" : $0 }.joined(separator: " ")
        }
        var out = [head]
        // Below the full table's width, vendor and host go (they are in the hello, the logs and
        // the status page) and the other columns narrow, so a rank's row fits 80 columns.
        let full = width >= fullWidth
        let layout = full ? fullColumns : compactColumns
        func row(_ cells: [String]) -> String {
            Self.row(full ? cells : cells.enumerated().filter { ![2, 4].contains($0.offset) }.map(\.element), widths: layout)
        }
        out.append(row(["rank", "adapter", "vendor", "chip", "host", "share", "step ms", "idle", "memory", "beat", "status"]))
        for view in supervisor.ranks {
            let hello = view.hello
            let report = view.lastStepReport
            let idle = report.map { $0.stepMs > 0 ? "\(Int((100 * $0.idleMs / $0.stepMs).rounded()))%" : "-" } ?? "-"
            var memory = "-"
            if let hello {
                let used = view.lastHeartbeat?.deviceMemoryUsedBytes ?? 0
                memory = hello.memoryBytes > 0 ? "\(bytes(used))/\(bytes(hello.memoryBytes))" : bytes(used)
            }
            let beat = supervisor.heartbeatAge(rank: view.rank, at: now).map { number($0, 1) + " s" } ?? "-"
            out.append(row([
                "\(view.rank)", hello?.adapter ?? "-", hello?.vendor ?? "-", hello?.chip ?? "-", hello?.host ?? "-",
                report.map { "\($0.share)" } ?? "-", report.map { number($0.stepMs, 1) } ?? "-", idle, memory, beat,
                status(view),
            ]))
        }
        let count = supervisor.alertCount
        if count > 0, let latest = supervisor.alerts.last {
            out.append("\(count) alert\(count == 1 ? "" : "s"); last: \(latest.message)")
        }
        return out.map { cut($0, width) }
    }

    /// Seconds left, from the pace of the last (up to) 20 recorded steps; nil before two steps.
    static func eta(steps: [SupervisorStep], totalSteps: Int) -> Double? {
        guard steps.count >= 2, let last = steps.last else { return nil }
        let window = steps.suffix(21)
        guard let first = window.first, last.step > first.step, last.at > first.at else { return nil }
        let perStep = (last.at - first.at) / Double(last.step - first.step)
        return max(0, Double(totalSteps - last.step) * perStep)
    }

    static func status(_ view: RankView) -> String {
        switch view.status {
        case .waiting: "waiting"
        case .alive: view.isSlow ? "slow" : view.isStraggler ? "straggler" : "ok"
        case .silent: view.stalledSince != nil ? "stalled" : "silent"
        case .failed: "fault"
        case .exited(let status, let signal):
            signal.map { "killed (\($0))" } ?? (status == 0 || status == SupervisorEvent.unknownExitStatus && view.lastHeartbeat?.health == .finished
                ? "done" : status < 0 ? "gone" : "exit \(status)")
        }
    }

    /// Column widths of the full table: rank, adapter, vendor, chip, host, share, step ms, idle, memory, beat, status.
    static let fullColumns = [4, 10, 12, 22, 10, 5, 8, 5, 17, 7, 9]
    /// Without vendor and host, narrower: rank, adapter, chip, share, step ms, idle, memory, beat, status (80 columns).
    static let compactColumns = [4, 9, 15, 5, 7, 4, 15, 5, 8]
    /// The terminal width from which the full table is shown.
    static let fullWidth = fullColumns.reduce(0, +) + fullColumns.count - 1

    /// Fixed-width columns; a cell longer than its column is cut with "…" (the last one is not cut).
    static func row(_ cells: [String], widths: [Int] = fullColumns) -> String {
        var line = ""
        for (index, cell) in cells.enumerated() {
            let width = index < widths.count ? widths[index] : 8
            let fitted = index == cells.count - 1 || cell.count <= width ? cell : String(cell.prefix(width - 1)) + "…"
            let padded = fitted.count >= width ? fitted : fitted + String(repeating: " ", count: width - fitted.count)
            line += (index == 0 ? "" : " ") + padded
        }
        while line.last == " " { line.removeLast() }
        return line
    }

    /// "1h02m", "3m05s", "42s".
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh%02dm", s / 3600, s % 3600 / 60) }
        if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return "\(s)s"
    }

    /// "12 MiB", "1.5 GiB", "512 B".
    static func bytes(_ value: UInt64) -> String { ByteCount.describe(value, compact: true) }

    static func number(_ value: Double, _ decimals: Int) -> String {
        value.isFinite ? String(format: "%.\(decimals)f", value) : "\(value)"
    }

    static func cut(_ line: String, _ width: Int) -> String {
        guard width > 1, line.count > width else { return line }
        return String(line.prefix(width - 1)) + "…"
    }
}

/// Where `medley launch` writes what the user sees, in one of three modes: `live` (a terminal:
/// the display redrawn in place, other lines printed above it), `plain` (every line as it
/// comes: for logs and pipes), `quiet` (errors, alerts and the summary only). Every line also
/// goes to the run directory's `supervisor.log`. Thread-safe.
public final class LaunchConsole: @unchecked Sendable {
    public enum Mode: Sendable, Equatable {
        case live, plain, quiet
    }

    public let mode: Mode
    private let lock = NSLock()
    private let write: @Sendable (String, Bool) -> Void
    private var log: FileHandle?
    private var shown: [String] = []

    /// A console that hands its text to `write` (text, is it for standard error) and copies every
    /// line to `logPath`, when given.
    public init(mode: Mode, logPath: String? = nil, write: @escaping @Sendable (String, Bool) -> Void) {
        self.mode = mode
        self.write = write
        if let logPath, FileManager.default.createFile(atPath: logPath, contents: nil) {
            log = FileHandle(forWritingAtPath: logPath)
        }
    }

    /// `live` on a terminal, else `plain`; `quiet` when asked.
    public static func mode(quiet: Bool, terminal: Bool = isatty(STDOUT_FILENO) != 0) -> Mode {
        quiet ? .quiet : terminal ? .live : .plain
    }

    /// The terminal's width in columns (80 when it cannot tell).
    public static var terminalWidth: Int {
        var size = winsize()
        return ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 0 ? Int(size.ws_col) : 80
    }

    /// One line of the job's own output (the plan, rank 0's lines, errors). In `live` mode the
    /// per-step lines are left to the display; in `quiet` mode only errors are shown.
    public func line(_ text: String, isError: Bool) {
        lock.lock()
        defer { lock.unlock() }
        log?.write(Data((text + "\n").utf8))
        switch mode {
        case .plain: write(text + "\n", isError)
        case .quiet: if isError { write(text + "\n", true) }
        case .live:
            if !isError && Self.isStepLine(text) { return }
            above(text + "\n", isError)
        }
    }

    /// An alert's line (shown in every mode).
    public func alert(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        log?.write(Data(("alert: " + text + "\n").utf8))
        if mode == .live { above("alert: " + text + "\n", true) } else { write("alert: " + text + "\n", true) }
    }

    /// A line shown in every mode (the summary).
    public func always(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        log?.write(Data((text + "\n").utf8))
        if mode == .live { above(text + "\n", false) } else { write(text + "\n", false) }
    }

    /// Redraws the display (`live` mode only; otherwise nothing).
    public func draw(_ lines: [String]) {
        lock.lock()
        defer { lock.unlock() }
        guard mode == .live else { return }
        write(erase() + lines.map { $0 + "\n" }.joined(), false)
        shown = lines
    }

    /// Leaves the display as it is on screen; later lines go below it.
    public func detach() {
        lock.lock()
        defer { lock.unlock() }
        shown = []
    }

    /// Detaches the display and closes `supervisor.log`.
    public func finish() {
        detach()
        lock.lock()
        defer { lock.unlock() }
        try? log?.close()
        log = nil
    }

    /// Whether a line is rank 0's per-step line ("step 12/100 …"), which the display replaces.
    static func isStepLine(_ text: String) -> Bool {
        guard text.hasPrefix("step ") else { return false }
        // "step 7/50 …" or, with more steps, "step   7/5000 …".
        return text.dropFirst(5).drop { $0 == " " }.first?.isNumber == true
    }

    /// Prints `text` above the display: erase it, print, draw it again.
    private func above(_ text: String, _ isError: Bool) {
        if shown.isEmpty {
            write(text, isError)
            return
        }
        write(erase(), false)
        write(text, isError)
        write(shown.map { $0 + "\n" }.joined(), false)
    }

    /// Moves the cursor to the display's first line and clears to the end of the screen.
    private func erase() -> String {
        shown.isEmpty ? "" : "\u{1B}[\(shown.count)F\u{1B}[J"
    }
}
