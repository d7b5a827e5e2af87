#!/usr/bin/env bash
# Regenerates the protoc-c output committed in Sources/CMedleyProto from protos/medley.proto.
# Usage: scripts/gen-protos.sh [OUTPUT_DIR]   (default: Sources/CMedleyProto)
# The staleness test runs this with a temporary OUTPUT_DIR and compares the result
# byte for byte with the committed files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/Sources/CMedleyProto"}
command -v protoc-c >/dev/null || { echo "gen-protos: protoc-c not found (run scripts/setup.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc-c --proto_path="$root/protos" --c_out="$tmp" medley.proto
mkdir -p "$out/include"
cp "$tmp/medley.pb-c.c" "$out/medley.pb-c.c"
cp "$tmp/medley.pb-c.h" "$out/include/medley.pb-c.h"
echo "gen-protos: wrote $out/medley.pb-c.c and $out/include/medley.pb-c.h"
