#!/usr/bin/env bash
# Records Medley across two hosts faked as network namespaces (scripts/cluster/netns-hosts.sh)
# into benchmarks/ (see benchmarks/cluster.md):
#
#   scripts/bench-cluster.sh [--prefix P] [--rounds N] [--only allreduce|launch]
#
# 1. `medley bench allreduce` run in place under mpirun, one rank per namespace host, TCP over
#    the veth between them: Medley's exchange against plain MPI_Allreduce in the same run.
#      bind-none        the link as is, ranks unbound (--bind-to none, as medley's own mpirun has)
#      bind-none-1gbit  the same with `netns-hosts.sh up --rate 1gbit`
#      bound            Open MPI's default binding: each "host" binds its rank to core 0, so on this
#                       one machine both ranks share one core (kept to show what that costs)
#      one-host         `medley bench allreduce --ranks 2` (shared memory, no namespaces), same binary
#    -> benchmarks/allreduce-2hosts.json
# 2. `medley launch` of a small job (2 layers, dim 32, 20 steps; cpu + sim on hostA, reference + sim
#    on hostB) against the same four chips on one host (in hostA), and the two-host job again with
#    OMPI_MCA_mpi_yield_when_idle=1 (this machine's 2 cores run all 4 ranks, but each namespace
#    "host" counts 2 slots, so Open MPI does not yield), N rounds each, rotating which goes
#    first; the seconds from the launch to the first step (summary.json
#    firstStepSeconds), and where the extra time goes (the agent's log of each daemon start,
#    and bare mpirun / preflight mpirun timings). -> benchmarks/cluster-launch.json
# Everything printed goes to benchmarks/cluster-latest.txt.
#
# Uses the built binary (MEDLEY_BIN, default .build/debug/medley); it does not build. Needs root.
# The namespaces (prefix P, default bench) are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=$root/scripts/cluster
prefix=bench rounds=3 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?}"; shift 2 ;;
    --rounds) rounds="${2:?}"; shift 2 ;;
    --only) only="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "bench-cluster: error: unknown argument $1" >&2; exit 2 ;;
  esac
done
BIN=$(readlink -f "${MEDLEY_BIN:-.build/debug/medley}")
[ -x "$BIN" ] || { echo "bench-cluster: error: $BIN is missing; build medley first (swift build)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench-cluster: error: needs root (network namespaces)" >&2; exit 1; }
out=$root/benchmarks
work=$(mktemp -d /tmp/medley-bench-cluster.XXXXXX)
cleanup() { "$here/netns-hosts.sh" down --prefix "$prefix" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_line() {
  echo "$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB," \
    "$(uname -sr), Debian $(cat /etc/debian_version 2>/dev/null), Open MPI $(mpirun --version 2>/dev/null | head -1 | awk '{print $NF}')," \
    "HZ $( (zcat /proc/config.gz 2>/dev/null || true) | sed -n 's/^CONFIG_HZ=//p'), binary $BIN"
}
stamp() {
  local others
  others=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -v "^$prefix-host" | tr '\n' ' ' || true)
  echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ); load: $(cut -d' ' -f1-3 /proc/loadavg); other namespaces: ${others:-none}"
}
hosts_up() {  # extra netns-hosts.sh up arguments
  "$here/netns-hosts.sh" up --prefix "$prefix" "$@" >"$work/up.txt" 2>&1 || { cat "$work/up.txt" >&2; exit 1; }
  sed 's/^/# /' "$work/up.txt"
}
inA() { "$here/netns-hosts.sh" exec --prefix "$prefix" A -- "$@"; }
echo "# machine: $(machine_line)" >"$work/machine.txt"

# ---------------------------------------------------------------- 1. allreduce over the link
MPI=(mpirun --allow-run-as-root --oversubscribe --timeout 600 --mca plm_rsh_agent "$here/netns-rsh"
     --mca btl self,vader,tcp --mca btl_tcp_if_include mdl0 --mca oob_tcp_if_include mdl0)
