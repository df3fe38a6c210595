"""The edge's data plane (wrk) and a cluster whose packets vanish: two parts of bench/edge.py.

Data plane (`--parts dataplane`): two clusters that check tokens as deployed (trusted keys, a
signed read+submit token), one finished job on aws, and the same two requests, a status read
(`GET /v1/jobs/{id}`) and a small output download, sent by wrk with keep-alive:

  direct           straight to aws
  edge             through `reelay edge` with `client_keepalive = true` (what is compared)
  edge-default     through an edge with the default `client_keepalive = false`
  edge-bin=PATH    the `edge` target run from another reelay binary (before/after in one run)
  <ablation>       nginx started by this script from the keep-alive edge's own nginx.conf with
                   exactly one change (see ABLATIONS), to find where the edge's time goes

Each round runs every target once, in an order rotated per round, so slow phases of the shared
machine spread over all of them: throughput with `--dp-conns` connections for `--dp-seconds`,
then latency with one connection (no queueing) for `--dp-latency-seconds`. By default the
server side (clusters, edge controller, nginx) is pinned to CPU 0 and wrk to CPU 1
(`--dp-pin 0/1`; `--dp-pin none` to leave scheduling alone), so direct and edge get the same
single core and the ratio is the edge's CPU cost per request. `--dp-pin 0/1/1` gives the edge
(nginx and its controller) CPU 1, shared with wrk and never with the cluster: the shape of a
deployment, where the edge has its own machine and the cluster's core serves only the cluster.

Silent failure (`--parts silent`, root only): aws runs in its own network namespace behind a
veth pair; a JSON submission (input by URL) and a multipart upload alternate every 100 ms
through the edge while `iptables -A INPUT -j DROP` inside aws's namespace makes its packets
vanish for `--silent-outage` seconds (no refusal, no reset: a dead link or host). Reported:
failed submissions, submit latency p50/p99/max during the outage, when the edge marks aws down,
status reads of an aws job meanwhile, and ghost jobs (jobs on aws that no client was told about)
once the link is back.
"""

import http.client
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

from edge import get_json, log, multipart, pctl, submit, wait_until, free_port

PRESET = "mp4-360p"


# --------------------------------------------------------------------------- wrk


def need_wrk():
    if not shutil.which("wrk"):
        sys.exit("the data plane is measured with wrk: apt-get install -y wrk (or --parts without dataplane)")


def parse_pin(pin):
    """'0/1' -> (cluster cpus, edge cpus, client cpus) as taskset prefixes, the edge (nginx and
    its controller) on the clusters' CPUs; '0/1/1' puts the edge on CPUs of its own (here shared
    with wrk, never with the cluster: the shape of a deployment, where the edge has its own
    machine); 'none' -> no pinning."""
    if pin in ("", "none"):
        return (), (), ()
    parts = pin.split("/")
    server, client = parts[0], parts[-1]
    edge = parts[1] if len(parts) == 3 else server
    return tuple(("taskset", "-c", c) for c in (server, edge, client))


