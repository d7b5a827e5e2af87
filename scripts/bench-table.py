#!/usr/bin/env python3
"""Prints a `medley adapter bench --json` file as a Markdown table (for benchmarks/*.md)."""
import json
import sys


def cell(row, key, digits):
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def main(path):
    rows = json.load(open(path))
    compare = any("reference_ms" in r for r in rows)
    head = ["op", "role", "shape", "ms", "GFLOP/s", "GB/s", "sgemm GFLOP/s", "ratio"]
    if compare:
        head += ["reference ms", "time ratio"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|")
    for r in rows:
        cells = [r["op"], r.get("role", ""), r["shape"], cell(r, "ms", 4), cell(r, "gflops", 2),
                 cell(r, "gbps", 2), cell(r, "sgemm_gflops", 2), cell(r, "ratio", 3)]
        if compare:
            ref = r.get("reference_ms")
            cells += [cell(r, "reference_ms", 4), f"{r['ms'] / ref:.3f}" if ref else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/bench-table.py BENCH.json")
    main(sys.argv[1])
