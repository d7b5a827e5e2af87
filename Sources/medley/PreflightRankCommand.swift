import ArgumentParser
import Foundation
import MedleyCore
import MedleyTrain

/// `medley preflight-rank`: one rank's host says whether its chip opens there (started by
/// `medley train` under mpirun, with the job's placement, before a job across hosts trains).
struct PreflightRank: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preflight-rank",
        abstract: "Check this rank's chip on the host it runs on (started by `medley train` under mpirun).",
        shouldDisplay: false)

    @Option(help: "The job spec (YAML).")
    var job: String

    @Option(help: "The rank (default: Open MPI's OMPI_COMM_WORLD_RANK).")
    var rank: Int?

    func run() throws {
        let spec = try JobSpec.load(path: job)
        let environment = ProcessInfo.processInfo.environment
        let rank = self.rank ?? environment["OMPI_COMM_WORLD_RANK"].flatMap(Int.init) ?? 0
        // One line, always, and exit 0: a chip that does not open is an answer, not a failure of mpirun.
        print(HostPreflight.line(HostPreflight.probe(spec: spec, rank: rank)))
    }
}
