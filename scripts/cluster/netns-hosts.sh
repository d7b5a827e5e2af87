#!/usr/bin/env bash
# netns-hosts.sh — two fake "hosts" as Linux network namespaces joined by a veth pair.
#
#   netns-hosts.sh up     [--prefix P] [--rate RATE] [--octet N] [--tcp-retries2 N]
#   netns-hosts.sh down   [--prefix P]
#   netns-hosts.sh status [--prefix P]
#   netns-hosts.sh check  [--prefix P] [--timeout S]   # TCP hostA -> hostB, exit 0 if it connects
#   netns-hosts.sh exec   [--prefix P] A|B -- command...   # run inside P-hostA/B with hostname hostA/B
#
# up creates namespaces P-hostA and P-hostB (default P=medley), one veth pair whose
# ends are both called "mdl0" (one in each namespace), addresses 10.77.N.1/24 (hostA)
# and 10.77.N.2/24 (hostB), loopback up in each, and, with --rate (e.g. 1gbit, 100mbit),
# a tbf bandwidth limit on both ends. N is 0 for the default prefix and otherwise
# derived from a hash of P (1..254), or given with --octet; up refuses an N that
# another live prefix already uses. --tcp-retries2 N sets net.ipv4.tcp_retries2 inside both
# namespaces (per-namespace sysctl; default 15 = ~924 s before TCP gives up on unacked
# data; 6 = ~25 s, 5 = ~12.6 s): the only bound on a cut link while data is in flight.
#
# Name resolution: up writes /etc/netns/P-hostX/hosts (a copy of /etc/hosts plus
# "10.77.N.1 hostA P-hostA" and "10.77.N.2 hostB P-hostB"). `ip netns exec` bind-mounts
# it over /etc/hosts, so anything started with `ip netns exec` (mpirun, and the ranks
# netns-rsh starts) resolves hostA/hostB. The root namespace's /etc/hosts is untouched;
# from there use the addresses.
#
# State (for down/status/netns-rsh/netns-cut): /run/medley-netns/P.env.
# up is idempotent (an existing setup of the same prefix is torn down first);
# down is idempotent and works after a half-finished up.
set -euo pipefail

die() { echo "netns-hosts: error: $*" >&2; exit 1; }

STATE_DIR=/run/medley-netns
IFNAME=mdl0

cmd="${1:-}"; [ $# -gt 0 ] && shift
prefix=medley rate="" octet="" timeout=5 retries2="" which=""
exec_cmd=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; exec_cmd=("$@"); break ;;
    A|B|hostA|hostB) which="${1#host}"; shift ;;
    --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
    --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
    --octet) octet="${2:?--octet needs a value}"; shift 2 ;;
    --tcp-retries2) retries2="${2:?--tcp-retries2 needs a value}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ "$prefix" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$ ]] || die "bad prefix '$prefix' (letters, digits, _.-; at most 31)"
[ "$(id -u)" -eq 0 ] || die "needs root (ip netns)"
command -v ip >/dev/null || die "ip (iproute2) not found"

nsA="$prefix-hostA" nsB="$prefix-hostB"
state="$STATE_DIR/$prefix.env"

if [ -z "$octet" ]; then
  if [ "$prefix" = medley ]; then octet=0
  else octet=$(( $(printf '%s' "$prefix" | cksum | cut -d' ' -f1) % 254 + 1 )); fi
fi
[[ "$octet" =~ ^[0-9]+$ ]] && [ "$octet" -le 254 ] || die "bad --octet '$octet' (0..254)"
subnet="10.77.$octet.0/24" ipA="10.77.$octet.1" ipB="10.77.$octet.2"

ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

do_down() {
  local ns pids
  for ns in "$nsA" "$nsB"; do
    if ns_exists "$ns"; then
      # Processes left inside keep nothing alive (the netns file is what we delete),
      # but they would hang on a dead network: kill them so nothing lingers.
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      if [ -n "$pids" ]; then
        echo "netns-hosts: killing processes left in $ns: $(echo $pids)" >&2
        kill -KILL $pids 2>/dev/null || true
      fi
      ip netns del "$ns" || die "could not delete namespace $ns"
    fi
    rm -rf "/etc/netns/$ns"
  done
  rm -f "$state"
}

apply_rate() {  # $1 = ns
  [ -n "$rate" ] || return 0
  # tbf needs burst >= one MTU-sized (GSO) packet; 256 KiB is fine from 10mbit to 10gbit.
  tc -n "$1" qdisc replace dev "$IFNAME" root tbf rate "$rate" burst 256kb latency 100ms \
    || die "tc tbf rate '$rate' failed in $1"
}

