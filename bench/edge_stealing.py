"""Cross-cloud work stealing (issue 16's "Benchmark" list): `bench/edge.py --parts stealing`.

Every run builds the same stack, twice per comparison: once with the edge's `[stealing]`
enabled and once with it disabled, everything else identical (same processes, same `[steal]`
wiring on both clusters, same seeded jobs), so the difference is the policy alone:

  aws    `reelay api` + N `reelay worker` processes (one slot each) on one SQLite store and
         local storage, so single workers can be killed (skewed, film); `reelay serve` with N
         slots for the balanced stream, as in the placement part
  gcp    `reelay serve` with M slots
  edge   `reelay edge`, mode = "reelay", `[auth]` (signed tokens, like a deployment),
         `[stealing] enabled = true|false`

Both clusters check tokens; each has a `peer` token owned by its own name. Each cluster's
workers are thieves (`[steal] edge` = the edge, `[[steal.peers]]` = the other cluster through
the edge's `/clusters/{owner}` route), and each is an owner (`offer_after_seconds`): the wiring
of crates/cli/tests/steal_decision.rs, made symmetric. Clients submit through the edge with a
read+submit token.

Parts (each reported with "with / without" from the same run, same seed):

  skewed     aws 3 workers, gcp 1 slot; a seeded stream of jobs arriving faster than the 4
             slots serve (`--steal-load`), placed by the edge; the moment the last submission
             was answered (placement done), two of aws's three worker processes are SIGKILLed
             (their running tasks come back after their lease). Makespan, mean wait, tasks
             stolen. Target: >= 30 % lower makespan with stealing.
  film       one split job (`"split": {"segment_seconds": N}`) on aws (1 worker, pinned to CPU
             0) while gcp (1 slot, pinned to CPU 1) idles: wall time (created -> finished).
             Segment encodes run at CPU speed (`realtime_input` applies to whole-file transcodes
             only), hence the pinning: two clusters on one 2-core machine would otherwise share
             both cores and stealing could not show. Target: >= 1.3x faster with stealing.
  balanced   the placement stream of the placement part (`--jobs`, `--load`, `--seeds`), aws
             3 workers, gcp 1: mean wait with stealing vs without (target within 5 %) and 0
             tasks stolen.

Tasks stolen are counted three ways: `ran_on` differing from the job's cluster in the final job
views, the owners' `reelay_peer_tasks_total{event="claimed"}`, and the edge's
`reelay_edge_steal_decisions_total{outcome}` (also every other outcome: why nothing moved).

Bench settings (flags; the product's defaults are for real clouds and minute-long tasks):
`min_seconds_saved` 2 s (default 60: no 2-15 s clip could ever save that), `min_wait_seconds`
10 s (default 120: patience scaled like the rest, about one long clip), `offer_after_seconds`
1 s (default 5), thieves poll every 250 ms (default 1000), leases 5 s (default 30: a killed
worker's task returns after its lease, in both variants), egress priced at 0 $/GB (default 0.09:
every process is on one machine and nothing crosses a cloud boundary; the price model itself is
unit-tested and exercised by steal_decision.rs). Link speed and the value of waiting keep their
defaults (50 MB/s, 1 $/h).
"""

import os
import statistics
import subprocess
import threading
import time
import urllib.request

from edge import (
    TERMINAL,
    await_jobs,
    fmt,
    free_port,
    get_json,
    log,
    multipart,
    parse_ts,
    stream,
    submit,
    submit_stream,
    summarize,
    wait_until,
)

CLUSTERS = ("aws", "gcp")


# --------------------------------------------------------------------------- the stack


