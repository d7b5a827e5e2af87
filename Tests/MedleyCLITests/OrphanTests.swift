import Foundation
import MedleyCore
import MedleyTestSupport
import Testing

/// A signal to `medley train` ends the whole job: mpirun and every rank stop within seconds,
/// the temporary job directory goes, and the exit status says which signal. (mpirun runs in a
/// process group of its own, so before signals were forwarded the ranks kept training.)
@Suite("medley train leaves no orphans", .serialized)
struct OrphanTests {
    /// Processes whose command line mentions `marker`.
    static func processes(mentioning marker: String) -> [pid_t] {
        let own = getpid()
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry in
            guard let pid = pid_t(entry), pid != own,
                  let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { return nil }
            let line = String(decoding: raw.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            return line.contains(marker) ? pid : nil
        }
    }

    @Test("SIGTERM or SIGINT to medley train stops mpirun and every rank within 5 s", arguments: [SIGTERM, SIGINT])
    func signalEndsTheJob(signal: Int32) throws {
        // A private TMPDIR puts a marker in the command line of mpirun and of every worker.
        let marker = try TestSupport.temporaryDirectory("medley-orphan")
        defer {
            for pid in Self.processes(mentioning: marker) { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: marker)
        }
        let output = marker + ".out"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.medleyExecutable)
        // Slow sims keep the job running long past the signal.
        process.arguments = ["train", "--steps", "100000", "--timeout", "60"]
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["TMPDIR": marker, "MEDLEY_SIM_OPTIONS": "speed=0.01"]) { $1 }
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        defer { try? FileManager.default.removeItem(atPath: output) }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        // Wait for the ranks to be training (a step line), at most 90 s.
        var training = false
        for _ in 0..<900 where process.isRunning {
            if let text = try? String(contentsOfFile: output, encoding: .utf8), text.contains("step ") {
                training = true
                break
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        try #require(training, "the job never started: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        #expect(Self.processes(mentioning: marker).count >= 4, "mpirun and three workers should be running")

        kill(process.processIdentifier, signal)
        let signalled = Date()
        var left = Self.processes(mentioning: marker)
        while !left.isEmpty && Date().timeIntervalSince(signalled) < 5 {
            Thread.sleep(forTimeInterval: 0.1)
            left = Self.processes(mentioning: marker)
        }
        #expect(left.isEmpty, "still running 5 s after the signal: \(left)")
        process.waitUntilExit()
        try handle.close()
        #expect(process.terminationStatus == 128 + signal)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text.contains("stopped by SIG"), "\(text.suffix(400))")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: marker).filter { $0.hasPrefix("medley-") }
        #expect(leftovers.isEmpty, "temporary directories left behind: \(leftovers)")
    }
}