do_up() {
  local f other
  for f in "$STATE_DIR"/*.env; do
    [ -e "$f" ] || continue
    other=$(basename "$f" .env)
    [ "$other" = "$prefix" ] && continue
    if grep -qx "OCTET=$octet" "$f"; then
      die "subnet $subnet already used by prefix '$other' ($f); pass --octet N"
    fi
  done
  do_down   # idempotent: start from nothing
  mkdir -p "$STATE_DIR"
  # Record first, so a failing up can still be torn down by `down`.
  cat >"$state" <<EOF
PREFIX=$prefix
NS_A=$nsA
NS_B=$nsB
IP_A=$ipA
IP_B=$ipB
SUBNET=$subnet
OCTET=$octet
IFNAME=$IFNAME
RATE=$rate
TCP_RETRIES2=$retries2
EOF
  # Any failure from here on (set -e) exits through this trap and tears down.
  trap 'rc=$?; if [ $rc -ne 0 ]; then echo "netns-hosts: error: up failed (exit $rc), tearing down $prefix" >&2; do_down; fi' EXIT
  ip netns add "$nsA"
  ip netns add "$nsB"
  # Create the pair directly inside the namespaces: no name clash in the root namespace.
  ip link add name "$IFNAME" netns "$nsA" type veth peer name "$IFNAME" netns "$nsB"
  ip -n "$nsA" addr add "$ipA/24" dev "$IFNAME"
  ip -n "$nsB" addr add "$ipB/24" dev "$IFNAME"
  for ns in "$nsA" "$nsB"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$IFNAME" up
    apply_rate "$ns"
    if [ -n "$retries2" ]; then
      ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_retries2="$retries2" || die "sysctl tcp_retries2 failed in $ns"
    fi
    mkdir -p "/etc/netns/$ns"
    { grep -v -E '(^|[[:space:]])(hostA|hostB)([[:space:]]|$)' /etc/hosts 2>/dev/null || true
      echo "# medley netns-hosts ($prefix)"
      echo "$ipA hostA $nsA"
      echo "$ipB hostB $nsB"; } >"/etc/netns/$ns/hosts"
  done
  # Bounded wait until both ends report carrier.
  local deadline=$((SECONDS + 5))
  until ip -n "$nsA" link show "$IFNAME" | grep -q LOWER_UP && ip -n "$nsB" link show "$IFNAME" | grep -q LOWER_UP; do
    [ $SECONDS -lt $deadline ] || die "veth did not come up within 5 s"
    sleep 0.1
  done
  do_check 5 || die "TCP $nsA -> $ipB failed right after up"
  echo "hostA $ipA netns $nsA if $IFNAME"
  echo "hostB $ipB netns $nsB if $IFNAME"
  echo "subnet $subnet rate ${rate:-unlimited} tcp_retries2 $(ip netns exec "$nsA" cat /proc/sys/net/ipv4/tcp_retries2)"
  trap - EXIT
}

do_check() {  # $1 = timeout seconds; TCP connect hostA -> hostB:port
  local t="$1" port=$((20000 + octet)) lpid rc
  ns_exists "$nsA" && ns_exists "$nsB" || return 1
  # perl (perl-base) listener in hostB, accepts one connection, bounded by timeout.
  ip netns exec "$nsB" timeout "$t" perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => $ARGV[0], LocalPort => $ARGV[1],
      Listen => 1, ReuseAddr => 1) or exit 2;
    my $c = $s->accept; print $c "ok\n"; close $c;' "$ipB" "$port" &
  lpid=$!
  rc=1
  local deadline=$((SECONDS + t))
  while [ $SECONDS -lt $deadline ]; do
    if ip netns exec "$nsA" timeout 2 bash -c "exec 3<>/dev/tcp/$ipB/$port && read -r -t 2 l <&3 && [ \"\$l\" = ok ]" 2>/dev/null; then
      rc=0; break
    fi
    sleep 0.2
  done
  kill "$lpid" 2>/dev/null || true
  wait "$lpid" 2>/dev/null || true
  return $rc
}

do_status() {
  local ns
  if [ ! -e "$state" ] && ! ns_exists "$nsA" && ! ns_exists "$nsB"; then
    echo "prefix $prefix: down"; return 3
  fi
  echo "prefix $prefix: state ${state}$( [ -e "$state" ] || echo ' (missing)')"
  for ns in "$nsA" "$nsB"; do
    if ns_exists "$ns"; then
      echo "$ns: $(ip -n "$ns" -o -4 addr show dev "$IFNAME" 2>/dev/null | awk '{print $4}') $(ip -n "$ns" -o link show "$IFNAME" 2>/dev/null | grep -o 'state [A-Z]*')"
      tc -n "$ns" qdisc show dev "$IFNAME" 2>/dev/null | sed "s/^/  /"
      local p; p=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
      [ -n "$p" ] && echo "  pids: $p"
    else
      echo "$ns: missing"
    fi
  done
  return 0
}

case "$cmd" in
  up) do_up ;;
  down)
    do_down
    # Ranks killed hard in the fake hosts leave Open MPI's shared-memory segments (named by
    # the hostnames hostA/hostB) behind; once no setup of any prefix is up, none is in use.
    if ! ls "$STATE_DIR"/*.env >/dev/null 2>&1; then rm -f /dev/shm/vader_segment.hostA.* /dev/shm/vader_segment.hostB.*; fi
    echo "netns-hosts: $prefix down" ;;
  status) do_status ;;
  check)
    [ -e "$state" ] || die "prefix $prefix is not up"
    if do_check "$timeout"; then echo "check: $nsA -> $ipB tcp ok"
    else echo "netns-hosts: error: check: $nsA -> $ipB tcp failed within ${timeout}s" >&2; exit 1; fi ;;
  exec)
    [ -n "$which" ] || die "exec needs A or B"
    [ ${#exec_cmd[@]} -gt 0 ] || die "exec needs -- command..."
    ns="$prefix-host$which"
    ns_exists "$ns" || die "namespace $ns does not exist (up --prefix $prefix first)"
    # own UTS namespace so the host name matches (Open MPI, logs); same mounts, same files
    exec ip netns exec "$ns" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' "host$which" "${exec_cmd[@]}" ;;
  ""|-h|--help) sed -n '2,28p' "$0"; [ -n "$cmd" ] ;;
  *) die "unknown command '$cmd' (up|down|status|check)" ;;
esac