: >"$work/runs.tsv"
bench() {  # name link min max [extra mpirun args...]; "one-host" runs without namespaces
  local name=$1 link=$2 min=$3 max=$4; shift 4
  local json="$work/ar-$name.json" t0 status=1 try cmd when load
  when=$(date -u +%Y-%m-%dT%H:%M:%SZ) load=$(cut -d' ' -f1-3 /proc/loadavg)
  local args=(bench allreduce --min-size "$min" --max-size "$max" --agreement-steps 200 --blocks 2 --json "$json")
  if [ "$name" = one-host ]; then cmd=("$BIN" "${args[@]}" --ranks 2 --timeout 600)
  else cmd=("${MPI[@]}" "$@" --host hostA:1,hostB:1 -np 2 "$BIN" "${args[@]}"); fi
  stamp
  echo "# run $name (link: $link)"
  if [ "$name" = one-host ]; then echo "\$ ${cmd[*]}"; else echo "\$ netns-hosts.sh exec --prefix $prefix A -- ${cmd[*]}"; fi
  for try in 1 2; do
    t0=$SECONDS
    if [ "$name" = one-host ]; then "${cmd[@]}" >"$work/ar-$name.txt" 2>&1 && status=0 || status=$?
    else inA "${cmd[@]}" >"$work/ar-$name.txt" 2>&1 && status=0 || status=$?; fi
    [ "$status" -eq 0 ] && [ -s "$json" ] && break
    echo "# run $name failed (exit $status, try $try):"; tail -15 "$work/ar-$name.txt" | sed 's/^/#   /'
  done
  cat "$work/ar-$name.txt"
  echo "# run $name: exit $status, $((SECONDS - t0)) s"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$link" "$*" "${cmd[*]}" "$status" "$((SECONDS - t0))" "$when" "$load" >>"$work/runs.tsv"
}

# The link alone, without MPI: one TCP connection hostA -> hostB (Python, blocking sockets):
# 8-byte ping-pong round trips and 512 MiB one way.
cat >"$work/link.py" <<'EOF'
import socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], 5557
if mode == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((host, port)); s.listen(1)
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(2000): c.sendall(c.recv(8))
    got = 0
    while got < 512 << 20:
        d = c.recv(1 << 20)
        if not d: break
        got += len(d)
    c.sendall(b"k")
