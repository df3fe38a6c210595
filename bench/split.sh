#!/usr/bin/env bash
# Split-and-stitch vs one task, same input, same machine, same run:
#   two `reelay worker` processes, one slot each, pinned to cores 0 and 1 (taskset), run the job
#   with "split": "auto"; then the same job with "split": "off" on worker 1 alone.
# Reports wall-time speed-up, the ratio of total CPU time (utime+stime of the workers and their
# ffmpeg children, from /proc/<pid>/stat), when the job's first output could be played, and a
# list-scheduling projection for 8/32/128 slots from the measured task times.
#   bench/split.sh                                  the issue's run: 600 s 1080p30, hard to encode
#   SECONDS_IN=60 SIZE=1280x720 SEGMENT=15 bench/split.sh   a short run that shows the script works
#   GEN_ONLY=1 bench/split.sh                       only make (and keep) the input, e.g. while building
#   PARTS=split bench/split.sh                      only the split job (first playable, task times,
#                                                   projections; no unsplit reference: half the time)
# Projections: "as run" list-schedules the measured tasks; "fitted" schedules the ranges the
# plan makes on N slots (`reelay split-plan --slots N`: the cluster fits the range length to its
# live slots), each costing the measured encode seconds per input second of this run's ranges.
# The input is kept in bench/out/split-input-<seconds>-<size>.mp4 and reused: it is deterministic
# (lavfi sources, one encoder), so a kept copy is the same clip. The script refuses to report when
# the "split" job ran as one task (an input under twice the segment length does not split).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
[ -x "$BIN" ] || BIN=target/debug/reelay
OUT=${OUT:-bench/out/split}
SECONDS_IN=${SECONDS_IN:-600}
SIZE=${SIZE:-1920x1080}
SEGMENT=${SEGMENT:-30}
PARTS=${PARTS:-both}
case "$PARTS" in both|split) ;; *) echo "PARTS must be both or split, not $PARTS" >&2; exit 2 ;; esac
SPEC_OUTPUTS='[{"preset":"hls-abr"},{"preset":"mp4-720p"}]'
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
INPUT_DIR=$(dirname "$OUT")
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_http() { for _ in $(seq 400); do curl -fs "$1" >/dev/null && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
# CPU seconds of a process and its waited-for children (utime stime cutime cstime).
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15+$16+$17)/hz}' "/proc/$1/stat"; }

clip="$INPUT_DIR/split-input-$SECONDS_IN-$SIZE.mp4"
if ! [ -s "$clip" ]; then
  echo "generating ${SECONDS_IN}s ${SIZE} noisy input..." >&2
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=$SIZE:rate=30:duration=$SECONDS_IN" \
    -f lavfi -i "sine=frequency=440:duration=$SECONDS_IN" -vf "noise=alls=20:allf=t" \
    -c:v libx264 -preset ultrafast -g 60 -c:a aac -shortest -f mp4 "$clip.part"
  mv "$clip.part" "$clip"
fi
[ -z "${GEN_ONLY:-}" ] || { echo "input: $clip ($(du -h "$clip" | cut -f1))"; exit 0; }

cat >"$OUT/reelay.toml" <<TOML
[split]
segment_seconds = $SEGMENT
TOML
db="sqlite:$OUT/jobs.db"; store="file://$OUT/storage"; mkdir -p "$OUT/storage"
api=$(free_port)
"$BIN" api --config "$OUT/reelay.toml" --listen "127.0.0.1:$api" --data-dir "$OUT/api" --database-url "$db" --storage "$store" 2>"$OUT/api.log" & pids+=($!)
wait_http "http://127.0.0.1:$api/readyz"
BASE="http://127.0.0.1:$api"
workers=()
for core in 0 1; do
  wp=$(free_port)
  taskset -c "$core" "$BIN" worker --config "$OUT/reelay.toml" --listen "127.0.0.1:$wp" --data-dir "$OUT/w$core" \
    --workers 1 --database-url "$db" --storage "$store" 2>"$OUT/w$core.log" & pids+=($!); workers+=($!)
  wait_http "http://127.0.0.1:$wp/readyz"
done

