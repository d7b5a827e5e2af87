#!/usr/bin/env bash
# Installs what is missing, builds everything, and runs the whole test suite
# (unit tests, multi-rank tests under mpirun, and the conformance kit on every adapter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build --build-tests
swift test --skip-build
