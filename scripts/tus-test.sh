#!/usr/bin/env bash
# Resumable uploads (tus 1.0) against a live cluster with an independent client: starts
# `reelay serve` (open mode on loopback, state in a temporary directory) and runs pytest
# (tests/tus/) with tuspy from PyPI: chunked uploads resumed by a fresh client, an upload cut off
# mid-PATCH (a TCP proxy that drops the connection) resumed from what the server kept, each
# becoming a job whose MP4 ffprobe checks; then the reelay CLI resuming after a dropped
# connection within one run, and after Ctrl-C when the same `reelay submit` runs again.
#
# Installs what is missing (ffmpeg, curl, python3, python3-venv via apt-get; tuspy and pytest
# from PyPI, pinned by tests/tus/requirements.txt, into .venv-tus/, recreated only when those
# pins or the Python version change). Logs: target/tus-artifacts/. Exit status is pytest's.
# Takes about 20 s after the build.
#
# Environment: REELAY_BIN (skip the build and use this binary), REELAY_TUS_VENV (default
# .venv-tus), KEEP_TMP=1 (keep the temporary state directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)
art="$root/target/tus-artifacts"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "tus-test: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ -z "${REELAY_BIN:-}" ]; then
  cargo build --locked -p reelay
  REELAY_BIN="$root/target/debug/reelay"
fi
REELAY_BIN=$(realpath "$REELAY_BIN")

venv=${REELAY_TUS_VENV:-$root/.venv-tus}
req="$root/tests/tus/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$venv/.reelay-stamp"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "tus-test: installing tests/tus/requirements.txt into $venv (first run or changed pins)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$req"; then
    echo "tus-test: pip install -r tests/tus/requirements.txt failed (PyPI reachable?)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d /tmp/reelay-tus-test.XXXXXX)
pid=""
cleanup() {
  local rc=$?
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "tus-test: state kept in $tmp" >&2; else rm -rf "$tmp"; fi
  echo "tus-test: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (logs: $art)" >&2
  exit $rc
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# ---- a 4 s 640x360 H.264/AAC clip of a few MB (near-lossless, so it is worth resuming)
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=25:duration=4 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=4 \
  -c:v libx264 -preset ultrafast -qp 8 -pix_fmt yuv420p -c:a aac -shortest "$tmp/clip.mp4"

RUST_LOG=${RUST_LOG:-info} "$REELAY_BIN" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" \
  --workers 1 >"$art/reelay-serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "tus-test: reelay serve exited early; its log:" >&2
    tail -40 "$art/reelay-serve.log" >&2
    exit 1
  fi
  sleep 0.25
done

set +e
REELAY_URL="$url" REELAY_DATA_DIR="$tmp/data" REELAY_BIN="$REELAY_BIN" REELAY_CLIP="$tmp/clip.mp4" \
  REELAY_ARTIFACTS="$art" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -v -p no:cacheprovider tests/tus 2>&1 | tee "$art/test.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
