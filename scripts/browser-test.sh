#!/usr/bin/env bash
# The dashboard in a real browser: builds reelay, starts `reelay up` (two clusters + the nginx
# edge) on free loopback ports with its state in a temporary directory, and drives Debian's
# headless Chromium with Python playwright under pytest (tests/browser/): upload a generated clip
# with the presets hls-abr + mp4-360p, follow it to done, open the job, play the HLS and the MP4
# output, look at a cluster's own dashboard, then kill one cluster and check the page says so.
# Before that, a page on another origin (Python http.server on its own port) plays an hls-abr
# output through the edge with hls.js (copied at run time from REELAY_HLS_JS, default the
# dashboard's vendored crates/dashboard/assets/hls.min.js) and reads a Range cross-origin.
# cmaf outputs (H.264 and AV1) are then played to the end from such a page by hls.js, dash.js and Shaka Player
# (tests/browser/test_cmaf_players.py; the players vendored in crates/dashboard/assets/).
#
# Screenshots and logs: target/browser-artifacts/. Exit status is pytest's (non-zero on any
# failure). Installs what is missing (chromium, ffmpeg, nginx, curl, python3, python3-venv via
# apt-get; playwright and pytest from PyPI, pinned by tests/browser/requirements.txt, into the
# virtualenv .venv-browser/, recreated only when those pins or the Python version change).
# Playwright drives the Chromium binary itself: no `playwright install`, no browser download.
# Safe to run again and again: every run uses fresh ports, state and browser profile.
# Takes about 20 s after the build (the first run also creates the virtualenv: about 10 s more,
# plus downloading playwright's 53 MB wheel).
#
# Environment: REELAY_BIN (skip the build and use this binary), CHROMIUM (default
# /usr/bin/chromium), REELAY_BROWSER_VENV (the virtualenv, default .venv-browser),
# KEEP_TMP=1 (keep the temporary state directory).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)
art="$root/target/browser-artifacts"

# ---- tools
need=()
chromium_bin=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium_bin" ] || need+=(chromium)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
# playwright's bundled node driver links libatomic.so.1 (gcc pulls it in; a minimal Debian has none).
ldconfig -p 2>/dev/null | grep -q 'libatomic\.so\.1 ' || need+=(libatomic1)
# Debian's python3 makes virtualenvs only with python3-venv (ensurepip) installed.
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "browser-test: installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "browser-test: pytest needs Python >= 3.10 (found $(python3 --version 2>&1))" >&2
  exit 1
fi

# ---- build and test dependencies
if [ -z "${REELAY_BIN:-}" ]; then
  cargo build --locked -p reelay
  REELAY_BIN="$root/target/debug/reelay"
fi

# The virtualenv: (re)created when tests/browser/requirements.txt or the Python version changed.
venv=${REELAY_BROWSER_VENV:-$root/.venv-browser}
req="$root/tests/browser/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$venv/.reelay-stamp"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "browser-test: installing tests/browser/requirements.txt into $venv (first run or changed pins)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$req"; then
    echo "browser-test: pip install -r tests/browser/requirements.txt failed (PyPI reachable?)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d /tmp/reelay-browser-test.XXXXXX)
up_pid=""
cleanup() {
  local rc=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$up_pid" 2>/dev/null || break
      sleep 0.25
    done
    # Its children are told by the kernel to terminate when it dies.
    kill -KILL "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  if [ "${KEEP_TMP:-}" = 1 ]; then
    echo "browser-test: state kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  echo "browser-test: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (artifacts: $art)" >&2
  exit $rc
}
trap cleanup EXIT

# ---- four free loopback ports
read -r p_edge p_ctl p_aws p_gcp < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]  # all bound at once: four different ports
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()')

cat >"$tmp/topology.toml" <<EOF
# Written by scripts/browser-test.sh (like deploy/local/topology.toml, on free ports).
state_dir = "state"
shutdown_grace_seconds = 2
# The dashboard's own flows, without tokens; its token prompt is covered by
# test_under_a_token_the_dashboard_asks_for_it_sends_it_and_polls.
anonymous = true

[edge]
listen = "127.0.0.1:$p_edge"
control_listen = "127.0.0.1:$p_ctl"
work_dir = "state/edge"
reload_min_interval_ms = 200
local_cluster = "aws"

[edge.health]
interval_ms = 500
timeout_ms = 400
fall = 2
rise = 1

[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:$p_aws"
weight = 2

[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:$p_gcp"
weight = 1
cost = 0.8

[[clusters]]
name = "aws"
listen = "127.0.0.1:$p_aws"
workers = 2

[[clusters]]
name = "gcp"
listen = "127.0.0.1:$p_gcp"
workers = 1
EOF
cp "$tmp/topology.toml" "$art/topology.toml"

# ---- a 2 s 160x120 H.264/AAC clip
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=160x120:rate=25:duration=2 \
  -f lavfi -i sine=frequency=440:sample_rate=48000:duration=2 \
  -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$tmp/clip.mp4"

# ---- reelay up
RUST_LOG=${RUST_LOG:-info} "$REELAY_BIN" up --topology "$tmp/topology.toml" >"$art/reelay-up.log" 2>&1 &
up_pid=$!
edge="http://127.0.0.1:$p_edge"
ready=""
for _ in $(seq 1 120); do
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "browser-test: reelay up exited early; its log:" >&2
    tail -40 "$art/reelay-up.log" >&2
    exit 1
  fi
  status=$(curl -fsS --max-time 2 "$edge/edge/status" 2>/dev/null || true)
  if [ -n "$status" ] && [ "$(grep -o '"health":"up"' <<<"$status" | wc -l)" -eq 2 ]; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  echo "browser-test: the edge did not report both clusters up within 60 s" >&2
  tail -40 "$art/reelay-up.log" >&2
  exit 1
fi

# ---- the browser
set +e
REELAY_EDGE_URL="$edge" \
  REELAY_CLUSTER_URL="http://127.0.0.1:$p_aws" \
  REELAY_KILL_CLUSTER_PORT="$p_gcp" \
  REELAY_CLIP="$tmp/clip.mp4" \
  REELAY_ARTIFACTS="$art" \
  CHROMIUM="$chromium_bin" \
  PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -v tests/browser 2>&1 | tee "$art/test.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
