#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (same SLURM_BASE), by pid file: cancel leftover jobs, then slurmd, slurmctld,
# and munged if slurm-up.sh started it. PURGE=1 also removes SLURM_BASE (state, logs, the job completion file).
set -uo pipefail
SLURM_BASE=${SLURM_BASE:-${TMPDIR:-/tmp}/fmnist-slurm}
export SLURM_CONF=$SLURM_BASE/etc/slurm.conf

if [ -f "$SLURM_CONF" ] && scontrol ping 2>/dev/null | grep -q 'is UP'; then
  jobs=$(squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then scancel $jobs; echo "slurm-down: cancelled jobs" $jobs; sleep 1; fi
fi
pids=()
for pidfile in "$SLURM_BASE/run/slurmd.pid" "$SLURM_BASE/run/slurmctld.pid"; do
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then pids+=("$pid"); fi
done
munged=$(cat /run/munge/munged.pid 2>/dev/null || true)
if [ -e "$SLURM_BASE/run/munged.ours" ] && [ -n "$munged" ] && kill -TERM "$munged" 2>/dev/null; then
  pids+=("$munged")
  rm -f "$SLURM_BASE/run/munged.ours"
fi
for pid in "${pids[@]}"; do   # each takes up to ~3 s after SIGTERM
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
done
rm -f "$SLURM_BASE/run/slurmd.pid" "$SLURM_BASE/run/slurmctld.pid"
if [ "${PURGE:-0}" = 1 ]; then rm -rf "$SLURM_BASE"; fi
echo "slurm-down: stopped ${#pids[@]} daemons"
