import Foundation
import MedleyCore

extension RecoveryBenchmark {
    /// A step record as the benchmark saw it in `steps.jsonl`.
    struct ObservedRecord: Sendable, Hashable {
        var step: Int
        var unixMillis: Int64
        var stepMs: Double
        var loss: Double
        var seconds: Double { Double(unixMillis) / 1000 }
    }

    /// An alert from `alerts.jsonl`: its kind, message, rank, its own `unix_millis` (recovery
    /// decisions have one) and when this process first saw it.
    struct ObservedAlert: Sendable {
        var kind: String
        var message: String
        var rank: Int?
        var unixSeconds: Double?
        var seen: Double
    }

    /// A line of `supervisor.log` and when this process first saw it.
    struct ObservedLine: Sendable {
        var text: String
        var seen: Double
    }

    /// What one launch left.
    struct Observed {
        /// Every record seen, in the order seen (a recomputed step appears again).
        var records: [ObservedRecord]
        /// The last record of each step, by step (what `steps.jsonl` ends with).
        var kept: [ObservedRecord]
        var alerts: [ObservedAlert]
        var lines: [ObservedLine]
        var exitStatus: Int32
        var startedAt: Double
        var wallSeconds: Double
        /// Σ step time of `kept`, seconds.
        var usefulSeconds: Double { kept.map { $0.stepMs / 1000 }.reduce(0, +) }
    }

    /// Lines appended to a file, read as they come; a file replaced (a new inode) or shortened is read again from the start.
    final class Tail {
        let path: String
        private var offset: UInt64 = 0
        private var inode: UInt64 = 0
        private var partial = Data()

        init(_ path: String) { self.path = path }

        /// Whole lines added since the last call.
        func read() -> [String] {
            var info = stat()
            guard stat(path, &info) == 0 else { return [] }
            if UInt64(info.st_ino) != inode || UInt64(info.st_size) < offset {
                inode = UInt64(info.st_ino)
                offset = 0
                partial = Data()
            }
            guard UInt64(info.st_size) > offset, let handle = FileHandle(forReadingAtPath: path) else { return [] }
            defer { try? handle.close() }
            handle.seek(toFileOffset: offset)
            let data = handle.readDataToEndOfFile()
            offset += UInt64(data.count)
            partial.append(data)
            guard let last = partial.lastIndex(of: UInt8(ascii: "\n")) else { return [] }
            let whole = partial[partial.startIndex...last]
            partial = Data(partial[partial.index(after: last)...])
            return whole.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// Every launch still running, so a signal to the benchmark can end them.
    static let running = Registry()

    final class Registry: @unchecked Sendable {
        private let lock = NSLock()
        private var runs: [ObjectIdentifier: LaunchRun] = [:]
        func add(_ run: LaunchRun) { lock.withLock { runs[ObjectIdentifier(run)] = run } }
        func remove(_ run: LaunchRun) { _ = lock.withLock { runs.removeValue(forKey: ObjectIdentifier(run)) } }
        func killAll() { for run in lock.withLock({ Array(runs.values) }) { run.killEverything() } }
    }

    /// Ends every launch the benchmark started (its group and every process below it): for a
    /// signal handler of the command.
    public static func killAllLaunches() { running.killAll() }

    /// One `medley launch` of a job in a fresh folder, watched while it runs.
    final class LaunchRun: @unchecked Sendable {
        let directory: String
        var runDirectory: String { directory + "/run" }
        let jobPath: String
        let settings: Settings
        private let lock = NSLock()
        private var process: Process?
        private var family: Set<pid_t> = []
        private var pids: [Int: pid_t] = [:]
        private(set) var records: [ObservedRecord] = []
        private var seenRecords: Set<ObservedRecord> = []
        private(set) var alerts: [ObservedAlert] = []
        private(set) var lines: [ObservedLine] = []
        private let stepsTail: Tail, alertsTail: Tail, logTail: Tail

        init(yaml: String, settings: Settings, label: String) throws {
            let base = settings.keepRuns ?? NSTemporaryDirectory()
            directory = URL(fileURLWithPath: base).appendingPathComponent("medley-bench-recovery-\(label)-\(UUID().uuidString.prefix(8))").path
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                jobPath = directory + "/job.yaml"
                try yaml.write(toFile: jobPath, atomically: true, encoding: .utf8)
            } catch {
                throw MedleyError(.io, "cannot make the benchmark's folder \(directory): \(error.localizedDescription)")
            }
            self.settings = settings
            stepsTail = Tail(directory + "/run/steps.jsonl")
            alertsTail = Tail(directory + "/run/alerts.jsonl")
            logTail = Tail(directory + "/run/supervisor.log")
        }

        /// Runs the launch until it exits, `deadline` seconds pass (then it is killed) or, with
        /// `stopAfter`, SIGTERM asks it to stop (it checkpoints and exits 75) after that many
        /// seconds. `onPoll` runs every 10 ms with the run's observations so far.
        func run(deadline: Double, stopAfter: Double? = nil, onPoll: (LaunchRun) -> Void) throws -> Observed {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: settings.program)
            process.arguments = ["launch", jobPath, "--run-dir", runDirectory, "--quiet", "--timeout", String(Int(deadline.rounded(.up)))]
            let outputPath = directory + "/launch-output.txt"
            _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
            guard let output = FileHandle(forWritingAtPath: outputPath) else { throw MedleyError(.io, "cannot write \(outputPath)") }
            defer { try? output.close() }
            process.standardOutput = output
            process.standardError = output
            process.standardInput = FileHandle.nullDevice
            lock.withLock { self.process = process }
            RecoveryBenchmark.running.add(self)
            defer { RecoveryBenchmark.running.remove(self) }
            let started = Date()
            do {
                try process.run()
            } catch {
                throw MedleyError(.notFound, "cannot start \(settings.program): \(error.localizedDescription)")
            }
            var stopSent: Date?
            var lastScan = Date.distantPast
            while process.isRunning {
                poll()
                if Date().timeIntervalSince(lastScan) > 0.25 {
                    noteFamily()
                    lastScan = Date()
                }
                onPoll(self)
                let elapsed = Date().timeIntervalSince(started)
                if let stopAfter, elapsed >= stopAfter, stopSent == nil {
                    kill(process.processIdentifier, SIGTERM)
                    stopSent = Date()
                }
                // mpirun's own --timeout is `deadline`; give the launch 15 s more to end by itself.
                if elapsed > deadline + 15 || (stopSent.map { Date().timeIntervalSince($0) > 30 } ?? false) {
                    killEverything()
                    break
                }
                Thread.sleep(forTimeInterval: 0.01)
            }
            process.waitUntilExit()
            let wall = Date().timeIntervalSince(started)
            killEverything()
            poll()
            var last: [Int: ObservedRecord] = [:]
            for record in records { last[record.step] = record }
            return Observed(
                records: records, kept: last.values.sorted { $0.step < $1.step }, alerts: alerts, lines: lines,
                exitStatus: process.terminationStatus, startedAt: started.timeIntervalSince1970, wallSeconds: wall)
        }

