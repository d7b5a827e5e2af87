import ArgumentParser
import MedleyAdapters
import MedleyBench
import MedleyCore
import MedleyModel

extension Adapter {
    /// `medley adapter bench`: per-op throughput on the GPT's shapes.
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Time every opset op the GPT uses, on the model's shapes, and one forward+backward.",
            discussion: """
                Each row is the median (or --statistic min) of --repeat launches (each followed by synchronize) after \
                --warmup untimed ones. Matmul rows also time the same products through plain OpenBLAS \
                cblas_sgemm on one thread (sgemm_gflops, ratio). The last row is one forward+backward \
                of the whole GPT; for an adapter other than reference it also shows the reference \
                adapter's time and the speedup. --compare-reference adds the reference time to every row.
                """)

        @Argument(help: "Adapter name (e.g. reference, cpu, sim) or path to its shared library.")
        var adapter: String

        @Option(name: .customLong("option"), help: ArgumentHelp("Device option key=value (repeatable).", valueName: "key=value"))
        var options: [String] = []

        @Option(help: "Transformer blocks.")
        var layers = ModelConfig.default.layers
        @Option(help: "Channels (must be a multiple of --heads).")
        var dim = ModelConfig.default.dim
        @Option(help: "Attention heads.")
        var heads = ModelConfig.default.heads
        @Option(help: "Sequence length.")
        var seq = ModelConfig.default.seq
        @Option(help: "Batch size.")
        var batch = ModelConfig.default.maxBatch
        @Option(help: "Vocabulary size.")
        var vocab = ModelConfig.default.vocab

        @Option(help: "Timed repeats per row (the median is reported).")
        var `repeat` = 10
        @Option(help: "How each row summarises its samples: median (default) or min (the least disturbed by other load).")
        var statistic = "median"
        @Option(help: "Untimed launches before timing.")
        var warmup = 2
        @Flag(help: "Also time every row on the reference adapter, in the same loop.")
        var compareReference = false
        @Option(help: "Seed of the random inputs and model parameters.")
        var seed: UInt64 = 1
        @Option(help: ArgumentHelp("Also write the rows as a JSON array to this file.", valueName: "file"))
        var json: String?

        func run() throws {
            guard `repeat` >= 1 else { throw MedleyError(.invalidArgument, "--repeat must be at least 1, got \(`repeat`)") }
            guard warmup >= 0 else { throw MedleyError(.invalidArgument, "--warmup must be at least 0, got \(warmup)") }
            guard let summary = BenchmarkStatistic(rawValue: statistic) else {
                throw MedleyError(.invalidArgument, "--statistic '\(statistic)' is not one of median, min")
            }
            let config = ModelConfig(layers: layers, dim: dim, heads: heads, seq: seq, maxBatch: batch, vocab: vocab)
            try config.validate()
            if let json {
                // Fail before the (long) run, not after it.
                try AdapterBenchmark.checkWritable(json)
            }
            let benchmark = AdapterBenchmark(
                adapter: adapter, options: try parseOptions(options), config: config, repeats: `repeat`,
                warmup: warmup, compareReference: compareReference, seed: seed, statistic: summary)
            let rows = try benchmark.run()
            print("adapter \(adapter), model \(config) (\(config.parameterCount) parameters), \(summary.rawValue) of \(`repeat`)")
            print(formatTable(AdapterBenchmark.tableCells(rows)))
            if let json {
                try AdapterBenchmark.writeJSON(rows, to: json)
            }
        }
    }
}
