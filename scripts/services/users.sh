#!/usr/bin/env bash
# Provision a second OS user, `kale-other`, for the tests that play another user of a
# shared login node (tests/test_other_user.py; the `other_user` fixture in tests/conftest.py).
# scripts/test runs every scripts/services/*.sh.
#
# Needs root. Idempotent and fast when already provisioned:
#   1. A locked system user `kale-other` (no password: nobody logs in as it; root switches
#      to it with setpriv/runuser), with a home (/home/kale-other) and /bin/bash.
#   2. The Python that runs the tests ($PYTHON, else python3 on PATH) must be usable by
#      that user, so that `python3 -m kale.cli.main` works as kale-other. A pyenv Python
#      under /root (0700) is not: the directories on the way to the interpreter get the
#      traverse bit for others (o+x, never o+r: nothing can be listed), and the script
#      says which ones it changed. Its files themselves must already be readable (pyenv
#      installs them 0644/0755); when they are not, it says so and fails.
# Exits non-zero, saying why, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/../.."

NAME=kale-other
PYTHON=${PYTHON:-python3}

say() { echo "users: $*"; }
die() { echo "users: cannot provision the second OS user $NAME: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "this is not root (creating a user and switching to it need root)"
command -v useradd >/dev/null || die "there is no useradd"
command -v setpriv >/dev/null || command -v runuser >/dev/null \
  || die "there is neither setpriv nor runuser"

if ! getent passwd "$NAME" >/dev/null; then
  say "creating the locked system user $NAME"
  useradd --system --create-home --home-dir "/home/$NAME" --shell /bin/bash \
    --comment "another user, for Kale's tests" "$NAME" || die "useradd failed"
fi
HOME_DIR=$(getent passwd "$NAME" | cut -d: -f6)
if [ ! -d "$HOME_DIR" ]; then
  mkdir -p "$HOME_DIR" && chown "$NAME:" "$HOME_DIR" && chmod 700 "$HOME_DIR"
fi
[ "$(getent passwd "$NAME" | cut -d: -f7)" = /bin/bash ] || usermod --shell /bin/bash "$NAME"
# No password anyone could log in with: "*" in the shadow entry. Not "!" (a locked
# account), which sshd refuses even a key for; the tests log in as this user with a key
# (the SSH site below), as a scientist logs in to a cluster's login node.
case "$(getent shadow "$NAME" | cut -d: -f2)" in
  '*') ;;
  *) usermod -p '*' "$NAME" || die "cannot clear the password of $NAME" ;;
esac

as_other() { setpriv --reuid="$NAME" --regid="$NAME" --init-groups -- "$@"; }

# The test interpreter, as kale-other will run it (the real binary, not a pyenv shim).
EXE=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))') \
  || die "$PYTHON does not run"
if ! as_other "$EXE" -c 'import kale.cli.main' >/dev/null 2>&1; then
  changed=()
  dir=$(dirname "$EXE")
  while [ "$dir" != / ]; do
    if [ $((0$(stat -c %a "$dir") & 1)) = 0 ]; then   # no x for others
      chmod o+x "$dir" && changed+=("$dir")
    fi
    dir=$(dirname "$dir")
  done
  [ ${#changed[@]} -eq 0 ] || say "gave others the traverse bit (o+x, not o+r) on: ${changed[*]}"
  problem=$(as_other "$EXE" -c 'import kale.cli.main' 2>&1 | tail -n 1) \
    || die "$NAME cannot run $EXE -m kale.cli.main: $problem"
fi

# The test sshd (scripts/services/sshd.sh, which runs before this script) lets its client
# key log in as this user too: the tests' SSH sites (`kale site add`) are this user's
# account, reached as a remote login node, with its own home and Kale home.
D=${KALE_SSHD_DIR:-/tmp/kale-sshd}
PORT=${KALE_SSHD_PORT:-2222}
SITE_ALIAS=kale-site-test
rm -f test-output/ssh-site.host
if [ -f "$D/client_ed25519.pub" ]; then
  install -d -m 700 -o "$NAME" -g "$NAME" "$HOME_DIR/.ssh"
  install -m 600 -o "$NAME" -g "$NAME" "$D/client_ed25519.pub" "$HOME_DIR/.ssh/authorized_keys"
  # The client side's known_hosts pins the test sshd's host key (as a user's would after
  # the first login); a site test that needs a wrong key brings its own file.
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/host_ed25519.pub")" > "$D/known_hosts"
  cat > /etc/ssh/ssh_config.d/$SITE_ALIAS.conf <<CONF
Host $SITE_ALIAS
  HostName 127.0.0.1
  Port $PORT
  User $NAME
  IdentityFile $D/client_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking yes
  UserKnownHostsFile $D/known_hosts
  LogLevel ERROR
CONF
  if ssh -o BatchMode=yes "$SITE_ALIAS" true 2>/dev/null; then
    echo "$SITE_ALIAS" > test-output/ssh-site.host
    say "ssh $SITE_ALIAS logs in as $NAME (the tests' SSH site)"
  else
    die "ssh $SITE_ALIAS does not log in as $NAME: $(ssh -o BatchMode=yes "$SITE_ALIAS" true 2>&1 | tail -n 1)"
  fi
fi

say "ready: $NAME (home $HOME_DIR, no password) runs $EXE -m kale.cli.main"
