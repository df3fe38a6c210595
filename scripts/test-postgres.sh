#!/usr/bin/env bash
# Runs the job store tests against a real Postgres (plus the SQLite ones, they are quick).
#
# Without REELAY_TEST_DATABASE_URL the tests start a throwaway cluster of their own from the
# server binaries (Debian: /usr/lib/postgresql/*/bin), so those must be installed; this script
# installs Debian's `postgresql` when they are missing. With REELAY_TEST_DATABASE_URL (an admin
# URL allowed to CREATE DATABASE) that server is used instead and nothing is installed.
# Usage: scripts/test-postgres.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."

have_server_binaries() {
  [ -n "${REELAY_TEST_PG_BINDIR:-}" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null && return 0
  command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1
}

if [ -z "${REELAY_TEST_DATABASE_URL:-}" ] && ! have_server_binaries; then
  echo "installing postgresql (server binaries for the ephemeral test cluster)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install postgresql" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # --no-install-recommends: the server binaries only, no system-wide cluster needed.
  $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

cargo test --locked -p reelay-jobs "$@"

# The clusters the tests started are stopped by a watchdog within a second of the test
# binary's exit; anything still running after that is a leak worth failing on.
sleep 2
if pgrep -x postgres >/dev/null 2>&1 && [ -z "${REELAY_TEST_DATABASE_URL:-}" ]; then
  leaked=$(ps -eo pid,stat,args | awk '$2 !~ /^Z/ && $3 ~ /postgres/' | grep -- '/reelay-pg-' || true)
  if [ -n "$leaked" ]; then
    echo "error: test Postgres clusters left running:" >&2
    echo "$leaked" >&2
    exit 1
  fi
fi
