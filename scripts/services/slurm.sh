#!/usr/bin/env bash
# Provision a single-node Slurm cluster on localhost for the batch tests (scripts/test runs
# every scripts/services/*.sh; .ci/run calls scripts/test).
#
# Needs root and apt (Debian packages slurmctld, slurmd, munge, slurmdbd, mariadb-server):
# scripts/local-slurm/start.sh installs what is missing and starts the daemons (idempotent,
# ~15 s the first time, instant when already up). The cluster's environment (SLURM_CONF)
# goes to test-output/slurm.env, where tests/conftest.py reads it. slurmrestd (JWT auth) runs
# too, for the REST path's tests (tests/test_slurm_rest.py): slurm.env gives its URL
# (SLURMRESTD_URL); tokens come from `scontrol token`. Exits non-zero, saying why, when no
# cluster can be had; the batch tests then skip (they fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p test-output
rm -f test-output/slurm.env
DIR=${KALE_SLURM_DIR:-/tmp/kale-slurm}

if [ "$(id -u)" != 0 ]; then
  echo "slurm: not root, cannot install or start a local Slurm cluster" >&2; exit 1
fi
if ! command -v apt-get >/dev/null && ! command -v slurmctld >/dev/null; then
  echo "slurm: no apt-get and no Slurm installed" >&2; exit 1
fi
KALE_SLURM_DIR=$DIR KALE_SLURM_RESTD=1 bash scripts/local-slurm/start.sh
cp "$DIR/env.sh" test-output/slurm.env
echo "slurm: ready ($(grep SLURM_CONF test-output/slurm.env); $(grep SLURMRESTD_URL test-output/slurm.env))"
