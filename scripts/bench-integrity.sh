#!/usr/bin/env bash
# Measures what the silent-corruption checks cost on the built-in job (docs/integrity.md):
# the built-in job's YAML with an `integrity:` section per variant, run interleaved
# (off, checksums every step, fingerprint every step, probe every step, the defaults) REPS times in the
# same session, then benchmarks/integrity.py-style figures from the step records.
# Usage: scripts/bench-integrity.sh [REPS] [STEPS]   (default 3 and 200); writes benchmarks/integrity.json
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
steps=${2:-200}
bin=.build/release/medley
[ -x "$bin" ] || swift build -c release --product medley
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" train --print-default-job > "$work/base.yaml"
declare -A variants=(
  [off]="integrity: {checksum_every: 0, fingerprint_every: 0, probe_every: 0}"
  [checksums]="integrity: {checksum_every: 1, fingerprint_every: 0, probe_every: 0}"
  [fingerprint]="integrity: {checksum_every: 0, fingerprint_every: 1, probe_every: 0}"
  [probe]="integrity: {checksum_every: 0, fingerprint_every: 0, probe_every: 1}"
  [defaults]=""
)
order="off checksums fingerprint probe defaults"
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$reps"); do
  for v in $order; do
    { cat "$work/base.yaml"; echo "${variants[$v]}"; } > "$work/$v.yaml"
    "$bin" train "$work/$v.yaml" --steps "$steps" --log "$work/$v-$rep.jsonl" --timeout 600 > "$work/$v-$rep.out" 2>&1 \
      || { echo "bench-integrity: $v (rep $rep) failed:"; cat "$work/$v-$rep.out"; exit 1; }
    echo "rep $rep $v: $(tail -1 "$work/$v-$rep.out")"
  done
done
python3 - "$work" "$reps" <<'EOF'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
def records(v):
    out = []
    for r in range(1, reps + 1):
        out.append([json.loads(l) for l in open(f"{work}/{v}-{r}.jsonl") if l.strip()])
    return out
result = {}
for v in ["off", "checksums", "fingerprint", "probe", "defaults"]:
    runs = records(v)
    steps = [s for run in runs for s in run]
    step_ms = statistics.median(s["step_ms"] for s in steps)
    exchange_ms = statistics.median(s["exchange_ms"][0] for s in steps)
    checks = [s["integrity_ms"] for s in steps if "integrity_ms" in s]
    # Wall time of training per run: every step plus the checks after it.
    totals = [sum(s["step_ms"] + s.get("integrity_ms", 0) for s in run) for run in runs]
    result[v] = {"median_step_ms": step_ms, "median_exchange_ms_rank0": exchange_ms,
                 "checks": len(checks), "median_integrity_ms": statistics.median(checks) if checks else 0,
                 "median_total_ms": statistics.median(totals), "steps_per_run": len(runs[0])}
off = result["off"]
for v, r in result.items():
    r["step_ratio_vs_off"] = r["median_step_ms"] / off["median_step_ms"]
    r["total_ratio_vs_off"] = r["median_total_ms"] / off["median_total_ms"]
# At the defaults (probe and fingerprint every 100 steps, checksums every 10): the
# per-check costs measured above, spread over their intervals, against the step time with none.
# The checksums' cost is read from rank 0's exchange time (the step medians are noisier
# than the cost on a shared machine).
result["checksum_ms_per_exchange"] = result["checksums"]["median_exchange_ms_rank0"] - off["median_exchange_ms_rank0"]
est = (result["checksum_ms_per_exchange"] / 10
       + result["fingerprint"]["median_integrity_ms"] / 100 + result["probe"]["median_integrity_ms"] / 100) / off["median_step_ms"]
result["defaults_estimated_overhead"] = est
json.dump(result, open("benchmarks/integrity.json", "w"), indent=2, sort_keys=True)
print(f"{'variant':12} {'step ms':>9} {'ratio':>7} {'exch ms':>8} {'checks':>6} {'check ms':>9} {'total ratio':>11}")
for v in ["off", "checksums", "fingerprint", "probe", "defaults"]:
    r = result[v]
    print(f"{v:12} {r['median_step_ms']:9.2f} {r['step_ratio_vs_off']:7.3f} {r['median_exchange_ms_rank0']:8.3f} {r['checks']:6d} "
          f"{r['median_integrity_ms']:9.3f} {r['total_ratio_vs_off']:11.3f}")
print(f"checksums: {result['checksum_ms_per_exchange']:+.3f} ms per checksummed exchange")
print(f"defaults, estimated from the per-check costs: {100 * est:+.2f} % of step time")
EOF
