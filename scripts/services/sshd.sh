#!/usr/bin/env bash
# Provision an SSH server on 127.0.0.1 for the test that attaches to a kernel through an
# SSH tunnel (what a client on a login node does to reach a kernel on a compute node).
#
# Needs root and apt (openssh-server). Everything lives under $KALE_SSHD_DIR (default
# /tmp/kale-sshd): host and client keys, authorized_keys, config, pid file. The host alias
# `kale-ssh-test` (/etc/ssh/ssh_config.d/kale-ssh-test.conf) reaches it with the client
# key (and scripts/services/users.sh adds `kale-site-test`, the second OS user's account,
# which the SSH-site tests use); no other host's settings change. Writes the alias to test-output/ssh.host, where
# tests/conftest.py reads it. Exits non-zero, saying why, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p test-output
rm -f test-output/ssh.host
D=${KALE_SSHD_DIR:-/tmp/kale-sshd}
PORT=${KALE_SSHD_PORT:-2222}
ALIAS=kale-ssh-test

[ "$(id -u)" = 0 ] || { echo "sshd: not root" >&2; exit 1; }
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null; then
  command -v apt-get >/dev/null || { echo "sshd: no sshd and no apt-get" >&2; exit 1; }
  echo "sshd: apt-get install openssh-server openssh-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends openssh-server openssh-client >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 &&
         apt-get install -y --no-install-recommends openssh-server openssh-client >/dev/null; } \
    || { echo "sshd: apt-get install failed" >&2; exit 1; }
fi
mkdir -p "$D" /run/sshd
chmod 700 "$D"
[ -f "$D/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$D/host_ed25519"
[ -f "$D/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$D/client_ed25519"
cp "$D/client_ed25519.pub" "$D/authorized_keys"
cat > "$D/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AllowTcpForwarding yes
CONF
alive() { [ -s "$D/sshd.pid" ] && [ "$(cat "/proc/$(cat "$D/sshd.pid")/comm" 2>/dev/null)" = sshd ]; }
# An sshd of this config that lost its PID file (its folder was removed while it ran)
# still holds the port: stop it, so that a new one can start.
if ! alive; then
  for pid in $(pgrep -x sshd 2>/dev/null); do
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$D/sshd_config" || continue
    echo "sshd: stopping sshd $pid: it serves $D/sshd_config but lost its PID file"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  done
fi
if ! alive; then
  /usr/sbin/sshd -f "$D/sshd_config" || { echo "sshd: failed to start" >&2; exit 1; }
else
  kill -HUP "$(cat "$D/sshd.pid")"  # re-reads sshd_config (it may have changed)
fi
mkdir -p /etc/ssh/ssh_config.d
cat > /etc/ssh/ssh_config.d/$ALIAS.conf <<CONF
Host $ALIAS
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $D/client_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CONF
for _ in $(seq 50); do
  if ssh -o BatchMode=yes "$ALIAS" true 2>/dev/null; then
    echo "$ALIAS" > test-output/ssh.host
    echo "sshd: ready ($ALIAS -> 127.0.0.1:$PORT)"
    exit 0
  fi
  sleep 0.1
done
echo "sshd: started, but ssh $ALIAS does not log in" >&2
exit 1
