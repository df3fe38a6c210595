#!/usr/bin/env bash
# The small-job batch (N x 2 s 320x240 -> mp4-360p) on different cluster shapes, same run:
#   A. reelay serve, SQLite + local disk, 1 worker process (1 slot)
#   B. reelay api + 1 reelay worker, Postgres + s3s-fs (1 slot)
#   C. reelay api + 2 reelay worker processes, Postgres + s3s-fs (1 slot each)
# Prints wall times and the ratios B/A and C/B. Needs a release build, Debian postgresql, s3s-fs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
OUT=${OUT:-bench/out/scaleout}
N=${N:-30}
rm -rf "$OUT"; mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -d "$OUT/pg" ] && runuser -u nobody -- "$pgbin/pg_ctl" -D "$OUT/pg/data" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

clip="$OUT/small.mp4"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 \
  -f lavfi -i sine=duration=2 -c:v libx264 -preset ultrafast -c:a aac -shortest "$clip"

# Postgres (throwaway, as nobody) and s3s-fs.
mkdir -p "$OUT/pg" && chown nobody: "$OUT/pg"
runuser -u nobody -- "$pgbin/initdb" -D "$OUT/pg/data" -U postgres --auth=trust >/dev/null
pgport=$(free_port)
runuser -u nobody -- "$pgbin/pg_ctl" -D "$OUT/pg/data" -l "$OUT/pg/log" -w \
  -o "-p $pgport -k $OUT/pg -c listen_addresses=127.0.0.1" start >/dev/null
s3port=$(free_port); mkdir -p "$OUT/s3/media"
s3s-fs --host 127.0.0.1 --port "$s3port" --access-key benchkey --secret-key benchsecret123 "$OUT/s3" >/dev/null 2>&1 &
pids+=($!)
export AWS_ENDPOINT="http://127.0.0.1:$s3port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=benchkey \
  AWS_SECRET_ACCESS_KEY=benchsecret123 AWS_DEFAULT_REGION=us-east-1

wait_http() { for _ in $(seq 400); do curl -fs "$1" >/dev/null && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
batch() { # base -> seconds for N jobs submitted at once until all succeeded
  local base=$1 t0 t1 done_count
  t0=$(now)
  seq "$N" | xargs -P 8 -I{} curl -fsS -o /dev/null -F 'spec={"outputs":[{"preset":"mp4-360p"}]}' -F "file=@$clip" "$base/v1/jobs"
  while :; do
    done_count=$(curl -fsS "$base/v1/jobs?status=succeeded&limit=500" | grep -o '"status":"succeeded"' | wc -l)
    [ "$done_count" -ge "$N" ] && break
    sleep 0.2
  done
  t1=$(now); echo "$t1 - $t0" | bc
}
stop_all() { for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=("${pids[0]}"); }

# A
port=$(free_port)
"$BIN" serve --listen "127.0.0.1:$port" --data-dir "$OUT/a" --workers 1 2>"$OUT/a.log" & pids+=($!)
wait_http "http://127.0.0.1:$port/readyz"
ta=$(batch "http://127.0.0.1:$port"); stop_all

run_pg() { # workers db -> seconds
  local workers=$1 db=$2 api i wport
  "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -qc "CREATE DATABASE $db" >/dev/null
  local url="postgres://postgres@127.0.0.1:$pgport/$db"
  api=$(free_port)
  "$BIN" api --listen "127.0.0.1:$api" --data-dir "$OUT/$db-api" --database-url "$url" --storage "s3://media/$db" 2>"$OUT/$db-api.log" & pids+=($!)
  wait_http "http://127.0.0.1:$api/readyz"
  for i in $(seq "$workers"); do
    wport=$(free_port)
    "$BIN" worker --listen "127.0.0.1:$wport" --data-dir "$OUT/$db-w$i" --workers 1 --database-url "$url" --storage "s3://media/$db" 2>"$OUT/$db-w$i.log" & pids+=($!)
    wait_http "http://127.0.0.1:$wport/readyz"
  done
  batch "http://127.0.0.1:$api"
  stop_all
}
tb=$(run_pg 1 bench_one)
tc=$(run_pg 2 bench_two)
echo "machine: $(nproc) cores; $N jobs of 2 s 320x240 -> mp4-360p, submitted at once"
echo "A serve + SQLite + local disk, 1 slot:        ${ta}s"
echo "B api + 1 worker, Postgres + s3s-fs, 1 slot:  ${tb}s   (B/A = $(echo "scale=2; $tb / $ta" | bc))"
echo "C api + 2 workers, Postgres + s3s-fs, 2 slots: ${tc}s   (throughput C vs B = $(echo "scale=2; $tb / $tc" | bc)x)"
