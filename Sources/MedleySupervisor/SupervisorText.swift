import MedleyControl

/// How the supervisor writes its one-line messages (deterministic; no locale, no Foundation).
enum SupervisorText {
    /// `text` with every line break and control character turned into a space, runs of spaces
    /// folded, trimmed, and cut to `limit` characters (with "…").
    static func oneLine(_ text: String, limit: Int = 300) -> String {
        var result = ""
        var lastWasSpace = true
        for scalar in text.unicodeScalars {
            let isSpace = scalar.properties.generalCategory == .control || scalar.properties.isWhitespace
                || scalar == "\u{2028}" || scalar == "\u{2029}" || scalar == "\u{85}"
            if isSpace {
                if !lastWasSpace { result.unicodeScalars.append(" ") }
                lastWasSpace = true
            } else {
                result.unicodeScalars.append(scalar)
                lastWasSpace = false
            }
        }
        while result.last == " " { result.removeLast() }
        if result.count > limit { result = String(result.prefix(limit - 1)) + "…" }
        return result
    }

    /// "sim acme-x1 on host1, pid 123"
    static func identity(_ hello: ControlHello) -> String {
        oneLine("\(hello.adapter) \(hello.chip) on \(hello.host), pid \(hello.pid)", limit: 200)
    }

    /// "rank 2 (sim acme-x1 on host1, pid 123)", or "rank 2 (no hello yet)".
    static func who(_ view: RankView) -> String {
        "rank \(view.rank) (\(view.hello.map(identity) ?? "no hello yet"))"
    }

    /// A number of seconds as the user wrote it: "10", "2.5".
    static func seconds(_ value: Double) -> String {
        guard value.isFinite else { return "\(value)" }
        if value == value.rounded(), abs(value) < 1e15 { return "\(Int(value))" }
        return tenths(value)
    }

    /// A number to one decimal: "10.2".
    static func tenths(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e15 else { return "\(value)" }
        let scaled = Int((value * 10).rounded())
        let sign = scaled < 0 ? "-" : ""
        return "\(sign)\(abs(scaled) / 10).\(abs(scaled) % 10)"
    }

    static func kind(_ kind: ControlFaultKind) -> String {
        switch kind {
        case .adapterError: "adapter error"
        case .nonFinite: "non-finite value"
        case .outOfMemory: "out of memory"
        case .timeout: "timeout"
        case .other: "other"
        case .corruption: "silent corruption"
        }
    }

    /// "exited with status 3", "killed by signal 9 (SIGKILL)"; a status below 0 with no signal
    /// (``SupervisorEvent/unknownExitStatus``) is a process that vanished without a word.
    static func exit(_ status: Int32, _ signal: Int32?) -> String {
        if signal == nil && status < 0 { return "its process ended without a word (killed or crashed; the connection closed)" }
        if let signal {
            return "killed by signal \(signal)\(signalName(signal).map { " (\($0))" } ?? "")"
        }
        return "exited with status \(status)"
    }

    /// Linux's names of the common signals.
    static func signalName(_ signal: Int32) -> String? {
        let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
                                      8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
                                      14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ"]
        return names[signal]
    }

    static func atStep(_ step: Int?) -> String {
        step.map { " at step \($0)" } ?? ""
    }

    static func afterStep(_ step: Int?) -> String {
        step.map { " after step \($0)" } ?? ""
    }
}