run_job() { # split-field worker-pids... -> prints "wall cpu upload_end first_playable job_id"
  local split=$1; shift
  local c0=0 c1=0 p t0 t1 id s view first=""
  for p in "$@"; do c0=$(echo "$c0 + $(cpu "$p")" | bc); done
  t0=$(now)
  id=$(curl -fsS -F "spec={\"outputs\":$SPEC_OUTPUTS,\"split\":$split}" -F "file=@$clip" "$BASE/v1/jobs" | field id)
  local up=$(now)
  # Polled twice a second with curl alone (a python per poll would cost the run ~5 % of a core):
  # the job's own status is the view's first "status" field (tasks come after it).
  while :; do
    view=$(curl -fsS "$BASE/v1/jobs/$id")
    s=$(echo "$view" | grep -o '"status":"[a-z_]*"' | head -1 | cut -d'"' -f4)
    if [ -z "$first" ] && curl -fs -o /dev/null "$BASE/v1/jobs/$id/outputs/hls-abr/master.m3u8"; then first=$(now); fi
    case "$s" in succeeded) break ;; failed|cancelled) echo "job $id $s: $view" >&2; exit 1 ;; esac
    sleep 0.5
  done
  t1=$(now)
  [ -n "$first" ] || first=$t1
  for p in "$@"; do c1=$(echo "$c1 + $(cpu "$p")" | bc); done
  echo "$(echo "$t1 - $t0" | bc) $(echo "$c1 - $c0" | bc) $(echo "$up - $t0" | bc) $(echo "$first - $up" | bc) $id"
}

# A job's outputs as a user would see them: video frames and duration of every MP4 and of the
# HLS master (the tests check the joints; this says the bench measured whole jobs, split vs not).
check_outputs() {
  curl -fsS "$BASE/v1/jobs/$1" | python3 -c '
import json, sys
for o in json.load(sys.stdin)["outputs"]:
    if o["name"].endswith((".mp4", "master.m3u8")): print(o["name"], o["url"])' |
    while read -r name url; do
      echo "$1 $name $(ffprobe -v error -count_packets -select_streams v:0 \
        -show_entries stream=nb_read_packets:format=duration -of csv=p=0 "$BASE$url" | tr '\n' ' ')"
    done | tee -a "$OUT/outputs.txt" >&2
}

echo "split job on 2 workers..." >&2
read -r ws cs ups fps ids < <(run_job '"auto"' "${workers[@]}")
# A "split" job that ran as one task measures nothing: refuse to report it.
curl -fsS "$BASE/v1/jobs/$ids" >"$OUT/split-view.json"
python3 - "$OUT/split-view.json" <<'PY' || exit 1
import collections, json, sys
v = json.load(open(sys.argv[1]))
kinds = collections.Counter(t["kind"] for t in v["tasks"])
print(f"split job {v['id']}: tasks {dict(kinds)}", file=sys.stderr)
if kinds["encode_segment"] < 2 or kinds["stitch"] != 1:
    sys.exit(f"the split job did not split (tasks {dict(kinds)}): no result; use a longer input or SEGMENT")
PY
check_outputs "$ids"
# Its stored input and outputs go (a 600 s input is ~12 GB; the next job stores its own).
curl -fsS -o /dev/null -X DELETE "$BASE/v1/jobs/$ids" || echo "could not delete $ids" >&2
# The ranges the plan makes on N slots, as the api decided them (it saw 2 live slots).
for n in 2 8 32 128; do
  "$BIN" split-plan "$clip" --preset hls-abr --preset mp4-720p --segment-seconds "$SEGMENT" --slots "$n" --json >"$OUT/plan-$n.json"
done
wu=0 cu=0 fpu=0
if [ "$PARTS" = both ]; then
  # The unsplit job on worker 1 alone (worker 2 stopped).
  kill "${workers[1]}"; wait "${workers[1]}" 2>/dev/null || true
  echo "unsplit job on 1 worker..." >&2
  read -r wu cu upu fpu idu < <(run_job '"off"' "${workers[0]}")
  check_outputs "$idu"
fi

# Task times from the workers' logs ("task succeeded" with the task id and seconds).
python3 - "$OUT" "$ids" "$wu" "$ws" "$cs" "$cu" "$fps" "$fpu" "$SECONDS_IN" "$SIZE" "$SEGMENT" <<'PY'
import re, sys, glob, heapq, json
out, job, wu, ws, cs, cu, fps, fpu, secs, size, seg = sys.argv[1:]
wu, ws, cs, cu, fps, fpu = map(float, (wu, ws, cs, cu, fps, fpu))
ansi = re.compile(r'\x1b\[[0-9;]*m')
times = {}
for f in glob.glob(f"{out}/w*.log"):
    for line in open(f, errors="replace"):
        line = ansi.sub("", line)
        if "task succeeded" not in line or job not in line:
            continue
        t = re.search(r'task_id=(\S+)', line); s = re.search(r'seconds=([0-9.]+)', line)
        if t and s:
            times[t.group(1).split(".")[-1]] = float(s.group(1))
