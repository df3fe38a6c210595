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
root=$PWD
started=$(date +%s)
art="$root/target/webhooks-artifacts"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "webhooks-test: installing ${need[*]}" >&2
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

venv=${REELAY_WEBHOOKS_VENV:-$root/.venv-webhooks}
req="$root/tests/webhooks/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$venv/.reelay-stamp"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "webhooks-test: installing tests/webhooks/requirements.txt into $venv (first run or changed pins)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$req"; then
    echo "webhooks-test: pip install -r tests/webhooks/requirements.txt failed (PyPI reachable?)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d /tmp/reelay-webhooks-test.XXXXXX)
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
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "webhooks-test: state kept in $tmp" >&2; else rm -rf "$tmp"; fi
  echo "webhooks-test: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (logs: $art)" >&2
  exit $rc
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
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

RUST_LOG=${RUST_LOG:-info} "$REELAY_BIN" serve --config "$tmp/reelay.toml" --listen "127.0.0.1:$port" \
  --data-dir "$tmp/data" --workers 1 >"$art/reelay-serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "webhooks-test: reelay serve exited early; its log:" >&2
    tail -40 "$art/reelay-serve.log" >&2
    exit 1
  fi
  sleep 0.25
done

set +e
REELAY_URL="$url" REELAY_RECEIVER_PORT="$receiver_port" REELAY_CLIP_PORT="$clip_port" \
  REELAY_CLIP="$tmp/clip.mp4" REELAY_SUB_SECRET="$sub_secret" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -v -p no:cacheprovider tests/webhooks 2>&1 | tee "$art/test.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
