#!/usr/bin/env bash
# Installs the system packages reelay needs when they are missing (Debian/Ubuntu).
# Usage: scripts/ensure-deps.sh [runtime|test]
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# The edge's data plane (`reelay up`, `reelay edge`): Debian's nginx.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
# `make up`/`serve` build reelay too: rustc links with the system C compiler, and some crates
# (ring, SQLite) compile C.
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# pgrep (procps) is used by the tests to prove that cancelled ffmpeg processes are gone.
if [ "${1:-runtime}" = test ]; then
  command -v pgrep >/dev/null 2>&1 || need+=(procps)
  # The deployment validators, the browser and compose tests are Python (PyPI packages in
  # virtualenvs): a minimal Debian has neither python3 nor its venv module.
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v ss >/dev/null 2>&1 || need+=(iproute2)
  [ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  command -v git >/dev/null 2>&1 || need+=(git)
  # The job-store tests start a throwaway Postgres cluster with Debian's server binaries.
  compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need+=(postgresql)
  command -v runuser >/dev/null 2>&1 || need+=(util-linux)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "installing missing system packages: ${need[*]}" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "error: need root (or sudo) to apt-get install ${need[*]}" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get here; install ${need[*]} with your package manager" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# s3s-fs: the S3-compatible server the storage tests run against (checks signatures).
# After the apt packages: building it needs the C compiler/linker (gcc, libc6-dev) installed above.
# The tests find it on PATH: the Makefile puts cargo's bin directory there.
if [ "${1:-runtime}" = test ] && ! command -v s3s-fs >/dev/null 2>&1 &&
  ! [ -x "${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/s3s-fs" ]; then
  echo "installing s3s-fs (cargo install, once)" >&2
  cargo install s3s-fs --version 0.14.1 --locked --features binary --quiet
fi