split = times.get("split", 0.0); stitch = times.get("stitch", 0.0)
middle = sorted((k, v) for k, v in times.items() if k not in ("split", "stitch"))
def makespan(n, audio, after_split):
    # Model, the job's task graph as the store releases it: at 0 the split takes a slot and
    # the encode_audio tasks (they depend on nothing: they read the input, not the pieces)
    # take the next ones; the ranges and whole-output tasks become ready when the split ends
    # and go, in claim order, each onto the slot that frees first (starting no earlier than
    # the split's end); the stitch starts when the last of them ends. Task times on one pinned
    # core; no storage or claim latency added.
    slots = [0.0] * n
    heapq.heapreplace(slots, split)
    for v in audio:
        t = heapq.heappop(slots); heapq.heappush(slots, t + v)
    for v in after_split:
        t = heapq.heappop(slots); heapq.heappush(slots, max(t, split) + v)
    return max(slots) + stitch
def ranges(n):
    return json.load(open(f"{out}/plan-{n}.json"))["ranges"]
def cost(r):
    # A range's input seconds and its pre-roll (split::plan::PREROLL_SECONDS, none for the first).
    return r["end"] - r["start"] + (0.0 if r["index"] == 0 else min(0.5, r["start"]))
run = ranges(2)
segs = [v for k, v in middle if k.startswith("seg-")]
audio = [v for k, v in middle if k.startswith("audio-")]
whole = [v for k, v in middle if not k.startswith(("seg-", "audio-"))]
if len(segs) != len(run):
    sys.exit(f"{len(segs)} ranges ran, the plan at 2 slots has {len(run)}: the projection would not be of this run")
rate = sum(segs) / sum(cost(r) for r in run)
serial = split + sum(v for _, v in middle) + stitch
print(f"input: {secs} s {size} 30 fps noisy, hls-abr + mp4-720p; split.segment_seconds {seg}")
if wu > 0:
    print(f"unsplit (1 worker, 1 core): wall {wu:.1f} s, CPU {cu:.1f} s")
print(f"split   (2 workers, 2 cores): wall {ws:.1f} s, CPU {cs:.1f} s; {len(run)} ranges of up to {json.load(open(f'{out}/plan-2.json'))['segment_seconds']} s, the first four {[round(r['end'] - r['start']) for r in run[:4]]} s")
if wu > 0:
    print(f"wall-time speed-up: {wu/ws:.2f}x; CPU time split/unsplit: {cs/cu:.3f}")
    print(f"first playable HLS (master.m3u8 answers) after the upload ended: split {fps:.1f} s (progressive), unsplit {fpu:.1f} s (at job end)")
else:
    print(f"first playable HLS (master.m3u8 answers) after the upload ended: {fps:.1f} s (no unsplit run: PARTS=split)")
print(f"tasks: {len(times)} measured; split {split:.1f} s, stitch {stitch:.1f} s, middle tasks sum {sum(v for _, v in middle):.1f} s, longest {max((v for _, v in middle), default=0):.1f} s; {rate:.2f} s of encode per input second of a range")
first = times.get("seg-00000")
if first is not None:
    print(f"range 0 ({run[0]['end'] - run[0]['start']:.0f} s of input): {first:.1f} s")
# The reference for the projections' speed-up: the unsplit wall time of this run, else (PARTS=split)
# the model's own one-slot time.
ref, ref_name = (wu, "unsplit") if wu > 0 else (serial, "the one-slot model")
for n in (2, 8, 32, 128):
    # Claim order after the split: range 0, then the other ranges by position, then whole outputs.
    m = makespan(n, audio, segs + whole)
    fitted = ranges(n)
    f = makespan(n, audio, [rate * cost(r) for r in fitted] + whole)
    print(f"projection {n:>3} slots: as run {m:.1f} s, {ref/m:.2f}x ({ref/m/n:.2f} N); "
          f"fitted ({len(fitted)} ranges) {f:.1f} s, {ref/f:.2f}x ({ref/f/n:.2f} N) vs {ref_name}")
PY
