#!/usr/bin/env bash
# Stop the single-node Slurm started by tools/slurm/start.sh.
set -u
for daemon in slurmd slurmctld munged; do
  pkill -x "$daemon" 2>/dev/null
done
for _ in $(seq 1 20); do
  running=0
  for daemon in slurmd slurmctld munged; do pgrep -x "$daemon" >/dev/null && running=1; done
  [ "$running" = 0 ] && exit 0
  sleep 0.5
done
for daemon in slurmd slurmctld munged; do pkill -9 -x "$daemon" 2>/dev/null; done
exit 0
