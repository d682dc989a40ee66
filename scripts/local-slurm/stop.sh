#!/usr/bin/env bash
# scripts/local-slurm/stop.sh - stop the daemons started by scripts/local-slurm/start.sh, by PID file only.
# Cancels remaining jobs first so no orphaned slurmstepd/job processes are left behind.
set -uo pipefail
D=${KALE_SLURM_DIR:-/tmp/kale-slurm}
R=$D/run
export SLURM_CONF=$D/etc/slurm.conf
log() { echo "[kale-slurm $(date +%T)] $*" >&2; }

pid_of() {  # PIDFILE COMM -> pid if alive, not a zombie, and named COMM
  local pf=$1 comm=$2 pid st
  [ -s "$pf" ] || return 1
  pid=$(tr -dc 0-9 2>/dev/null <"$pf") && [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] && echo "$pid"
}
stop_one() {  # NAME PIDFILE
  local name=$1 pf=$2 pid i
  pid=$(pid_of "$pf" "$name") || { rm -f "$pf"; return 0; }
  log "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 100); do pid_of "$pf" "$name" >/dev/null || break; sleep 0.1; done
  if pid_of "$pf" "$name" >/dev/null; then log "$name did not exit, SIGKILL"; kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
  rm -f "$pf"
}

# 1. cancel jobs while the controller is still up, wait (bounded) for them to go
if pid_of "$R/slurmctld.pid" slurmctld >/dev/null && [ -f "$SLURM_CONF" ]; then
  ids=$(squeue -h -o %A -t PD,R,CG,S,CF 2>/dev/null | tr '\n' ' ')
  if [ -n "${ids// /}" ]; then
    log "cancelling jobs: $ids"
    scancel $ids 2>/dev/null
    for i in $(seq 50); do [ -z "$(squeue -h -t R,CG,CF 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi

stop_one slurmrestd "$R/slurmrestd.pid"
stop_one slurmd     "$R/slurmd.pid"
stop_one slurmctld  "$R/slurmctld.pid"
stop_one slurmdbd   "$R/slurmdbd.pid"
stop_one mariadbd   "$R/mariadbd.pid"
stop_one munged     "$R/munged.pid"

# 2. leftover job step daemons of THIS cluster (they inherit SLURM_CONF from our slurmd),
#    together with their process trees (the job's own processes)
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
for p in /proc/[0-9]*; do
  [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
  tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF" || continue
  pid=${p#/proc/}; kids=$(descendants "$pid" | tr '\n' ' ')
  log "killing leftover slurmstepd $pid and its processes: $kids"
  kill -KILL "$pid" $kids 2>/dev/null
done
log "stopped"
