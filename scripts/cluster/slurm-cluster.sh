#!/usr/bin/env bash
# slurm-cluster.sh — a private one-node Slurm cluster (with its own munged) under a directory.
#
#   slurm-cluster.sh up     [--dir D] [--port BASE] [--grace S] [--requeue-delay S]
#   slurm-cluster.sh down   [--dir D]
#   slurm-cluster.sh status [--dir D]
#
# D defaults to /tmp/medley-slurm. Everything lives under D: slurm.conf, mpi.conf (pmix's
# per-step client dirs under D/pmix instead of /tmp), the munge key,
# munged's socket/pid/log/seed, StateSaveLocation, SlurmdSpoolDir, logs and PID files.
# Nothing of the system's munge or Slurm (/etc/munge, /etc/slurm, /run/munge) is used.
# Ports: slurmctld BASE (default 6817), slurmd BASE+1; use another BASE (and D) to run two
# clusters side by side.
#
# Daemons run in the foreground (munged -F, slurmctld -D, slurmd -D) as background
# children, each started with setsid so it leads its own process group; their PIDs are in
# D/run/<name>.pid. `down` sends SIGTERM to each process group, waits (bounded) and then
# SIGKILLs; it also finds daemons whose PID file is gone by their command line (which
# names D). `up` is idempotent: a healthy cluster is left alone, a half-dead one is taken
# down and restarted. `up` waits (<= 20 s) until sinfo shows the node idle.
#
# Partitions: low (Default, PriorityTier=1, PreemptMode=REQUEUE, GraceTime=S, default 10)
# and high (PriorityTier=10, PreemptMode=OFF). A job in high that needs the node preempts
# (requeues) jobs in low; see README.md for the timings. A requeued job may not start
# again for cred_expire+1 s (BeginTime hold); --requeue-delay S sets AuthInfo cred_expire
# (Slurm default 120, minimum 5). Or clear the hold: scontrol update jobid=N starttime=now.
#
# Clients: export SLURM_CONF=D/slurm.conf (printed by up).
set -euo pipefail

die() { echo "slurm-cluster: error: $*" >&2; exit 1; }

cmd="${1:-}"; [ $# -gt 0 ] && shift
dir=/tmp/medley-slurm port=6817 grace=10 requeue_delay=120
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="${2:?--dir needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --grace) grace="${2:?--grace needs a value}"; shift 2 ;;
    --requeue-delay) requeue_delay="${2:?--requeue-delay needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
