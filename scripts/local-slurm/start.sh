#!/usr/bin/env bash
# scripts/local-slurm/start.sh - install (Debian packages) and start a private single-node
# Slurm cluster on localhost: munged, [mariadbd + slurmdbd], slurmctld, slurmd,
# [slurmrestd].  Idempotent: daemons already running (per PID file) are left alone; daemons
# of this cluster that lost their PID files (its folder removed under them) are stopped first.
# Must run as root.  Everything lives under $KALE_SLURM_DIR.
#
# Env knobs (defaults):
#   KALE_SLURM_DIR=/tmp/kale-slurm     state, config, logs, PID files
#   KALE_SLURM_ACCOUNTING=1             mariadb + slurmdbd (sacct, sacctmgr, /slurmdb REST)
#   KALE_SLURM_RESTD=0                  slurmrestd, rest_auth/jwt on 127.0.0.1 (runs as user 'slurm')
#   KALE_SLURM_INSTALL=1                apt-get install missing packages
#   KALE_SLURM_OVERSUBSCRIBE=           e.g. 8 -> OverSubscribe=FORCE:8 (≈10x job throughput)
#   KALE_SLURM_CGROUP=0                 1 -> proctrack/cgroup + task/cgroup (works on cgroup v1 here)
#   KALE_SLURM_LINK_ETC=1               symlink /etc/slurm/slurm.conf -> our config (so no SLURM_CONF needed)
#   KALE_SLURM_CLEAN=0                  1 -> wipe state (job ids, DB) before starting (only if nothing runs)
#   KALE_SLURM_TIMEOUT=60               max seconds to wait for each daemon
#   KALE_SLURM_PROBE=1                  after a fresh slurmctld start, run one 'true' batch job to prove scheduling
#   ports: KALE_SLURM_CTLD_PORT=6817 _SLURMD_PORT=6818 _DBD_PORT=6819 _REST_PORT=6820 _DB_PORT=3316
# After success: `source $KALE_SLURM_DIR/env.sh` gives SLURM_CONF, SLURMRESTD_URL,
# SLURM_REST_VERSION; `local_slurm_token [user]` prints a JWT.
set -euo pipefail

