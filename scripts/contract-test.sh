#!/usr/bin/env bash
# The API contract: schemathesis (PyPI, pinned by tests/contract/requirements.txt, in .venv-contract/)
# against a live `reelay serve` (open mode on loopback, state in a temporary directory, ffmpeg
# workers running) and the /openapi.json that server serves. Every check runs, in every phase
# (examples, coverage, fuzzing, and stateful runs that follow the document's links from
# POST /v1/jobs to the job's other operations); tests/contract/schemathesis.toml says what is
# configured and why. Bounded: --max-time (default 120 s) for the whole run.
#
# The remote-claim routes (`/v1/peer/…`) need a token with the `peer` scope even in open mode, and
# minting one ends open mode; so the first run leaves them out, and a second, bounded run
# (CONTRACT_PEER_MAX_TIME, default 40 s) fuzzes only them, with that token, against the same
# state directory restarted protected, one worker slot held by a job whose input never answers
# and a few jobs (one uploaded, its input in storage) waiting at home that peers are offered
# at once (`[steal] offer_after_seconds = 0`): claims with and without a ready task, then (by the
# document's links) renew/complete/fail/release and the object routes on a real lease.
#
# Exit status is schemathesis' (non-zero on any failure or error in either run). Report:
# target/contract-artifacts/ (the peer run's in peer/).
# Environment: REELAY_BIN (skip the build), CONTRACT_MAX_TIME (seconds), CONTRACT_MAX_EXAMPLES
# (per operation, default 30), CONTRACT_PEER_MAX_TIME (seconds), CONTRACT_SEED (fixed seed),
# KEEP_TMP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=contract-test
ART="$PWD/target/contract-artifacts"
VENV=${REELAY_CONTRACT_VENV:-$PWD/.venv-contract}
REQ="$PWD/tests/contract/requirements.txt"
# shellcheck source=scripts/lib/live-serve.sh
. scripts/lib/live-serve.sh
art=$ART
venv=$VENV

# One attempt per job: URL inputs with made-up hosts fail at once instead of retrying, so the
# event streams the stateful phase opens end quickly.
start_serve warn --workers 2 --max-attempts 1

seed=()
[ -n "${CONTRACT_SEED:-}" ] && seed=(--seed "$CONTRACT_SEED")
# Run from the temporary directory: schemathesis and hypothesis keep their caches in the working
# directory, and every run starts fresh. The hooks module is found through PYTHONPATH.
cd "$tmp"
# One schemathesis worker: with two threads, hypothesis' ast.parse of its own source (naming a
# filter) once failed inside CPython 3.11.7 with "SystemError: AST constructor recursion depth
# mismatch" (CPython gh-106905, which concurrent parsing is known to trigger), and schemathesis
# reported 9 operations as errors. One worker still covers ~9000 cases in the 120 s budget.
set +e
NO_COLOR=1 PYTHONPATH="$root/tests/contract" "$venv/bin/schemathesis" \
  --config-file "$root/tests/contract/schemathesis.toml" run "$url/openapi.json" \
  --exclude-path-regex '^/v1/peer/' \
  --max-time "${CONTRACT_MAX_TIME:-120}" --max-examples "${CONTRACT_MAX_EXAMPLES:-30}" --workers 1 \
  --report junit --report-dir "$art" "${seed[@]}" 2>&1 | tee "$art/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e

# The remote-claim run. Tokens are minted into the stopped cluster's store (from then on every
# request needs one); the peer token's owner is the peer cluster's name.
stop_serve
mint() { "$REELAY_BIN" token create --data-dir "$tmp/data" --name "$1" "${@:2}" 2>>"$art/tokens.log"; }
peer_token=$(mint contract-peer --scope peer)
submit_token=$(mint contract-submit --scope submit --scope read)
# An address that accepts connections and never answers: the home slot's job waits on it.
stall_port=$(free_port)
python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); time.sleep(600)' \
  "$stall_port" &
stall_pid=$!
for _ in $(seq 1 40); do
  (: <"/dev/tcp/127.0.0.1/$stall_port") 2>/dev/null && break
  sleep 0.25
done
printf '[steal]\noffer_after_seconds = 0\n' >"$tmp/peer.toml"
SERVE_LOG=reelay-serve-peer.log start_serve warn --config "$tmp/peer.toml" --workers 1 \
  --max-attempts 1 --allow-private-urls
auth=(-H "Authorization: Bearer $submit_token")
url_job() {
  curl -fsS "${auth[@]}" -H 'Content-Type: application/json' "$url/v1/jobs" \
    -d "{\"input\":{\"url\":\"http://127.0.0.1:$stall_port/clip-$1.mp4\"},\"outputs\":[{\"preset\":\"mp4-360p\"}]}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
first=$(url_job 0)
for _ in $(seq 1 40); do
  curl -fsS "${auth[@]}" "$url/v1/jobs/$first" | grep -q '"status":"running"' && break
  sleep 0.25
done
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc=size=64x48:rate=10 -t 1 \
  -pix_fmt yuv420p "$tmp/clip.mp4"
upload_job() {
  curl -fsS "${auth[@]}" "$url/v1/jobs" -F 'spec={"outputs":[{"preset":"mp4-360p"}]};type=application/json' \
    -F "file=@$tmp/clip.mp4;type=video/mp4" >/dev/null
}
upload_job
for i in 1 2 3 4 5 6; do url_job "$i" >/dev/null; done
# The fuzzing phase claims every waiting task within a second; a job every half second (every
# third one uploaded) keeps claims answering 200 until the stateful phase follows the claim's
# links (a task moves at most once, so each claim needs a new one). Bounded: 200 jobs.
(
  for i in $(seq 7 206); do
    if [ $((i % 3)) -eq 0 ]; then upload_job; else url_job "$i" >/dev/null; fi || true
    sleep 0.5
  done
) 2>/dev/null &
feeder_pid=$!
mkdir -p "$art/peer"
set +e
NO_COLOR=1 PYTHONPATH="$root/tests/contract" "$venv/bin/schemathesis" \
  --config-file "$root/tests/contract/schemathesis.toml" run "$url/openapi.json" \
  --include-path-regex '^/v1/peer/' -H "Authorization: Bearer $peer_token" \
  --max-time "${CONTRACT_PEER_MAX_TIME:-40}" --max-examples "${CONTRACT_MAX_EXAMPLES:-30}" \
  --workers 1 --report junit --report-dir "$art/peer" "${seed[@]}" 2>&1 |
  tee "$art/schemathesis-peer.log"
peer_rc=${PIPESTATUS[0]}
set -e
kill "$feeder_pid" "$stall_pid" 2>/dev/null || true
wait "$feeder_pid" "$stall_pid" 2>/dev/null || true
[ "$rc" -ne 0 ] || rc=$peer_rc
exit "$rc"
