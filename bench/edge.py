#!/usr/bin/env python3
"""Edge placement benchmark: where should a new job go when clusters differ in size?

Two clusters, aws (3 workers) and gcp (1 worker), get the same seeded stream of jobs at a fixed
rate that loads the 4 slots to ~80 %, through five front doors, for each of several seeds (one
seed's 40 jobs say little: how lucky a blind rotation gets depends on the order of long and short
jobs, so the summary pools every seed's jobs):

  1. nginx round robin        (edge.toml mode = "round_robin")
  2. nginx weighted 3:1       (mode = "weighted", weight = 3 / 1)
  3. nginx least_conn         (mode = "least_conn")
  4. reelay placement         (mode = "reelay")
  5. one shared queue         (a single `reelay serve --workers 4`, no edge: the ideal reference)

Every cluster runs with `[tools] realtime_input = true`, so ffmpeg reads its input with `-re` and
a job lasts about its clip's duration whatever the CPU contention. Per front door: mean and p95
wait (started_at - created_at), makespan (last finished_at - first created_at), the aws/gcp split.

Then, with the reelay edge: data-plane overhead (GET /v1/jobs/{id} direct vs through nginx) and
failover (SIGKILL aws, submit every 100 ms, time to the first 202 and the first 202 on gcp),
with the edge's default [health] settings.

Work stealing (`--parts stealing`): the same seeded streams with the edge's `[stealing]` on vs
off (a skewed load with two of aws's workers killed, one long split film, the balanced
placement stream); see bench/edge_stealing.py.

Python 3 standard library only. Every process started here runs in its own process group and is
stopped in `finally` (nginx via the edge's pid file, ffmpeg children via /proc), and the script
verifies that none is left.
"""

import argparse
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PRESET = "mp4-360p"
TERMINAL = {"succeeded", "failed", "cancelled"}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get_json(url, timeout=5.0, token=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_until(what, timeout, fn, every=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - anything means "not yet"
            last = e
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last})")


def parse_ts(s):
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pctl(values, q):
    """Linear-interpolated percentile (q in 0..100)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --------------------------------------------------------------------------- processes


def proc_table():
    """pid -> (ppid, pgid) for every process we can see."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        out[int(name)] = (int(rest[1]), int(rest[2]))
    return out


def state_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rfind(")") + 2]
    except OSError:
        return None


def live(pid):
    st = state_of(pid)
    return st is not None and st != "Z"


def family(roots):
    """Every live process descended from `roots` or in one of their process groups."""
    table = proc_table()
    pgids = set()
    found = set()
    frontier = [r for r in roots if r in table]
    for r in frontier:
        pgids.add(table[r][1])
    while frontier:
        p = frontier.pop()
        if p in found:
            continue
        found.add(p)
        frontier.extend(c for c, (pp, _) in table.items() if pp == p and c not in found)
    found |= {p for p, (_, g) in table.items() if g in pgids}
    return {p for p in found if live(p)}


