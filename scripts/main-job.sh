#!/usr/bin/env bash
# Installs what is missing, builds Medley (release), lists the chip adapters found, and runs the
# main job under `medley launch`: the built-in mixed training job (one cpu chip and two simulated
# chips of other vendors) under mpirun, supervised, with a live display on a terminal and a run
# directory under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build -c release
medley=".build/release/medley"
"$medley" adapters
"$medley" launch "$@"
