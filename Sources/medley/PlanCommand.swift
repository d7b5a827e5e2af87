import ArgumentParser
import Foundation
import MedleyCore
import MedleyPlanner
import MedleyProfile

/// `medley plan`: profile a job's chips (or read the cache) and print the planner's plan.
struct PlanJob: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Plan a job: data-parallel replicas of pipelines balanced by measured speed and memory.",
        discussion: """
            Loads JOB's profiles as `medley profile` does (measuring what the cache lacks), runs the \
            planner and prints the plan: replicas, stages with their chips, layers, predicted ms per \
            microbatch and memory, the pipeline bubble, predicted tokens/s and efficiency, and the \
            chips left out with the reason. A job that cannot fit fails with one line naming the \
            shortfall. See docs/planning.md.
            """)

    @OptionGroup var profile: ProfileOptions

    @Flag(help: "Print the plan as JSON (a job's `plan:` file: `medley plan JOB --json > FILE`).")
    var json = false

    @Option(help: "Sequences per microbatch (default: the planner chooses).")
    var microbatch: Int?

    @Option(help: "At most this many pipeline stages per replica (default: no limit).")
    var maxStages: Int?

    func run() throws {
        if let microbatch, microbatch < 1 {
            throw MedleyError(.invalidArgument, "--microbatch must be at least 1, got \(microbatch)")
        }
        if let maxStages, maxStages < 1 {
            throw MedleyError(.invalidArgument, "--max-stages must be at least 1, got \(maxStages)")
        }
        let spec = try profile.spec()
        let profiles = try profile.load(spec, progress: progressPrinter(json: json))
        let plan = try profiles.plan(
            globalBatch: spec.model.globalBatch, options: Planner.Options(microbatchSize: microbatch, maxStages: maxStages, slack: spec.train.pipelineSlack))
        if json {
            FileHandle.standardOutput.write(try plan.jsonData() + Data("\n".utf8))
        } else {
            let cached = profiles.chips.allSatisfy(\.cached) && profiles.link.cached
            print(
                "plan for job \(spec.name): \(spec.rankCount) rank\(spec.rankCount == 1 ? "" : "s"), \(spec.model.layers) blocks x \(spec.model.dim) dim, seq \(spec.model.seq), global batch \(spec.model.globalBatch) (profiles \(cached ? "from the cache" : "measured") in \(profiles.cacheDirectory))"
            )
            print(plan.table())
        }
    }
}
