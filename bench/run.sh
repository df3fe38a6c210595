#!/usr/bin/env bash
# reelay benchmarks against bare ffmpeg, measured in the same run on the same machine.
#   bench/run.sh            all three
#   RUNS=5 bench/run.sh     more repetitions for the overhead benchmark
#   QUALITY=0 bench/run.sh  jobs ask "quality_report": false (no PSNR/SSIM receipts)
#   SKIP_OVERHEAD=1 / SKIP_UPLOAD=1   leave out the first / the last benchmark
#   CLIENT=per-job bench/run.sh       the small jobs' old client: a curl process per upload and per wait
# After the overhead and small-job benchmarks it prints the jobs' median `timings` by phase
# (the job view's, issue 18), so a ratio comes with where the time went.
# Prints medians and ratios; copy the summary into docs/benchmarks.md with the machine line.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
OUT=${OUT:-bench/out}
RUNS=${RUNS:-3}
SMALL_JOBS=${SMALL_JOBS:-50}
WORKERS=${WORKERS:-2}
UPLOAD_MIB=${UPLOAD_MIB:-2048}
PORT=${PORT:-18480}
QUALITY=${QUALITY:-}
# The spec's extra fields: receipts on by default (the service's default for short inputs).
EXTRA=""
[ "$QUALITY" = 0 ] && EXTRA=',"quality_report":false'
BASE="http://127.0.0.1:$PORT"
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

server_pid=""
start_server() {
  rm -rf "$OUT/data"
  "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$OUT/data" --workers "$1" --max-input-bytes $((4 << 30)) \
    2>"$OUT/server.log" &
  server_pid=$!
  for _ in $(seq 200); do curl -fs "$BASE/healthz" >/dev/null && return; sleep 0.05; done
  echo "server did not start" >&2; exit 1
}
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; server_pid=""; }
trap stop_server EXIT

submit() { # file preset -> id
  curl -fsS -F "spec={\"outputs\":[{\"preset\":\"$2\"}]$EXTRA}" -F "file=@$1" "$BASE/v1/jobs" |
    sed -E 's/^\{"id":"([^"]+)".*/\1/'
}
# Median seconds by phase over the jobs' views (ids on stdin), and the median submit->start
# (created_at -> started_at) and task wall (started_at -> finished_at).
phases() {
  python3 -c '
import json, sys, statistics, urllib.request
from datetime import datetime
base, by, queue, wall = sys.argv[1], {}, [], []
ts = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
for id in sys.stdin.read().split():
    j = json.load(urllib.request.urlopen(f"{base}/v1/jobs/{id}"))
    for p, s in (j.get("timings") or {}).items():
        by.setdefault(p, []).append(s)
    queue.append(ts(j["started_at"]) - ts(j["created_at"]))
    wall.append(ts(j["finished_at"]) - ts(j["started_at"]))
med = lambda v: statistics.median(v)
print("  phases (median s): " + ", ".join(f"{p} {med(v):.3f}" for p, v in sorted(by.items()))
      + f"; created->started {med(queue):.3f}, started->finished {med(wall):.3f}")
' "$BASE"
}

# Waits on the job's event stream (one connection; the server closes it at the end), as a client
# would. Polling the job view 20 times a second, as this script did before, cost the encode ~10 %
# of this 2-core machine (a curl process and a view per poll) and was counted as reelay's overhead.
wait_done() { # id
  local s
  s=$(curl -fsSN --max-time 7200 "$BASE/v1/jobs/$1/events" |
    sed -nE 's/^data: \{"id":"[^"]*","cluster":"[^"]*","status":"(succeeded|failed|cancelled)".*/\1/p' | head -1 || true)
  case "$s" in succeeded) return 0 ;; *) echo "job $1 ${s:-ended without a terminal event}" >&2; return 1 ;; esac
}