class Procs:
    """Processes started by this benchmark; stopped group by group, descendants included."""

    def __init__(self, bin_path, tmp):
        self.bin = bin_path
        self.tmp = tmp
        self.items = []  # dicts: name, popen, kind, nginx_pid
        self.seen_pgids = set()

    def spawn(self, name, args, logfile, kind, prefix=(), program=None):
        """`prefix`: a command that execs the program in place (taskset, ip netns exec), so the
        pid is still the program's."""
        f = open(logfile, "ab")
        p = subprocess.Popen(
            [*prefix, program or self.bin, *args],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
        f.close()
        item = {"name": name, "popen": p, "kind": kind, "nginx_pid": None}
        self.items.append(item)
        self.seen_pgids.add(p.pid)
        return item

    def note_nginx(self, item, work_dir):
        try:
            with open(os.path.join(work_dir, "nginx.pid")) as f:
                pid = int(f.read().strip())
            item["nginx_pid"] = pid
            self.seen_pgids.add(os.getpgid(pid))
        except (OSError, ValueError):
            pass

    def kill9(self, item):
        """SIGKILL a process and everything it started (ffmpeg runs in its own group)."""
        roots = [item["popen"].pid] + ([item["nginx_pid"]] if item["nginx_pid"] else [])
        fam = family(roots)
        for p in fam:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        item["popen"].wait()

    def stop(self, item, grace=15.0):
        p = item["popen"]
        roots = [p.pid] + ([item["nginx_pid"]] if item["nginx_pid"] else [])
        fam = family(roots) if p.poll() is None or item["nginx_pid"] else set()
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left (the process itself, nginx, orphaned ffmpeg children): SIGKILL.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(live(x) for x in fam):
            time.sleep(0.05)
        for x in fam | family(roots):
            if live(x):
                try:
                    os.kill(x, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if p.poll() is None:
            p.wait(timeout=5)
        if item in self.items:
            self.items.remove(item)

    def stop_all(self):
        # Edges first (they stop nginx), then clusters.
        for kind in ("edge", "cluster"):
            for item in [i for i in self.items if i["kind"] == kind]:
                try:
                    self.stop(item)
                except Exception as e:  # noqa: BLE001
                    log(f"warning: stopping {item['name']}: {e}")

    def leftovers(self):
        table = proc_table()
        left = {p for p, (_, g) in table.items() if g in self.seen_pgids and live(p)}
        # nginx workers/masters or reelay processes whose command line names our temp dir.
        for p in table:
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.tmp in cmd and live(p) and p != os.getpid():
                left.add(p)
        return left


# --------------------------------------------------------------------------- HTTP client


def multipart(spec, data, filename):
    boundary = "reelaybench" + os.urandom(8).hex()
    b = boundary.encode()
    body = (
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="spec"\r\n'
        b"Content-Type: application/json\r\n\r\n" + json.dumps(spec).encode() + b"\r\n"
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename.encode() + b'"\r\n'
        b"Content-Type: video/mp4\r\n\r\n" + data + b"\r\n"
        b"--" + b + b"--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary}"


def submit(base, body, ctype, timeout=120.0, token=None):
    """POST /v1/jobs; returns (status, parsed body or text)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", "/v1/jobs", body=body, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode(errors="replace")[:200]
    finally:
        conn.close()


# --------------------------------------------------------------------------- the fixtures


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="reelay-edge-bench-")
        # nginx workers run as nobody when the edge runs as root: they must reach work_dir.
        os.chmod(self.tmp, 0o755)
        self.procs = Procs(os.path.abspath(args.bin), self.tmp)
        self.config = os.path.join(self.tmp, "reelay.toml")
        with open(self.config, "w") as f:
            # Bench-only: ffmpeg reads inputs at native rate (-re), so a job lasts about its
            # clip's duration regardless of CPU contention.
            f.write("[tools]\nrealtime_input = true\n")
        self.run_no = 0

    # identity ---------------------------------------------------------------
    def identity(self):
        """An issuer key, its trusted.keys and one signed token (read + submit) for the runs
        that check tokens like a deployment does: (trusted keys path, token)."""
        keys = os.path.join(self.tmp, "trusted.keys")
        issuer = os.path.join(self.tmp, "issuer.key")
        if not os.path.exists(keys):
            line = subprocess.run(
                [self.procs.bin, "token", "keygen", "--id", "bench", "--out", issuer],
                capture_output=True, text=True, check=True,
            ).stdout
            with open(keys, "w") as f:
                f.write(line)
            self.token = subprocess.run(
                [self.procs.bin, "token", "create", "--issuer-key", issuer, "--scope", "read",
                 "--scope", "submit", "--owner", "bench"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        return keys, self.token

    # clusters ---------------------------------------------------------------
    def cluster(self, name, workers, keys=None, host="127.0.0.1", prefix=(), extra=(), config=None,
                role="serve", data=None, tag=""):
        """`keys`: trusted keys, so /v1 needs a token (no rate limit per token: a benchmark
        client is one token); otherwise open mode, loopback only. `role`: serve, or api/worker
        processes of one cluster sharing `data` (one SQLite store and local storage); `tag`
        tells apart the processes of one cluster (log file, name)."""
        port = free_port()
        data = data or os.path.join(self.tmp, f"run{self.run_no}", f"{name}-data")
        os.makedirs(data, exist_ok=True)
        if keys:
            access = ["--trusted-keys", keys, "--rate-limit-per-minute", "0"]
        else:
            # Behind the edge every request is forwarded: open only by explicit opt-in.
            access = ["--allow-anonymous"]
        item = self.procs.spawn(
            f"cluster {name}{tag}",
            [
                role,
                "--config", config or self.config,
                "--listen", f"{host}:{port}",
                "--data-dir", data,
                "--cluster", name,
                "--workers", str(workers),
                "--shutdown-grace-seconds", "1",
                *access,
                *extra,
            ],
            os.path.join(self.tmp, f"run{self.run_no}", f"{name}{tag}.log"),
            "cluster",
            prefix=prefix,
        )
        item["base"] = f"http://{host}:{port}"
        item["cluster"] = name
        wait_until(
            f"cluster {name} ready",
            60,
            lambda: item["popen"].poll() is None
            and urllib.request.urlopen(item["base"] + "/readyz", timeout=2).status == 200,
        )
        return item

    # edges ------------------------------------------------------------------
    def edge(self, mode, clusters, extra="", tag="", keys=None, prefix=(), port=None):
        """`port`: the listen port when the clusters were told the edge's address before it
        started (`[steal] edge`); a free one otherwise."""
        d = os.path.join(self.tmp, f"run{self.run_no}", f"edge{tag}")
        os.makedirs(d, exist_ok=True)
        port, control = port or free_port(), free_port()
        work = os.path.join(d, "work")
        text = (
            f'listen = "127.0.0.1:{port}"\n'
            f'control_listen = "127.0.0.1:{control}"\n'
            f'work_dir = "{work}"\n'
            f'mode = "{mode}"\n{extra}\n'
        )
        if keys:
            text += f'\n[auth]\ntrusted_keys = "{keys}"\n'
        for c, weight in clusters:
            text += f'\n[[clusters]]\nname = "{c["cluster"]}"\nurl = "{c["base"]}"\nweight = {weight}\n'
        cfg = os.path.join(d, "edge.toml")
        with open(cfg, "w") as f:
            f.write(text)
        item = self.procs.spawn(
            f"edge {mode}{tag}", ["edge", "--config", cfg], os.path.join(d, "edge.log"), "edge",
            prefix=prefix,
        )
        item["listen"] = f"127.0.0.1:{port}"
        item["base"] = f"http://127.0.0.1:{port}"
        item["control"] = f"http://127.0.0.1:{control}"
        item["work"] = work

        def ready():
            if item["popen"].poll() is not None:
                raise RuntimeError(f"reelay edge exited with {item['popen'].returncode}")
            s = get_json(item["base"] + "/edge/status", timeout=2)
            return all(c["health"] == "up" and c["load"] for c in s["clusters"]) and s

        wait_until(f"edge {mode} with every cluster up", 60, ready, every=0.2)
        self.procs.note_nginx(item, work)
        return item

    def teardown_run(self):
        self.procs.stop_all()

    def close(self):
        try:
            self.procs.stop_all()
        finally:
            left = self.procs.leftovers()
            if left:
                log(f"WARNING: processes left after cleanup: {sorted(left)}; killing them")
                for p in left:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.5)
                left = self.procs.leftovers()
            self.leftover_count = len(left)
            if self.args.keep_dir:
                log(f"kept {self.tmp}")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- clips and schedule


def make_clips(tmp, durations):
    clips = {}
    for d in sorted(set(durations)):
        path = os.path.join(tmp, f"clip-{d}s.mp4")
        subprocess.run(
            [
                "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                f"testsrc2=size=160x120:rate=25:duration={d}", "-c:v", "libx264",
                "-preset", "ultrafast", path,
            ],
            check=True,
        )
        with open(path, "rb") as f:
            clips[d] = f.read()
    return clips


def simulate_fcfs(durations, arrivals, slots, clusters=None, slots_per_cluster=None):
    """Waits when job i goes to cluster clusters[i] and each cluster is a FCFS queue over its
    slots, with nominal durations. By default: one shared queue with `slots` servers."""
    slots_per_cluster = slots_per_cluster or [slots]
    clusters = clusters or [0] * len(durations)
    free = [[0.0] * n for n in slots_per_cluster]
    waits = []
    for d, a, c in zip(durations, arrivals, clusters):
        f = free[c]
        i = min(range(len(f)), key=lambda k: f[k])
        start = max(a, f[i])
        waits.append(start - a)
        f[i] = start + d
    return waits


def smooth_weighted_order(weights, n):
    """The order nginx's smooth weighted round robin picks servers in (indexes into weights)."""
    current = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(n):
        for k, w in enumerate(weights):
            current[k] += w
        best = max(range(len(weights)), key=lambda k: current[k])
        current[best] -= total
        out.append(best)
    return out


def simulate_weighted(durations, arrivals, slots_per_cluster=(3, 1)):
    """Waits under nginx weighted round robin (weights = slots), each cluster a FCFS queue."""
    order = smooth_weighted_order(list(slots_per_cluster), len(durations))
    return simulate_fcfs(durations, arrivals, None, order, list(slots_per_cluster))


def stream(seed, jobs, lo, hi, load, slots=4):
    rng = random.Random(seed)
    durations = [rng.randint(lo, hi) for _ in range(jobs)]
    interval = sum(durations) / (jobs * load * slots)
    return durations, [i * interval for i in range(jobs)], interval


def simulate_many(args):
    """How weighted round robin and a perfect shared queue compare over many seeds (no processes)."""
    rows = []
    for seed in range(1, args.simulate + 1):
        d, a, _ = stream(seed, args.jobs, args.min_seconds, args.max_seconds, args.load)
        w = statistics.fmean(simulate_weighted(d, a))
        sh = statistics.fmean(simulate_fcfs(d, a, 4))
        rows.append((seed, w, sh))
    ratios = sorted(sh / w for _, w, sh in rows if w > 0)
    print(f"{len(rows)} seeds of {args.jobs} jobs, {args.min_seconds}-{args.max_seconds} s, load {args.load:.0%}:")
    print(f"  simulated mean wait, weighted RR: median {statistics.median(r[1] for r in rows):.2f} s; "
          f"shared queue: median {statistics.median(r[2] for r in rows):.2f} s")
    q = lambda p: ratios[min(len(ratios) - 1, int(p * len(ratios)))]  # noqa: E731
    print(f"  shared / weighted: 10th pct {q(0.1):.2f}, median {q(0.5):.2f}, 90th pct {q(0.9):.2f}; "
          f"share of seeds where it is <= 0.60: {sum(r <= 0.6 for r in ratios) / len(ratios):.0%}")
    for seed, w, sh in rows[:10]:
        print(f"  seed {seed}: weighted {w:.2f} s, shared {sh:.2f} s, ratio {sh / w if w else float('nan'):.2f}")


# --------------------------------------------------------------------------- the placement run


def run_stream(base, jobs, arrivals, clips, label, token=None):
    """Submits every job at its arrival time (one thread each), then waits for all to end."""
    res, ids, rejected = submit_stream(base, jobs, arrivals, clips, token)
    log(f"{label}: {len(ids)}/{len(jobs)} accepted, waiting for the jobs to finish")
    views = await_jobs(base, ids, sum(jobs) + 300, token)
    return res, ids, views, rejected


def submit_stream(base, jobs, arrivals, clips, token=None):
    """Submits every job at its arrival time (one thread each); returns once every submission
    was answered: (per-job results, index -> job id, rejected)."""
    spec = {"outputs": [{"preset": PRESET}]}
    bodies = {d: multipart(spec, data, f"clip-{d}s.mp4") for d, data in clips.items()}
    n = len(jobs)
    res = [None] * n
    threads = []

    def one(i, t_sched):
        body, ctype = bodies[jobs[i]]
        t_send = time.monotonic()
        try:
            status, js = submit(base, body, ctype, token=token)
        except Exception as e:  # noqa: BLE001
            status, js = None, repr(e)
        res[i] = {
            "status": status,
            "body": js,
            "late_s": t_send - t_sched,
            "submit_s": time.monotonic() - t_send,
        }

    t0 = time.monotonic() + 0.5
    for i in range(n):
        target = t0 + arrivals[i]
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, args=(i, target), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout=180)
    ids = {}
    rejected = []
    for i, r in enumerate(res):
        if r and r["status"] == 202 and isinstance(r["body"], dict):
            ids[i] = r["body"]["id"]
        else:
            rejected.append((i, r and r["status"], r and str(r["body"])[:160]))
    return res, ids, rejected


def await_jobs(base, ids, timeout, token=None):
    """Polls every job until it ended (or `timeout` s passed): index -> final job view."""
    views = {}
    deadline = time.monotonic() + timeout
    while len(views) < len(ids) and time.monotonic() < deadline:
        for i, jid in ids.items():
            if i in views:
                continue
            try:
                v = get_json(f"{base}/v1/jobs/{jid}", timeout=10, token=token)
            except Exception:  # noqa: BLE001
                continue
            if v["status"] in TERMINAL:
                views[i] = v
        if len(views) < len(ids):
            time.sleep(1.0)
    return views


def summarize(label, jobs, res, ids, views, rejected):
    waits, runs, over, clusters, by_cluster = [], [], [], {}, {}
    created, finished = [], []
    failed = []
    for i, v in views.items():
        c = v["id"].split(".", 1)[0]
        clusters[c] = clusters.get(c, 0) + 1
        if v["status"] != "succeeded" or not v.get("started_at"):
            failed.append((v["id"], v["status"], v.get("error")))
        c_at = parse_ts(v["created_at"])
        created.append(c_at)
        if v.get("started_at"):
            s_at = parse_ts(v["started_at"])
            waits.append(s_at - c_at)
            by_cluster.setdefault(c, []).append(s_at - c_at)
            if v.get("finished_at"):
                f_at = parse_ts(v["finished_at"])
                runs.append(f_at - s_at)
                over.append((f_at - s_at) - jobs[i])
        if v.get("finished_at"):
            finished.append(parse_ts(v["finished_at"]))
    late = [r["late_s"] for r in res if r]
    subs = [r["submit_s"] for r in res if r]
    return {
        "label": label,
        "accepted": len(ids),
        "finished": len(views),
        "rejected": rejected,
        "failed": failed,
        "mean_wait": statistics.fmean(waits) if waits else float("nan"),
        "p95_wait": pctl(waits, 95),
        "max_wait": max(waits) if waits else float("nan"),
        "max_wait": max(waits) if waits else float("nan"),
        "makespan": (max(finished) - min(created)) if finished else float("nan"),
        "split": clusters,
        "mean_wait_by_cluster": {c: statistics.fmean(w) for c, w in by_cluster.items()},
        "mean_run_over_nominal": statistics.fmean(over) if over else float("nan"),
        "max_late_s": max(late) if late else float("nan"),
        "median_submit_s": statistics.median(subs) if subs else float("nan"),
        "waits": waits,
    }


# --------------------------------------------------------------------------- failover


def failover(b, aws, gcp, edge, clip, period, duration):
    spec = {"outputs": [{"preset": PRESET}]}
    body, ctype = multipart(spec, clip, "small.mp4")
    s = get_json(edge["base"] + "/edge/status")
    assert all(c["health"] == "up" for c in s["clusters"]), s
    results = []
    lock = threading.Lock()
    down_at = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                st = get_json(edge["control"] + "/edge/status", timeout=1)
                for c in st["clusters"]:
                    if c["name"] == "aws" and c["health"] == "down" and "aws" not in down_at:
                        down_at["aws"] = time.monotonic() - t_kill
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)

    def one(t_sched):
        t_send = time.monotonic()
        try:
            status, js = submit(edge["base"], body, ctype, timeout=30)
        except Exception as e:  # noqa: BLE001
            status, js = None, repr(e)
        t_ans = time.monotonic()
        with lock:
            results.append(
                {
                    "sent": t_send - t_kill,
                    "answered": t_ans - t_kill,
                    "status": status,
                    "cluster": js["id"].split(".", 1)[0] if status == 202 and isinstance(js, dict) else None,
                    "body": js if status != 202 else None,
                }
            )

    t_kill = time.monotonic()
    b.procs.kill9(aws)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = []
    k = 0
    while True:
        target = t_kill + k * period
        if target - t_kill > duration:
            break
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one, args=(target,), daemon=True)
        t.start()
        threads.append(t)
        k += 1
    for t in threads:
        t.join(timeout=40)
    # Give the watcher a little more time if the edge has not marked aws down yet.
    end = time.monotonic() + 10
    while "aws" not in down_at and time.monotonic() < end:
        time.sleep(0.1)
    stop.set()
    results.sort(key=lambda r: r["sent"])
    ok = [r for r in results if r["status"] == 202]
    first = min(ok, key=lambda r: r["answered"]) if ok else None
    first_gcp = min((r for r in ok if r["cluster"] == "gcp"), key=lambda r: r["answered"], default=None)
    bad = [r for r in results if r["status"] != 202]
    return {
        "submitted": len(results),
        "accepted": len(ok),
        "first_accepted_s": first and first["answered"],
        "first_accepted_sent_s": first and first["sent"],
        "first_gcp_s": first_gcp and first_gcp["answered"],
        "first_gcp_sent_s": first_gcp and first_gcp["sent"],
        "aws_marked_down_s": down_at.get("aws"),
        "non_202": [(round(r["sent"], 2), r["status"], str(r["body"])[:120]) for r in bad],
        "on_aws": sum(1 for r in ok if r["cluster"] == "aws"),
    }


