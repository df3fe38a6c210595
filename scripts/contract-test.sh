#!/usr/bin/env bash
# The API contract: schemathesis (PyPI, pinned by tests/contract/requirements.txt, in .venv-contract/)
# against a live `reelay serve` (open mode on loopback, state in a temporary directory, ffmpeg
# workers running) and the /openapi.json that server serves. Every check runs, in every phase
# (examples, coverage, fuzzing, and stateful runs that follow the document's links from
# POST /v1/jobs to the job's other operations); tests/contract/schemathesis.toml says what is
# configured and why. Bounded: --max-time (default 120 s) for the whole run.
#
# Exit status is schemathesis' (non-zero on any failure or error). Report: target/contract-artifacts/.
# Environment: REELAY_BIN (skip the build), CONTRACT_MAX_TIME (seconds), CONTRACT_MAX_EXAMPLES
# (per operation, default 30), CONTRACT_SEED (fixed seed), KEEP_TMP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)
art="$root/target/contract-artifacts"

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "contract-test: installing ${need[*]}" >&2
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

venv=${REELAY_CONTRACT_VENV:-$root/.venv-contract}
req="$root/tests/contract/requirements.txt"
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$venv/.reelay-stamp"
if ! { [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "contract-test: installing tests/contract/requirements.txt into $venv (first run or changed pins)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --requirement "$req"; then
    echo "contract-test: pip install -r tests/contract/requirements.txt failed (PyPI reachable?)" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi

rm -rf "$art"
mkdir -p "$art"
tmp=$(mktemp -d /tmp/reelay-contract-test.XXXXXX)
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
  if [ "${KEEP_TMP:-}" = 1 ]; then echo "contract-test: state kept in $tmp" >&2; else rm -rf "$tmp"; fi
  echo "contract-test: $([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (report: $art)" >&2
  exit $rc
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One attempt per job: URL inputs with made-up hosts fail at once instead of retrying, so the
# event streams the stateful phase opens end quickly.
RUST_LOG=${RUST_LOG:-warn} "$REELAY_BIN" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" \
  --workers 2 --max-attempts 1 >"$art/reelay-serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 120); do
  curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "contract-test: reelay serve exited early; its log:" >&2
    tail -40 "$art/reelay-serve.log" >&2
    exit 1
  fi
  sleep 0.25
done

seed=()
[ -n "${CONTRACT_SEED:-}" ] && seed=(--seed "$CONTRACT_SEED")
# Run from the temporary directory: schemathesis and hypothesis keep their caches in the working
# directory, and every run starts fresh. The hooks module is found through PYTHONPATH.
cd "$tmp"
set +e
NO_COLOR=1 PYTHONPATH="$root/tests/contract" "$venv/bin/schemathesis" \
  --config-file "$root/tests/contract/schemathesis.toml" run "$url/openapi.json" \
  --max-time "${CONTRACT_MAX_TIME:-120}" --max-examples "${CONTRACT_MAX_EXAMPLES:-30}" --workers 2 \
  --report junit --report-dir "$art" "${seed[@]}" 2>&1 | tee "$art/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
