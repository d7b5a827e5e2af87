import Foundation
import MedleyComm
import MedleyCore

extension AllreduceBenchmark {
    /// The body of `medley bench allreduce`, shared by the CLI and the test driver.
    ///
    /// Outside `mpirun` with `ranks` given, it starts itself under ``MPIRun`` with `ranks` ranks
    /// (passing `childArguments`, which must not ask for a relaunch again) and prints what the ranks
    /// printed. Under `mpirun`, it runs the benchmark; rank 0 prints the table and writes the JSON.
    /// Returns the process exit status.
    public static func runCommand(
        ranks: Int?, jsonPath: String?, configuration: Configuration,
        childArguments: [String], timeoutSeconds: Int = 900
    ) throws -> Int32 {
        if !MPIRuntime.isUnderLauncher, let ranks {
            guard ranks >= 1 else { throw MedleyError(.invalidArgument, "--ranks must be at least 1, got \(ranks)") }
            let outcome = try MPIRun(ranks: ranks, timeoutSeconds: timeoutSeconds).run(program: ChildProcess.currentExecutable, arguments: childArguments)
            FileHandle.standardOutput.write(Data(outcome.output.utf8))
            return outcome.status
        }
        try MPIRuntime.initialize(requesting: .funneled)
        let world = try Communicator.world()
        if let ranks, ranks != world.size {
            throw MedleyError(.invalidArgument, "--ranks \(ranks) but mpirun started \(world.size) ranks")
        }
        let report = try run(on: world, configuration: configuration)
        if world.rank == 0 {
            print(table(report))
            if let jsonPath {
                do {
                    try json(report).write(to: URL(fileURLWithPath: jsonPath))
                } catch {
                    throw MedleyError(.io, "cannot write \(jsonPath): \(error)")
                }
                print("# wrote \(jsonPath)")
            }
        }
        try MPIRuntime.finalize()
        return 0
    }
}
