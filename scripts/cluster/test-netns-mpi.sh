#!/usr/bin/env bash
# test-netns-mpi.sh [--prefix P] [--rate RATE] — prove a 2-rank Open MPI job spans two
# netns "hosts": builds mpi-hello.c into /tmp, brings up P (default medley-mpi), runs mpirun
# inside P-hostA with netns-rsh as its ssh, checks that the two ranks report two different
# network namespaces and the right allreduce sum, and that the bytes went over the veth.
# Tears everything down on exit (also on failure). Exit 0 = proven.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
die() { echo "test-netns-mpi: error: $*" >&2; exit 1; }
prefix=medley-mpi rate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
out=$(mktemp /tmp/medley-netns-mpi.XXXXXX)
trap '"$here/netns-hosts.sh" down --prefix "$prefix" >/dev/null 2>&1 || true; rm -f "$out"' EXIT

mpicc -O2 -o /tmp/medley-mpi-hello "$here/mpi-hello.c" || die "mpicc failed"
"$here/netns-hosts.sh" up --prefix "$prefix" ${rate:+--rate "$rate"}
# shellcheck disable=SC1090
. "/run/medley-netns/$prefix.env"
rxB() { ip -n "$NS_B" -s link show "$IFNAME" | awk '/RX:/{getline; print $1}'; }
before=$(rxB)
t0=$(date +%s%3N)
"$here/netns-hosts.sh" exec --prefix "$prefix" A -- \
  mpirun --allow-run-as-root --oversubscribe --timeout 60 \
  --mca plm_rsh_agent "$here/netns-rsh" \
  --mca btl self,tcp --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
  -H "$IP_A,$IP_B" -np 2 /tmp/medley-mpi-hello --loop 1 >"$out" 2>&1 || { cat "$out" >&2; die "mpirun failed"; }
t1=$(date +%s%3N)
cat "$out"
n_ok=$(grep -c 'allreduce 3 (ok)' "$out" || true)
n_ns=$(grep -o 'netns net:\[[0-9]*\]' "$out" | sort -u | wc -l)
bytes=$(( $(rxB) - before ))
[ "$n_ok" = 2 ] || die "expected 2 ranks with allreduce ok, got $n_ok"
[ "$n_ns" = 2 ] || die "expected the 2 ranks in 2 network namespaces, got $n_ns"
[ "$bytes" -gt 1000000 ] || die "only $bytes bytes reached hostB over $IFNAME"
echo "ok: 2 ranks, 2 namespaces ($NS_A, $NS_B), $bytes bytes into hostB over $IFNAME, mpirun took $(( (t1 - t0) ))ms"
