#!/usr/bin/env bash
# Installs what is missing, builds Medley, and runs its main job on the embedded default:
# lists the adapters found and runs the conformance kit on the reference adapter.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build
medley=".build/debug/medley"
"$medley" adapters
"$medley" adapter check reference
