import Foundation

extension HeteroReport {
    /// The PNG charts the plotting script draws next to the report.
    public static let charts = ["loss.png", "throughput.png", "breakdown.png"]

    /// `report.md`: the tables a person reads.
    public func markdown() -> String {
        var out: [String] = []
        func f(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }
        func pct(_ value: Double) -> String { String(format: "%.1f %%", value * 100) }
        func row(_ cells: [String]) { out.append("| " + cells.joined(separator: " | ") + " |") }
        /// A header row; the first column left-aligned, the others (figures) right-aligned.
        func header(_ cells: [String]) {
            row(cells)
            out.append("|" + cells.indices.map { $0 == 0 ? " --- " : " ---: " }.joined(separator: "|") + "|")
        }

        out.append("# What mixing chips costs: `medley bench hetero`")
        out.append("")
        out.append("Measured \(date), \(Int(wallSeconds)) s in all. Every timed run: \(steps) steps, medians over steps \(skip + 1)–\(steps).")
        out.append("")
        out.append("**Machine:** \(machine.cpuModel), \(machine.cores) cores, \(f(machine.memoryGiB)) GiB, \(machine.kernel); "
                   + "\(machine.mpi); adapters: " + machine.adapters.sorted { $0.key < $1.key }.map { "\($0.key) (\($0.value))" }.joined(separator: ", ") + ".")
        if let load {
            out.append("")
            out.append("**Host load over the benchmark:** this benchmark kept \(f(load.ownCores, 2)) cores busy on average, other work "
                       + "\(f(load.foreignCores, 2)), the hypervisor took \(f(load.stealCores, 2)); load average at the end \(f(load.loadAverage, 2)).")
        }
        if !flags.isEmpty {
            out.append("")
            out.append("**Flags:**")
            out.append("")
            for flag in flags { out.append("- " + flag) }
        }

        out.append("")
        out.append("## Throughput")
        out.append("")
        out.append("E = mixed tokens/s ÷ Σ tokens/s of every device entry training alone with the work it has in the mixed job "
                   + "(its shares as its whole batch). **The headline is E against the entries alone all at the same time**: "
                   + "that baseline loads the host (its shared caches, memory bandwidth, the core the sims share) as the mixed job does, "
                   + "so what is left is what coordinating the chips costs. E against the entries one at a time also counts what "
                   + "the host loses when all its cores work (see the host section).")
        out.append("")
        header(["mix", "shares (calibrations)", "E all at once (range)", "E one at a time (range)", "MFU mixed", "rounds"])
        for m in mixes {
            row([m.name, HeteroBenchmark.text(m.shares) + " (" + m.calibrations.map(HeteroBenchmark.text).joined(separator: ", ")
                 + (m.sharesStable ? "; stable)" : "; moved)"),
                 "**\(f(m.concurrentEfficiency, 4))** (\(f(m.concurrentEfficiencyMin, 4))–\(f(m.concurrentEfficiencyMax, 4)))",
                 "\(f(m.efficiency, 4)) (\(f(m.efficiencyMin, 4))–\(f(m.efficiencyMax, 4)))", pct(m.mixedMFU), "\(m.rounds.count)"])
        }
        for m in mixes where m.concurrentEfficiency > 0 {
            out.append("")
            out.append("\(m.name): the host's share of the loss against the entries one at a time is 1 − E one at a time ÷ E all at once = "
                       + pct(1 - m.efficiency / m.concurrentEfficiency) + ".")
        }
        for m in mixes {
            out.append("")
            out.append("### \(m.name): `\(m.job)`")
            out.append("")
            out.append("Devices: " + m.devices.enumerated().map { "\($0.offset): `\($0.element)`" }.joined(separator: "; ")
                       + ". Peak (largest matmul of the model, measured on each chip): "
                       + zip(m.ranks, m.peakGflops).map { "\($0.0) \(f($0.1)) GFLOP/s" }.joined(separator: ", ")
                       + "; \(f(m.flopsPerToken / 1e6, 2)) MFLOP per token.")
            out.append("")
            let entries = m.rounds.first?.groups.map { "\($0.entry)" } ?? []
            header(["round", "mixed tokens/s (step ms)"] + entries.map { "entry \($0) alone" } + ["Σ alone", "Σ all at once", "E all at once",
                   "E one at a time", "MFU", "other work (cores): alone / all at once / mixed"])
            for r in m.rounds {
                row(["\(r.round)\(r.flag == nil ? "" : " ⚠")", "\(f(r.mixedTokensPerS, 0)) (\(f(r.mixedStepMs)))"]
                    + zip(r.groups, r.concurrentGroups).map { "\(f($0.0.tokensPerS, 0)) / \(f($0.1.tokensPerS, 0))" }
                    + [f(r.aloneTokensPerSSum, 0), f(r.concurrentTokensPerSSum, 0), f(r.concurrentEfficiency, 4), f(r.efficiency, 4),
                       pct(r.mixedMFU),
                       "\(f(r.aloneLoad.foreignCores, 2)) / \(f(r.concurrentLoad.foreignCores, 2)) / \(f(r.mixedLoad.foreignCores, 2))"])
            }
            out.append("")
            out.append("Entry columns: tokens/s one at a time / all at once.")
            out.append("")
            out.append("Where the mixed job's step went, per rank (medians over every round's timed steps, ms):")
            out.append("")
            header(["rank", "chip", "share", "step", "compute", "exchange + update", "of which staging", "bubble", "idle", "other"])
            for t in m.breakdown {
                row(["\(t.rank)", t.chip, "\(t.share)", f(t.stepMs, 2), f(t.computeMs, 2), f(t.exchangeMs + t.updateMs, 2), f(t.stagingMs, 2),
                     f(t.bubbleMs, 2), f(t.idleMs, 2), f(t.otherMs, 2)])
            }
        }

        if let c = convergence {
            out.append("")
            out.append("## Convergence")
            out.append("")
            out.append("The same seed, data order and global batch, \(c.steps) steps, validation every \(c.evalEvery). The reference is "
                       + "one chip alone with the whole batch. Target loss: the reference's loss (moving mean of \(c.smoothing) steps) at "
                       + "step \(c.steps * 3 / 4), \(f(c.targetLoss, 4)). Time is training time (the sum of step times).")
            out.append("")
            header(["run", "precision", "final loss", "final validation", "max relative gap per step", "final validation gap",
                    "steps to target", "time to target"])
            for run in c.runs {
                row([run.name, run.precision, f(run.loss.last ?? 0, 4), f(run.valLoss.last ?? 0, 4),
                     String(format: "%.2e", run.maxRelativeGap), String(format: "%.2e", run.finalValidationGap),
                     run.stepsToTarget.map(String.init) ?? "not reached", run.msToTarget.map { f($0 / 1000, 2) + " s" } ?? "–"])
            }
        }

        if let p = prediction {
            out.append("")
            out.append("## Prediction")
            out.append("")
            out.append("The planner's plan for the first mix (`\(p.schedule)`) on the job's profiles ("
                       + p.profiles.map { use -> String in
                           var text = "\(use.chip): " + (use.cached ? "cached" : "measured now")
                           if let layer = use.layerRatio {
                               text += ", staleness probe: layer now ÷ stored " + f(layer, 2) + (use.hostRatio.map { ", host sgemm " + f($0, 2) } ?? "")
                               text += use.stale == true ? (use.remeasured == true ? ", stale: measured again" : ", stale: kept") : ", fresh"
                           }
                           return text
                       }.joined(separator: "; ")
                       + "), run and timed.")
            out.append("")
            header(["", "step ms", "compute ms", "exchange ms", "optimizer ms", "bubble"])
            row(["predicted", f(p.predictedStepMs, 2), f(p.predictedComputeMs, 2), f(p.predictedExchangeMs, 2), f(p.predictedOptimizerMs, 2),
                 pct(p.predictedBubbleFraction)])
            row(["measured", f(p.measuredStepMs, 2), f(p.measuredComputeMs, 2), "", "", ""])
            out.append("")
            out.append("Measured ÷ predicted: **\(f(p.ratio, 3))** (target within 10 %).")
        }

        if let host {
            out.append("")
            out.append("## The host's own share")
            out.append("")
            out.append("One core's work beside its neighbour (`medley bench host`, \(host.rounds.count) rounds of \(f(host.seconds, 2)) s): "
                       + "what a cpu chip loses when the core beside it works, which the one-at-a-time baseline does not see.")
            out.append("")
            header(["work beside load", "rate", "ratio to idle (range)"])
            for p in host.pairings {
                row(["\(p.work.rawValue) beside \(p.load.rawValue)", "\(f(p.rate)) \(p.unit)", "\(f(p.ratio, 3)) (\(f(p.ratioMin, 3))–\(f(p.ratioMax, 3)))"])
            }
        }

        out.append("")
        out.append("## Charts")
        out.append("")
        out.append("![loss curves](loss.png)")
        out.append("")
        out.append("![tokens/s per run](throughput.png)")
        out.append("")
        out.append("![time per rank](breakdown.png)")
        out.append("")
        return out.joined(separator: "\n")
    }
}
