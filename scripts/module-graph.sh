#!/usr/bin/env bash
# Prints the module graph docs/architecture.md shows: each Swift target under Sources/ and the
# Medley modules its sources import (ArchitectureDocTests checks the doc against the same rule).
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in Sources/*/; do
  name=$(basename "$dir")
  [ "$name" = medley-comm-check ] && name=MedleyCommCheck
  [ -n "$(find "$dir" -name '*.swift' | head -1)" ] || continue
  imports=$(grep -rhoE '^(@testable )?import [A-Za-z0-9_]+' "$dir" --include='*.swift' | awk '{print $NF}' \
    | grep -E '^(Medley[A-Za-z]*|CMPI|CMedleyProto|CMedleyAdapter|COpenBLAS)$' | sort -u | paste -sd ' ' - || true)
  echo "$name -> ${imports:-(none)}"
done | sort
