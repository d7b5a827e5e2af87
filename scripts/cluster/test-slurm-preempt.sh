#!/usr/bin/env bash
# test-slurm-preempt.sh — prove preemption-with-requeue on the slurm-cluster.sh cluster
# and measure its timings.
#
#   test-slurm-preempt.sh [--dir D] [--port BASE] [--grace S] [--high-secs S]
#                         [--release none|starttime] [--requeue-delay S] [--no-srun] [--keep]
#
# 1. slurm-cluster.sh up (timed to node idle).
# 2. sbatch -p low: a batch script that traps SIGTERM (writes D/test/events) and runs
#    `srun sleep 300`, whose step traps SIGTERM too (--no-srun: the same child, no srun,
#    so it is part of the batch step).
# 3. once low runs: sbatch -p high -n <all CPUs> `sleep HIGH_SECS` (default 15).
# 4. times: high submit -> low SIGTERM, SIGTERM -> low batch process gone (SIGKILL at the
#    end of GraceTime), scontrol show job low (JobState, Restarts, Reason, StartTime),
#    high end -> low running again.
#    --release starttime: `scontrol update jobid=LOW starttime=now` right after the requeue
#    --release none (default): do nothing, see how long Slurm holds a requeued job.
# 5. slurm-cluster.sh down (unless --keep), also on failure. Prints "result:" lines.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
die() { echo "test-slurm-preempt: error: $*" >&2; exit 1; }

dir=/tmp/medley-slurm-test port=6817 grace=10 high_secs=15 release=none keep=0 rqd=120 nosrun=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --grace) grace="$2"; shift 2 ;;
    --high-secs) high_secs="$2"; shift 2 ;;
    --release) release="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --requeue-delay) rqd="$2"; shift 2 ;;
    --no-srun) nosrun=1; shift ;;
    *) die "unknown argument $1" ;;
  esac
done
case "$release" in none|starttime) ;; *) die "bad --release $release (none|starttime)" ;; esac

cleanup() {
  local rc=$?
  if [ "$keep" = 0 ]; then "$here/slurm-cluster.sh" down --dir "$dir" >/dev/null 2>&1 || true; fi
  exit $rc
}
trap cleanup EXIT INT TERM

now_ms() { date +%s%3N; }
fmt() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
wait_until() {  # $1 = seconds, $2 = description, rest = test
  local t="$1" what="$2"; shift 2
  local deadline=$((SECONDS + t))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${t}s waiting for $what"
    sleep 0.1
  done
}

t_up0=$(now_ms)
"$here/slurm-cluster.sh" up --dir "$dir" --port "$port" --grace "$grace" --requeue-delay "$rqd"
t_up1=$(now_ms)
export SLURM_CONF="$dir/slurm.conf"
T="$dir/test"; rm -rf "$T"; mkdir -p "$T"
ev="$T/events"; : >"$ev"

cat >"$T/low.sh" <<EOF
#!/bin/bash
export ev=$ev
echo "start \$(date +%s%3N) restart=\${SLURM_RESTART_COUNT:-0} job=\$SLURM_JOB_ID pid=\$\$" >>"\$ev"
echo \$\$ >$T/low.pid
trap 'echo "batch-sigterm \$(date +%s%3N) restart=\${SLURM_RESTART_COUNT:-0}" >>"\$ev"' TERM
$( [ "$nosrun" = 1 ] && echo "" || echo "srun -n1 ")bash -c 'trap "echo step-sigterm \\\$(date +%s%3N) >>\\"\\\$ev\\"; exit 143" TERM; sleep 300 & wait' &
# keep the batch shell alive through the grace period so we can see when SIGKILL comes
while :; do sleep 0.2; done
EOF
chmod +x "$T/low.sh"

low=$(sbatch --parsable -p low -n1 --requeue -J low -o "$T/low-%j.out" --open-mode=append "$T/low.sh") \
  || die "sbatch low failed"
wait_until 30 "low job to start" grep -q '^start .* restart=0' "$ev"
sleep 1
state_of() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
echo "low job $low: $(state_of "$low")"

