#!/usr/bin/env bash
# Installs what is missing, builds Medley, lists the chip adapters found, and runs the main job:
# the built-in mixed training job (one cpu chip and two simulated chips of other vendors)
# under mpirun, with its step records in medley-run.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build
medley=".build/debug/medley"
"$medley" adapters
"$medley" train --log medley-run.jsonl "$@"
