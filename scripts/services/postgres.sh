#!/usr/bin/env bash
# Provision a PostgreSQL server for the store tests (scripts/test runs every
# scripts/services/*.sh; .ci/run calls scripts/test).
#
# Idempotent and fast when already provisioned:
#   1. $KALE_TEST_POSTGRES_URL set and reachable: nothing to do.
#   2. Otherwise a private cluster (Debian's postgresql packages; installed with apt when
#      missing and this is root) in $KALE_PG_DIR (default /var/tmp/kale-postgres), listening
#      on 127.0.0.1:$KALE_PG_PORT (default 55432) only, with role `kale` and database
#      `kale_test`; started if it is down, created if it does not exist.
# The SQLAlchemy URL goes to test-output/postgres.url, where tests/conftest.py reads it.
# Exits non-zero, saying why, when no server can be had.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT=${KALE_PG_PORT:-55432}
DIR=${KALE_PG_DIR:-/var/tmp/kale-postgres}
DATA=$DIR/data
LOG=$DIR/server.log
PASSWORD=kale-test          # a throwaway cluster reachable from 127.0.0.1 only
URL_FILE=test-output/postgres.url
URL="postgresql+psycopg://kale:$PASSWORD@127.0.0.1:$PORT/kale_test"

say() { echo "postgres: $*"; }
die() { echo "postgres: cannot provision PostgreSQL: $*" >&2; exit 1; }

# psql does not know SQLAlchemy's "+driver" part of the scheme.
libpq_url() { sed -E 's#^postgresql\+[a-z0-9]+://#postgresql://#' <<<"$1"; }
reachable() { command -v psql >/dev/null && \
  PGCONNECT_TIMEOUT=3 psql "$(libpq_url "$1")" -XAtqc 'select 1' >/dev/null 2>&1; }

if [ -n "${KALE_TEST_POSTGRES_URL:-}" ]; then
  if reachable "$KALE_TEST_POSTGRES_URL"; then
    say "KALE_TEST_POSTGRES_URL is reachable; nothing to do"
    exit 0
  fi
  say "KALE_TEST_POSTGRES_URL is set but not reachable; provisioning a private cluster"
fi

# Fast path: our cluster is up and the role and database exist.
if reachable "$URL"; then
  mkdir -p test-output && echo "$URL" >"$URL_FILE"
  say "already running on 127.0.0.1:$PORT ($DATA); URL in $URL_FILE"
  exit 0
fi

bindir() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1; }
BIN=$(bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ] || ! command -v psql >/dev/null; then
  [ "$(id -u)" = 0 ] || die "the postgresql packages are not installed and this is not root"
  command -v apt-get >/dev/null || die "the postgresql packages are not installed and there is no apt-get"
  say "installing Debian's postgresql packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends postgresql >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null && \
    apt-get install -y --no-install-recommends postgresql >/dev/null; } \
    || die "apt-get install postgresql failed"
  BIN=$(bindir)
  [ -n "$BIN" ] && [ -x "$BIN/initdb" ] || die "no initdb under /usr/lib/postgresql/*/bin after installing"
fi

# initdb and postgres refuse to run as root: run the server as `postgres` when root.
if [ "$(id -u)" = 0 ]; then
  getent passwd postgres >/dev/null || die "this is root but there is no postgres user"
  as_owner() { runuser -u postgres -- "$@"; }
  OWNER=postgres
else
  as_owner() { "$@"; }
  OWNER=$(id -un)
fi

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown "$OWNER" "$DIR"
chmod 700 "$DIR"

if [ ! -s "$DATA/PG_VERSION" ]; then
  say "creating a cluster in $DATA ($("$BIN/postgres" --version))"
  rm -rf "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
    || as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
         --auth-host=scram-sha-256 -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 \
    || die "initdb failed (see $DIR/initdb.log)"
  cat >>"$DATA/postgresql.conf" <<CONF
# kale test cluster
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi

if ! "$BIN/pg_isready" -q -h "$DIR" -p "$PORT"; then
  # A pid file left by a server that died with its machine or container may name a pid
  # that is now some other process: postgres would refuse to start.
  pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" != postgres ]; then
    rm -f "$DATA/postmaster.pid"
  fi
  say "starting the server on 127.0.0.1:$PORT"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
    || die "the server did not start (see $LOG)"
fi

# Role and database, over the private socket as the superuser (trust).
psql_super() { as_owner psql -h "$DIR" -p "$PORT" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
psql_super -d postgres >/dev/null <<SQL || die "could not create role kale / database kale_test"
SELECT 'CREATE ROLE kale LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kale')
\gexec
ALTER ROLE kale LOGIN PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE kale_test OWNER kale'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'kale_test')
\gexec
SQL

reachable "$URL" || die "the server runs but $(libpq_url "$URL") does not answer (see $LOG)"
mkdir -p test-output && echo "$URL" >"$URL_FILE"
say "ready on 127.0.0.1:$PORT ($DATA); URL in $URL_FILE"
