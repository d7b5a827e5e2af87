#!/usr/bin/env bash
# Records `medley bench allreduce` for 2 and 4 ranks into benchmarks/ (JSON + the printed tables).
# Usage: scripts/bench-allreduce.sh [extra bench options, e.g. --max-size 64MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product medley
mkdir -p benchmarks
{
  echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
  echo "# date: $(date -u +%Y-%m-%dT%H:%MZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for n in 2 4; do
    echo "\$ .build/release/medley bench allreduce --ranks $n --json benchmarks/allreduce-${n}ranks.json $*"
    .build/release/medley bench allreduce --ranks "$n" --json "benchmarks/allreduce-${n}ranks.json" "$@"
  done
} | tee benchmarks/allreduce-latest.txt