def peer_token_file(b, name):
    """A `peer` token owned by cluster `name` (what its workers show the edge and the owner)."""
    path = os.path.join(b.tmp, f"{name}-peer.token")
    if not os.path.exists(path):
        b.identity()
        tok = subprocess.run(
            [b.procs.bin, "token", "create", "--issuer-key", os.path.join(b.tmp, "issuer.key"),
             "--scope", "peer", "--owner", name],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        with open(path, "w") as f:
            f.write(tok + "\n")
    return path


def cluster_config(b, args, name, edge_base):
    """The cluster's config: realtime input (as every edge bench), and `[steal]` both ways."""
    other = "gcp" if name == "aws" else "aws"
    path = os.path.join(b.tmp, f"run{b.run_no}", f"{name}.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(
            "[tools]\nrealtime_input = true\n\n"
            f"[steal]\npoll_ms = {args.steal_poll_ms}\n"
            f"offer_after_seconds = {args.steal_offer_after}\n"
            f'edge = "{edge_base}"\n\n'
            f'[[steal.peers]]\nname = "{other}"\nurl = "{edge_base}/clusters/{other}"\n'
            f'token_file = "{peer_token_file(b, name)}"\n'
        )
    return path


def stealing_toml(args, enabled):
    return (
        f"\n[stealing]\nenabled = {'true' if enabled else 'false'}\n"
        f"min_seconds_saved = {args.steal_min_saved}\n"
        f"min_wait_seconds = {args.steal_min_wait}\n"
        f"egress_usd_per_gb = {args.steal_egress_usd_per_gb}\n"
    )


def stack(b, args, aws_workers, gcp_slots, enabled, pin=False, aws_serve=False):
    """aws (api + `aws_workers` worker processes, or one `reelay serve` with that many slots
    when `aws_serve`), gcp (serve), the edge in front."""
    b.run_no += 1
    keys, token = b.identity()
    edge_port = free_port()
    edge_base = f"http://127.0.0.1:{edge_port}"
    lease = ["--lease-seconds", str(args.steal_lease)]
    data = os.path.join(b.tmp, f"run{b.run_no}", "aws-data")
    aws_cfg = cluster_config(b, args, "aws", edge_base)
    if aws_serve:
        aws = b.cluster("aws", aws_workers, keys=keys, extra=lease, config=aws_cfg, data=data)
    else:
        aws = b.cluster("aws", 1, keys=keys, extra=lease, config=aws_cfg, role="api", data=data, tag="-api")
    workers = []
    for k in range(0 if aws_serve else aws_workers):
        workers.append(
            b.cluster(
                "aws", 1, keys=keys, extra=lease, config=aws_cfg, role="worker", data=data,
                tag=f"-w{k}", prefix=("taskset", "-c", "0") if pin else (),
            )
        )
    gcp = b.cluster(
        "gcp", gcp_slots, keys=keys, extra=lease, config=cluster_config(b, args, "gcp", edge_base),
        prefix=("taskset", "-c", "1") if pin else (),
    )
    edge = b.edge(
        "reelay", [(aws, max(aws_workers, 1)), (gcp, gcp_slots)], extra=stealing_toml(args, enabled),
        keys=keys, port=edge_port,
    )
    # The edge must see aws's worker slots before the first job, or it places everything on gcp.
    wait_until(
        "the edge to see aws's worker slots",
        30,
        lambda: all(
            (c.get("load") or {}).get("capacity") == n
            for c in get_json(edge["control"] + "/edge/status")["clusters"]
            for name, n in (("aws", aws_workers), ("gcp", gcp_slots))
            if c["name"] == name
        ),
        every=0.2,
    )
    return {"aws": aws, "workers": workers, "gcp": gcp, "edge": edge, "token": token}


def metric_lines(url, prefix):
    """`{labels: value}` of every sample of metric `prefix` at `url` (Prometheus text)."""
    out = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except Exception:  # noqa: BLE001 - a dead process reports nothing
        return out
    for line in text.splitlines():
        if line.startswith(prefix + "{") or line.startswith(prefix + " "):
            name, _, value = line.rpartition(" ")
            out[name[len(prefix):] or "{}"] = float(value)
    return out


def counters(s):
    """What the owners handed out and what the edge decided (for the report)."""
    owners = {}
    for c in ("aws", "gcp"):
        m = metric_lines(s[c]["base"] + "/metrics", "reelay_peer_tasks_total")
        owners[c] = {k: int(v) for k, v in m.items() if v}
    m = metric_lines(s["edge"]["control"] + "/edge/metrics", "reelay_edge_steal_decisions_total")
    decisions = {k.split('"')[1]: int(v) for k, v in m.items() if v and '"' in k}
    claimed = sum(v for c in owners.values() for k, v in c.items() if 'event="claimed"' in k)
    return {"owners": owners, "edge_decisions": decisions, "claimed": claimed}


class Trace:
    """Samples the edge's view of both clusters every 0.5 s (capacity, running, queued, the
    running tasks' remaining seconds, aws's steal offer): why a task did or did not move."""

    def __init__(self, edge):
        self.edge, self.rows, self.stop = edge, [], threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop.is_set():
            try:
                st = get_json(self.edge["control"] + "/edge/status", timeout=2)
                row = [round(time.monotonic() - self.t0, 1)]
                for c in st["clusters"]:
                    ld = c.get("load") or {}
                    o = ld.get("offer")
                    row.append(
                        f"{c['name']} cap {ld.get('capacity')} run {ld.get('running')} "
                        f"q {ld.get('queued')} rem {ld.get('running_remaining_seconds')}"
                        + (f" offer {o['task_id'].split('.', 1)[1][:8]} ready {o['ready_seconds']}s" if o else "")
                    )
                self.rows.append(" | ".join(str(x) for x in row))
            except Exception:  # noqa: BLE001
                pass
            self.stop.wait(0.5)

    def done(self, show):
        self.stop.set()
        self.thread.join(timeout=5)
        if show:
            for row in self.rows:
                log(f"    trace {row}")
        return self.rows


def stolen(views):
    """Tasks that ran on another cluster than their job's, by kind, from the job views."""
    out = {}
    for v in views:
        home = v["id"].split(".", 1)[0]
        for t in v.get("tasks") or []:
            if t.get("ran_on") and t["ran_on"] != home:
                key = f"{home}->{t['ran_on']}"
                out[key] = out.get(key, 0) + 1
    return out


# --------------------------------------------------------------------------- skewed / balanced


def stream_run(b, args, clips, jobs, arrivals, enabled, kill_after_placement, label):
    # Killing workers needs them as processes; the balanced stream keeps the placement part's
    # `reelay serve --workers 3`, so its waits compare with that part's (in the tiny runs,
    # separate worker processes added ~0.2 s of wait per job that in-process slots did not).
    s = stack(b, args, 3, 1, enabled, aws_serve=not kill_after_placement)
    base, token = s["edge"]["base"], s["token"]
    log(f"run {b.run_no}: {label}, stealing {'on' if enabled else 'off'} at {base}")
    res, ids, rejected = submit_stream(base, jobs, arrivals, {d: clips[d] for d in set(jobs)}, token)
    placed = {}
    for i, jid in ids.items():
        c = jid.split(".", 1)[0]
        placed[c] = placed.get(c, 0) + 1
    killed_at = None
    if kill_after_placement:
        killed_at = time.time()
        for w in s["workers"][1:]:
            b.procs.kill9(w)
        log(f"  placed {placed}; SIGKILLed aws workers 2 and 3")
    trace = Trace(s["edge"])
    views = await_jobs(base, ids, sum(jobs) * 2 + 300, token)
    trace.done(args.steal_trace)
    summary = summarize(label, jobs, res, ids, views, rejected)
    summary.pop("waits", None)
    summary["placed"] = placed
    summary["stolen"] = stolen(views.values())
    summary["stolen_total"] = sum(summary["stolen"].values())
    summary.update(counters(s))
    if killed_at is not None:
        created = min(parse_ts(v["created_at"]) for v in views.values()) if views else killed_at
        summary["killed_after_s"] = killed_at - created
    log(
        f"  {label} stealing {'on' if enabled else 'off'}: makespan {fmt(summary['makespan'])} s, "
        f"mean wait {fmt(summary['mean_wait'], 2)} s, stolen {summary['stolen']} "
        f"(owners' claimed {summary['claimed']}), edge decisions {summary['edge_decisions']}"
    )
    if rejected or summary["failed"] or summary["finished"] < summary["accepted"]:
        log(f"  rejected: {rejected} failed: {summary['failed']} "
            f"unfinished: {summary['accepted'] - summary['finished']}")
    b.teardown_run()
    return summary


def pair(b, args, clips, jobs, arrivals, kill, label, k):
    """Both variants on the same stream; the order alternates per seed (noise spreads)."""
    order = (True, False) if k % 2 else (False, True)
    out = {}
    for enabled in order:
        out["on" if enabled else "off"] = stream_run(b, args, clips, jobs, arrivals, enabled, kill, label)
    return out


# --------------------------------------------------------------------------- the long film


def film_clip(b, args):
    path = os.path.join(b.tmp, "film.mp4")
    subprocess.run(
        ["nice", "-n", "19", "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={args.film_size}:rate=25:duration={args.film_seconds}",
         "-f", "lavfi", "-i", f"sine=duration={args.film_seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", args.film_bitrate, "-g", "25",
         "-c:a", "aac", "-shortest", path],
        check=True,
    )
    return path


def film_run(b, args, path, enabled):
    s = stack(b, args, 1, 1, enabled, pin=args.film_pin)
    base, token = s["edge"]["base"], s["token"]
    log(f"run {b.run_no}: one long film, stealing {'on' if enabled else 'off'} at {base}")
    spec = {"outputs": [{"preset": args.film_preset}], "split": {"segment_seconds": args.film_segment}}
    with open(path, "rb") as f:
        body, ctype = multipart(spec, f.read(), "film.mp4")
    status, js = submit(base, body, ctype, token=token, timeout=300)
    out = {"status": status}
    if status != 202 or not isinstance(js, dict):
        out["error"] = str(js)[:300]
        log(f"  submission refused: {status} {out['error']}")
        b.teardown_run()
        return out
    jid = js["id"]
    out["cluster"] = jid.split(".", 1)[0]
    # Watch what aws offers and what the edge answers gcp while the job runs (diagnostics).
    offers, deadline, v = [], time.monotonic() + args.film_seconds * 10 + 300, None
    while time.monotonic() < deadline:
        try:
            st = get_json(s["edge"]["control"] + "/edge/status", timeout=2)
            for c in st["clusters"]:
                o = (c.get("load") or {}).get("offer")
                if c["name"] == "aws" and o and (not offers or offers[-1]["task_id"] != o["task_id"]):
                    offers.append(o)
            v = get_json(f"{base}/v1/jobs/{jid}", timeout=10, token=token)
        except Exception:  # noqa: BLE001
            pass
        if v and v["status"] in TERMINAL:
            break
        time.sleep(0.5)
    if not v or v["status"] not in TERMINAL:
        out["error"] = "did not finish"
        b.teardown_run()
        return out
    segs = [t for t in v["tasks"] if t["kind"] == "encode_segment"]
    out.update(
        {
            "status": v["status"],
            "error": v.get("error"),
            "wall_s": parse_ts(v["finished_at"]) - parse_ts(v["created_at"]),
            "segments": len(segs),
            "segments_on": {c: sum(1 for t in segs if (t.get("ran_on") or "aws") == c) for c in CLUSTERS},
            # A stolen segment whose completion the owner refused runs again at home (attempt 2).
            "segments_rerun": sum(1 for t in segs if t.get("attempts", 1) > 1),
            "stolen": stolen([v]),
            "offers_seen": offers[:3],
        }
    )
    out["stolen_total"] = sum(out["stolen"].values())
    out.update(counters(s))
    log(
        f"  film stealing {'on' if enabled else 'off'}: {out['status']} in {fmt(out['wall_s'])} s, "
        f"{out['segments']} segments, on {out['segments_on']}, edge decisions {out['edge_decisions']}"
    )
    b.teardown_run()
    return out


# --------------------------------------------------------------------------- the part


def run(b, args, clips_for):
    """Every stealing part; `clips_for(durations)` -> {seconds: bytes}."""
    r = {"settings": {
        "min_seconds_saved": args.steal_min_saved,
        "min_wait_seconds": args.steal_min_wait,
        "offer_after_seconds": args.steal_offer_after,
        "poll_ms": args.steal_poll_ms,
        "lease_seconds": args.steal_lease,
        "egress_usd_per_gb": args.steal_egress_usd_per_gb,
    }}
    parts = args.steal_parts.split(",")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if "skewed" in parts:
        r["skewed"] = []
        for k, seed in enumerate(seeds):
            jobs, arrivals, interval = stream(
                seed, args.steal_jobs, args.min_seconds, args.max_seconds, args.steal_load
            )
            log(f"skewed, seed {seed}: {len(jobs)} jobs {jobs}, one every {interval:.3f} s")
            res = pair(b, args, clips_for(jobs), jobs, arrivals, True, "skewed", k)
            res["seed"] = seed
            r["skewed"].append(res)
    if "film" in parts:
        path = film_clip(b, args)
        r["film"] = []
        for k in range(args.film_runs):
            order = (True, False) if k % 2 else (False, True)
            res = {}
            for enabled in order:
                res["on" if enabled else "off"] = film_run(b, args, path, enabled)
            r["film"].append(res)
    if "balanced" in parts:
        r["balanced"] = []
        for k, seed in enumerate(seeds):
            jobs, arrivals, interval = stream(seed, args.jobs, args.min_seconds, args.max_seconds, args.load)
            log(f"balanced, seed {seed}: {len(jobs)} jobs, one every {interval:.3f} s")
            res = pair(b, args, clips_for(jobs), jobs, arrivals, False, "balanced", k)
            res["seed"] = seed
            r["balanced"].append(res)
    return r


def report(r):
    s = r["settings"]
    print()
    print(
        f"## Work stealing (min_seconds_saved {s['min_seconds_saved']} s, min_wait_seconds "
        f"{s.get('min_wait_seconds', 0)} s, offer_after_seconds "
        f"{s['offer_after_seconds']} s, poll {s['poll_ms']} ms, lease {s['lease_seconds']} s, "
        f"egress {s['egress_usd_per_gb']} $/GB; nproc {os.cpu_count()})"
    )

    def stream_table(rows, title):
        print()
        print(f"### {title}")
        print()
        print("| seed | stealing | makespan s | mean wait s | p95 wait s | max wait s | placed aws/gcp | stolen (views) | owners' claimed | edge decisions | not ok |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in rows:
            for k in ("off", "on"):
                x = row[k]
                placed = "/".join(str(x["placed"].get(c, 0)) for c in CLUSTERS)
                bad = len(x["rejected"]) + len(x["failed"]) + (x["accepted"] - x["finished"])
                dec = ", ".join(f"{a} {n}" for a, n in sorted(x["edge_decisions"].items()))
                print(
                    f"| {row['seed']} | {k} | {fmt(x['makespan'])} | {fmt(x['mean_wait'], 2)} | "
                    f"{fmt(x['p95_wait'], 2)} | {fmt(x.get('max_wait', float('nan')), 2)} | {placed} | {x['stolen_total']} {x['stolen'] or ''} | "
                    f"{x['claimed']} | {dec} | {bad} |"
                )

    def ratios(rows, key):
        per = [row["on"][key] / row["off"][key] for row in rows if row["off"][key] and row["off"][key] == row["off"][key]]
        return per, (statistics.median(per) if per else float("nan"))

    if r.get("skewed"):
        stream_table(r["skewed"], "Skewed: aws 3 workers, gcp 1 slot; 2 aws workers SIGKILLed after placement")
        per, med = ratios(r["skewed"], "makespan")
        wper, wmed = ratios(r["skewed"], "mean_wait")
        print()
        print(
            f"makespan on/off: median {fmt(med, 2)} (per seed {', '.join(f'{x:.2f}' for x in per)}); "
            f"target <= 0.70 (>= 30 % lower): {'MET' if med <= 0.70 else 'NOT MET'}"
        )
        print(f"mean wait on/off: median {fmt(wmed, 2)} (per seed {', '.join(f'{x:.2f}' for x in wper)})")
    if r.get("film"):
        print()
        print("### One long film: split job on aws (1 worker, CPU 0) while gcp (1 slot, CPU 1) idles")
        print()
        print("| run | stealing | status | wall s | segments aws/gcp | re-run | stolen | edge decisions | owner's peer-task events |")
        print("|---|---|---|---|---|---|---|---|---|")
        speedups = []
        for n, row in enumerate(r["film"], 1):
            for k in ("off", "on"):
                x = row[k]
                on = x.get("segments_on") or {}
                dec = ", ".join(f"{a} {c}" for a, c in sorted((x.get("edge_decisions") or {}).items()))
                ev = ", ".join(
                    f"{e.split(chr(34))[1]} {c}" for e, c in sorted(((x.get("owners") or {}).get("aws") or {}).items())
                    if '"' in e
                )
                print(
                    f"| {n} | {k} | {x.get('status')} | {fmt(x.get('wall_s'))} | "
                    f"{on.get('aws', '—')}/{on.get('gcp', '—')} | {x.get('segments_rerun', '—')} | "
                    f"{x.get('stolen_total', '—')} | {dec} | {ev} |"
                )
            if row["off"].get("wall_s") and row["on"].get("wall_s"):
                speedups.append(row["off"]["wall_s"] / row["on"]["wall_s"])
        med = statistics.median(speedups) if speedups else float("nan")
        print()
        print(
            f"film speed-up off/on: median {fmt(med, 2)}x (per run {', '.join(f'{x:.2f}' for x in speedups)}); "
            f"target >= 1.3x: {'MET' if med >= 1.3 else 'NOT MET'}"
        )
        for row in r["film"][:1]:
            if row["on"].get("offers_seen"):
                print(f"aws's first steal offers (stealing on): {row['on']['offers_seen']}")
    if r.get("balanced"):
        stream_table(r["balanced"], "Balanced: the placement stream, aws `serve --workers 3`, gcp 1 slot")
        on = [w for row in r["balanced"] for w in [row["on"]["mean_wait"]]]
        off = [w for row in r["balanced"] for w in [row["off"]["mean_wait"]]]
        ratio = statistics.fmean(on) / statistics.fmean(off) if off and statistics.fmean(off) > 0 else float("nan")
        total = sum(row["on"]["stolen_total"] for row in r["balanced"])
        print()
        if statistics.fmean(off) < 0.05:
            verdict = "not meaningful (the mean wait without stealing is under 0.05 s)"
        else:
            verdict = "MET" if abs(ratio - 1) <= 0.05 else "NOT MET"
        print(
            f"mean wait on/off (mean of the seeds' means {fmt(statistics.fmean(on), 3)} / "
            f"{fmt(statistics.fmean(off), 3)} s): {fmt(ratio, 3)}; target within 5 %: {verdict}; "
            f"tasks stolen with stealing on: {total} (target 0: {'MET' if total == 0 else 'NOT MET'})"
        )
        if 0.05 <= statistics.fmean(off) < 0.5:
            print("note: the mean wait without stealing is under 0.5 s; a 5 % band is within the noise")
