#!/usr/bin/env bash
# test-netns-cut.sh — measure how long a 2-rank Open MPI job takes to notice a cut link.
#
#   test-netns-cut.sh [--prefix P] [--mode blackhole|qdisc|link] [--max-wait S] [--heal-after S]
#                     [--chatty] [--tcp-retries2 N] [-- mpirun args...]
#
# Brings up netns hosts P (default medley-cut), builds scripts/cluster/mpi-hello.c into /tmp,
# runs `mpirun` inside P-hostA (rank 0 in hostA, rank 1 in hostB via netns-rsh) with
# `mpi-hello --loop 0` (1 MiB allreduces forever), waits for a heartbeat, cuts the link and
# times how long mpirun takes to exit. Gives up after --max-wait seconds (default 120) and
# then reports "still running" (exit 2). Everything after `--` is passed to mpirun, e.g.
#   test-netns-cut.sh -- --mca oob_tcp_keepalive_time 1 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 2
# --heal-after S heals the link S seconds after the cut (to see whether the job recovers).
# --chatty: rank 1 (hostB) keeps printing from a thread, so the OOB link has unacked data
# at the cut (TCP keepalive then never fires). --tcp-retries2 N: passed to netns-hosts up.
# Always tears down (processes, namespaces) on exit. Prints one "result:" line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
die() { echo "test-netns-cut: error: $*" >&2; exit 1; }

prefix=medley-cut mode=blackhole max_wait=120 heal_after="" extra=() app_args=() retries2=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --max-wait) max_wait="$2"; shift 2 ;;
    --heal-after) heal_after="$2"; shift 2 ;;
    --chatty) app_args=(--chatty); shift ;;
    --tcp-retries2) retries2="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown argument $1" ;;
  esac
done

log=$(mktemp /tmp/medley-cut.XXXXXX.log)
mpid=""
cleanup() {
  local rc=$?
  if [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null; then
    kill -TERM "$mpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$mpid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$mpid" 2>/dev/null || true
  fi
  "$here/netns-hosts.sh" down --prefix "$prefix" >/dev/null || true   # also kills leftovers
  rm -f "$log"
  exit $rc
}
trap cleanup EXIT INT TERM

command -v mpicc >/dev/null || die "mpicc not found (libopenmpi-dev)"
mpicc -O2 -o /tmp/medley-mpi-hello "$here/mpi-hello.c" || die "mpicc failed"
"$here/netns-hosts.sh" up --prefix "$prefix" ${retries2:+--tcp-retries2 "$retries2"} >/dev/null
# shellcheck disable=SC1090
. "/run/medley-netns/$prefix.env"

"$here/netns-hosts.sh" exec --prefix "$prefix" A -- mpirun --allow-run-as-root --oversubscribe \
  --mca plm_rsh_agent "$here/netns-rsh" --mca btl self,tcp \
  --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
  --timeout $((max_wait + 60)) "${extra[@]}" \
  -H "$IP_A,$IP_B" -np 2 /tmp/medley-mpi-hello --loop 0 "${app_args[@]}" >"$log" 2>&1 &
mpid=$!

deadline=$((SECONDS + 30))
until grep -q heartbeat "$log"; do
  kill -0 "$mpid" 2>/dev/null || { tail -5 "$log" >&2; die "mpirun exited before its first heartbeat"; }
  [ $SECONDS -lt $deadline ] || die "no heartbeat within 30 s"
  sleep 0.2
done
sleep 1
"$here/netns-cut.sh" "$prefix" --mode "$mode" >/dev/null
t0=$(date +%s%3N)
healed=""
seen=$(wc -l <"$log")
events=()   # non-heartbeat output lines after the cut, with time since the cut
note_events() {
  local n line
  n=$(wc -l <"$log")
  if [ "$n" -gt "$seen" ]; then
    while IFS= read -r line; do
      case "$line" in heartbeat*|chatty*) ;; *) events+=("t=$((el / 1000)).$(printf %03d $((el % 1000)))s ${line:0:200}") ;; esac
    done < <(sed -n "$((seen + 1)),${n}p" "$log")
    seen=$n
  fi
}
while kill -0 "$mpid" 2>/dev/null; do
  el=$(( $(date +%s%3N) - t0 ))   # ms
  note_events
  if [ -n "$heal_after" ] && [ -z "$healed" ] && [ "$el" -ge $((heal_after * 1000)) ]; then
    "$here/netns-heal.sh" "$prefix" >/dev/null; healed=1
    echo "healed at t=${el}ms" >>"$log"
  fi
  if [ "$el" -ge $((max_wait * 1000)) ]; then
    hb=$(grep -c heartbeat "$log" || true)
    echo "--- output after the cut ---"; printf "%s\n" "${events[@]}" | head -${EVENTS_MAX:-20}
    echo "left in namespaces: A=[$(ip netns pids "$NS_A" | tr '\n' ' ')] B=[$(ip netns pids "$NS_B" | tr '\n' ' ')]"
    echo "result: mode=$mode still running ${max_wait}s after the cut (heartbeats=$hb) extra=[${extra[*]}]"
    exit 2
  fi
  sleep 0.2
done
set +e; wait "$mpid"; mrc=$?; set -e
mpid=""
el=$(( $(date +%s%3N) - t0 ))
note_events
echo "--- output after the cut ---"; printf "%s\n" "${events[@]}" | head -${EVENTS_MAX:-20}
sleep 1
echo "left in namespaces after exit+1s: A=[$(ip netns pids "$NS_A" | tr '\n' ' ')] B=[$(ip netns pids "$NS_B" | tr '\n' ' ')]"
printf 'result: mode=%s mpirun exited rc=%s %d.%03ds after the cut extra=[%s]\n' "$mode" "$mrc" $((el / 1000)) $((el % 1000)) "${extra[*]}"
rm -f "$log"