D=${KALE_SLURM_DIR:-/tmp/kale-slurm}
ACCT=${KALE_SLURM_ACCOUNTING:-1}
RESTD=${KALE_SLURM_RESTD:-0}
INSTALL=${KALE_SLURM_INSTALL:-1}
OVERSUB=${KALE_SLURM_OVERSUBSCRIBE:-}
CGROUP=${KALE_SLURM_CGROUP:-0}
LINK_ETC=${KALE_SLURM_LINK_ETC:-1}
CLEAN=${KALE_SLURM_CLEAN:-0}
TMO=${KALE_SLURM_TIMEOUT:-60}
CTLD_PORT=${KALE_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${KALE_SLURM_SLURMD_PORT:-6818}
DBD_PORT=${KALE_SLURM_DBD_PORT:-6819}
REST_PORT=${KALE_SLURM_REST_PORT:-6820}
DB_PORT=${KALE_SLURM_DB_PORT:-3316}
CLUSTER=localci
NODE=localhost
REST_USER=slurm            # slurmrestd refuses to run as root; Debian's package creates 'slurm'
DB_PASS=slurmci

log() { echo "[kale-slurm $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; for f in "$D"/log/*.log; do [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# alive PIDFILE COMM: pid in file exists, is not a zombie (PID 1 here does not always
# reap orphans, so `kill -0` alone lies) and its command name matches.
alive() {
  local pf=$1 comm=$2 pid st
  [ -s "$pf" ] || return 1
  pid=$(tr -dc 0-9 2>/dev/null <"$pf") || return 1; [ -n "$pid" ] || return 1
  [ -r "/proc/$pid/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}
# wait_for SECONDS DESCRIPTION CMD...
wait_for() {
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || die "timeout (${t}s) waiting for $what"
    sleep 0.1
  done
}

# ---------------------------------------------------------------- install
PKGS=(munge slurmctld slurmd slurm-client)
[ "$ACCT" = 1 ] && PKGS+=(slurmdbd mariadb-server)
[ "$RESTD" = 1 ] && PKGS+=(slurmrestd slurm-wlm-jwt-plugin curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d / no systemd: the postinst scripts cannot start system daemons, which is what we want
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
    || die "apt-get install failed"
fi

E=$D/etc R=$D/run L=$D/log
CONF=$E/slurm.conf
export SLURM_CONF=$CONF

any_running() {
  alive "$R/munged.pid" munged || alive "$R/slurmctld.pid" slurmctld || alive "$R/slurmd.pid" slurmd ||
    alive "$R/slurmdbd.pid" slurmdbd || alive "$R/mariadbd.pid" mariadbd || alive "$R/slurmrestd.pid" slurmrestd
}
if [ "$CLEAN" = 1 ] && ! any_running; then log "wiping $D"; rm -rf "$D"; fi

# Daemons of this cluster whose PID files are gone (its folder was removed while they ran)
# still hold the ports and would make every new start fail: stop them first. Ours are
# those whose command line names $D/ or whose environment has our SLURM_CONF.
ours() {  # PID: is it a daemon of this cluster?
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$D/" && return 0
  tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"
}
gone() {  # PID: exited (a zombie counts: PID 1 here does not always reap)
  local st; st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -z "$st" ] || [ "$st" = Z ]
}
reap_orphans() {  # COMM PIDFILE: stop daemons named COMM of this cluster but not in PIDFILE
  local comm=$1 pf=$2 keep="" pid i
  alive "$pf" "$comm" && keep=$(tr -dc 0-9 <"$pf")
  for pid in $(pgrep -x "$comm" 2>/dev/null); do
    [ "$pid" != "$keep" ] && ours "$pid" || continue
    log "stopping $comm ($pid): a daemon of this cluster that lost its PID file"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do gone "$pid" && break; sleep 0.1; done
    if ! gone "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  done
  return 0
}
reap_orphans slurmrestd "$R/slurmrestd.pid"
reap_orphans slurmd "$R/slurmd.pid"
reap_orphans slurmctld "$R/slurmctld.pid"
reap_orphans slurmdbd "$R/slurmdbd.pid"
reap_orphans mariadbd "$R/mariadbd.pid"
reap_orphans munged "$R/munged.pid"

mkdir -p "$E" "$R" "$L" "$D/state" "$D/spool" "$R/munge"
chmod 755 "$D" "$E" "$R" "$L"              # munged requires o+x on every dir above its socket
chown munge:munge "$R/munge"; chmod 755 "$R/munge"

# A cluster started without slurmrestd lacks JWT auth in its config: asked for slurmrestd now,
# restart the Slurm daemons (not munged or mariadbd) with a config that has it. Jobs survive a
# controller restart (their state is saved; their slurmstepd go on).
stop_daemon() {  # NAME: SIGTERM by PID file, wait (bounded) until it is gone
  local pf=$R/$1.pid pid i
  alive "$pf" "$1" || return 0
  pid=$(tr -dc 0-9 <"$pf"); log "restarting $1 ($pid) for JWT auth"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do alive "$pf" "$1" || break; sleep 0.1; done
  alive "$pf" "$1" && { kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; }
  rm -f "$pf"
}
if [ "$RESTD" = 1 ] && alive "$R/slurmctld.pid" slurmctld && ! grep -q '^AuthAltTypes=auth/jwt' "$CONF" 2>/dev/null; then
  stop_daemon slurmrestd; stop_daemon slurmd; stop_daemon slurmctld; stop_daemon slurmdbd
fi

# ---------------------------------------------------------------- config (only when ctld is down)
if ! alive "$R/slurmctld.pid" slurmctld; then
  # node hardware as slurmd sees it (CPUs, sockets, cores, threads), memory minus 1 GiB headroom
  hw=$(slurmd -C | head -1)
  MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  MEM=$(( MEM > 2048 ? MEM - 1024 : MEM / 2 ))
  if [ "$CGROUP" = 1 ]; then
    PT=proctrack/cgroup TP=task/cgroup,task/affinity
    printf 'CgroupPlugin=autodetect\nConstrainCores=yes\nConstrainRAMSpace=yes\n' >"$E/cgroup.conf"
  else
    PT=proctrack/linuxproc TP=task/none
    printf 'CgroupPlugin=autodetect\n' >"$E/cgroup.conf"
  fi
  [ -s "$E/munge.key" ] || { dd if=/dev/urandom of="$E/munge.key" bs=1024 count=1 2>/dev/null; }
  chown munge:munge "$E/munge.key"; chmod 600 "$E/munge.key"
  [ -s "$E/jwt_hs256.key" ] || dd if=/dev/urandom of="$E/jwt_hs256.key" bs=32 count=1 2>/dev/null
  chmod 600 "$E/jwt_hs256.key"
  if [ "$ACCT" = 1 ]; then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$R/munge/munge.socket
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
  else
    ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  fi
  JWT_LINES=""
  [ "$RESTD" = 1 ] && JWT_LINES="AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$E/jwt_hs256.key"
  cat >"$CONF" <<EOF
# generated by scripts/local-slurm/start.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$R/munge/munge.socket
CredType=cred/munge
$JWT_LINES
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$R/slurmctld.pid
SlurmdPidFile=$R/slurmd.pid
SlurmctldLogFile=$L/slurmctld.log
SlurmdLogFile=$L/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=$PT
TaskPlugin=$TP
$ACCT_LINES
JobCompType=jobcomp/filetxt
JobCompLoc=$L/jobcomp.txt
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,sched_min_interval=0,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
MinJobAge=300
EnforcePartLimits=ALL
InactiveLimit=0
KillWait=2
Waittime=0
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 $(sed 's/^NodeName=[^ ]* //; s/ RealMemory=.*//' <<<"$hw") RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP${OVERSUB:+ OverSubscribe=FORCE:$OVERSUB}
PartitionName=short Nodes=$NODE Default=NO MaxTime=1 State=UP${OVERSUB:+ OverSubscribe=FORCE:$OVERSUB}
EOF
  if [ "$ACCT" = 1 ]; then
    cat >"$E/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$R/munge/munge.socket
$JWT_LINES
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$L/slurmdbd.log
PidFile=$R/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$E/slurmdbd.conf"          # slurmdbd refuses a world-readable file
  fi
fi
if [ "$LINK_ETC" = 1 ]; then
  mkdir -p /etc/slurm
  if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ]; then ln -sfn "$CONF" /etc/slurm/slurm.conf
  else log "WARNING: /etc/slurm/slurm.conf is a real file; not replacing it (export SLURM_CONF=$CONF)"; fi
fi

# ---------------------------------------------------------------- munged
MSOCK=$R/munge/munge.socket
if ! alive "$R/munged.pid" munged; then
  log "starting munged"
  rm -f "$MSOCK" "$MSOCK.lock"
  runuser -u munge -- /usr/sbin/munged --key-file="$E/munge.key" --socket="$MSOCK" \
    --pid-file="$R/munge/munged.pid" --log-file="$R/munge/munged.log" --seed-file="$R/munge/munged.seed" \
    || die "munged failed"
  cp "$R/munge/munged.pid" "$R/munged.pid"
fi
wait_for "$TMO" munged bash -c "munge -S '$MSOCK' -n | unmunge -S '$MSOCK'"

# ---------------------------------------------------------------- mariadb + slurmdbd
if [ "$ACCT" = 1 ]; then
  DB=$D/mysql
  if ! alive "$R/mariadbd.pid" mariadbd; then
    if [ ! -d "$DB/mysql" ]; then
      log "initialising mariadb datadir"
      mariadb-install-db --no-defaults --datadir="$DB" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$L/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    fi
    log "starting mariadbd on 127.0.0.1:$DB_PORT"
    setsid /usr/sbin/mariadbd --no-defaults --datadir="$DB" --socket="$R/mysqld.sock" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --user=root --pid-file="$R/mariadbd.pid" --log-error="$L/mariadbd.log" \
      --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
  fi
  wait_for "$TMO" mariadbd mariadb-admin --no-defaults -S "$R/mysqld.sock" -uroot ping
  wait_for "$TMO" mariadbd-pidfile test -s "$R/mariadbd.pid"
  mariadb --no-defaults -S "$R/mysqld.sock" -uroot -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "mariadb grants failed"
  if ! alive "$R/slurmdbd.pid" slurmdbd; then
    log "starting slurmdbd"
    /usr/sbin/slurmdbd || die "slurmdbd failed"
  fi
  wait_for "$TMO" slurmdbd sacctmgr -n show cluster
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
  fi
fi

# ---------------------------------------------------------------- slurmctld + slurmd
CTLD_STARTED=0
if ! alive "$R/slurmctld.pid" slurmctld; then
  log "starting slurmctld"
  /usr/sbin/slurmctld || die "slurmctld failed"
  CTLD_STARTED=1
fi
wait_for "$TMO" slurmctld bash -c "scontrol ping | grep -q UP"
if ! alive "$R/slurmd.pid" slurmd; then
  log "starting slurmd"
  /usr/sbin/slurmd -N "$NODE" || die "slurmd failed"
fi
node_ready() {
  local s; s=$(sinfo -h -n "$NODE" -o %T 2>/dev/null) || return 1
  case "$s" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac
}
end=$(( $(date +%s) + TMO ))
until node_ready; do
  s=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$s" in *drain*|down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true;; esac
  [ "$(date +%s)" -lt "$end" ] || die "timeout waiting for node $NODE (state '$s')"
  sleep 0.1
done

# A freshly started slurmctld runs its first batch scheduling pass only ~3 s after start
# (srun/salloc are served at once). Prove batch scheduling end to end with one probe job.
if [ "$CTLD_STARTED" = 1 ] && [ "${KALE_SLURM_PROBE:-1}" = 1 ]; then
  pj=$(sbatch --parsable -J kale-slurm-probe -o /dev/null --wrap true) || die "probe sbatch failed"
  wait_for "$TMO" "probe job $pj" bash -c "scontrol show job $pj -o | grep -q 'JobState=COMPLETED'"
fi

# ---------------------------------------------------------------- slurmrestd
if [ "$RESTD" = 1 ]; then
  if ! alive "$R/slurmrestd.pid" slurmrestd; then
    log "starting slurmrestd on 127.0.0.1:$REST_PORT (rest_auth/jwt)"
    # SLURM_JWT=daemon: slurmrestd forwards each client's JWT to slurmctld/slurmdbd.
    # (It then cannot also serve rest_auth/local: those requests fail "unable to load".)
    # (started in its own folder: from a checkout that is later removed, it fails every
    # job submission with "getcwd failed")
    (cd "$D" && SLURM_JWT=daemon exec setsid /usr/sbin/slurmrestd -u "$REST_USER" \
      -a rest_auth/jwt "127.0.0.1:$REST_PORT" </dev/null >"$L/slurmrestd.log" 2>&1) &
    echo $! >"$R/slurmrestd.pid"
  fi
  wait_for "$TMO" slurmrestd curl -s -o /dev/null "http://127.0.0.1:$REST_PORT/"
  alive "$R/slurmrestd.pid" slurmrestd || die "slurmrestd died"
fi

REST_VER=$(ls /usr/lib/x86_64-linux-gnu/slurm-wlm/ 2>/dev/null | sed -n 's/^openapi_v\(0_0_[0-9]*\)\.so$/v\1/p' | sort -V | tail -1 | tr _ .)
cat >"$D/env.sh" <<EOF
export SLURM_CONF=$CONF
export SLURMRESTD_URL=http://127.0.0.1:$REST_PORT
export SLURM_REST_VERSION=${REST_VER:-v0.0.38}
local_slurm_token() { scontrol token username=\${1:-root} lifespan=\${2:-3600} | sed 's/^SLURM_JWT=//'; }
EOF
log "ready: $(sinfo -h -o '%P %a %D %T %N') (source $D/env.sh)"