# The exact command reelay builds for mp4-720p on a 1920x1080 input with audio (see
# crates/media/src/argv.rs; `argv::tests` pin its flags).
ffmpeg_720p() { # in out
  ffmpeg -hide_banner -nostdin -y -loglevel error -protocol_whitelist file,pipe \
    -format_whitelist mov,matroska,avi,flv,mpegts,mpeg,ogg,wav,mp3,aac,flac,asf,ivf,m4v,h264,hevc \
    -f mov -i "file:$1" -map 0:0 -vf scale=1280:720,setsar=1 -c:v libx264 -preset fast -crf 23 \
    -maxrate 3500k -bufsize 7000k -pix_fmt yuv420p -map 0:1 -c:a aac -b:a 128k -map_metadata -1 \
    -map_chapters -1 -movflags +faststart -max_muxing_queue_size 1024 -f mp4 -progress pipe:1 -nostats "$2" >/dev/null
}
ffmpeg_360p() { # in out   (mp4-360p on a 320x240 input: no downscale needed)
  ffmpeg -hide_banner -nostdin -y -loglevel error -protocol_whitelist file,pipe \
    -format_whitelist mov,matroska,avi,flv,mpegts,mpeg,ogg,wav,mp3,aac,flac,asf,ivf,m4v,h264,hevc \
    -f mov -i "file:$1" -map 0:0 -vf scale=320:240,setsar=1 -c:v libx264 -preset fast -crf 23 \
    -maxrate 900k -bufsize 1800k -pix_fmt yuv420p -map 0:1 -c:a aac -b:a 128k -map_metadata -1 \
    -map_chapters -1 -movflags +faststart -max_muxing_queue_size 1024 -f mp4 -progress pipe:1 -nostats "$2" >/dev/null
}
export -f ffmpeg_360p

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -m), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"

# 1. Overhead on one long job.
if [ -z "${SKIP_OVERHEAD:-}" ]; then
big="$OUT/1080p20.mp4"
[ -f "$big" ] || ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=20 \
  -f lavfi -i sine=duration=20 -c:v libx264 -preset ultrafast -c:a aac -shortest "$big"
start_server 1
bare=(); svc=(); big_ids=""
for i in $(seq "$RUNS"); do
  t0=$(now); ffmpeg_720p "$big" "$OUT/bare.mp4"; t1=$(now); bare+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); id=$(submit "$big" mp4-720p); wait_done "$id"; t1=$(now); svc+=("$(echo "$t1 - $t0" | bc)")
  big_ids="$big_ids $id"
done
mb=$(printf '%s\n' "${bare[@]}" | median); ms=$(printf '%s\n' "${svc[@]}" | median)
echo "overhead: 20 s 1080p -> mp4-720p, median of $RUNS: bare ffmpeg ${mb}s, reelay submit->succeeded ${ms}s, ratio $(echo "scale=3; $ms / $mb" | bc) (target <= 1.03)"
echo "$big_ids" | phases
stop_server
fi

# 2. Many small jobs.
small="$OUT/small.mp4"
[ -f "$small" ] || ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 \
  -f lavfi -i sine=duration=2 -c:v libx264 -preset ultrafast -c:a aac -shortest "$small"
