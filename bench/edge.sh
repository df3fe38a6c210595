#!/usr/bin/env bash
# Edge benchmark: nginx round robin / weighted / least_conn vs reelay placement vs one shared
# queue (and the SIGKILL failover probe), the data plane with wrk (bench/edge_probes.py), and a
# cluster whose packets vanish (a network namespace + iptables DROP; needs root). See
# bench/edge.py --help and the "Edge placement" section of docs/benchmarks.md. Needs a release
# build, ffmpeg, nginx and wrk (Debian: apt-get install -y wrk).
#   bench/edge.sh                                  the full run (~15 min)
#   bench/edge.sh --parts dataplane,silent         data plane and silent failure only (~3 min)
#   bench/edge.sh --parts dataplane --dp-variants no-auth-request,auth-cache   where the time goes
#   bench/edge.sh --jobs 12 --doors reelay,shared --parts placement   a quick look
#   bench/edge.sh --parts stealing                 work stealing: skewed, one long film, balanced,
#                                                  with vs without the edge's [stealing] (~50 min;
#                                                  bench/edge_stealing.py)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }
exec python3 bench/edge.py --bin "$BIN" "$@"