ncpu=$(sinfo -h -N -o %c | head -n1)
t_hi=$(now_ms)
high=$(sbatch --parsable -p high -n "$ncpu" -J high -o "$T/high-%j.out" --wrap "sleep $high_secs") \
  || die "sbatch high failed"
wait_until 60 "low job SIGTERM" grep -q '^batch-sigterm\|^step-sigterm' "$ev"
# (a SIGTERM that hits the trap's own `date` leaves a line without a time: skip those)
first_ts() { awk -v re="$1" '$1 ~ re && $2 ~ /^[0-9]+$/ {print $2; exit}' "$ev"; }
t_term=$(first_ts '^(batch|step)-sigterm$')
lowpid=$(cat "$T/low.pid")
wait_until $((grace + 90)) "low batch shell to be killed" bash -c "! kill -0 $lowpid 2>/dev/null"
t_kill=$(now_ms)
t_step=$(first_ts '^step-sigterm$')
t_batch=$(first_ts '^batch-sigterm$')

# requeued: wait until slurmctld shows it pending again
wait_until 30 "low job to be requeued" bash -c "scontrol show job $low | grep -q 'JobState=PENDING\|JobState=REQUEUED'"
t_req=$(now_ms)
echo "--- scontrol show job $low after the requeue ---"
scontrol show job "$low" | grep -oE '(JobState|Reason|Restarts|BatchFlag|Requeue|SubmitTime|StartTime|EligibleTime)=[^ ]*' | tr '\n' ' '; echo
case "$release" in
  starttime) scontrol update jobid="$low" starttime=now && echo "did: scontrol update jobid=$low starttime=now" ;;
esac
[ "$release" = none ] || { scontrol show job "$low" | grep -oE '(JobState|Reason|StartTime|EligibleTime)=[^ ]*' | tr '\n' ' '; echo; }

wait_until $((high_secs + 60)) "high job to start" bash -c "[ \"\$(scontrol show job $high | grep -o 'JobState=[A-Z]*')\" = JobState=RUNNING ] || [ \"\$(scontrol show job $high | grep -o 'JobState=[A-Z]*')\" = JobState=COMPLETED ]"
t_hi_run=$(now_ms)
wait_until $((high_secs + 60)) "high job to end" bash -c "scontrol show job $high | grep -q 'JobState=COMPLETED\|JobState=FAILED\|JobState=CANCELLED'"
t_hi_end=$(now_ms)
wait_until 300 "low job to run again" grep -q '^start .* restart=1' "$ev"
t_rerun=$(grep -m1 '^start .* restart=1' "$ev" | awk '{print $2}')
if [ "$nosrun" = 0 ]; then
  # the rerun's srun step must launch too (a stale pmix dir/socket breaks exactly this)
  wait_until 20 "the rerun's srun step $low.0" bash -c "squeue -h -s -j $low -o %i | grep -qx '$low\.0'"
  echo "rerun step $low.0 running"
fi
echo "--- scontrol show job $low after the rerun ---"
scontrol show job "$low" | grep -oE '(JobState|Restarts|StartTime)=[^ ]*' | tr '\n' ' '; echo
echo "--- events ---"; cat "$ev"

echo "result: up->idle $(fmt $((t_up1 - t_up0))) s (whole slurm-cluster.sh up)"
[ -n "$t_term" ] || die "no timed SIGTERM event in $ev"
echo "result: high submit -> first SIGTERM to low $(fmt $((t_term - t_hi))) s"
[ -n "$t_step" ] && echo "result: high submit -> step (srun) SIGTERM $(fmt $((t_step - t_hi))) s"
[ -n "$t_batch" ] && echo "result: high submit -> batch shell SIGTERM $(fmt $((t_batch - t_hi))) s"
[ -n "$t_batch" ] && echo "result: batch SIGTERM -> batch shell SIGKILLed $(fmt $((t_kill - t_batch))) s (KillWait)"
echo "result: first SIGTERM -> batch shell SIGKILLed $(fmt $((t_kill - t_term))) s (GraceTime=$grace)"
echo "result: killed -> PENDING seen $(fmt $((t_req - t_kill))) s; high submit -> high running $(fmt $((t_hi_run - t_hi))) s"
echo "result: high end -> low running again $(fmt $((t_rerun - t_hi_end))) s (release=$release)"
