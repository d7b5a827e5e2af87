import ArgumentParser
import Foundation
import MedleyBench
import MedleyCore
import MedleyPlanner

/// `medley bench plan`: how long planning takes as the inventory grows, and the predicted efficiency.
struct BenchPlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Time the planner on 16 to 10,000 chips of the four built-in types and report predicted efficiency.",
        discussion: """
            For each size the chips are split evenly over the illustrative types A-D (docs/planning.md), \
            the model is a 96-layer GPT (medley simulate's defaults), the global batch 8 sequences per \
            chip. Each size is planned once untimed, then --repeats times; the median is reported. \
            Build in release (swift build -c release) for figures worth recording. The efficiency at \
            100 and 10,000 chips is shown next to Baidu Baige's published mixed-chip claim.
            """)

    @Option(help: "Timed plans per size (the median is reported).")
    var repeats = 5

    @Option(help: "Comma-separated chip counts (default: 16,64,100,256,1000,4096,10000).")
    var sizes: String?

    @Option(help: "Transformer blocks.")
    var layers = 96

    @Option(help: ArgumentHelp("Also write the rows as a JSON array to this file.", valueName: "file"))
    var json: String?

    func run() throws {
        guard repeats >= 1 else { throw MedleyError(.invalidArgument, "--repeats must be at least 1, got \(repeats)") }
        let counts = try sizes.map { text in
            try text.split(separator: ",").map { item -> Int in
                guard let n = Int(item.trimmingCharacters(in: .whitespaces)), n >= 1 else {
                    throw MedleyError(.invalidArgument, "--sizes: '\(item)' is not a chip count of at least 1")
                }
                return n
            }
        } ?? PlannerBenchmark.sizes
        if let json { try checkWritable(json) }
        var rows: [[String]] = [["chips", "devices", "plan ms (median)", "fastest", "replicas", "chips used", "microbatch", "tokens/s", "efficiency"]]
        print("planner scaling: \(layers)-layer GPT, median of \(repeats)")
        let results = try PlannerBenchmark.run(sizes: counts, repeats: repeats, shape: .init(layers: layers)) { row in
            print(String(format: "… %d chips: %.1f ms", row.chips, row.planSeconds * 1000))
        }
        for row in results {
            rows.append([
                "\(row.chips)", row.devices, String(format: "%.1f", row.planSeconds * 1000),
                String(format: "%.1f", row.planSecondsMin * 1000), "\(row.replicas)", "\(row.chipsUsed)",
                "\(row.microbatchSize)", String(format: "%.0f", row.predictedTokensPerS),
                String(format: "%.4f", row.predictedEfficiency),
            ])
        }
        print(formatTable(rows))
        let published: [(chips: Int, loss: Double)] = [(100, 0.03), (10_000, 0.05)]
        for claim in published {
            guard let row = results.first(where: { $0.chips == claim.chips }) else { continue }
            print(String(
                format: "%d chips: Medley predicts efficiency %.4f (loss %.1f%%); Baidu Baige's published mixed-chip claim: loss <= %.0f%%",
                claim.chips, row.predictedEfficiency, 100 * (1 - row.predictedEfficiency), 100 * claim.loss))
        }
        if let json {
            try JSONReport.write(results, to: json)
        }
    }
}
