#!/usr/bin/env bash
# Writes a docker-compose .env with fresh random secrets, unless one exists (it is never
# overwritten). Usage: scripts/compose-env.sh [FILE]   (default .env; `make compose-env`)
# Every value .env.example marks `change-me-…` gets 32 random hex characters; the rest is copied.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.env}
if [ -e "$out" ]; then
  echo "compose-env: $out exists; leaving it as it is" >&2
  exit 0
fi
random() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }
umask 077
tmp=$(mktemp "$out.XXXXXX")
while IFS= read -r line; do
  if [[ $line =~ ^([A-Z0-9_]+)=change-me ]]; then
    printf '%s=%s\n' "${BASH_REMATCH[1]}" "$(random)"
  else
    printf '%s\n' "$line"
  fi
done <.env.example >"$tmp"
mv "$tmp" "$out"
echo "compose-env: wrote $out with random secrets (mode 0600)" >&2
