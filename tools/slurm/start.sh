#!/usr/bin/env bash
# Start a single-node Slurm (slurmctld + slurmd + munge) on loopback, as root, without systemd.
# Idempotent: returns at once when a controller already answers. Used by .ci/run and the Slurm tests.
# Stop it with tools/slurm/stop.sh.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start.sh: run as root (it writes /etc/slurm and starts daemons)" >&2; exit 1; }
state="${HERD_SLURM_STATE:-/var/tmp/herd-slurm}"

if sinfo -h >/dev/null 2>&1; then
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
mkdir -p "$state"/{ctld,d} /etc/slurm /run/munge /var/log/munge /var/lib/munge
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=herd
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

[ -f /etc/munge/munge.key ] || /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || \
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE 'idle|mixed|allocated'; then
    echo "slurm: single-node cluster up on $host ($cpus CPUs, ${mem_mb} MB)"
    exit 0
  fi
  sleep 0.5
done
echo "slurm: the controller did not come up; see $state/slurmctld.log and $state/slurmd.log" >&2
exit 1
