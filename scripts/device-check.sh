#!/usr/bin/env bash
# Checks and benchmarks the OpenCL adapter on whatever OpenCL device a machine has: run it on
# a GPU machine (NVIDIA, AMD, Intel) when one is at hand. Not part of CI.
#
#   scripts/device-check.sh [--option key=value ...]
#
# Device options go to both the check and the bench, e.g. `--option platform=nvidia` or
# `--option device=1`; with none, the adapter opens the first GPU, else the first device.
# Builds Medley in release mode unless MEDLEY_BIN names a medley executable already built
# (its adapters must sit next to it, or on MEDLEY_ADAPTER_PATH). Writes everything it prints,
# and the bench rows as JSON, to OUT (default benchmarks/device-check-<host>-<date>/).
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${MEDLEY_BIN:-}" ]; then
  swift build -c release --product medley >/dev/null &&
    swift build -c release --product medley-adapter-opencl >/dev/null &&
    swift build -c release --product medley-adapter-cpu >/dev/null || {
    echo "device-check: the release build failed (run scripts/setup.sh first)" >&2
    exit 1
  }
  MEDLEY_BIN=.build/release/medley
fi
OUT_DIR="${OUT:-benchmarks/device-check-$(hostname -s)-$(date -u +%Y%m%d)}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/device-check.txt"
options=("$@")
# Each run gets at most this many seconds: a hung driver must not hang the script.
LIMIT="${DEVICE_CHECK_TIMEOUT:-900}"

status=0
exec > >(tee "$LOG") 2>&1
echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
echo "# date: $(date -u +%Y-%m-%dT%H:%MZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if command -v clinfo >/dev/null; then clinfo -l; else echo "# clinfo not installed"; fi
echo "\$ medley adapters"
timeout "$LIMIT" "$MEDLEY_BIN" adapters
echo "\$ medley adapter check opencl ${options[*]}"
timeout "$LIMIT" "$MEDLEY_BIN" adapter check opencl "${options[@]}" || status=1
echo "\$ medley adapter bench opencl ${options[*]} --json $OUT_DIR/bench-opencl.json"
timeout "$LIMIT" "$MEDLEY_BIN" adapter bench opencl "${options[@]}" --json "$OUT_DIR/bench-opencl.json" || status=1
echo "\$ medley adapter bench cpu --json $OUT_DIR/bench-cpu.json   (the host's CPU, for comparison)"
timeout "$LIMIT" "$MEDLEY_BIN" adapter bench cpu --json "$OUT_DIR/bench-cpu.json" || status=1
echo "device-check: wrote $OUT_DIR ($( [ $status -eq 0 ] && echo passed || echo FAILED ))"
exit $status
