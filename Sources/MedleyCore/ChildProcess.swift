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
        /// Standard output followed by standard error.
        public var output: String { stdout + stderr }
    }

    /// Runs `executable` with `arguments` and `environment` added to this process's
    /// environment, killing it after `timeoutSeconds`.
    ///
    /// `onOutput`, when given, is called on this thread with each piece of standard output
    /// as it arrives (every 20 ms at most), so a caller can show a long run live.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        timeoutSeconds: Double, mergeOutput: Bool = false, killGraceSeconds: Double = 1,
        onOutput: ((String) -> Void)? = nil
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
        process.standardInput = FileHandle.nullDevice
        let start = Date()
        do {
            try process.run()
        } catch {
            throw MedleyError(.notFound, "cannot start \(executable): \(error.localizedDescription)")
        }
        let deadline = start.addingTimeInterval(timeoutSeconds)
        var timedOut = false
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
        while process.isRunning {
            follow(final: false)
            if Date() > deadline {
                timedOut = true
                process.terminate()
                let killAt = Date().addingTimeInterval(killGraceSeconds)
                while process.isRunning && Date() < killAt { Thread.sleep(forTimeInterval: 0.02) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        process.waitUntilExit()
        follow(final: true)
        try? follower?.close()
        try outHandle.close()
        if !mergeOutput { try errHandle.close() }
        let stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
        let stderr = mergeOutput ? "" : ((try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
        return Outcome(
            status: process.terminationStatus, stdout: stdout, stderr: stderr, timedOut: timedOut,
            seconds: Date().timeIntervalSince(start))
    }
}