def wrk(url, seconds, conns, token, prefix=()):
    """Debian's wrk (keep-alive, `conns` connections, one thread):
    (req/s, p50 s, p99 s, errors, requests)."""
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def dur(text):
        num = re.match(r"[0-9.]+", text).group(0)
        return float(num) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[text[len(num):]]

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    done = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = dur(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = dur(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return rps, p50, p99, errors, done


def cpu_seconds(pids, children):
    """User + system CPU time of `pids` (with `children`: and their descendants, such as nginx
    workers), in seconds: what a process spent per request does not depend on how busy the
    shared machine was."""
    from edge import family

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in family([x for x in pids if x]) if children else [x for x in pids if x]:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


# --------------------------------------------------------------------------- ablations


def _sub(pattern, repl):
    """A change to nginx.conf: `pattern` must match (a template change that moves it fails loudly)."""

    def f(text):
        new, n = re.subn(pattern, repl, text)
        if n == 0:
            raise ValueError(f"ablation pattern {pattern!r} matched nothing in nginx.conf")
        return new

    return f


def _auth_cache(text):
    """The token check's answer (204 only) cached per method and Authorization header for 1 s."""
    if "proxy_cache reelay_auth;" in text:
        return text
    text = _sub(
        r"(\n *)proxy_buffering off;",
        r"\1proxy_buffering off;\1proxy_cache_path WORKDIR/tmp/auth_cache levels=1 keys_zone=reelay_auth:1m "
        r"max_size=16m inactive=10s use_temp_path=off;",
    )(text)
    return _sub(
        r"(\n *)(proxy_pass http://reelay_controller/internal/auth;)",
        r"\1\2\1proxy_cache reelay_auth;\1proxy_cache_key '$request_method $http_authorization';"
        r"\1proxy_cache_valid 204 1s;\1proxy_buffering on;",
    )(text)


# Each sets one thing in the keep-alive edge's rendered nginx.conf; `a+b` applies both. A
# variant whose text comes out equal to the edge's own is skipped (it is the edge).
ABLATIONS = {
    # Upstream keep-alive off: a new TCP connection per proxied request and per token check.
    "no-upstream-keepalive": _sub(r"\n *keepalive \d+;\n *keepalive_timeout 10s;", ""),
    # No shared-memory zones: each worker keeps its own upstream state.
    "no-zone": _sub(r"\n *zone \S+ 64k;", ""),
    # The controller's token check skipped (measurement only: NOT a configuration to run).
    "no-auth-request": _sub(r"\n *auth_request /_reelay/auth;", ""),
    "auth-cache": _auth_cache,
    "log-unbuffered": _sub(r"(access_log \S+ reelay)[^;]*;", r"\1;"),
    "log-buffered": _sub(r"(access_log \S+ reelay)[^;]*;", r"\1 buffer=64k flush=1s;"),
    "log-off": _sub(r"access_log \S+ reelay[^;]*;", "access_log off;"),
    # PCRE JIT for the regex locations and maps every request (and its token check) walks.
    "pcre-jit": lambda t: t if "pcre_jit on;" in t else _sub(r"(worker_processes \S+;)", r"\1\npcre_jit on;")(t),
    "workers-1": _sub(r"worker_processes \S+;", "worker_processes 1;"),
    "workers-2": _sub(r"worker_processes \S+;", "worker_processes 2;"),
    # A bigger read buffer for the unbuffered proxying (downloads arrive in 4 KiB reads).
    "buffer-64k": _sub(
        r"(\n *)proxy_buffering off;",
        r"\1proxy_buffering off;\1proxy_buffer_size 64k;\1proxy_buffers 4 64k;\1proxy_busy_buffers_size 128k;",
    ),
}


def ablation(name):
    fs = []
    for part in name.split("+"):
        if part not in ABLATIONS:
            sys.exit(f"unknown --dp-variants entry {part!r}: edge-default or one of {', '.join(ABLATIONS)} (a+b for both)")
        fs.append(ABLATIONS[part])

    def f(text):
        for g in fs:
            text = g(text)
        return text

    return f


def variant_nginx(b, edge, name, transform, prefix):
    """An nginx from `edge`'s rendered nginx.conf with one change, on its own port and work dir
    (same controller, same clusters)."""
    with open(os.path.join(edge["work"], "nginx.conf")) as f:
        text = f.read()
    vdir = os.path.join(b.tmp, f"run{b.run_no}", f"nginx-{name}")
    for sub in ("logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(vdir, sub), exist_ok=True)
        os.chmod(os.path.join(vdir, sub), 0o1777 if sub.startswith("tmp/") else 0o755)
    port = free_port()
    text = text.replace(edge["work"], vdir)
    text, n = re.subn(rf"listen {re.escape(edge['listen'])};", f"listen 127.0.0.1:{port};", text)
    assert n == 1, "the edge's listen directive"
    changed = transform(text).replace("WORKDIR", vdir)
    if changed == text:
        log(f"  {name}: the edge's nginx.conf already is that; skipped")
        return None
    text = changed
    conf = os.path.join(vdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(text)
    args = ["-p", vdir + "/", "-c", conf, "-e", "stderr"]
    subprocess.run(["nginx", *args, "-t", "-q"], check=True)
    item = b.procs.spawn(f"nginx {name}", args, os.path.join(vdir, "nginx.log"), "edge", prefix=prefix,
                         program=shutil.which("nginx"))
    item["base"] = f"http://127.0.0.1:{port}"
    wait_until(f"nginx {name}", 10, lambda: get_json(item["base"] + "/healthz", timeout=1))
    b.procs.note_nginx(item, vdir)
    return item


# --------------------------------------------------------------------------- data plane


def finished_job(base, token, clip):
    """Submits the 1 s clip to `base` and returns the succeeded job's view."""
    body, ctype = multipart({"outputs": [{"preset": PRESET}]}, clip, "small.mp4")
    status, js = submit(base, body, ctype, token=token)
    assert status == 202, (status, js)
    req = lambda: urlget(base + f"/v1/jobs/{js['id']}", token)  # noqa: E731
    view = wait_until("the data-plane job", 120, lambda: (lambda v: v["status"] != "queued" and v["status"] != "running" and v)(req()), every=0.3)
    assert view["status"] == "succeeded", view
    return view


def urlget(url, token, timeout=5.0):
    host, rest = url.removeprefix("http://").split("/", 1)
    h, port = host.split(":")
    conn = http.client.HTTPConnection(h, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + rest, headers={"Authorization": f"Bearer {token}"})
        r = conn.getresponse()
        raw = r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {raw[:200]!r}")
        return json.loads(raw)
    finally:
        conn.close()


def data_plane(b, args, clip):
    need_wrk()
    server, edge_cpus, client = parse_pin(args.dp_pin)
    b.run_no += 1
    keys, token = b.identity()
    aws = b.cluster("aws", 1, keys=keys, prefix=server)
    gcp = b.cluster("gcp", 1, keys=keys, prefix=server)
    clusters = [(aws, 3), (gcp, 1)]
    # `auto` counts the machine's CPUs, not the affinity mask (nginx 1.22): as many workers as
    # the edge has CPUs, like `auto` on a machine of that size.
    workers = f"nginx_worker_processes = {len(edge_cpus[2].split(','))}\n" if edge_cpus else ""
    ka = workers + "client_keepalive = true"
    edge = b.edge("reelay", clusters, extra=ka, tag="-keepalive", keys=keys, prefix=edge_cpus)
    view = finished_job(aws["base"], token, clip)
    out = view["outputs"][0]
    paths = {"status": f"/v1/jobs/{view['id']}", "download": out["url"]}
    log(f"  job {view['id']}; output {out['name']} {out['size']} bytes")
    # Who works for each target: (cluster, edge controller, nginx) process ids.
    pids = lambda e: {"nginx": [e["nginx_pid"]], "controller": [e["popen"].pid]}  # noqa: E731
    targets = [("direct", aws["base"]), ("edge", edge["base"])]
    who = {"direct": {}, "edge": pids(edge)}
    variants = [v for v in args.dp_variants.split(",") if v]
    for v in variants:
        if v == "edge-default":
            e = b.edge("reelay", clusters, extra=workers, tag="-default", keys=keys, prefix=edge_cpus)
            targets.append((v, e["base"]))
            who[v] = pids(e)
        elif v.startswith("edge-bin="):
            # The same keep-alive edge run from another build (say main's, to compare a change to
            # the controller before/after in one run); b.edge spawns `b.procs.bin`.
            path = os.path.abspath(v.removeprefix("edge-bin="))
            if not os.access(path, os.X_OK):
                sys.exit(f"--dp-variants {v}: {path} is not an executable")
            saved, b.procs.bin = b.procs.bin, path
            try:
                e = b.edge("reelay", clusters, extra=ka, tag=f"-bin{len(targets)}", keys=keys, prefix=edge_cpus)
            finally:
                b.procs.bin = saved
            targets.append((v, e["base"]))
            who[v] = pids(e)
        else:
            item = variant_nginx(b, edge, v, ablation(v), edge_cpus)
            if item:
                targets.append((v, item["base"]))
                who[v] = {"nginx": [item["nginx_pid"] or item["popen"].pid], "controller": [edge["popen"].pid]}
    for _, base in targets:  # warm-up: connections, caches, the job row
        for p in paths.values():
            wrk(base + p, 1, args.dp_conns, token, client)
    results = {name: {k: [] for k in paths} for name, _ in targets}
    for r in range(args.dp_rounds):
        order = targets[r % len(targets):] + targets[: r % len(targets)]
        for name, base in order:
            for k, p in paths.items():
                groups = {"cluster": [aws["popen"].pid], **who[name]}
                before = {g: cpu_seconds(ps, g == "nginx") for g, ps in groups.items()}
                rps, p50, p99, err, n = wrk(base + p, args.dp_seconds, args.dp_conns, token, client)
                cpu = {g: (cpu_seconds(ps, g == "nginx") - before[g]) / max(n, 1) for g, ps in groups.items()}
                _, l50, l99, lerr, _ = wrk(base + p, args.dp_latency_seconds, 1, token, client)
                results[name][k].append(
                    {"rps": rps, "p50": p50, "p99": p99, "lat_p50": l50, "lat_p99": l99, "errors": err + lerr,
                     "cpu_us": {g: v * 1e6 for g, v in cpu.items()}}
                )
        log(f"  round {r + 1}/{args.dp_rounds}: " + ", ".join(
            f"{n} {results[n]['status'][-1]['rps']:.0f}/{results[n]['download'][-1]['rps']:.0f}" for n, _ in targets
        ) + " req/s (status/download)")
    b.teardown_run()
    return {
        "pin": args.dp_pin,
        "workers": workers.strip() or "nginx_worker_processes = auto",
        "conns": args.dp_conns,
        "seconds": args.dp_seconds,
        "rounds": args.dp_rounds,
        "output_bytes": out["size"],
        "results": results,
    }


def report_data_plane(dp):
    res = dp["results"]
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    print()
    print(
        f"data plane (wrk, keep-alive, {dp['rounds']} rounds alternating; throughput with {dp['conns']} "
        f"connections for {dp['seconds']} s, latency with 1 connection; pin cluster/[edge/]client CPUs: "
        f"{dp['pin'] or 'none'}, {dp['workers']}; download = {dp['output_bytes']} bytes); medians of the rounds:"
    )
    print()
    print("| request | target | req/s | ÷ direct | p50 / p99 ms at load | 1-conn p50 / p99 ms | added 1-conn p50 / p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for k in ("status", "download"):
        d = res["direct"][k]
        for name, rows in res.items():
            rows = rows[k]
            ratio = med(rows, "rps") / med(d, "rps")
            per_round = ", ".join(f"{x['rps'] / y['rps']:.2f}" for x, y in zip(rows, d))
            added = "" if name == "direct" else (
                f"+{(med(rows, 'lat_p50') - med(d, 'lat_p50')) * 1000:.2f} / "
                f"+{(med(rows, 'lat_p99') - med(d, 'lat_p99')) * 1000:.2f}"
            )
            print(
                f"| {k} | {name} | {med(rows, 'rps'):.0f} | {ratio:.2f} "
                f"({per_round}) | "
                f"{med(rows, 'p50') * 1000:.2f} / {med(rows, 'p99') * 1000:.2f} | "
                f"{med(rows, 'lat_p50') * 1000:.3f} / {med(rows, 'lat_p99') * 1000:.3f} | {added} | "
                f"{sum(x['errors'] for x in rows)} |"
            )
    print()
    print("CPU time per request, µs (user + system from /proc, medians of the rounds; independent of how busy the machine was):")
    print()
    print("| request | target | cluster | nginx | edge controller | total | ÷ direct total |")
    print("|---|---|---|---|---|---|---|")
    for k in ("status", "download"):
        base_total = None
        for name, rows in res.items():
            rows = rows[k]
            parts = {g: statistics.median(x["cpu_us"].get(g, 0.0) for x in rows) for g in ("cluster", "nginx", "controller")}
            total = sum(parts.values())
            base_total = base_total or total
            print(
                f"| {k} | {name} | {parts['cluster']:.0f} | {parts['nginx']:.0f} | {parts['controller']:.0f} | "
                f"{total:.0f} | {total / base_total:.2f} |"
            )
    print()
    for k in ("status", "download"):
        ratio = statistics.median(x["rps"] for x in res["edge"][k]) / statistics.median(x["rps"] for x in res["direct"][k])
        print(f"edge ÷ direct req/s, {k}: {ratio:.2f}; target >= 0.75: {'MET' if ratio >= 0.75 else 'NOT MET'}")


# --------------------------------------------------------------------------- silent failure


class Netns:
    """A network namespace joined to the host by a veth pair: host 10.213.N.1, inside .2."""

    def __init__(self, tag):
        n = os.getpid() % 200 + 20
        self.name = f"reelay-bench-{tag}-{os.getpid()}"
        self.host_if, self.ns_if = f"rbh{os.getpid() % 100000}", f"rbn{os.getpid() % 100000}"
        self.host_ip, self.ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self.up = False

    def __enter__(self):
        for cmd in (
            f"ip netns add {self.name}",
            f"ip link add {self.host_if} type veth peer name {self.ns_if}",
            f"ip link set {self.ns_if} netns {self.name}",
            f"ip addr add {self.host_ip}/30 dev {self.host_if}",
            f"ip link set {self.host_if} up",
            f"ip netns exec {self.name} ip addr add {self.ns_ip}/30 dev {self.ns_if}",
            f"ip netns exec {self.name} ip link set {self.ns_if} up",
            f"ip netns exec {self.name} ip link set lo up",
        ):
            subprocess.run(cmd.split(), check=True)
        self.up = True
        return self

    def prefix(self):
        return ("ip", "netns", "exec", self.name)

    def drop(self, on):
        """Every packet into the namespace vanishes (on) or flows again (off)."""
        rule = "-A" if on else "-D"
        subprocess.run([*self.prefix(), "iptables", rule, "INPUT", "-j", "DROP"], check=True)

    def __exit__(self, *exc):
        subprocess.run(["ip", "link", "del", self.host_if], check=False, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.name], check=False, stderr=subprocess.DEVNULL)


def serve_file(data, host):
    """A tiny HTTP server for job inputs given by URL; returns (url, server)."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer((host, 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://{host}:{srv.server_address[1]}/small.mp4", srv


def silent_failure(b, args, clip):
    if os.geteuid() != 0 or not shutil.which("iptables") or not shutil.which("ip"):
        sys.exit("the silent-failure part needs root, ip and iptables (a network namespace)")
    b.run_no += 1
    keys, token = b.identity()
    with Netns("aws") as ns:
        url, srv = serve_file(clip, ns.host_ip)
        try:
            return _silent(b, args, clip, keys, token, ns, url)
        finally:
            srv.shutdown()
            b.teardown_run()


def _silent(b, args, clip, keys, token, ns, url):
    aws = b.cluster("aws", 3, keys=keys, host=ns.ns_ip, prefix=ns.prefix(), extra=["--allow-private-urls"])
    gcp = b.cluster("gcp", 1, keys=keys, extra=["--allow-private-urls"])
    edge = b.edge("reelay", [(aws, 3), (gcp, 1)], keys=keys)
    json_body = json.dumps({"input": {"url": url}, "outputs": [{"preset": PRESET}]}).encode()
    mp_body, mp_ctype = multipart({"outputs": [{"preset": PRESET}]}, clip, "small.mp4")
    # A job on aws to read while its packets vanish.
    reading, before = None, set()
    for _ in range(20):
        st, js = submit(edge["base"], json_body, "application/json", token=token)
        if st == 202:
            before.add(js["id"])
            if js["id"].startswith("aws."):
                reading = js["id"]
                break
    assert reading, "no job landed on aws"
    period, outage, total = 0.1, args.silent_outage, args.silent_outage + 3.0
    t0 = time.monotonic()
    t_drop, t_back = t0 + 1.0, t0 + 1.0 + outage
    results, reads, lock = [], [], threading.Lock()
    down_at, up_at, stop = {}, {}, threading.Event()

    def watch():
        while not stop.is_set():
            try:
                s = get_json(edge["control"] + "/edge/status", timeout=1)
                h = next(c["health"] for c in s["clusters"] if c["name"] == "aws")
                now = time.monotonic()
                if h == "down" and "aws" not in down_at and now >= t_drop:
                    down_at["aws"] = now - t_drop
                if h == "up" and "aws" in down_at and "aws" not in up_at and now >= t_back:
                    up_at["aws"] = now - t_back
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)

    def one(i):
        kind = "json" if i % 2 == 0 else "multipart"
        body, ctype = (json_body, "application/json") if kind == "json" else (mp_body, mp_ctype)
        t = time.monotonic()
        try:
            st, js = submit(edge["base"], body, ctype, timeout=args.silent_client_timeout, token=token)
        except Exception as e:  # noqa: BLE001 - a client that gave up or lost its connection
            st, js = None, repr(e)
        took = time.monotonic() - t
        with lock:
            results.append({"at": t, "kind": kind, "took": took, "status": st,
                            "id": js["id"] if st == 202 else None, "body": None if st == 202 else str(js)[:160]})

    def reader():
        while not stop.is_set():
            t = time.monotonic()
            host, port = edge["listen"].split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=args.silent_client_timeout)
            try:
                conn.request("GET", f"/v1/jobs/{reading}", headers={"Authorization": f"Bearer {token}"})
                r = conn.getresponse()
                r.read()
                st = r.status
            except Exception:  # noqa: BLE001
                st = None
            finally:
                conn.close()
            with lock:
                reads.append({"at": t, "took": time.monotonic() - t, "status": st})
            time.sleep(max(0.0, 0.2 - (time.monotonic() - t)))

    threads = [threading.Thread(target=watch, daemon=True), threading.Thread(target=reader, daemon=True)]
    for t in threads:
        t.start()
    senders = []
    events = [(t_drop, True), (t_back, False)]
    i = 0
    while i * period <= total:
        due = t0 + i * period
        while events and events[0][0] <= due:
            at, on = events.pop(0)
            time.sleep(max(0.0, at - time.monotonic()))
            ns.drop(on)
        time.sleep(max(0.0, due - time.monotonic()))
        s = threading.Thread(target=one, args=(i,), daemon=True)
        s.start()
        senders.append(s)
        i += 1
    for at, on in events:
        time.sleep(max(0.0, at - time.monotonic()))
        ns.drop(on)
    for s in senders:
        s.join(timeout=args.silent_client_timeout + 5)
    wait_until("the edge to see aws again", 30, lambda: "aws" in up_at, every=0.1)
    stop.set()
    told = {r["id"] for r in results if r["id"]} | before
    # Whatever aws read before and after the outage has reached its store by now.
    time.sleep(2)
    on_aws = [j["id"] for j in urlget(aws["base"] + "/v1/jobs?limit=500", token)["jobs"]]
    ghosts = [j for j in on_aws if j not in told]
    during = [r for r in results if t_drop <= r["at"] < t_back]
    reads_during = [r for r in reads if t_drop <= r["at"] < t_back]

    def lat(rows):
        took = [r["took"] for r in rows]
        return {"n": len(took), "p50": pctl(took, 50), "p99": pctl(took, 99), "max": max(took) if took else float("nan")}

    return {
        "outage_s": outage,
        "submitted": len(results),
        "failed": [(round(r["at"] - t_drop, 2), r["kind"], r["status"], r["body"]) for r in results if r["status"] != 202],
        "before": lat([r for r in results if r["at"] < t_drop]),
        "after": lat([r for r in results if r["at"] >= t_back]),
        "during": lat(during),
        "during_json": lat([r for r in during if r["kind"] == "json"]),
        "during_multipart": lat([r for r in during if r["kind"] == "multipart"]),
        "placed_on_aws": sum(1 for r in results if r["id"] and r["id"].startswith("aws.")),
        "marked_down_s": down_at.get("aws"),
        "marked_up_s": up_at.get("aws"),
        "reads_during": lat(reads_during),
        "reads_during_status": {str(s): sum(1 for r in reads_during if r["status"] == s) for s in {r["status"] for r in reads_during}},
        "jobs_on_aws": len(on_aws),
        "ghosts": ghosts,
    }


def report_silent(s):
    d = s["during"]
    print()
    print(
        f"silent failure (aws's packets dropped for {s['outage_s']:.0f} s, a JSON submission and a "
        f"multipart upload alternating every 100 ms): {s['submitted']} submissions, {len(s['failed'])} failed; "
        f"during the outage n={d['n']} p50 {d['p50']:.3f} s p99 {d['p99']:.3f} s max {d['max']:.3f} s "
        f"(JSON p99 {s['during_json']['p99']:.3f} s, multipart p99 {s['during_multipart']['p99']:.3f} s; "
        f"before the outage p50 {s['before']['p50']:.3f} s p99 {s['before']['p99']:.3f} s, after it "
        f"p50 {s['after']['p50']:.3f} s p99 {s['after']['p99']:.3f} s); "
        f"edge marked aws down after {s['marked_down_s']} s, up {s['marked_up_s']} s after the link returned; "
        f"status reads of an aws job during the outage: p50 {s['reads_during']['p50']:.3f} s max "
        f"{s['reads_during']['max']:.3f} s, statuses {s['reads_during_status']}; "
        f"{s['jobs_on_aws']} jobs on aws, ghosts {s['ghosts']}"
    )
    if s["failed"]:
        print(f"  failures: {s['failed'][:10]}")
    ok = not s["failed"] and d["p99"] <= 2.0 and not s["ghosts"]
    print(f"silent-failure targets (0 failed, p99 <= 2 s, 0 ghosts): {'MET' if ok else 'NOT MET'}")
