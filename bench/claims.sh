#!/usr/bin/env bash
# Claim latency/throughput with 10k and 100k queued jobs, on Postgres (a throwaway cluster, or
# REELAY_BENCH_DATABASE_URL) and SQLite. Usage: bench/claims.sh [depth ...]  (default: 10000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then set -- 10000 100000; fi
exec cargo run --release --locked -q -p reelay-jobs --example claim_bench --features testsuite -- "$@"
