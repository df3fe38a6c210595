#!/usr/bin/env bash
# What one small multipart submission costs, phase by phase (issue 18): wall time per phase
# from the server's `submission timed` log lines (medians), and CPU of the server process, of
# its children (the ffprobe per upload) and of the client (bash + curl), from /proc and times.
# `reelay api` with no workers, so nothing else of reelay's runs; SQLite and local storage,
# as bench/run.sh. Two passes: one submission at a time, then N at once (bench/run.sh's 8).
#   bench/submit_cost.sh            40 sequential, then 40 with 8 in flight
#   JOBS=100 PAR=8 bench/submit_cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/reelay}
OUT=${OUT:-bench/out}
JOBS=${JOBS:-40}
PAR=${PAR:-8}
PORT=${PORT:-18481}
BASE="http://127.0.0.1:$PORT"
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "build first: cargo build --release -p reelay" >&2; exit 1; }
small="$OUT/small.mp4"
[ -f "$small" ] || ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 \
  -f lavfi -i sine=duration=2 -c:v libx264 -preset ultrafast -c:a aac -shortest "$small"

tck=$(getconf CLK_TCK)
# utime stime cutime cstime of a process, in seconds
cpu_of() { awk -v t="$tck" '{print ($14)/t, ($15)/t, ($16)/t, ($17)/t}' "/proc/$1/stat"; }

server_pid=""
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true; server_pid=""; }
trap stop_server EXIT

submit_one() {
  curl -fsS -o /dev/null -w '%{time_total}\n' -F 'spec={"outputs":[{"preset":"mp4-360p"}]}' -F "file=@$small" "$BASE/v1/jobs"
}
export -f submit_one
export small BASE

pass() { # parallelism
  rm -rf "$OUT/sdata"
  "$BIN" --log-format json api --listen "127.0.0.1:$PORT" --data-dir "$OUT/sdata" 2>"$OUT/submit.log" &
  server_pid=$!
  for _ in $(seq 200); do curl -fs "$BASE/healthz" >/dev/null && break; sleep 0.05; done
  submit_one >/dev/null # warm: directories, the SQLite file, page cache
  read -r u0 s0 cu0 cs0 < <(cpu_of "$server_pid")
  t0=$(date +%s.%N)
  # bash's `times` after the pass: the children's (xargs, bash, curl) user and system seconds.
  client=$( { seq "$JOBS" | xargs -P "$1" -I{} bash -c submit_one >"$OUT/curl_times"; times; } | tail -1)
  t1=$(date +%s.%N)
  read -r u1 s1 cu1 cs1 < <(cpu_of "$server_pid")
  stop_server
  python3 - "$1" "$JOBS" "$OUT/submit.log" "$OUT/curl_times" "$t0" "$t1" \
    "$u0" "$s0" "$cu0" "$cs0" "$u1" "$s1" "$cu1" "$cs1" "$client" <<'EOF'
import json, re, statistics, sys
par, n, log, curl, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
u0, s0, cu0, cs0, u1, s1, cu1, cs1 = map(float, sys.argv[7:15])
def secs(s):  # bash `times`: 0m0.123s
    m = re.match(r"(\d+)m([\d.]+)s", s)
    return int(m.group(1)) * 60 + float(m.group(2))
cu, cs = (secs(x) for x in sys.argv[15].split())
phases = {}
for line in open(log):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    f = j.get("fields", {})
    if f.get("message") != "submission timed":
        continue
    for p in ("receive", "probe", "store_input", "store_extras", "insert"):
        phases.setdefault(p, []).append(float(f[p]))
phases = {p: v[1:] for p, v in phases.items()}  # the warm-up submission is not counted
wall = [float(x) for x in open(curl).read().split()]
ms = lambda v: f"{1000 * statistics.median(v):.1f}"
print(f"{n} submissions, {par} at a time, {t1 - t0:.2f} s ({n / (t1 - t0):.1f}/s)")
print("  wall per submission, median ms: client (curl time_total) " + ms(wall) + "; server phases: "
      + ", ".join(f"{p} {ms(v)}" for p, v in phases.items()))
print(f"  CPU per submission, ms: server process {1000 * (u1 - u0 + s1 - s0) / n:.1f} "
      f"(user {1000 * (u1 - u0) / n:.1f}, sys {1000 * (s1 - s0) / n:.1f}), "
      f"its children (ffprobe) {1000 * (cu1 - cu0 + cs1 - cs0) / n:.1f}, "
      f"client (bash + curl) {1000 * (cu + cs) / n:.1f}")
EOF
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
pass 1
pass "$PAR"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
rm -rf "$OUT/sdata" "$OUT/curl_times"
