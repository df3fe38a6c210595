#!/usr/bin/env bash
# Webhooks (Standard Webhooks) against a live cluster with an independent verifier: starts
# `reelay serve` (open mode on loopback, state in a temporary directory, private URLs allowed so
# the receiver can live on loopback, retries scaled down: 200 ms backoff base, 2 s cap, 120 s
# period) with one configured subscription, and runs pytest (tests/webhooks/) whose receiver
# checks every request with the `standardwebhooks` package from PyPI: per-job notify and
# subscription signatures, a receiver answering 503 and then refusing connections that gets
# every event afterwards in order per job, the attempts in the API, redelivery by hand.
#
# Installs what is missing (ffmpeg, curl, python3, python3-venv via apt-get; standardwebhooks
# and pytest from PyPI, pinned by tests/webhooks/requirements.txt, into .venv-webhooks/,
# recreated only when those pins or the Python version change). Logs:
# target/webhooks-artifacts/. Exit status is pytest's.
#
# Environment: REELAY_BIN (skip the build and use this binary), REELAY_WEBHOOKS_VENV (default
# .venv-webhooks), KEEP_TMP=1 (keep the temporary state directory).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=webhooks-test
ART="$PWD/target/webhooks-artifacts"
VENV=${REELAY_WEBHOOKS_VENV:-$PWD/.venv-webhooks}
REQ="$PWD/tests/webhooks/requirements.txt"
# shellcheck source=scripts/lib/live-serve.sh
. scripts/lib/live-serve.sh
art=$ART
venv=$VENV

receiver_port=$(free_port)
clip_port=$(free_port)
sub_secret="whsec_$(head -c 32 /dev/urandom | base64)"

# ---- a 2 s 320x240 H.264/AAC clip
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=2 \
  -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -shortest "$tmp/clip.mp4"

cat >"$tmp/reelay.toml" <<TOML
allow_private_urls = true

[webhooks]
retry_period_seconds = 120
backoff_base_ms = 200
backoff_max_seconds = 2
timeout_seconds = 3
poll_ms = 100

[[webhooks.subscriptions]]
name = "ops"
url = "http://127.0.0.1:$receiver_port/ops"
secret = "$sub_secret"
events = ["job.succeeded", "job.failed", "job.cancelled"]
TOML

start_serve info --config "$tmp/reelay.toml" --workers 1

set +e
REELAY_URL="$url" REELAY_RECEIVER_PORT="$receiver_port" REELAY_CLIP_PORT="$clip_port" \
  REELAY_CLIP="$tmp/clip.mp4" REELAY_SUB_SECRET="$sub_secret" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -v -p no:cacheprovider tests/webhooks 2>&1 | tee "$art/test.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
