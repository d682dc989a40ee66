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
# Locked: no password anyone could log in with ("!" or "*" in the shadow entry).
case "$(getent shadow "$NAME" | cut -d: -f2)" in
  '!'*|'*'*) ;;
  *) passwd --lock "$NAME" >/dev/null 2>&1 || usermod --lock "$NAME" || die "cannot lock $NAME" ;;
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

say "ready: $NAME (home $HOME_DIR, locked) runs $EXE -m kale.cli.main"