# --------------------------------------------------------------------------- main


def fmt(x, nd=1):
    return "—" if x is None or x != x else f"{x:.{nd}f}"


def main():
    import edge_probes  # here, not at the top: it imports this module's helpers
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/reelay")
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--min-seconds", type=int, default=2)
    ap.add_argument("--max-seconds", type=int, default=15)
    ap.add_argument("--load", type=float, default=0.8, help="offered load / capacity (4 slots)")
    ap.add_argument(
        "--seeds",
        default="1,2,3,4,5",
        help="comma-separated; each seed is its own stream of --jobs jobs through every door",
    )
    ap.add_argument("--seed", dest="seeds", help="one seed (same as --seeds N)")
    ap.add_argument("--doors", default="weighted,reelay,shared,round_robin,least_conn")
    ap.add_argument(
        "--parts",
        default="placement,dataplane,silent",
        help="placement (the front doors, then the SIGKILL failover probe), dataplane (wrk), "
        "silent (dropped packets; root), see bench/edge_probes.py; stealing (skewed, one long "
        "film, balanced: with vs without the edge's [stealing]), see bench/edge_stealing.py",
    )
    st = ap.add_argument_group("stealing (--parts stealing; see bench/edge_stealing.py)")
    st.add_argument("--steal-parts", default="skewed,film,balanced")
    st.add_argument("--steal-jobs", type=int, default=24, help="jobs per skewed stream")
    st.add_argument(
        "--steal-load", type=float, default=8.0,
        help="skewed: offered load / capacity of 4 slots while the stream arrives (8: a burst)",
    )
    st.add_argument("--steal-min-saved", type=float, default=2.0, help="edge [stealing] min_seconds_saved")
    st.add_argument(
        "--steal-min-wait", type=float, default=10.0,
        help="edge [stealing] min_wait_seconds (patience: a head moves once its wait so far plus "
        "its wait to come reaches this)",
    )
    st.add_argument("--steal-offer-after", type=float, default=1.0, help="clusters' [steal] offer_after_seconds")
    st.add_argument("--steal-poll-ms", type=int, default=250, help="clusters' [steal] poll_ms")
    st.add_argument("--steal-lease", type=int, default=5, help="clusters' --lease-seconds")
    st.add_argument("--steal-egress-usd-per-gb", type=float, default=0.0, help="edge [stealing] egress_usd_per_gb")
    st.add_argument("--steal-trace", action="store_true", help="log the edge's view of both clusters every 0.5 s")
    st.add_argument("--film-seconds", type=int, default=120)
    st.add_argument("--film-size", default="1280x720")
    st.add_argument("--film-bitrate", default="2M", help="the generated film's video bitrate")
    st.add_argument(
        "--film-segment", type=int, default=15,
        help="split segment_seconds (15 s of 720p: ~8 s of x264 on one core, so a piece's wait "
        "at home exceeds min_seconds_saved)",
    )
    st.add_argument("--film-preset", default="mp4-720p")
    st.add_argument("--film-runs", type=int, default=2)
    st.add_argument("--film-pin", type=int, default=1, help="1: aws's worker on CPU 0, gcp on CPU 1 (taskset)")
    ap.add_argument("--skip-probes", action="store_true", help="no failover probe after the reelay door")
    ap.add_argument(
        "--simulate",
        type=int,
        metavar="N",
        help="only simulate weighted round robin vs a shared queue over seeds 1..N, then exit",
    )
    ap.add_argument("--dp-conns", type=int, default=8, help="wrk connections for throughput")
    ap.add_argument("--dp-seconds", type=int, default=4, help="per throughput run")
    ap.add_argument("--dp-latency-seconds", type=int, default=2, help="per one-connection latency run")
    ap.add_argument("--dp-rounds", type=int, default=3)
    ap.add_argument("--dp-pin", default="0/1", help="cluster CPUs / [edge CPUs /] wrk CPUs for taskset (0/1: edge with the clusters; 0/1/1: the edge on its own CPU, shared with wrk), or none")
    ap.add_argument(
        "--dp-variants",
        default="edge-default",
        help="extra targets besides direct and edge: edge-default (client_keepalive off) and "
        "ablations of the edge's nginx.conf (edge_probes.ABLATIONS), comma-separated",
    )
    ap.add_argument("--silent-outage", type=float, default=5.0, help="seconds aws's packets are dropped")
    ap.add_argument("--silent-client-timeout", type=float, default=10.0)
    ap.add_argument("--failover-seconds", type=float, default=6.0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep-dir", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args()
    if args.simulate:
        simulate_many(args)
        return 0
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"{args.bin} not found: cargo build --release -p reelay")
    for tool in ("ffmpeg", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    parts = set(args.parts.split(","))
    if parts - {"placement", "dataplane", "silent", "stealing"}:
        sys.exit(f"unknown --parts {args.parts!r}")
    if "dataplane" in parts:
        edge_probes.need_wrk()

    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so `finally` stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.monotonic()
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    slots = 4
    streams = []
    for seed in seeds if "placement" in parts else []:
        jobs, arrivals, interval = stream(seed, args.jobs, args.min_seconds, args.max_seconds, args.load, slots)
        sim = simulate_fcfs(jobs, arrivals, slots)
        sim_w = simulate_weighted(jobs, arrivals)
        log(
            f"seed {seed}: {args.jobs} jobs, durations {args.min_seconds}-{args.max_seconds} s "
            f"(sum {sum(jobs)} s, mean {statistics.fmean(jobs):.2f} s), one every {interval:.3f} s "
            f"(load {args.load:.0%} of {slots} slots); simulated perfect shared FCFS queue: mean wait "
            f"{statistics.fmean(sim):.2f} s, p95 {pctl(sim, 95):.2f} s; weighted round robin "
            f"{statistics.fmean(sim_w):.2f} s"
        )
        log(f"durations in order: {jobs}")
        streams.append(
            {
                "seed": seed,
                "jobs": jobs,
                "arrivals": arrivals,
                "interval_s": interval,
                "sim_shared_mean_wait": statistics.fmean(sim),
                "sim_shared_p95_wait": pctl(sim, 95),
                "sim_weighted_mean_wait": statistics.fmean(sim_w),
                "doors": {},
            }
        )

    b = Bench(args)
    results = {"seeds": streams}
    try:
        all_durations = sorted({d for st in streams for d in st["jobs"]} | {1})
        clips = make_clips(b.tmp, all_durations)
        small = clips[1]
        doors = args.doors.split(",")
        probed = False
        for st in streams:
            jobs, arrivals = st["jobs"], st["arrivals"]
            stream_clips = {d: clips[d] for d in set(jobs)}
            for door in doors:
                b.run_no += 1
                if door == "shared":
                    one = b.cluster("shared", 4)
                    base = one["base"]
                    edge = None
                else:
                    aws = b.cluster("aws", 3)
                    gcp = b.cluster("gcp", 1)
                    edge = b.edge(door, [(aws, 3), (gcp, 1)])
                    base = edge["base"]
                log(f"run {b.run_no}: seed {st['seed']}, {door} at {base}")
                res, ids, views, rejected = run_stream(base, jobs, arrivals, stream_clips, door)
                summary = summarize(door, jobs, res, ids, views, rejected)
                st["doors"][door] = summary
                log(
                    f"{door}: mean wait {fmt(summary['mean_wait'], 2)} s, p95 {fmt(summary['p95_wait'], 2)} s, "
                    f"makespan {fmt(summary['makespan'])} s, split {summary['split']}, "
                    f"run - nominal {fmt(summary['mean_run_over_nominal'], 2)} s, "
                    f"schedule late by <= {fmt(summary['max_late_s'], 3)} s"
                )
                if rejected or summary["failed"]:
                    log(f"  rejected: {rejected}  failed: {summary['failed']}")
                if door == "reelay" and not probed and not args.skip_probes:
                    probed = True
                    # Failover on this edge while its clusters are idle (once).
                    log("failover: SIGKILL aws, submit every 100 ms through the edge")
                    fo = failover(b, aws, gcp, edge, small, 0.1, args.failover_seconds)
                    results["failover"] = fo
                    log(f"  {fo}")
                b.teardown_run()
        if "dataplane" in parts:
            log("data plane: a status read and a small download, direct vs through the edge (wrk)")
            results["data_plane"] = edge_probes.data_plane(b, args, small)
        if "silent" in parts:
            log("silent failure: aws's packets dropped while submissions leave every 100 ms")
            results["silent"] = edge_probes.silent_failure(b, args, small)
        if "stealing" in parts:
            import edge_stealing

            def clips_for(durations):
                missing = sorted(set(durations) - set(clips))
                clips.update(make_clips(b.tmp, missing) if missing else {})
                return clips

            log("work stealing: skewed, one long film, balanced; with vs without [stealing]")
            results["stealing"] = edge_stealing.run(b, args, clips_for)
    finally:
        b.close()
    results["leftover_processes"] = b.leftover_count
    results["run_seconds"] = time.monotonic() - t_start
    report(results, args)
    if args.json:
        for st in results["seeds"]:
            for summary in st["doors"].values():
                summary.pop("waits", None)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if b.leftover_count == 0 else 1


NAMES = {
    "round_robin": "nginx round robin",
    "weighted": "nginx weighted 3:1",
    "least_conn": "nginx least_conn",
    "reelay": "reelay placement",
    "shared": "one shared queue (4 workers)",
}


def door_row(name, s):
    shared = name == "shared"
    split = "/".join(str(s["split"].get(c, 0)) for c in ("aws", "gcp")) if not shared else "—"
    wc = s["mean_wait_by_cluster"]
    wsplit = "/".join(fmt(wc.get(c), 2) for c in ("aws", "gcp")) if not shared else "—"
    bad = len(s["rejected"]) + len(s["failed"]) + (s["accepted"] - s["finished"])
    return (
        f"| {NAMES.get(name, name)} | {fmt(s['mean_wait'], 2)} | {fmt(s['p95_wait'], 2)} | "
        f"{fmt(s['max_wait'], 2)} | {fmt(s['makespan'])} | {split} | {wsplit} | {bad} |"
    )


def report(r, args):
    import edge_probes

    streams = r["seeds"]
    if streams:
        report_placement(r, args)
    if "data_plane" in r:
        edge_probes.report_data_plane(r["data_plane"])
    if "silent" in r:
        edge_probes.report_silent(r["silent"])
    if "stealing" in r:
        import edge_stealing

        edge_stealing.report(r["stealing"])
    print()
    print(f"run time {r['run_seconds']:.0f} s; processes left behind: {r['leftover_processes']}")


def report_placement(r, args):
    streams = r["seeds"]
    print()
    for st in streams:
        print(
            f"## Seed {st['seed']} ({len(st['jobs'])} jobs, {st['interval_s']:.3f} s apart, "
            f"load {args.load:.0%} of 4 slots; nproc {os.cpu_count()})"
        )
        print()
        print("| front door | mean wait s | p95 wait s | max wait s | makespan s | jobs aws/gcp | mean wait aws/gcp s | not ok |")
        print("|---|---|---|---|---|---|---|---|")
        for k, s in st["doors"].items():
            print(door_row(k, s))
        print(
            f"| (simulated perfect shared FCFS, nominal durations) | {st['sim_shared_mean_wait']:.2f} | "
            f"{st['sim_shared_p95_wait']:.2f} | | | | | |"
        )
        print(f"| (simulated weighted round robin, nominal durations) | {st['sim_weighted_mean_wait']:.2f} | | | | | | |")
        print()
    # Pooled over every seed: each door saw the same jobs in the same order.
    doors = [k for k in streams[0]["doors"]]
    pooled = {}
    for k in doors:
        waits = [w for st in streams if k in st["doors"] for w in st["doors"][k]["waits"]]
        per_seed = [st["doors"][k]["mean_wait"] for st in streams if k in st["doors"]]
        pooled[k] = {
            "mean_wait": statistics.fmean(waits) if waits else float("nan"),
            "p95_wait": pctl(waits, 95),
            "median_of_seed_means": statistics.median(per_seed) if per_seed else float("nan"),
            "jobs": len(waits),
        }
    r["pooled"] = pooled
    sim_all = statistics.fmean(st["sim_shared_mean_wait"] for st in streams)
    print(f"## All seeds pooled ({', '.join(str(st['seed']) for st in streams)})")
    print()
    print("| front door | mean wait s | p95 wait s | median of the seeds' mean waits s | jobs |")
    print("|---|---|---|---|---|")
    for k, p in pooled.items():
        print(
            f"| {NAMES.get(k, k)} | {fmt(p['mean_wait'], 2)} | {fmt(p['p95_wait'], 2)} | "
            f"{fmt(p['median_of_seed_means'], 2)} | {p['jobs']} |"
        )
    print(f"| (simulated perfect shared FCFS) | {sim_all:.2f} | | | |")
    print()
    if any(pooled[k]["mean_wait"] < 0.05 for k in ("weighted", "shared") if k in pooled):
        print("note: a reference mean wait is below 0.05 s; the ratios below are not meaningful")

    def ratio(a, b):
        per = [
            st["doors"][a]["mean_wait"] / st["doors"][b]["mean_wait"]
            for st in streams
            if a in st["doors"] and b in st["doors"] and st["doors"][b]["mean_wait"] > 0
        ]
        whole = pooled[a]["mean_wait"] / pooled[b]["mean_wait"] if pooled[b]["mean_wait"] else float("nan")
        return whole, per

    if "reelay" in pooled and "weighted" in pooled:
        whole, per = ratio("reelay", "weighted")
        r["target_vs_weighted"] = {"pooled": whole, "per_seed": per}
        print(
            f"reelay / weighted mean wait = {whole:.2f} pooled (per seed: {', '.join(f'{x:.2f}' for x in per)}); "
            f"target <= 0.60, i.e. >= 40 % lower: {'MET' if whole <= 0.60 else 'NOT MET'}"
        )
    if "reelay" in pooled and "shared" in pooled:
        whole, per = ratio("reelay", "shared")
        r["target_vs_shared"] = {"pooled": whole, "per_seed": per}
        print(
            f"reelay / shared-queue mean wait = {whole:.2f} pooled (per seed: {', '.join(f'{x:.2f}' for x in per)}); "
            f"target <= 1.30: {'MET' if whole <= 1.30 else 'NOT MET'}"
        )
    if "failover" in r:
        fo = r["failover"]
        print()
        print(
            f"failover (edge defaults interval 1000 ms, fall 2, timeout 800 ms): first 202 "
            f"{fmt(fo['first_accepted_s'], 3)} s after the kill, first 202 on gcp "
            f"{fmt(fo['first_gcp_s'], 3)} s, edge marked aws down at {fmt(fo['aws_marked_down_s'], 2)} s; "
            f"{fo['accepted']}/{fo['submitted']} accepted, {fo['on_aws']} on aws, non-202: {fo['non_202'][:5]}"
        )
        t = fo["first_gcp_s"]
        print(f"failover target <= 3 s: {'MET' if t is not None and t <= 3 else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
