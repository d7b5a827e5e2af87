import ArgumentParser

/// The `medley` command: a thin shell over Medley's libraries.
@main
struct Medley: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medley",
        abstract: "Train one model on accelerators from different vendors at once.",
        subcommands: [
            Adapters.self,
            Adapter.self,
            Bench.self,
            Simulate.self,
            Train.self,
            Worker.self,
            Launch.self,
            ProfileJob.self,
            PlanJob.self,
            PingPongRanks.self,
        ]
    )
}
