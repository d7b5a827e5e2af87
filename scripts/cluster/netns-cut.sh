#!/usr/bin/env bash
# netns-cut.sh [PREFIX] [--mode drop|link] — cut the hostA<->hostB link of a netns-hosts setup.
#
#   drop (default): replace the root qdisc on both veth ends with `pfifo limit 0`, which
#         drops every outgoing packet. Addresses, routes and carrier stay: to both TCP
#         stacks this looks like a dead switch (silent loss, retransmits, no RST, no error).
#   link: `ip link set mdl0 down` in hostB. hostB loses its 10.77.N.0/24 route (sends
#         there fail with ENETUNREACH locally); hostA keeps its route but sees NO-CARRIER
#         and drops silently.
# Undo with netns-heal.sh PREFIX. PREFIX defaults to medley. Idempotent.
set -euo pipefail
die() { echo "netns-cut: error: $*" >&2; exit 1; }
prefix=medley mode=drop
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode="${2:?--mode needs drop|link}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) prefix="$1"; shift ;;
  esac
done
state=/run/medley-netns/$prefix.env
[ -e "$state" ] || die "prefix $prefix is not up (no $state)"
# shellcheck disable=SC1090
. "$state"
case "$mode" in
  drop)
    for ns in "$NS_A" "$NS_B"; do
      tc -n "$ns" qdisc replace dev "$IFNAME" root pfifo limit 0 || die "tc drop on $ns failed"
    done ;;
  link)
    ip -n "$NS_B" link set "$IFNAME" down || die "ip link down in $NS_B failed" ;;
  *) die "unknown --mode '$mode' (drop|link)" ;;
esac
echo "netns-cut: $prefix cut ($mode) at $(date +%T.%3N)"
