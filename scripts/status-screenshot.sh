#!/usr/bin/env bash
# Renders a running job's status page with headless Chromium: scripts/status-screenshot.sh URL OUT.png
# (e.g. http://127.0.0.1:9400/ while `medley launch --metrics-port 9400` runs). Needs chromium
# (apt-get install chromium); the page needs nothing but the job's own server.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 URL OUT.png (the status page of a job started with --metrics-port)" >&2
    exit 2
fi
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "error: no chromium on PATH; install it (apt-get install chromium) and run again" >&2
    exit 1
fi
# The page polls every second; three seconds of virtual time lets it draw a few polls.
timeout 60 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,1000 --virtual-time-budget=3000 --screenshot="$2" "$1" 2>/dev/null
test -s "$2" || { echo "error: chromium wrote no screenshot to $2" >&2; exit 1; }
echo "wrote $2"
