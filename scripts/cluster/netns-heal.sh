#!/usr/bin/env bash
# netns-heal.sh [PREFIX] — undo netns-cut.sh (any mode): blackhole neighbour entries
# removed (ARP re-resolves), link up on both ends, root
# qdisc back to the --rate tbf given at `up` (or removed), then wait (<= 5 s) for carrier.
# Idempotent. PREFIX defaults to medley.
set -euo pipefail
die() { echo "netns-heal: error: $*" >&2; exit 1; }
prefix=medley
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) prefix="$1"; shift ;;
  esac
done
state=/run/medley-netns/$prefix.env
[ -e "$state" ] || die "prefix $prefix is not up (no $state)"
# shellcheck disable=SC1090
. "$state"
ip -n "$NS_A" neigh del "$IP_B" dev "$IFNAME" 2>/dev/null || true   # blackhole mode
ip -n "$NS_B" neigh del "$IP_A" dev "$IFNAME" 2>/dev/null || true
for ns in "$NS_A" "$NS_B"; do
  ip -n "$ns" link set "$IFNAME" up || die "ip link up in $ns failed"
  if [ -n "${RATE:-}" ]; then
    tc -n "$ns" qdisc replace dev "$IFNAME" root tbf rate "$RATE" burst 256kb latency 100ms \
      || die "tc tbf restore on $ns failed"
  elif tc -n "$ns" qdisc show dev "$IFNAME" | grep -q 'qdisc pfifo .* root'; then
    tc -n "$ns" qdisc del dev "$IFNAME" root || die "tc qdisc del on $ns failed"
  fi
done
deadline=$((SECONDS + 5))
until ip -n "$NS_A" link show "$IFNAME" | grep -q LOWER_UP && ip -n "$NS_B" link show "$IFNAME" | grep -q LOWER_UP; do
  [ $SECONDS -lt $deadline ] || die "link did not regain carrier within 5 s"
  sleep 0.1
done
# hostB's route goes with link-down; link-up restores the connected route automatically.
echo "netns-heal: $prefix healed at $(date +%T.%3N)"
