#!/usr/bin/env bash
# netns-cut.sh [PREFIX] [--mode blackhole|qdisc|link] — cut the hostA<->hostB link of a
# netns-hosts setup. Undo with netns-heal.sh PREFIX. PREFIX defaults to medley. Idempotent.
#
#   blackhole (default): permanent neighbour (ARP) entries on both ends pointing the peer's
#         address at a MAC nobody has. Frames still leave each end and are silently
#         discarded by the receiving veth (wrong destination MAC). Carrier, addresses and
#         routes stay; the sender's TCP sees nothing but missing ACKs: this is what a dead
#         switch or a pulled cable at the far end looks like.
#   qdisc: root qdisc `pfifo limit 0` on both ends: every packet is dropped at enqueue.
#         NOT silent: the sending TCP gets local-congestion errors (NET_XMIT_DROP) and on
#         this kernel (6.18) an in-flight connection fails with ETIMEDOUT after ~8 s.
#   link: `ip link set mdl0 down` in hostB. hostB loses its connected route (sends fail
#         locally); hostA sees NO-CARRIER and drops locally.
set -euo pipefail
die() { echo "netns-cut: error: $*" >&2; exit 1; }
prefix=medley mode=blackhole
BOGUS_MAC=02:00:00:00:de:ad
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode="${2:?--mode needs blackhole|qdisc|link}"; shift 2 ;;
    --prefix) prefix="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) prefix="$1"; shift ;;
  esac
done
state=/run/medley-netns/$prefix.env
[ -e "$state" ] || die "prefix $prefix is not up (no $state)"
# shellcheck disable=SC1090
. "$state"
case "$mode" in
  blackhole)
    ip -n "$NS_A" neigh replace "$IP_B" lladdr "$BOGUS_MAC" dev "$IFNAME" nud permanent \
      || die "neigh blackhole in $NS_A failed"
    ip -n "$NS_B" neigh replace "$IP_A" lladdr "$BOGUS_MAC" dev "$IFNAME" nud permanent \
      || die "neigh blackhole in $NS_B failed" ;;
  qdisc)
    for ns in "$NS_A" "$NS_B"; do
      tc -n "$ns" qdisc replace dev "$IFNAME" root pfifo limit 0 || die "tc drop on $ns failed"
    done ;;
  link)
    ip -n "$NS_B" link set "$IFNAME" down || die "ip link down in $NS_B failed" ;;
  *) die "unknown --mode '$mode' (blackhole|qdisc|link)" ;;
esac
echo "netns-cut: $prefix cut ($mode) at $(date +%T.%3N)"
