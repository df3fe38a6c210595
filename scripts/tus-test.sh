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
NAME=tus-test
ART="$PWD/target/tus-artifacts"
VENV=${REELAY_TUS_VENV:-$PWD/.venv-tus}
REQ="$PWD/tests/tus/requirements.txt"
# shellcheck source=scripts/lib/live-serve.sh
. scripts/lib/live-serve.sh
art=$ART
venv=$VENV


# ---- a 4 s 640x360 H.264/AAC clip of a few MB (near-lossless, so it is worth resuming)
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=25:duration=4 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=4 \
  -c:v libx264 -preset ultrafast -qp 8 -pix_fmt yuv420p -c:a aac -shortest "$tmp/clip.mp4"

start_serve info --workers 1

set +e
REELAY_URL="$url" REELAY_DATA_DIR="$tmp/data" REELAY_BIN="$REELAY_BIN" REELAY_CLIP="$tmp/clip.mp4" \
  REELAY_ARTIFACTS="$art" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -v -p no:cacheprovider tests/tus 2>&1 | tee "$art/test.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
