import ArgumentParser
import Foundation
import MedleyAdapters
import MedleyCore

/// `medley adapter …`: work with one adapter.
struct Adapter: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check or describe one chip adapter.",
        subcommands: [Check.self, Entries.self, Bench.self])
}

extension Adapter {
    /// `medley adapter check`: the conformance kit.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the conformance kit against an adapter (exit 0 only when every check passes).",
            discussion: """
                Loads the adapter, checks its table, runs every opset op against the reference \
                adapter on random inputs (odd sizes, non-zero offsets, guard bytes), on attributes \
                away from their usual values and on inputs chosen to expose precision bugs, with \
                per-dtype tolerances; checks the reference's backward ops against finite \
                differences, and that bad arguments come back as error objects. Each row prints as \
                it finishes; a failure names the likely cause when it matches a known mistake. The \
                check runs in a child process: an adapter that crashes or hangs fails the row of \
                the op it was in, and the check goes on.
                """)

        @Argument(help: "Adapter name (e.g. reference, cpu, sim) or path to its shared library.")
        var adapter: String

        @Option(name: .customLong("option"), help: ArgumentHelp("Device option key=value (repeatable).", valueName: "key=value"))
        var options: [String] = []

        @Option(help: "Tolerance profile: the dtype the adapter computes in (f32, bf16, f16).")
        var tolerance: String = "f32"

        @Option(help: "Override the relative tolerance.")
        var rtol: Double?

        @Option(help: "Override the absolute tolerance (relative to a tensor's largest magnitude).")
        var atol: Double?

        @Option(help: "Seed of the random inputs.")
        var seed: UInt64 = 20_261_123

        @Option(name: .customLong("op"), help: ArgumentHelp("Check only this op (repeatable); the other groups still run.", valueName: "name"))
        var ops: [String] = []

        @Option(help: "Seconds one op (or group) may take before it counts as hung.")
        var unitTimeout: Double = 120

        @Flag(help: "Run the check in this process (for a debugger): an adapter that crashes takes the check with it.")
        var inProcess = false

        @Option(help: .hidden)
        var childFrom: Int?

        @Flag(help: "Print the report as JSON instead of a table.")
        var json = false

        func run() throws {
            guard let dtype = DType(name: tolerance), dtype.isFloat else {
                throw MedleyError(.invalidArgument, "--tolerance '\(tolerance)' is not one of f32, bf16, f16")
            }
            var limits = Tolerance.forDType(dtype)
            if let rtol {
                guard rtol >= 0, rtol.isFinite else { throw MedleyError(.invalidArgument, "--rtol must be a non-negative number") }
                limits.rtol = rtol
            }
            if let atol {
                guard atol >= 0, atol.isFinite else { throw MedleyError(.invalidArgument, "--atol must be a non-negative number") }
                limits.atol = atol
            }
            guard unitTimeout > 0, unitTimeout.isFinite else {
                throw MedleyError(.invalidArgument, "--unit-timeout must be a positive number of seconds")
            }
            let known = AdapterABI.opset.map(\.name)
            if let unknown = ops.first(where: { !known.contains($0) }) {
                throw MedleyError(
                    .invalidArgument, "--op '\(unknown)' is not an op of opset v\(AdapterABI.opsetVersion) (one of \(known.joined(separator: ", ")))")
            }
            let parsed = try parseOptions(options)
            let check = ConformanceCheck(
                candidate: adapter, options: parsed, tolerance: limits, seed: seed, ops: ops.isEmpty ? nil : ops)
            if let childFrom {
                IsolatedCheck.runChild(check, from: childFrom)
                return
            }
            try Adapter.preflight(adapter)
            let live = !json
            // Rows go out unbuffered, as each finishes.
            func write(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
            if live { write(ConformanceReport.header()) }
            let show: (ConformanceReport.Row) -> Void = { row in
                if live { write(ConformanceReport.line(row)) }
            }
            let report: ConformanceReport
            if inProcess {
                report = check.run(from: 0, onRows: { $0.forEach(show) })
            } else {
                report = IsolatedCheck(check: check, executable: ChildProcess.currentExecutable, unitTimeout: unitTimeout)
                    .run(onRow: show)
            }
            // Only a whole check counts for training (a check of some ops is not a pass).
            if ops.isEmpty { CheckRecordStore.default.storeQuietly(report) }
            if json {
                print(try report.json())
            } else {
                write(report.verdict())
            }
            if !report.passed {
                throw ExitCode(1)
            }
        }
    }

    /// An adapter whose runtime finds no device here (device_count is UNAVAILABLE, e.g. no OpenCL
    /// platform) has nothing to check: one line with its reason, before any row. Anything else
    /// (a library that does not load, a count that fails otherwise) is the check's to report.
    static func preflight(_ adapter: String) throws {
        guard let library = try? AdapterLibrary.load(adapter, searchPath: .default) else { return }
        do {
            _ = try library.deviceCount()
        } catch let error as MedleyError where error.adapterStatus == .unavailable {
            throw MedleyError(
                error.code, "adapter check: \(library.info.name) has no device to check on this machine: \(Adapters.reason(error))")
        }
    }

    /// `medley adapter entries`: the table's entries, from the ABI header.
    struct Entries: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the adapter table's entries (required or optional) as a Markdown table.")

        func run() throws {
            print(AdapterABI.entriesMarkdown())
        }
    }
}

/// Parses `key=value` device options.
func parseOptions(_ values: [String]) throws -> [(String, String)] {
    try values.map { value in
        guard let equals = value.firstIndex(of: "="), equals != value.startIndex else {
            throw MedleyError(.invalidArgument, "option '\(value)' is not key=value (e.g. --option threads=2)")
        }
        return (String(value[..<equals]), String(value[value.index(after: equals)...]))
    }
}
