#!/usr/bin/env bash
# Installs the system packages reelay needs when they are missing (Debian/Ubuntu).
# Usage: scripts/ensure-deps.sh [runtime|test]
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
# pgrep (procps) is used by the tests to prove that cancelled ffmpeg processes are gone.
if [ "${1:-runtime}" = test ]; then
  command -v pgrep >/dev/null 2>&1 || need+=(procps)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

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
