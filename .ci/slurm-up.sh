#!/usr/bin/env bash
# Start a one-node Slurm (Debian's slurm-wlm 22.05) and munge on 127.0.0.1, without systemd; as root.
# Idempotent: daemons already running are kept. Every daemon binds 127.0.0.1 (CommunicationParameters below).
# Usage: SLURM_BASE=DIR .ci/slurm-up.sh   then   export SLURM_CONF=DIR/etc/slurm.conf   (clients need it)
# Stop with .ci/slurm-down.sh (same SLURM_BASE). Job states without slurmdbd: `sacct -c` (jobcomp/filetxt).
set -euo pipefail

SLURM_BASE=${SLURM_BASE:-${TMPDIR:-/tmp}/fmnist-slurm}
export SLURM_CONF=$SLURM_BASE/etc/slurm.conf
NODE=${SLURM_NODE:-$(hostname -s)}
log() { echo "slurm-up: $*"; }

command -v slurmctld >/dev/null || { echo "slurm-up: no slurmctld: apt-get install slurm-wlm munge" >&2; exit 2; }
mkdir -p "$SLURM_BASE/etc" "$SLURM_BASE/state" "$SLURM_BASE/spool" "$SLURM_BASE/log" "$SLURM_BASE/run"

# munge: the Debian package ships /etc/munge/munge.key (munge:munge 0600). munged must run as the munge user:
# as root it rejects that key ("Keyfile is insecure ... should be owned by UID 0").
if [ ! -s /etc/munge/munge.key ]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  mungekey --create --keyfile /etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0600 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  touch "$SLURM_BASE/run/munged.ours"   # slurm-down.sh stops munged only if this script started it
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  log "munged started"
fi
munge -n | unmunge >/dev/null

# The node's hardware as slurmd sees it, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
HW=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
cat > "$SLURM_CONF.new" <<CONF
# written by .ci/slurm-up.sh
ClusterName=local
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
SrunPortRange=60001-60100
# bind the address the host name resolves to (127.0.0.1 here) instead of every interface
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_BASE/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$SLURM_BASE/state
SlurmdSpoolDir=$SLURM_BASE/spool
SlurmctldPidFile=$SLURM_BASE/run/slurmctld.pid
SlurmdPidFile=$SLURM_BASE/run/slurmd.pid
SlurmctldLogFile=$SLURM_BASE/log/slurmctld.log
SlurmdLogFile=$SLURM_BASE/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 NodeHostname=${NODE} ${HW} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
if cmp -s "$SLURM_CONF.new" "$SLURM_CONF"; then rm "$SLURM_CONF.new"; else mv "$SLURM_CONF.new" "$SLURM_CONF"; changed=1; fi
chmod 0644 "$SLURM_CONF"

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$SLURM_BASE/run/slurmctld.pid"; then
  if [ "$changed" = 1 ]; then scontrol reconfigure; fi
else
  slurmctld -f "$SLURM_CONF"
  log "slurmctld started"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
scontrol ping | grep -q 'is UP' || { echo "slurm-up: slurmctld does not answer" >&2; tail -20 "$SLURM_BASE/log/slurmctld.log" >&2; exit 1; }
if ! alive "$SLURM_BASE/run/slurmd.pid"; then
  slurmd -f "$SLURM_CONF" -N "$NODE"
  log "slurmd started"
fi
state=
for _ in $(seq 300); do
  state=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null || true)
  case "$state" in idle*|mixed*|allocated*) break ;; down*|drain*) scontrol update nodename="$NODE" state=resume || true ;; esac
  sleep 0.1
done
case "$state" in idle*|mixed*|allocated*) ;; *) echo "slurm-up: node $NODE is '$state'" >&2; tail -20 "$SLURM_BASE/log/slurmd.log" >&2; exit 1 ;; esac
log "node $NODE $state; export SLURM_CONF=$SLURM_CONF"
