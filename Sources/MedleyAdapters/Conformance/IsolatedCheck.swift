import CMedleyAdapter
import Foundation
import MedleyCore

#if canImport(Glibc)
import Glibc
#endif

/// The conformance check run in a child process, so that an adapter that crashes, scribbles
/// over the heap or hangs fails one row instead of taking the checker down with it.
///
/// The child is `medley adapter check … --child-from K`: it runs the check's units from K on
/// and writes one protocol line per event (a unit begins, a unit's rows, the adapter's name)
/// straight to its standard output. When it dies, the unit it was in becomes a FAIL row
/// naming the signal (and the last line the adapter or the C library wrote to standard
/// error), and a new child goes on with the next unit. A unit that runs past `unitTimeout`
/// is a FAIL row too ("did not return"), and its child is killed.
public struct IsolatedCheck {
    /// The check to run.
    public var check: ConformanceCheck
    /// The `medley` executable that runs the child.
    public var executable: String
    /// Seconds one unit may take before it counts as hung.
    public var unitTimeout: Double

    /// Prefix of every protocol line; anything else on the child's output is the adapter's own.
    public static let linePrefix = "@medley-check "

    /// Creates an isolated run of `check` through `executable`.
    public init(check: ConformanceCheck, executable: String, unitTimeout: Double = 120) {
        self.check = check
        self.executable = executable
        self.unitTimeout = unitTimeout
    }

    /// The child's command line, resuming at unit `start`.
    public func arguments(from start: Int) -> [String] {
        var arguments = ["adapter", "check", check.candidate]
        for (key, value) in check.options { arguments += ["--option", "\(key)=\(value)"] }
        arguments += ["--rtol", "\(check.tolerance.rtol)", "--atol", "\(check.tolerance.atol)", "--seed", "\(check.seed)"]
        for op in check.ops ?? [] { arguments += ["--op", op] }
        return arguments + ["--child-from", "\(start)"]
    }

    /// One line of the child protocol.
    struct Event: Codable {
        var unit: Int?
        var rows: [ConformanceReport.Row]?
        var adapter: String?
        var path: String?
        var end: Bool?
    }

    /// Writes one protocol line to standard output at once (unbuffered: the child may die next).
    public static func emit(unit: Int? = nil, rows: [ConformanceReport.Row]? = nil, adapter: String? = nil,
                            path: String? = nil, end: Bool? = nil)
    {
        let event = Event(unit: unit, rows: rows, adapter: adapter, path: path, end: end)
        guard let data = try? JSONEncoder().encode(event) else { return }
        FileHandle.standardOutput.write(Data(linePrefix.utf8) + data + Data("\n".utf8))
    }

    /// Runs the child protocol's side of a check: what `--child-from` does.
    public static func runChild(_ check: ConformanceCheck, from start: Int) {
        // Ends with the parent: a hung adapter must not outlive a check that was killed.
        if CMedleyAdapter_die_with_parent() != 0 { exit(1) }
        _ = check.run(
            from: start, onUnit: { emit(unit: $0) }, onRows: { if !$0.isEmpty { emit(rows: $0) } },
            onLoaded: { emit(adapter: $0, path: $1) })
        emit(end: true)
    }

    /// Runs the whole check, handing each row to `onRow` as it arrives.
    public func run(onRow: @escaping (ConformanceReport.Row) -> Void = { _ in }) -> ConformanceReport {
        var report = ConformanceReport(
            adapter: check.candidate, path: "", options: Dictionary(check.options, uniquingKeysWith: { $1 }),
            tolerance: check.tolerance, rows: [])
        let units = check.units
        var start = 0
        while start < units.count {
            var current: Int?
            var ended = false
            var pending = ""
            var unitStarted = Date()
            func take(_ line: Substring) {
                guard line.hasPrefix(Self.linePrefix),
                    let event = try? JSONDecoder().decode(Event.self, from: Data(line.dropFirst(Self.linePrefix.count).utf8))
                else { return }
                if let unit = event.unit {
                    current = unit
                    unitStarted = Date()
                }
                if let adapter = event.adapter { report.adapter = adapter }
                if let path = event.path { report.path = path }
                for row in event.rows ?? [] {
                    report.rows.append(row)
                    onRow(row)
                }
                if event.end == true { ended = true }
            }
            let outcome: ChildProcess.Outcome
            do {
                outcome = try ChildProcess.run(
                    executable, arguments(from: start),
                    environment: [
                        "MEDLEY_ADAPTER_PATH": check.searchPath.directories.joined(separator: ":"),
                        // A crash in the adapter is the expected case here: no Swift backtrace.
                        "SWIFT_BACKTRACE": "enable=no",
                    ],
                    timeoutSeconds: unitTimeout * Double(units.count - start + 1), killGraceSeconds: 0.5,
                    pollSeconds: 0.01, abortWhen: { Date().timeIntervalSince(unitStarted) > self.unitTimeout },
                    onOutput: { text in
                        pending += text
                        while let newline = pending.firstIndex(of: "\n") {
                            take(pending[..<newline])
                            pending = String(pending[pending.index(after: newline)...])
                        }
                    })
            } catch {
                report.add("table", "load", .fail, "cannot run the check's child process: \(error)")
                return report
            }
            if !pending.isEmpty { take(Substring(pending)) }
            if ended { break }
            let unit = current ?? start
            let (group, item) = units[min(unit, units.count - 1)].row
            let what = units[min(unit, units.count - 1)].description
            let detail: String
            if outcome.aborted || outcome.timedOut {
                detail = "did not return within \(fmt(unitTimeout)) s during \(what) (the adapter hangs); "
                    + "the check was killed there and goes on with the next unit"
            } else if let signal = outcome.killedFromOutside {
                detail = "the adapter crashed the check with signal \(signal) (\(Self.signalName(signal))) during \(what)"
                    + Self.lastLine(outcome.stderr)
                    + "; a write outside its buffers or through a bad pointer; the check goes on with the next unit"
            } else {
                detail = "the check process ended with status \(outcome.status) during \(what)"
                    + Self.lastLine(outcome.stderr)
                    + " (an entry must return an error object, never exit); the check goes on with the next unit"
            }
            let row = ConformanceReport.Row(group: group, item: item, status: .fail, detail: detail)
            report.rows.append(row)
            onRow(row)
            // Without a device there is nothing more to check.
            if unit == 0 { break }
            start = unit + 1
        }
        return report
    }

    /// "SIGSEGV" for 11 and so on.
    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGSEGV: "SIGSEGV"
        case SIGABRT: "SIGABRT, e.g. the C library found its heap corrupted"
        case SIGBUS: "SIGBUS"
        case SIGFPE: "SIGFPE"
        case SIGILL: "SIGILL"
        case SIGKILL: "SIGKILL"
        default: "signal \(signal)"
        }
    }

    /// `; it last wrote "…"` from the child's standard error, or nothing.
    static func lastLine(_ stderr: String) -> String {
        guard let line = stderr.split(separator: "\n").last(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty })
        else { return "" }
        let text = line.trimmingCharacters(in: .whitespaces)
        return "; its last words on stderr: \"\(text.count > 160 ? String(text.prefix(160)) + "…" : text)\""
    }
}
