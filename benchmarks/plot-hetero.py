#!/usr/bin/env python3
"""Draws the charts of `medley bench hetero` from its report.json.

    plot-hetero.py REPORT.json OUTDIR

Writes OUTDIR/loss.png (training and validation loss of every convergence run,
overlaid, with the relative gap to the homogeneous run below), OUTDIR/throughput.png
(tokens/s of every run of every mix: each entry alone one at a time, all at once,
the mixed job; medians over the rounds with their ranges) and OUTDIR/breakdown.png
(where each rank's step went in the mixed job, stacked). Each file is written to a
temporary name and renamed, so a reader never sees half a chart. Needs matplotlib
(Debian: python3-matplotlib, which scripts/setup.sh installs).
"""
import json
import os
import statistics
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("matplotlib is missing: run scripts/setup.sh (it installs python3-matplotlib)")


def save(figure, out, name):
    path = os.path.join(out, name)
    temporary = path + ".tmp"
    figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    os.replace(temporary, path)


def loss_chart(report, out):
    convergence = report.get("convergence")
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    if not convergence:
        top.text(0.5, 0.5, "no convergence runs", ha="center", va="center", transform=top.transAxes)
        save(figure, out, "loss.png")
        return
    runs = convergence["runs"]
    reference = runs[0]["loss"]
    styles = ["-", "--", ":", "-."]
    for index, run in enumerate(runs):
        steps = list(range(1, len(run["loss"]) + 1))
        line, = top.plot(steps, run["loss"], styles[index % len(styles)], linewidth=1.4, label=f"{run['name']} (train)")
        if run["val_steps"]:
            top.plot(run["val_steps"], run["val_loss"], "o", color=line.get_color(), markersize=4,
                     label=f"{run['name']} (validation)")
        if index > 0:
            gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(run["loss"], reference)]
            bottom.semilogy(steps[: len(gaps)], [max(g, 1e-9) for g in gaps], styles[index % len(styles)],
                            color=line.get_color(), label=run["name"])
    top.axhline(convergence["target_loss"], color="grey", linewidth=0.8, linestyle=":")
    top.set_ylabel("loss")
    top.set_title("Loss curves: mixed vs homogeneous (same seed, data order, global batch)")
    top.legend(fontsize=7)
    bottom.axhline(1e-4, color="red", linewidth=0.8, linestyle=":")
    bottom.set_ylabel("relative gap")
    bottom.set_xlabel("step")
    if len(runs) > 1:
        bottom.legend(fontsize=7)
    save(figure, out, "loss.png")


def throughput_chart(report, out):
    mixes = report["mixes"]
    figure, axes = plt.subplots(1, max(1, len(mixes)), figsize=(5.2 * max(1, len(mixes)), 4.2), squeeze=False)
    for axis, mix in zip(axes[0], mixes):
        rounds = mix["rounds"]
        labels, medians, lows, highs = [], [], [], []

        def add(label, values):
            labels.append(label)
            medians.append(statistics.median(values))
            lows.append(medians[-1] - min(values))
            highs.append(max(values) - medians[-1])

        entries = rounds[0]["groups"]
        for i, group in enumerate(entries):
            add(f"{mix['entry_names'][group['entry']]}\nalone", [r["groups"][i]["tokens_per_s"] for r in rounds])
        add("Σ alone\n1 at a time", [r["alone_tokens_per_s_sum"] for r in rounds])
        add("Σ alone\nall at once", [r["concurrent_tokens_per_s_sum"] for r in rounds])
        add("mixed", [r["mixed_tokens_per_s"] for r in rounds])
        colours = ["#9ab"] * len(entries) + ["#678", "#456", "#c63"]
        axis.bar(range(len(labels)), medians, yerr=[lows, highs], color=colours, capsize=3)
        axis.set_xticks(range(len(labels)))
        axis.set_xticklabels(labels, fontsize=6.5)
        axis.set_ylabel("tokens/s")
        axis.set_title(f"{mix['name']}: E {mix['concurrent_efficiency']:.3f} (all at once), "
                       f"{mix['efficiency']:.3f} (one at a time)", fontsize=9)
    save(figure, out, "throughput.png")


def breakdown_chart(report, out):
    mixes = report["mixes"]
    figure, axes = plt.subplots(1, max(1, len(mixes)), figsize=(5.2 * max(1, len(mixes)), 4.2), squeeze=False)
    parts = [("compute_ms", "compute", "#4a7"), ("communication_ms", "exchange + update", "#47a"),
             ("staging_ms", "host↔device staging", "#a74"), ("bubble_ms", "pipeline bubble", "#a4a"),
             ("idle_ms", "idle", "#bbb"), ("other_ms", "other", "#555")]
    for axis, mix in zip(axes[0], mixes):
        ranks = mix["breakdown"]
        bottoms = [0.0] * len(ranks)
        for key, label, colour in parts:
            values = [r[key] for r in ranks]
            axis.bar(range(len(ranks)), values, bottom=bottoms, color=colour, label=label)
            bottoms = [b + v for b, v in zip(bottoms, values)]
        axis.set_xticks(range(len(ranks)))
        axis.set_xticklabels([f"rank {r['rank']}\n{r['chip']}\nshare {r['share']}" for r in ranks], fontsize=7)
        axis.set_ylabel("ms per step (median)")
        axis.set_title(f"{mix['name']}: where the mixed step went", fontsize=9)
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    save(figure, out, "breakdown.png")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot-hetero.py REPORT.json OUTDIR")
    try:
        with open(sys.argv[1]) as f:
            report = json.load(f)
    except (OSError, ValueError) as error:
        sys.exit(f"cannot read {sys.argv[1]}: {error}")
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    loss_chart(report, out)
    throughput_chart(report, out)
    breakdown_chart(report, out)


if __name__ == "__main__":
    main()
