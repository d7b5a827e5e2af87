#!/usr/bin/env bash
# Records the opencl adapter against the cpu adapter on this host, and what host<->device
# staging costs in a training step, into benchmarks/ (JSON + the printed tables).
#
#   scripts/bench-opencl.sh [--steps N]
#
# 1. `medley adapter bench` of opencl and cpu at the same core count (1 thread each: PoCL
#    limited with POCL_MAX_PTHREAD_COUNT=1, cpu with threads=1; then 2 threads each).
# 2. A 2-rank data-parallel job (opencl + cpu chips) whose step records carry staging_ms:
#    the median staging time per rank, and its share of the step and of the exchange.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=20
if [ "${1:-}" = "--steps" ]; then steps="$2"; fi
BIN="${MEDLEY_BIN:-.build/debug/medley}"
if [ -z "${MEDLEY_BIN:-}" ]; then swift build >/dev/null; fi
out=benchmarks
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MEDLEY_CACHE_DIR="$work/cache"

{
  echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "# OpenCL: $(clinfo -l 2>/dev/null | tr '\n' ' ' | sed 's/  */ /g')"
  echo "# date: $(date -u +%Y-%m-%dT%H:%MZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "\$ POCL_MAX_PTHREAD_COUNT=1 medley adapter bench opencl --statistic min --json $out/adapter-bench-opencl-1t.json"
  POCL_MAX_PTHREAD_COUNT=1 "$BIN" adapter bench opencl --statistic min --json "$out/adapter-bench-opencl-1t.json"
  echo "\$ medley adapter bench cpu --option threads=1 --statistic min --json $out/adapter-bench-cpu-1t.json"
  "$BIN" adapter bench cpu --option threads=1 --statistic min --json "$out/adapter-bench-cpu-1t.json"
  echo "\$ POCL_MAX_PTHREAD_COUNT=2 medley adapter bench opencl --statistic min --json $out/adapter-bench-opencl-2t.json"
  POCL_MAX_PTHREAD_COUNT=2 "$BIN" adapter bench opencl --statistic min --json "$out/adapter-bench-opencl-2t.json"
  echo "\$ medley adapter bench cpu --option threads=2 --statistic min --json $out/adapter-bench-cpu-2t.json"
  "$BIN" adapter bench cpu --option threads=2 --statistic min --json "$out/adapter-bench-cpu-2t.json"
  echo "# opencl vs cpu, per row (cpu ms / opencl ms: above 1 means opencl is faster)"
  python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
def rows(name):
    return {f'{r["op"]} {r.get("role", "")}'.strip(): r for r in json.load(open(f"{out}/{name}.json"))}
for threads in ("1t", "2t"):
    o, c = rows(f"adapter-bench-opencl-{threads}"), rows(f"adapter-bench-cpu-{threads}")
    print(f"## {threads}: row, opencl ms, cpu ms, cpu/opencl")
    for key in o:
        if key in c:
            om, cm = o[key]["ms"], c[key]["ms"]
            print(f"{key:34s} {om:9.3f} {cm:9.3f} {cm / om:6.2f}")
EOF
} | tee "$out/adapter-bench-opencl.txt"

cat >"$work/job.yaml" <<EOF
name: staging
model: {layers: 4, dim: 128, heads: 4, seq: 64, batch: 16}
train: {steps: $steps, lr: 0.001, warmup_steps: 2, rebalance_every: 0, eval_every: 0}
devices: [opencl, cpu]
EOF
{
  echo "# date: $(date -u +%Y-%m-%dT%H:%MZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "\$ medley train job.yaml --log steps.jsonl --shares 1:8,8   (job: $(tr '\n' ' ' <"$work/job.yaml"))"
  "$BIN" train "$work/job.yaml" --log "$work/steps.jsonl" --shares 1:8,8 --timeout 600 >"$work/train.txt" 2>&1 ||
    { cat "$work/train.txt"; exit 1; }
  python3 - "$work/steps.jsonl" "$out/staging-opencl.json" <<'EOF'
import json, statistics, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
records = records[2:]  # the first steps pay for PoCL's first launches
names = ["opencl", "cpu"]
summary = {"steps_measured": len(records), "ranks": {}}
for r, name in enumerate(names):
    staging = statistics.median(x["staging_ms"][r] for x in records)
    exchange = statistics.median(x["exchange_ms"][r] for x in records)
    update = statistics.median(x["update_ms"][r] for x in records)
    step = statistics.median(x["step_ms"] for x in records)
    summary["ranks"][name] = {"staging_ms": staging, "exchange_ms": exchange, "update_ms": update, "step_ms": step,
                              "staging_share_of_step": staging / step}
    print(f"{name:8s} staging {staging:7.3f} ms  exchange {exchange:7.3f} ms  update {update:7.3f} ms  "
          f"step {step:8.3f} ms  staging/step {100 * staging / step:5.2f} %")
json.dump(summary, open(sys.argv[2], "w"), indent=2)
EOF
} | tee "$out/staging-opencl.txt"
