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
  --max-time "${CONTRACT_MAX_TIME:-120}" --max-examples "${CONTRACT_MAX_EXAMPLES:-30}" --workers 1 \
  --report junit --report-dir "$art" "${seed[@]}" 2>&1 | tee "$art/schemathesis.log"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
