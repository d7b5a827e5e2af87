import ArgumentParser
import Foundation
import MedleyBench
import MedleyCore

/// `medley bench hetero`: the cost of mixing vendors, in throughput and convergence, as a report.
struct BenchHetero: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hetero",
        abstract: "What mixing chips costs, in throughput and convergence: report.md, report.json and charts.",
        discussion: """
            With no JOB: a cpu chip with two sims, and three sims of three vendors (whose speed \
            is CPU time: Medley's own cost without the host's noise). For each mix: the shares \
            the job settles on over --calibrations runs (the division by each rank's median speed over them all is pinned); --rounds \
            rounds of every device entry alone one at a time, all at once, and the mixed job; E = \
            mixed tokens/s / sum alone against both baselines (the headline is all at once: the \
            same host load), MFU against each chip's measured matmul peak, the host's foreign \
            load in every run (a round whose baselines saw another load than its mixed job is \
            flagged), and where each rank's step went. Then, on the first mix: loss and \
            validation curves of one chip alone, the mix in fp32 and the mix with its sims in \
            bf16 (same seed, data and batch); the planner's predicted step against a measured \
            run; and one core's loss beside a busy neighbour. Writes DIR/report.md, \
            DIR/report.json and DIR/{loss,throughput,breakdown}.png (drawn by \
            benchmarks/plot-hetero.py with matplotlib, which scripts/setup.sh installs).
            """)

    @OptionGroup var common: TrainBenchOptions

    @Option(help: "Steps per timed run.")
    var steps = 20

    @Option(help: "Rounds of (each entry alone in turn, every entry alone at once, mixed) per mix; E is their median.")
    var rounds = 5

    @Option(help: "Calibrating runs of the mixed job; the division by each rank's median speed over all of them is pinned.")
    var calibrations = 3

    @Option(help: "Steps of each convergence run.")
    var convergenceSteps = 60

    @Option(help: "Validation every this many steps in the convergence runs.")
    var evalEvery = 10

    @Option(help: "Cores of foreign load by which a round's baselines may differ from its mixed job before it is flagged.")
    var loadTolerance = 0.25

    @Flag(help: "Exit non-zero (after writing the report) when a round is flagged for unlike host loads.")
    var strictLoad = false

    @Option(help: "Seconds per pairing of the host benchmark; 0 leaves it out.")
    var hostSeconds = 0.5

    @Flag(help: "Leave out the planner's prediction (and the profiles it needs).")
    var noPrediction = false

    @Option(help: ArgumentHelp("Directory for report.md, report.json and the charts.", valueName: "dir"))
    var out = "medley-hetero"

    @Option(help: ArgumentHelp("The plotting script (default: benchmarks/plot-hetero.py beside the executable's checkout, or under the current directory).", valueName: "file"))
    var plotScript: String?

    func run() throws {
        let script = try HeteroCharts.locateScript(plotScript)
        var mixes = HeteroBenchmark.defaultMixes
        if common.job != nil {
            let spec = try common.spec()
            mixes = [HeteroBenchmark.Mix(name: spec.name, spec: spec)]
        }
        let options = HeteroBenchmark.Options(
            rounds: rounds, calibrations: calibrations, convergenceSteps: convergenceSteps, evalEvery: evalEvery,
            loadTolerance: loadTolerance, hostSeconds: hostSeconds, prediction: !noPrediction) { print("… " + $0) }
        let setup = try common.setup(steps: steps)
        try options.validate(setup: setup)
        do {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        } catch {
            throw MedleyError(.io, "--out \(out): cannot create the directory: \(error.localizedDescription)")
        }
        let report = try HeteroBenchmark.run(mixes: mixes, setup: setup, options: options)
        let json = out + "/report.json"
        try JSONReport.write(report, to: json)
        if let extra = common.json { try JSONReport.write(report, to: extra) }
        do {
            try Data(report.markdown().utf8).write(to: URL(fileURLWithPath: out + "/report.md"), options: .atomic)
        } catch {
            throw MedleyError(.io, "cannot write \(out)/report.md: \(error.localizedDescription)")
        }
        try HeteroCharts.draw(script: script, report: json, out: out)
        for m in report.mixes {
            print(String(format: "%@: E = %.4f against the entries alone all at once (%.4f to %.4f), %.4f one at a time (%.4f to %.4f); shares %@%@",
                         m.name, m.concurrentEfficiency, m.concurrentEfficiencyMin, m.concurrentEfficiencyMax, m.efficiency,
                         m.efficiencyMin, m.efficiencyMax, m.shares.map(String.init).joined(separator: "/"), m.sharesStable ? "" : " (calibrations disagreed)"))
        }
        if let c = report.convergence {
            for run in c.runs.dropFirst() {
                print(String(format: "%@: max relative loss gap %.2e, final validation gap %.2e", run.name, run.maxRelativeGap, run.finalValidationGap))
            }
        }
        if let p = report.prediction {
            print(String(format: "prediction: measured %.1f ms a step, predicted %.1f ms (%.3fx)", p.measuredStepMs, p.predictedStepMs, p.ratio))
        }
        for flag in report.flags { print("flag: " + flag) }
        print("wrote \(out)/report.md, \(out)/report.json, " + HeteroReport.charts.map { "\(out)/\($0)" }.joined(separator: ", "))
        if strictLoad, report.mixes.contains(where: { $0.rounds.contains { $0.flag != nil } }) {
            throw MedleyError(.mismatch, "a round's baselines ran under another host load than its mixed job (see the flags); rerun on a quieter host or raise --load-tolerance")
        }
    }
}
