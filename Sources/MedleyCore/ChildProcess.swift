import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a program as a child process and waits for it, never longer than a deadline.
///
/// Output goes to temporary files rather than pipes, so a chatty child can never
/// block on a full pipe while the parent waits. At the deadline the child gets
/// SIGTERM, then SIGKILL after `killGraceSeconds`.
public enum ChildProcess {
    /// The running executable's path (links resolved): what a command passes to `mpirun`
    /// to start more copies of itself.
    public static var currentExecutable: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
    }

    /// How a child ended.
    public struct Outcome: Sendable {
        /// Exit status (or the terminating signal's number, as Foundation reports it).
        public var status: Int32
        /// Standard output (with `mergeOutput`, standard output and error interleaved).
        public var stdout: String
        /// Standard error (empty with `mergeOutput`).
        public var stderr: String
        /// Whether the deadline ended the child.
        public var timedOut: Bool
        /// Wall-clock seconds from start to exit.
        public var seconds: Double
        /// The signal (SIGINT, SIGTERM or SIGHUP) this process received while the child ran and
        /// passed on to it, when `forwardSignals` was on; nil otherwise.
        public var interruptedBy: Int32? = nil
        /// Whether `abortWhen` ended the child.
        public var aborted = false
        /// The signal that ended the child when this process did not send it (killed from
        /// outside: `kill -9` on mpirun by hand); nil otherwise.
        public var killedFromOutside: Int32? = nil
        /// Standard output followed by standard error.
        public var output: String { stdout + stderr }
    }

    /// Runs `executable` with `arguments` and `environment` added to this process's
    /// environment, killing it after `timeoutSeconds`.
    ///
    /// `onOutput`, when given, is called on this thread with each piece of standard output
    /// as it arrives (every `pollSeconds`, 20 ms by default), so a caller can show a long run live. `input`, when
    /// given, is the child's standard input (from a file, so the child reads it at its own pace);
    /// otherwise it reads /dev/null. At the deadline the child's whole process group is ended.
    ///
    /// `askToStop`, with `forwardSignals`, is called at the first signal caught: it asks the
    /// child to end by itself (the supervisor's `stop` to every rank) and returns how many
    /// seconds to give it before its group gets the signal; a second signal ends the wait.
    /// `abortWhen`, polled with the output, ends the child's group when it returns true.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        timeoutSeconds: Double, mergeOutput: Bool = false, killGraceSeconds: Double = 1,
        forwardSignals: Bool = false, input: Data? = nil, askToStop: ((Int32) -> Double)? = nil,
        pollSeconds: Double = 0.02, abortWhen: (() -> Bool)? = nil, onOutput: ((String) -> Void)? = nil
    ) throws -> Outcome {
        let directory = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("medley-child-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let outHandle = try FileHandle(forWritingTo: outURL)
        let errHandle = mergeOutput ? outHandle : try FileHandle(forWritingTo: errURL)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = outHandle
        process.standardError = errHandle
        if let input {
            let inURL = directory.appendingPathComponent("stdin")
            try input.write(to: inURL)
            process.standardInput = try FileHandle(forReadingFrom: inURL)
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        let start = Date()
        // Foundation starts the child as the leader of a process group of its own, so a Ctrl-C
        // at the terminal (or a SIGTERM to this process) never reaches it or what it starts:
        // with `forwardSignals`, this process catches them and ends the child's whole group.
        let catcher = forwardSignals ? SignalCatcher() : nil
        defer { catcher?.restore() }
        do {
            try process.run()
        } catch {
            throw MedleyError(.notFound, "cannot start \(executable): \(error.localizedDescription)")
        }
        let group = process.processIdentifier
        var interruptedBy: Int32?
        /// Sends `signal` to the child's process group (or to the child, if it leads none).
        func signalGroup(_ signal: Int32) {
            if getpgid(group) == group { kill(-group, signal) } else { kill(group, signal) }
        }
        let deadline = start.addingTimeInterval(timeoutSeconds)
        var timedOut = false
        var aborted = false
        let follower = onOutput.flatMap { _ in try? FileHandle(forReadingFrom: outURL) }
        var pending = Data()
        func follow(final: Bool) {
            guard let onOutput, let follower else { return }
            pending.append(follower.availableData)
            // Hand over whole UTF-8 sequences only; keep a split character for the next read.
            var cut = pending.count
            if !final && !pending.isEmpty {
                let bytes = [UInt8](pending.suffix(4))
                for back in 1...bytes.count {
                    let byte = bytes[bytes.count - back]
                    if byte & 0xC0 == 0x80 { continue }  // a continuation byte: keep looking for the lead
                    let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
                    if length > back { cut = pending.count - back }
                    break
                }
            }
            guard cut > 0 else { return }
            onOutput(String(decoding: pending.prefix(cut), as: UTF8.self))
            pending = Data(pending.dropFirst(cut))
        }
        // What the child started (mpirun's ranks lead process groups of their own), noted every
        // half second, so that if the child is killed from outside none of it outlives it.
        var started: [pid_t: Data] = [:]
        var notedAt = Date.distantPast
        var signalled = false
        while process.isRunning {
            follow(final: false)
            if Date().timeIntervalSince(notedAt) > 0.5 {
                notedAt = Date()
                var now: [pid_t: Data] = [:]
                for pid in Self.descendants(of: group) {
                    if let line = started[pid] ?? FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") { now[pid] = line }
                }
                if process.isRunning { started = now }
            }
            if let caught = catcher?.caught, interruptedBy == nil {
                interruptedBy = caught
                // mpirun's ranks lead process groups of their own: note every descendant now,
                // while they are still the child's, so none outlives it if it must be killed.
                let family = Self.descendants(of: group)
                if let grace = askToStop?(caught), grace > 0 {
                    let giveUpAt = Date().addingTimeInterval(grace)
                    while process.isRunning && Date() < giveUpAt && SignalCatcher.count < 2 {
                        follow(final: false)
                        Thread.sleep(forTimeInterval: 0.02)
                    }
                    // It ended by itself: whatever is left of it is killed below, by its group.
                    if !process.isRunning { break }
                }
                signalled = true
                signalGroup(caught)
                let killAt = Date().addingTimeInterval(killGraceSeconds)
                while process.isRunning && Date() < killAt {
                    follow(final: false)
                    Thread.sleep(forTimeInterval: 0.02)
                }
                if process.isRunning { signalGroup(SIGKILL) }
                for pid in family { kill(pid, SIGKILL) }
                break
            }
            if let abortWhen, abortWhen() {
                // The caller ended it (a supervisor that judged the job lost): its group, as at a deadline.
                aborted = true
                signalled = true
                let family = Self.descendants(of: group)
                signalGroup(SIGTERM)
                let killAt = Date().addingTimeInterval(killGraceSeconds)
                while process.isRunning && Date() < killAt { Thread.sleep(forTimeInterval: 0.02) }
                if process.isRunning { signalGroup(SIGKILL) }
                for pid in family { kill(pid, SIGKILL) }
                break
            }
            if Date() > deadline {
                timedOut = true
                signalled = true
                signalGroup(SIGTERM)
                let killAt = Date().addingTimeInterval(killGraceSeconds)
                while process.isRunning && Date() < killAt { Thread.sleep(forTimeInterval: 0.02) }
                if process.isRunning { signalGroup(SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: pollSeconds)
        }
        process.waitUntilExit()
        var killedFromOutside: Int32?
        if process.terminationReason == .uncaughtSignal && !signalled {
            killedFromOutside = process.terminationStatus
            // Killed by someone else: what it started goes too (each still running the command it ran).
            for (pid, line) in started where FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") == line {
                kill(pid, SIGKILL)
            }
        }
        // Whatever the child left running in its group (ranks of a killed mpirun) goes too.
        if forwardSignals && getpgid(group) == group { kill(-group, SIGKILL) }
        // Past its deadline, nothing it started outlives it either.
        if timedOut { kill(-group, SIGKILL) }
        follow(final: true)
        try? follower?.close()
        try outHandle.close()
        if !mergeOutput { try errHandle.close() }
        let stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let stderr = mergeOutput ? "" : ((try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
        return Outcome(
            status: process.terminationStatus, stdout: stdout, stderr: stderr, timedOut: timedOut,
            seconds: Date().timeIntervalSince(start), interruptedBy: interruptedBy, aborted: aborted,
            killedFromOutside: killedFromOutside)
    }
}

extension ChildProcess {
    /// Every process below `root` in the process tree (children, their children, …), read
    /// from /proc; empty where there is no /proc.
    public static func descendants(of root: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var parents: [pid_t: pid_t] = [:]
        for entry in entries {
            guard let pid = pid_t(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { continue }
            // "pid (comm) state ppid …": the command may hold spaces and parentheses.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = pid_t(fields[1]) { parents[pid] = parent }
        }
        var found: [pid_t] = []
        var frontier: Set<pid_t> = [root]
        while !frontier.isEmpty {
            let next = parents.filter { frontier.contains($0.value) }.map(\.key)
            found += next
            frontier = Set(next)
        }
        return found
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP while it is installed and remembers the first one;
/// ``restore()`` puts the previous handlers back.
final class SignalCatcher {
    static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]
    /// The first signal caught (written by the handler, read by the waiting loop).
    nonisolated(unsafe) static var pending: Int32 = 0
    /// How many signals were caught.
    nonisolated(unsafe) static var count: Int32 = 0
    private var previous: [Int32: sigaction] = [:]

    init() {
        Self.pending = 0
        Self.count = 0
        // A parent may have started this process with these signals blocked (the mask is
        // inherited): unblock them on this thread, or they would wait unseen.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for signal in Self.signals { sigaddset(&unblock, signal) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        for signal in Self.signals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { caught in
                if SignalCatcher.pending == 0 { SignalCatcher.pending = caught }
                SignalCatcher.count += 1
            }
            sigemptyset(&action.sa_mask)
            var old = sigaction()
            sigaction(signal, &action, &old)
            previous[signal] = old
        }
    }

    /// The signal caught so far, if any.
    var caught: Int32? { Self.pending == 0 ? nil : Self.pending }

    func restore() {
        for (signal, old) in previous {
            var action = old
            sigaction(signal, &action, nil)
        }
        previous = [:]
    }
}