case "$dir" in /*) ;; *) dir="$(pwd)/$dir" ;; esac
dir="${dir%/}"
[ "$dir" != "" ] && [ "$dir" != / ] || die "refusing --dir /"
[[ "$port" =~ ^[0-9]+$ ]] || die "bad --port '$port'"
[[ "$grace" =~ ^[0-9]+$ ]] || die "bad --grace '$grace'"
[[ "$requeue_delay" =~ ^[0-9]+$ ]] && [ "$requeue_delay" -ge 5 ] || die "bad --requeue-delay '$requeue_delay' (>= 5)"

conf="$dir/slurm.conf"
run="$dir/run"
msock="$dir/munge/munge.socket"
DAEMONS=(slurmd slurmctld munged)   # stop order; start order is the reverse

export SLURM_CONF="$conf"

pid_of() { [ -s "$run/$1.pid" ] && cat "$run/$1.pid"; }
# running = exists and is not a zombie (this machine's init reaps orphans only after ~2 s)
running() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
alive() { local p; p=$(pid_of "$1") && running "$p"; }

# Daemons of this D whose PID file was lost: match the command line, which names $dir.
stray_pids() {  # $1 = daemon name
  local pat
  case "$1" in
    munged) pat="munged .*--socket=$msock" ;;
    *) pat="$1 -D -f $conf" ;;
  esac
  pgrep -f -x "(/usr/sbin/)?$pat( .*)?" 2>/dev/null || true
}

stop_one() {  # $1 = daemon name
  local name="$1" p pids="" deadline
  p=$(pid_of "$name" || true)
  running "$p" && pids="$p"
  for p in $(stray_pids "$name"); do [[ " $pids " == *" $p "* ]] || pids="$pids $p"; done
  if [ -n "${pids// /}" ]; then
    for p in $pids; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done
    # slurmd tries to tell a dead slurmctld it is going (MessageTimeout): do not wait on it.
    local grace_s=10; [ "$name" = slurmd ] && ! alive slurmctld && grace_s=2
    deadline=$((SECONDS + grace_s))
    while :; do
      local left=""
      for p in $pids; do running "$p" && left="$left $p"; done
      [ -z "$left" ] && break
      if [ $SECONDS -ge $deadline ]; then
        echo "slurm-cluster: $name ($left) ignored SIGTERM for ${grace_s} s, sending SIGKILL" >&2
        for p in $left; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
        sleep 0.5; break
      fi
      sleep 0.1
    done
  fi
  rm -f "$run/$name.pid"
}

# PIDs of job processes of this cluster: slurmstepd's whose environment (slurmd's) has our
# SLURM_CONF, their descendants, and processes with SLURM_JOB_ID and our SLURM_CONF.
# Never this script or its ancestors.
job_pids() {
  local p e steps="" out="" keep=" $$ " a=$$
  while [ "$a" -gt 1 ] 2>/dev/null; do keep="$keep$a "; a=$(awk '{print $4}' /proc/"$a"/stat 2>/dev/null || echo 1); done
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [[ "$keep" == *" $p "* ]] && continue
    local env; env=$( { tr '\0' '\n' <"$e"; } 2>/dev/null) || continue
    grep -qx "SLURM_CONF=$conf" <<<"$env" || continue
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = slurmstepd ]; then steps="$steps $p"; out="$out $p"
    elif grep -q '^SLURM_JOB_ID=' <<<"$env"; then out="$out $p"; fi
  done
  # descendants of the step daemons
  local frontier="$steps" next
  while [ -n "${frontier// /}" ]; do
    next=""
    for a in $frontier; do
      for p in $(pgrep -P "$a" 2>/dev/null || true); do
        [[ " $out " == *" $p "* ]] || { out="$out $p"; next="$next $p"; }
      done
    done
    frontier="$next"
  done
  echo $out
}

do_down() {
  local d pids
  # 1. Cancel jobs while slurmctld still runs (bounded), so steps end the normal way.
  if alive slurmctld && [ -e "$conf" ]; then
    local jobs; jobs=$(timeout 5 squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      timeout 5 scancel $jobs 2>/dev/null || true
      wait_for 10 "" no_jobs_running || echo "slurm-cluster: jobs still running after scancel + 10 s" >&2
    fi
  fi
  # 2. Kill whatever of the jobs is left (slurmstepd is not in slurmd's process group).
  pids=$(job_pids)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  # 3. The daemons, by PID file / process group (then by command line).
  for d in "${DAEMONS[@]}"; do stop_one "$d"; done
}

no_jobs_running() {
  [ -z "$(timeout 5 squeue -h -t R,CG,S -o %i 2>/dev/null)" ] && [ -z "$(job_pids)" ]
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/{print $2}')
  # slurmd drains a node whose configured memory exceeds what it finds; take the smaller.
  local detected; detected=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$detected" ] && [ "$detected" -lt "$mem" ] && mem=$detected
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$run"
  cat >"$conf" <<EOF
# Generated by scripts/cluster/slurm-cluster.sh — a private one-node cluster under $dir
ClusterName=medley
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: step credential lifetime, and the BeginTime hold of a requeued job (+1 s)
AuthInfo=socket=$msock,cred_expire=$requeue_delay
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$run/slurmctld.slurm.pid
SlurmdPidFile=$run/slurmd.slurm.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=$mpi_default
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=low  Nodes=$host Default=YES PriorityTier=1  PreemptMode=REQUEUE GraceTime=$grace OverSubscribe=NO MaxTime=INFINITE State=UP
PartitionName=high Nodes=$host Default=NO  PriorityTier=10 PreemptMode=OFF OverSubscribe=NO MaxTime=INFINITE State=UP
EOF
  # pmix keeps a per-step client dir /tmp/spmix_appdir_<uid>_<job>.<step> by default. A step
  # killed hard leaves it behind, and the next cluster (job ids start at 1 again) fails to
  # launch that step ("Cannot create directory ... File exists"): keep it under D.
  mkdir -p "$dir/pmix"
  echo "PMIxCliTmpDirBase=$dir/pmix" >"$dir/mpi.conf"
  echo "$host" >"$run/nodename"
}

start_bg() {  # $1 = name, rest = command; records the PID
  local name="$1"; shift
  # The daemon keeps none of the caller's descriptors above 2: a caller that waits for EOF on
  # one (as Foundation's Process does to see its child end) would otherwise wait forever.
  (
    for fd in /proc/self/fd/*; do
      fd="${fd##*/}"
      [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid "$@" >>"$dir/log/$name.out" 2>&1 </dev/null
  ) &
  echo $! >"$run/$name.pid"
}

