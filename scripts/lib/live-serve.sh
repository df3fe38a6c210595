# Shared by the scripts that test a live `reelay serve` with an independent Python client
# (tus-test, webhooks-test, contract-test): install what is missing, keep a pinned venv, a
# temporary state directory, start the server and wait until it is ready, stop it on exit.
# Source it after `set -euo pipefail` and `cd` to the repository root, with NAME (the script's
# name for messages, e.g. tus-test), ART (artifacts directory), VENV and REQ (requirements file)
# set. It sets root, started, tmp, pid, url and REELAY_BIN, and traps EXIT.

root=$PWD
started=$(date +%s)

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "$NAME: installing ${need[*]}" >&2
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

# The venv is recreated only when the pins or the Python version change.
want="$(sha256sum "$REQ" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$VENV/.reelay-stamp"
if ! { [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "$NAME: installing ${REQ#"$root"/} into $VENV (first run or changed pins)" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check --requirement "$REQ"; then
    echo "$NAME: pip install -r ${REQ#"$root"/} failed (PyPI reachable?)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

rm -rf "$ART"
mkdir -p "$ART"
tmp=$(mktemp -d "/tmp/reelay-$NAME.XXXXXX")
pid=""
url=""
# stop_serve: stops the server start_serve started (SIGTERM, SIGKILL after 10 s), if it runs.
stop_serve() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=""
}
cleanup() {
  local rc=$?
  stop_serve
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "$NAME: state kept in $tmp" >&2; else rm -rf "$tmp"; fi
  echo "$NAME: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (logs: $ART)" >&2
  exit $rc
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_serve LOG_LEVEL ARGS...: `reelay serve ARGS` on a free loopback port with its state in
# $tmp/data, log in $ART/${SERVE_LOG:-reelay-serve.log}; returns once /readyz answers (sets pid
# and url).
start_serve() {
  local level=$1 port
  shift
  port=$(free_port)
  RUST_LOG=${RUST_LOG:-$level} "$REELAY_BIN" serve "$@" --listen "127.0.0.1:$port" \
    --data-dir "$tmp/data" >"$ART/${SERVE_LOG:-reelay-serve.log}" 2>&1 &
  pid=$!
  url="http://127.0.0.1:$port"
  for _ in $(seq 1 120); do
    curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$NAME: reelay serve exited early; its log:" >&2
      tail -40 "$ART/${SERVE_LOG:-reelay-serve.log}" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "$NAME: reelay serve not ready after 30 s; its log:" >&2
  tail -40 "$ART/${SERVE_LOG:-reelay-serve.log}" >&2
  exit 1
}