else:
    c = socket.create_connection((host, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtt = []
    for _ in range(2000):
        t = time.perf_counter(); c.sendall(b"12345678"); c.recv(8); rtt.append(time.perf_counter() - t)
    rtt.sort(); block = b"x" * (1 << 20); t = time.perf_counter()
    for _ in range(512): c.sendall(block)
    c.recv(1); seconds = time.perf_counter() - t
    print(f"# link alone (python TCP, hostA -> hostB): 8-byte round trip median {rtt[1000] * 1e6:.1f} us, "
          f"512 MiB one way at {(512 << 20) / seconds / 1e6:.0f} MB/s")
EOF
: >"$work/link.txt"
link() {
  local ipB server
  ipB=$(sed -n 's/^IP_B=//p' "/run/medley-netns/$prefix.env")
  ip netns exec "$prefix-hostB" timeout 60 python3 "$work/link.py" server "$ipB" &
  server=$!
  sleep 0.3
  ip netns exec "$prefix-hostA" timeout 60 python3 "$work/link.py" client "$ipB" | tee -a "$work/link.txt" || echo "# link probe failed"
  wait "$server" || true
}

if [ "$only" != launch ]; then
  {
    cat "$work/machine.txt"
    hosts_up
    link
    bench bind-none unlimited 4KiB 16MiB --bind-to none
    bench bound unlimited 1MiB 2MiB
    hosts_up --rate 1gbit
    link
    bench bind-none-1gbit "tbf 1gbit" 4KiB 16MiB --bind-to none
    "$here/netns-hosts.sh" down --prefix "$prefix" >/dev/null
    bench one-host "shared memory (vader)" 4KiB 16MiB
  } | tee "$work/allreduce.txt"
  python3 - "$work" "$out/allreduce-2hosts.json" "$(machine_line)" <<'EOF' | tee -a "$work/allreduce.txt"
import json, sys
work, dest, machine = sys.argv[1:4]
runs = []
for line in open(f"{work}/runs.tsv"):
    name, link, extra, command, status, seconds, when, load = line.rstrip("\n").split("\t")
    try:
        report = json.load(open(f"{work}/ar-{name}.json"))
    except OSError:
        report = None
    runs.append({"name": name, "link": link, "extra_mpirun_args": extra.split(), "command": command,
                 "date": when, "load_before": load, "exit": int(status), "seconds": int(seconds), "report": report})
link = [l.strip("# \n") for l in open(f"{work}/link.txt")]
json.dump({"machine": machine, "ranks": "1 per namespace host (one-host: 2 on one host)",
           "link_alone": {"unlimited": link[0] if link else None, "tbf 1gbit": link[1] if len(link) > 1 else None},
           "runs": runs}, open(dest, "w"), indent=2)
print(f"# wrote {dest}")
print("# Medley busbw / MPI busbw at sizes >= 1 MiB (median; best in brackets)")
for run in runs:
    if not run["report"]:
        print(f"{run['name']:16s} no result"); continue
    rows = [r for r in run["report"]["results"] if r["size_bytes"] >= 1 << 20]
    print(f"{run['name']:16s} " + "  ".join(f"{r['size_bytes'] >> 20}MiB {r['ratio']:.3f} ({r['ratio_best']:.3f})" for r in rows))
EOF
fi

# ---------------------------------------------------------------- 2. launch to first step
if [ "$only" != allreduce ]; then
  common='name: cluster-launch
model: {layers: 2, dim: 32, heads: 2, seq: 32, batch: 12}
train: {steps: 20, lr: 0.003, warmup_steps: 2, rebalance_every: 0, eval_every: 0}'
  cat >"$work/two-hosts.yaml" <<EOF
$common
hosts:
  hostA: [cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}]
  hostB: [reference, {adapter: sim, options: {vendor: Borealis, speed: 0.5}}]
network: {interfaces: [mdl0], rsh_agent: $here/netns-rsh}
EOF
  cat >"$work/one-host.yaml" <<EOF
$common
devices: [cpu, {adapter: sim, options: {vendor: Acme, speed: 0.5}}, reference, {adapter: sim, options: {vendor: Borealis, speed: 0.5}}]
EOF
  export MEDLEY_CACHE_DIR="$work/cache"
  : >"$work/launch.tsv"
  launch() {  # setup round; two-hosts-yield = two-hosts with OMPI_MCA_mpi_yield_when_idle=1
    local setup=$1 round=$2 dir="$work/launch-$1-$2" t0 t1 status yield=() job=$1 load
    load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)
    mkdir -p "$dir"
    if [ "$setup" = two-hosts-yield ]; then yield=(OMPI_MCA_mpi_yield_when_idle=1); job=two-hosts; fi
    t0=$(date +%s.%N)
    env "${yield[@]}" NETNS_RSH_LOG="$dir/agent.log" "$here/netns-hosts.sh" exec --prefix "$prefix" A -- \
      "$BIN" launch "$work/$job.yaml" --run-dir "$dir/run" --quiet --timeout 300 >"$dir/out.txt" 2>&1 && status=0 || status=$?
    t1=$(date +%s.%N)
    echo "# $setup round $round: exit $status; $(grep '^summary:' "$dir/out.txt" || tail -3 "$dir/out.txt")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$setup" "$round" "$t0" "$t1" "$status" "$load" >>"$work/launch.tsv"
  }
  timed() {  # label command... (3 runs, seconds each)
    local label=$1 i t0; shift
    for i in 1 2 3; do
      t0=$(date +%s.%N)
      inA "$@" >"$work/timed.txt" 2>&1 || { echo "# $label failed:"; tail -5 "$work/timed.txt"; }
      printf '%s\t%s\t%s\n' "$label" "$t0" "$(date +%s.%N)" >>"$work/timed.tsv"
    done
  }
  {
    cat "$work/machine.txt"
    hosts_up
    stamp
    echo "# job (both): $(echo "$common" | tr '\n' ' ')"
    echo "# two-hosts: hostA [cpu, sim Acme speed 0.5], hostB [reference, sim Borealis speed 0.5], network {interfaces: [mdl0], rsh_agent: netns-rsh}"
    echo "# one-host: the same four devices, no hosts (run inside hostA too)"
    echo "# two-hosts-yield: two-hosts with OMPI_MCA_mpi_yield_when_idle=1 in medley launch's environment (4 ranks on 2 cores)"
    echo "\$ MEDLEY_CACHE_DIR=\$tmp/cache netns-hosts.sh exec --prefix $prefix A -- medley launch JOB --run-dir DIR --quiet --timeout 300"
    for round in $(seq 1 "$rounds"); do
      if [ $((round % 2)) -eq 1 ]; then for s in one-host two-hosts two-hosts-yield; do launch $s "$round"; done
      else for s in two-hosts-yield two-hosts one-host; do launch $s "$round"; done; fi
    done
    stamp
    # The pieces, alone: a bare mpirun on one and on two hosts, one host preflight (what medley
    # runs before training: `medley preflight-rank` on every rank's host), the binary's start.
    : >"$work/timed.tsv"
    MR=(mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader,tcp --timeout 60
        --mca btl_tcp_if_include mdl0 --mca oob_tcp_if_include mdl0 --mca plm_rsh_agent "$here/netns-rsh"
        --mca oob_tcp_keepalive_time 5 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 5)
    timed "mpirun true, one host (4 procs)" mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader -np 4 /bin/true
    timed "mpirun true, two hosts (2+2)" "${MR[@]}" -np 2 --host hostA:2 /bin/true : -np 2 --host hostB:2 /bin/true
    timed "preflight mpirun, two hosts (2+2)" "${MR[@]}" -np 2 --host hostA:2 "$BIN" preflight-rank --job "$work/two-hosts.yaml" \
      : -np 2 --host hostB:2 "$BIN" preflight-rank --job "$work/two-hosts.yaml"
    timed "medley --version (binary start)" "$BIN" --version
  } | tee "$work/launch.txt"
  python3 - "$work" "$out/cluster-launch.json" "$(machine_line)" <<'EOF' | tee -a "$work/launch.txt"
