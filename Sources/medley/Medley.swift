import ArgumentParser
import MedleyCore

/// The `medley` command: a thin shell over Medley's libraries.
@main
struct Medley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medley",
        abstract: "Train one model on accelerators from different vendors at once.",
        version: MedleyVersion.string,
        subcommands: [
            Adapters.self,
            Adapter.self,
            Bench.self,
            Simulate.self,
            Launch.self,
            Train.self,
            Worker.self,
            ProfileJob.self,
            PlanJob.self,
            PingPongRanks.self,
            PreflightRank.self,
            ExecShielded.self,
        ]
    )
}
