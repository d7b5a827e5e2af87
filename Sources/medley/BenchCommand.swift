import ArgumentParser
import Foundation
import MedleyBench
import MedleyComm
import MedleyCore

/// `medley bench`: benchmarks that report figures (not tests).
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure Medley's building blocks.",
        subcommands: [BenchAllreduce.self, BenchHetero.self, BenchMixed.self, BenchStraggler.self, BenchBubble.self, BenchPredict.self, BenchPlan.self, BenchHost.self,
                      BenchSupervisor.self, BenchFakeWorkers.self, BenchLaunch.self, BenchRecovery.self])
}

/// `medley bench allreduce`: Medley's gradient exchange against a plain MPI_Allreduce.
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time Medley's weighted gradient exchange against MPI_Allreduce of the same bytes.",
        discussion: """
            Sizes double from --min-size to --max-size. For each: time, algbw and busbw \
            (busbw = algbw * 2(n-1)/n, as nccl-tests reports) of Medley's exchange and of a plain \
            MPI_Allreduce in the same run, their ratio, and a count of wrong elements; then the \
            steady-state negotiation cost per step. Run it under mpirun, or give --ranks N and it \
            starts itself under mpirun with the flags a CI box needs.
            """)

    @Option(help: "Start N ranks under mpirun (when not already under mpirun).")
    var ranks: Int?

    @Option(help: "Write the report as JSON to this file (rank 0).")
    var json: String?

    @Option(help: "Smallest size (e.g. 4KiB).")
    var minSize = "4KiB"

    @Option(help: "Largest size (e.g. 256MiB).")
    var maxSize = "256MiB"

    @Option(help: "Timed blocks of the negotiation measurement; the best is reported.")
    var blocks = 3

    @Option(help: "Steps timed for the steady-state negotiation cost.")
    var agreementSteps = 2000

    @Flag(help: "Turn payload checksums on in Medley's exchange.")
    var checksums = false

    @Option(help: "mpirun --timeout in seconds when started with --ranks.")
    var timeout = 900

    func run() throws {
        var config = AllreduceBenchmark.Configuration()
        config.minBytes = try ByteCount.parse(minSize)
        config.maxBytes = try ByteCount.parse(maxSize)
        config.blocks = blocks
        config.agreementSteps = agreementSteps
        config.options.checksums = checksums
        let jsonPath = json.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        var child = ["bench", "allreduce", "--min-size", minSize, "--max-size", maxSize,
                     "--blocks", "\(blocks)", "--agreement-steps", "\(agreementSteps)"]
        if checksums { child.append("--checksums") }
        if let jsonPath { child += ["--json", jsonPath] }
        let status = try AllreduceBenchmark.runCommand(
            ranks: ranks, jsonPath: jsonPath, configuration: config, childArguments: child, timeoutSeconds: timeout)
        if status != 0 { throw ExitCode(status) }
    }
}