wait_for() {  # $1 = seconds, $2 = daemons that must stay alive ("" = none), rest = test command
  local t="$1" watch="$2" d; shift 2
  local deadline=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    for d in $watch; do alive "$d" || return 2; done   # died: fail now, not at the deadline
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

healthy() {
  alive munged && alive slurmctld && alive slurmd && [ -e "$conf" ] &&
    [ -n "$(timeout 5 sinfo -h -N -o %T 2>/dev/null)" ]
}

node_idle() { timeout 5 sinfo -h -N -o %T 2>/dev/null | grep -qx idle; }
munge_ok() { munge -n -S "$msock" | unmunge -S "$msock"; }

do_up() {
  local t0ms; t0ms=$(date +%s%3N)
  for b in munged mungekey munge unmunge slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null || die "$b not found: apt-get install -y --no-install-recommends slurm-wlm munge"
  done
  if healthy; then
    echo "slurm-cluster: already up in $dir"
    echo "export SLURM_CONF=$conf"
    return 0
  fi
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && ! grep -qs '^# Generated by scripts/cluster/slurm-cluster.sh' "$conf"; then
    die "$dir exists, is not empty and holds no slurm.conf of ours: refusing to use it"
  fi
  do_down
  # Clean slate for state (a stale StateSaveLocation brings back old jobs).
  rm -rf "$dir/state" "$dir/spool" "$dir/log" "$dir/munge" "$dir/pmix" "$run"
  mkdir -p "$dir/munge" "$run" "$dir/log"
  chmod 755 "$dir/munge"   # munged wants the socket dir world-executable; the key is 0400
  mpi_default=none
  if [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || ls /usr/lib/*/slurm*/mpi_pmix.so >/dev/null 2>&1; then
    mpi_default=pmix
  fi
  write_conf

  # On any failure below: one error line (from die), daemons stopped, logs kept in D/log.
  trap 'rc=$?; if [ $rc -ne 0 ]; then do_down; echo "slurm-cluster: logs in $dir/log" >&2; fi' EXIT

  mungekey --create --keyfile="$dir/munge/munge.key" --force >/dev/null 2>&1 \
    || die "mungekey --create failed"
  chmod 400 "$dir/munge/munge.key"
  start_bg munged munged -F -f --socket="$msock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
  wait_for 10 munged munge_ok || die "munged did not answer on $msock ($(tail -n1 "$dir/log/munged.out" 2>/dev/null))"

  start_bg slurmctld slurmctld -D -f "$conf"
  wait_for 15 slurmctld timeout 5 scontrol ping || die "slurmctld not answering ($(grep -iE 'error|fatal' "$dir/log/slurmctld.log" 2>/dev/null | tail -n1))"
  start_bg slurmd slurmd -D -f "$conf"
  if ! wait_for 20 "slurmctld slurmd" node_idle; then
    alive slurmd || die "slurmd exited ($(grep -iE 'error|fatal' "$dir/log/slurmd.log" 2>/dev/null | tail -n1))"
    alive slurmctld || die "slurmctld exited ($(grep -iE 'error|fatal' "$dir/log/slurmctld.log" 2>/dev/null | tail -n1))"
    die "node not idle within 20 s (state: $(timeout 5 sinfo -h -N -o '%T %E' 2>/dev/null | head -n1))"
  fi
  trap - EXIT
  local ms=$(( $(date +%s%3N) - t0ms ))
  echo "slurm-cluster: up in $dir (node $(cat "$run/nodename") idle after $((ms / 1000)).$(printf %03d $((ms % 1000))) s; MpiDefault=$mpi_default; ports $port/$((port + 1)))"
  echo "export SLURM_CONF=$conf"
}

do_status() {
  local d rc=0
  for d in munged slurmctld slurmd; do
    if alive "$d"; then echo "$d: running pid $(pid_of "$d")"; else echo "$d: not running"; rc=3; fi
  done
  if [ -e "$conf" ] && alive slurmctld; then
    timeout 5 sinfo -N -o '%N %P %T %c %m' 2>/dev/null || true
    timeout 5 squeue -o '%i %P %j %T %r %M' 2>/dev/null || true
  fi
  echo "export SLURM_CONF=$conf"
  return $rc
}

case "$cmd" in
  up) do_up ;;
  down) do_down; echo "slurm-cluster: down ($dir kept; rm -rf it to drop logs/state)" ;;
  status) do_status ;;
  ""|-h|--help) sed -n '2,29p' "$0"; [ -n "$cmd" ] ;;
  *) die "unknown command '$cmd' (up|down|status)" ;;
esac
