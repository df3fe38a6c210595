#!/usr/bin/env bash
# Edge placement benchmark: nginx round robin / weighted / least_conn vs reelay placement vs one
# shared queue, plus data-plane overhead and failover time. See bench/edge.py (--help) and the
# "Edge placement" section of docs/benchmarks.md. Needs a release build, ffmpeg and nginx; the
# data plane is measured with wrk (Debian's package) when it is installed.
#   bench/edge.sh                         the full run (~13 min)
#   bench/edge.sh --jobs 12 --doors reelay,shared   a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }
exec python3 bench/edge.py --bin "$BIN" "$@"