t0=$(now)
seq "$SMALL_JOBS" | xargs -P "$WORKERS" -I{} bash -c "ffmpeg_360p '$small' '$OUT/small-{}.mp4'"
t1=$(now); tb=$(echo "$t1 - $t0" | bc)
start_server "$WORKERS"
t0=$(now)
# The client is one process per phase, as a platform's uploader would be: ONE curl uploads the
# 50 files (8 at a time, `--parallel`) and ONE curl then follows the jobs' event streams in turn.
# Before, the script started a bash + curl + sed per submission and a curl + sed + head per wait:
# ~23 ms of CPU per job on this 2-core machine, charged to reelay. CLIENT=per-job keeps that
# client, to compare.
if [ "${CLIENT:-one}" = per-job ]; then
  export BASE small EXTRA
  submit_small() { # one "id seconds" per line (the submission's own time), even when 8 run at once
    out=$(curl -fsS -w ' %{time_total}' -F "spec={\"outputs\":[{\"preset\":\"mp4-360p\"}]$EXTRA}" -F "file=@$small" "$BASE/v1/jobs")
    echo "$(echo "$out" | sed -E 's/^\{"id":"([^"]+)".*/\1/') ${out##* }"
  }
  export -f submit_small
  submitted=$(seq "$SMALL_JOBS" | xargs -P 8 -I{} bash -c submit_small)
  ids=$(echo "$submitted" | awk '{print $1}')
  submitted=$(echo "$submitted" | awk '{print $2}')
  for id in $ids; do wait_done "$id"; done
else
  rm -rf "$OUT/sub"; mkdir -p "$OUT/sub"
  for i in $(seq "$SMALL_JOBS"); do
    [ "$i" -gt 1 ] && echo next
    printf 'url = "%s/v1/jobs"\nform = "spec={\\"outputs\\":[{\\"preset\\":\\"mp4-360p\\"}]%s}"\nform = "file=@%s"\noutput = "%s/sub/%s.json"\nwrite-out = "%s %%{http_code} %%{time_total}\\n"\n' \
      "$BASE" "${EXTRA//\"/\\\"}" "$small" "$OUT" "$i" "$i"
  done >"$OUT/sub/curl.cfg"
  stats=$(curl -sS --no-progress-meter --parallel --parallel-max 8 -K "$OUT/sub/curl.cfg")
  [ "$(echo "$stats" | awk '$2 == 202' | wc -l)" -eq "$SMALL_JOBS" ] || { echo "submissions failed: $stats" >&2; exit 1; }
  submitted=$(echo "$stats" | awk '{print $3}')
  ids=$(for i in $(seq "$SMALL_JOBS"); do sed -E 's/^\{"id":"([^"]+)".*/\1/' "$OUT/sub/$i.json"; echo; done)
  # One connection after another, in one process; each stream ends with its job.
  done_n=$(curl -fsSN --max-time 7200 $(for id in $ids; do echo "$BASE/v1/jobs/$id/events"; done) |
    grep -cE '^data: \{"id":"[^"]*","cluster":"[^"]*","status":"succeeded"' || true)
  [ "$done_n" -eq "$SMALL_JOBS" ] || { echo "only $done_n of $SMALL_JOBS small jobs succeeded" >&2; exit 1; }
fi
t1=$(now); ts=$(echo "$t1 - $t0" | bc)
echo "  submission (multipart upload + probe + store + create), median of $SMALL_JOBS: $(echo "$submitted" | median)s"
echo "small jobs: $SMALL_JOBS x 2 s 320x240 -> mp4-360p with $WORKERS workers: xargs -P $WORKERS ffmpeg ${tb}s, reelay ${ts}s, throughput ratio $(echo "scale=3; $tb / $ts" | bc) (target >= 0.90)"
echo "$ids" | phases
stop_server

# 3. Streaming upload: memory stays flat.
upload="$OUT/upload.mkv"
if [ -n "${SKIP_UPLOAD:-}" ]; then rm -rf "$OUT/data" "$OUT"/small-*.mp4; exit 0; fi
if [ ! -f "$upload" ]; then
  # Raw 320x240 video in Matroska: ~2.9 MB per second of video, so UPLOAD_MIB needs this many seconds.
  secs=$(( (UPLOAD_MIB << 20) / (320 * 240 * 3 / 2 * 25) + 1 ))
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=320x240:rate=25" -t "$secs" \
    -c:v rawvideo -pix_fmt yuv420p -f matroska "$upload"
fi
start_server 1
rss0=$(awk '/VmRSS/ {print $2}' /proc/$server_pid/status)
t0=$(now)
code=$(curl -s -o "$OUT/upload.json" -w '%{http_code}' -F 'spec={"outputs":[{"preset":"thumbnail"}]}' -F "file=@$upload" "$BASE/v1/jobs")
t1=$(now)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$server_pid/status)
id=$(sed -E 's/^\{"id":"([^"]+)".*/\1/' "$OUT/upload.json")
curl -fsS -X DELETE "$BASE/v1/jobs/$id" >/dev/null 2>&1 || true
stop_server
size_mb=$(echo "scale=1; $(stat -c %s "$upload") / 1048576" | bc)
echo "upload: ${size_mb} MiB multipart (HTTP $code), $(echo "scale=1; $size_mb / ($t1 - $t0)" | bc) MiB/s, server RSS before $((rss0 / 1024)) MiB, peak $((hwm / 1024)) MiB (target <= 100 MiB)"
rm -rf "$OUT/data" "$OUT"/small-*.mp4 "$OUT"/upload.ts
