#!/usr/bin/env bash
# Builds the libFuzzer target over Medley's wire decoders (FuzzTesting/) and runs it for a
# fixed time.
#
#   scripts/fuzz.sh [SECONDS]        (default 60)
#
# Seeds: FuzzTesting/corpus/ (valid frames and messages, rewritten from the harness's own
# seed list on every run, so they follow the wire format). New inputs go to .build-fuzz-corpus/
# and crash, leak or timeout inputs to .build-fuzz-artifacts/ (both gitignored). Reproduce a
# finding with: .build-fuzz/debug/FuzzFrameDecoder .build-fuzz-artifacts/crash-...
# Exit status: 0 when the run ended with no finding, libFuzzer's non-zero status otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
case "$seconds" in (''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2;; esac

scratch=.build-fuzz
flags=(-c debug --package-path FuzzTesting --scratch-path "$scratch"
       -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
swift build "${flags[@]}" 2>&1 | grep -v "Cannot export local symbol" || true
binary="$(swift build "${flags[@]}" --show-bin-path)/FuzzFrameDecoder"
[ -x "$binary" ] || { echo "fuzz: the build did not produce $binary" >&2; exit 1; }

seeds=FuzzTesting/corpus
corpus=.build-fuzz-corpus
artifacts=.build-fuzz-artifacts
mkdir -p "$seeds" "$corpus" "$artifacts"
MEDLEY_FUZZ_WRITE_SEEDS="$seeds" "$binary"

echo "fuzz: $binary for ${seconds}s (corpus $corpus, seeds $seeds, findings $artifacts/)"
exec "$binary" \
  -max_total_time="$seconds" \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix="$artifacts/" \
  "$corpus" "$seeds"