        /// Reads what the run directory's files gained.
        func poll() {
            let now = Date().timeIntervalSince1970
            for line in stepsTail.read() {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let step = object["step"] as? Int, let millis = (object["unix_millis"] as? NSNumber)?.int64Value
                else { continue }
                let record = ObservedRecord(step: step, unixMillis: millis, stepMs: (object["step_ms"] as? Double) ?? 0,
                                            loss: (object["loss"] as? Double) ?? .nan)
                if seenRecords.insert(record).inserted { records.append(record) }
            }
            for line in alertsTail.read() {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let kind = object["kind"] as? String
                else { continue }
                alerts.append(ObservedAlert(
                    kind: kind, message: object["message"] as? String ?? "", rank: object["rank"] as? Int,
                    unixSeconds: (object["unix_millis"] as? NSNumber).map { $0.doubleValue / 1000 }, seen: now))
            }
            for line in logTail.read() where line.contains("resuming from ") || line.contains("run directory ") || line.hasPrefix("Error") {
                lines.append(ObservedLine(text: line, seen: now))
            }
        }

        /// Notes every process below the launch (mpirun's ranks lead groups of their own).
        private func noteFamily() {
            guard let pid = lock.withLock({ process?.processIdentifier }), pid > 0 else { return }
            let found = ChildProcess.descendants(of: pid)
            lock.withLock { family.formUnion(found) }
        }

        /// The pid of rank `rank`'s process now (a `medley worker` below this launch), if any:
        /// the one found last while it still runs as a worker, else found again in /proc.
        func rankPid(_ rank: Int) -> pid_t? {
            if let known = lock.withLock({ pids[rank] }), kill(known, 0) == 0,
               let raw = FileManager.default.contents(atPath: "/proc/\(known)/cmdline"),
               raw.split(separator: 0).dropFirst().first.map({ String(decoding: $0, as: UTF8.self) }) == "worker" {
                return known
            }
            let found = findRankPid(rank)
            lock.withLock { pids[rank] = found }
            return found
        }

        private func findRankPid(_ rank: Int) -> pid_t? {
            guard let pid = lock.withLock({ process?.processIdentifier }) else { return nil }
            for child in ChildProcess.descendants(of: pid) {
                guard let raw = FileManager.default.contents(atPath: "/proc/\(child)/cmdline") else { continue }
                let words = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                guard words.count > 1, words[1] == "worker",
                      let environ = FileManager.default.contents(atPath: "/proc/\(child)/environ")
                else { continue }
                let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                if variables.contains("OMPI_COMM_WORLD_RANK=\(rank)") { return child }
            }
            return nil
        }

        /// SIGKILL to the launch's group and to every process seen below it that is still one
        /// of this run's (its command line names the run's folder, so a reused pid is spared).
        func killEverything() {
            noteFamily()
            let (process, family) = lock.withLock { (self.process, self.family) }
            if let process, process.processIdentifier > 0 {
                let pid = process.processIdentifier
                if process.isRunning {
                    if getpgid(pid) == pid { kill(-pid, SIGKILL) } else { kill(pid, SIGKILL) }
                }
            }
            for pid in family {
                guard let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                      String(decoding: raw, as: UTF8.self).contains(directory) || String(decoding: raw, as: UTF8.self).contains("medley")
                else { continue }
                kill(pid, SIGKILL)
            }
        }

        /// Kills what is left and removes the folder (unless the settings keep it).
        func cleanUp() {
            killEverything()
            if settings.keepRuns == nil { try? FileManager.default.removeItem(atPath: directory) }
        }
    }
}