import datetime, json, statistics, sys
work, dest, machine = sys.argv[1:4]
def tod(stamp):  # the agent logs local time of day (date +%T.%N)
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)
runs = []
for line in open(f"{work}/launch.tsv"):
    setup, rnd, t0, t1, status, load = line.split()
    t0, t1 = float(t0), float(t1)
    d = f"{work}/launch-{setup}-{rnd}"
    try:
        summary = json.load(open(f"{d}/run/summary.json"))
    except OSError:
        summary = {}
    steps = [json.loads(l) for l in open(f"{d}/run/steps.jsonl") if l.strip()] if status == "0" else []
    start = datetime.datetime.fromtimestamp(t0)
    start_tod = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    try:
        agent = [round(tod(l.split()[0]) - start_tod, 3) for l in open(f"{d}/agent.log")]
    except OSError:
        agent = []
    runs.append({"setup": setup, "round": int(rnd), "exit": int(status),
                 "date": datetime.datetime.fromtimestamp(t0, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "load_before": load.replace(",", " "),
                 "first_step_seconds": summary.get("firstStepSeconds"), "launch_wall_seconds": round(t1 - t0, 3),
                 "job_seconds": summary.get("seconds"),
                 "step_ms_median": statistics.median(s["step_ms"] for s in steps[1:]) if len(steps) > 1 else None,
                 "first_step_ms": steps[0]["step_ms"] if steps else None,
                 "remote_daemon_starts_after_seconds": agent})
timed = {}
for line in open(f"{work}/timed.tsv"):
    label, a, b = line.rstrip("\n").split("\t")
    timed.setdefault(label, []).append(round(float(b) - float(a), 3))
def med(setup, key):
    values = [r[key] for r in runs if r["setup"] == setup and r[key] is not None]
    return statistics.median(values) if values else None
medians = {s: {k: med(s, k) for k in ("first_step_seconds", "launch_wall_seconds", "job_seconds", "step_ms_median", "first_step_ms")}
           for s in ("one-host", "two-hosts", "two-hosts-yield")}
for s in medians:
    starts = [r["remote_daemon_starts_after_seconds"] for r in runs if r["setup"] == s and r["remote_daemon_starts_after_seconds"]]
    medians[s]["remote_daemon_starts_after_seconds"] = [statistics.median(x) for x in zip(*starts)] if starts else []
result = {"machine": machine, "job": open(f"{work}/two-hosts.yaml").read(), "one_host_job": open(f"{work}/one-host.yaml").read(),
          "runs": runs, "medians": medians, "pieces_seconds": {k: {"runs": v, "median": statistics.median(v)} for k, v in timed.items()}}
json.dump(result, open(dest, "w"), indent=2)
print(f"# wrote {dest}")
for s, m in medians.items():
    print(f"{s:10s} first step {m['first_step_seconds']:.2f} s after launch (median of {sum(r['setup'] == s for r in runs)}); "
          f"launch wall {m['launch_wall_seconds']:.2f} s; step {m['step_ms_median']:.1f} ms; "
          f"remote daemons started at {m['remote_daemon_starts_after_seconds']} s")
for k, v in timed.items():
    print(f"{k:36s} {statistics.median(v):.3f} s (runs {v})")
EOF
fi

if [ "$only" = launch ]; then cp "$work/launch.txt" "$out/cluster-latest.txt"
elif [ "$only" = allreduce ]; then cp "$work/allreduce.txt" "$out/cluster-latest.txt"
else cat "$work/allreduce.txt" "$work/launch.txt" >"$out/cluster-latest.txt"; fi
echo "# wrote $out/cluster-latest.txt"
