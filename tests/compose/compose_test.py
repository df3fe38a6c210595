#!/usr/bin/env python3
"""The two-cloud docker-compose stack, run for real (called by scripts/compose-test.sh).

From a clean state: start docker-compose.yml (images built beforehand by `make images`), submit
real jobs through the edge with the `reelay` CLI and check the outputs with ffprobe, watch a split
film's pieces move to the idle cloud (work stealing through the edge), kill one cloud while it
encodes, cut the other off the edge's network, check the hardening the files claim, and tear
everything down (also on failure). Standard library only; every check raises on failure.

Environment: REELAY_BIN (the CLI), COMPOSE (the compose command, e.g. "docker compose"),
PROJECT (compose project name), KEEP=1 (leave the stack up for inspection).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REELAY = os.environ.get("REELAY_BIN", str(ROOT / "target/debug/reelay"))
COMPOSE = shlex.split(os.environ.get("COMPOSE", "docker compose"))
PROJECT = os.environ.get("PROJECT", "reelaytest")
UID = "10001"
# The services that run reelay's own images (hardened the same way).
HARDENED = ["api-aws", "worker-aws", "api-gcp", "worker-gcp", "edge", "s3-aws", "s3-gcp"]
EDGE_TOML = tomllib.loads((ROOT / "docker/compose/edge.toml").read_text())
HEALTH = EDGE_TOML["health"]

failures: list[str] = []
started = time.monotonic()


def log(msg: str) -> None:
    print(f"compose-test [{time.monotonic() - started:6.1f}s] {msg}", flush=True)


def check(cond: bool, what: str) -> None:
    """Records a failed expectation (the run goes on so the report shows all of them)."""
    if cond:
        log(f"ok    {what}")
    else:
        log(f"FAIL  {what}")
        failures.append(what)


def run(args: list[str], timeout: float = 120, check_rc: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check_rc and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class Stack:
    def __init__(self, env_file: Path, port: int):
        self.env_file = env_file
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def compose(self, *args: str, timeout: float = 600, check_rc: bool = True) -> subprocess.CompletedProcess:
        cmd = [*COMPOSE, "-p", PROJECT, "--env-file", str(self.env_file), "-f", str(ROOT / "docker-compose.yml"), *args]
        return run(cmd, timeout=timeout, check_rc=check_rc, cwd=ROOT)

    def container(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).stdout.strip()
        if not cid:
            raise RuntimeError(f"no container for {service}")
        return cid.splitlines()[0]

    def inspect(self, cid: str) -> dict:
        return json.loads(run(["docker", "inspect", cid]).stdout)[0]

    def network(self, name: str) -> str:
        out = run(["docker", "network", "ls", "-q",
                   "--filter", f"label=com.docker.compose.project={PROJECT}",
                   "--filter", f"label=com.docker.compose.network={name}"]).stdout.split()
        if len(out) != 1:
            raise RuntimeError(f"network {name}: found {out}")
        return out[0]

    def wait_healthy(self, services: list[str], timeout: float) -> float:
        """Seconds until every service's container is running and healthy."""
        t0 = time.monotonic()
        last = {}
        while time.monotonic() - t0 < timeout:
            last = {}
            for s in services:
                try:
                    state = self.inspect(self.container(s))["State"]
                except RuntimeError:
                    last[s] = "missing"
                    continue
                last[s] = state.get("Health", {}).get("Status") or state["Status"]
            if all(v == "healthy" for v in last.values()):
                return time.monotonic() - t0
            time.sleep(1)
        raise RuntimeError(f"not healthy within {timeout} s: {last}")

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/edge/status", timeout=3) as r:
            return json.loads(r.read())

    def health(self, cluster: str) -> str:
        try:
            return next(c["health"] for c in self.status()["clusters"] if c["name"] == cluster)
        except (OSError, ValueError):
            return "unknown"


TOKEN = {"value": ""}


def reelay(stack: Stack, *args: str, timeout: float = 60, check_rc: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, REELAY_TOKEN=TOKEN["value"])
    return run([REELAY, "--server", stack.url, *args], timeout=timeout, check_rc=check_rc, env=env)


def get_token(stack: Stack) -> None:
    """The first admin token (made by the identity-keys service), then, through the edge with it,
    a submit+read token that every test uses: one token, both clouds."""
    admin = stack.compose("run", "--rm", "--no-deps", "--entrypoint", "cat", "identity-keys",
                          "/data/admin.token").stdout.strip()
    check(admin.startswith("rly2."), "identity-keys wrote a signed admin token")
    anon = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{stack.url}/v1/jobs"], check_rc=False).stdout
    check(anon == "401", f"the edge refuses an anonymous listing ({anon})")
    created = run([REELAY, "--server", stack.url, "--token", admin, "token", "create",
                   "--scope", "submit", "--scope", "read", "--name", "compose-test"], timeout=30)
    TOKEN["value"] = created.stdout.strip().splitlines()[-1]
    check(TOKEN["value"].startswith("rly2."), "a submit+read token created through the edge with the admin token")


def one_webhook_secret(stack: Stack) -> None:
    """The owner's webhook secret through the edge: `/v1/webhooks/secret` goes to either cloud
    (the edge's `reelay_any` upstream takes turns), and both must answer the same secret, or a
    receiver could verify the deliveries of one cloud's jobs only."""
    seen = set()
    for _ in range(8):
        out = run(["curl", "-sf", "-H", f"Authorization: Bearer {TOKEN['value']}",
                   f"{stack.url}/v1/webhooks/secret"], timeout=30).stdout
        seen.add(json.loads(out)["secret"])
    check(len(seen) == 1 and next(iter(seen)).startswith("whsec_"),
          f"one webhook secret for the owner from both clouds ({len(seen)} distinct in 8 answers)")


def submit(stack: Stack, clip: Path, preset: str, timeout: float = 30) -> tuple[str | None, str]:
    """(job id or None, error text) for one submission through the edge."""
    try:
        p = reelay(stack, "submit", str(clip), "--preset", preset, "--json", timeout=timeout, check_rc=False)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout} s"
    if p.returncode != 0:
        return None, (p.stderr or p.stdout).strip()
    return json.loads(p.stdout)["id"], ""


def job(stack: Stack, jid: str) -> dict:
    return json.loads(reelay(stack, "status", jid, "--json").stdout)


def wait_done(stack: Stack, jid: str, timeout: float = 300) -> dict:
    reelay(stack, "wait", jid, "--timeout", str(int(timeout)), timeout=timeout + 30, check_rc=False)
    return job(stack, jid)


def ffprobe(path: Path) -> dict:
    return json.loads(run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)]).stdout)


def fetch(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN['value']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status}")
        return r.read()


def make_clip(path: Path, seconds: int, size: str) -> None:
    run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ checks

def check_outputs(stack: Stack, tmp: Path) -> list[str]:
    clip = tmp / "clip.mp4"
    make_clip(clip, 4, "640x360")
    mp4, err = submit(stack, clip, "mp4-480p")
    check(mp4 is not None, f"MP4 job accepted through the edge ({mp4 or err})")
    # 480 lines and 9 s: two rungs (480, 360; never upscaled) of three 4 s segments each.
    hls_clip = tmp / "hls.mp4"
    make_clip(hls_clip, 9, "854x480")
    hls, err = submit(stack, hls_clip, "hls-abr")
    check(hls is not None, f"HLS job accepted through the edge ({hls or err})")
    ids = [j for j in (mp4, hls) if j]
    for jid in ids:
        view = wait_done(stack, jid)
        check(view["status"] == "succeeded", f"{jid} succeeded (status {view['status']}, error {view.get('error')})")
        out = tmp / jid
        reelay(stack, "download", jid, "--to", str(out), timeout=120)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        check(len(files) > 0, f"{jid}: downloaded {len(files)} files")
        # Bytes after the download equal what the edge serves.
        listing = json.loads(fetch(f"{stack.url}/v1/jobs/{jid}/outputs"))["files"]
        for f in listing:
            local = out / f["name"]
            check(local.is_file() and local.stat().st_size == f["size"], f"{jid}: {f['name']} downloaded whole ({f['size']} bytes)")
    if mp4 and (tmp / mp4).is_dir():
        mp4_file = next((tmp / mp4).rglob("*.mp4"))
        probe = ffprobe(mp4_file)
        v = next(s for s in probe["streams"] if s["codec_type"] == "video")
        check(v["codec_name"] == "h264" and 0 < int(v["height"]) <= 480,
              f"MP4 output is H.264 video {v['width']}x{v['height']}")
        check(any(s["codec_type"] == "audio" for s in probe["streams"]), "MP4 output has audio")
        check(abs(float(probe["format"]["duration"]) - 4.0) < 0.2, f"MP4 duration {probe['format']['duration']} s")
    if hls and (tmp / hls).is_dir():
        masters = [p for p in (tmp / hls).rglob("*.m3u8") if "#EXT-X-STREAM-INF" in p.read_text()]
        check(len(masters) == 1, f"HLS has one master playlist ({[m.name for m in masters]})")
        if masters:
            master = masters[0]
            variants = [l for l in master.read_text().splitlines() if l and not l.startswith("#")]
            check(len(variants) >= 2, f"HLS ladder has {len(variants)} renditions")
            segments = 0
            base = master.parent.relative_to(tmp / hls)
            for v in variants:
                playlist = master.parent / v
                text = playlist.read_text()
                check("#EXT-X-ENDLIST" in text, f"{v} is a finished VOD playlist")
                for seg in (l for l in text.splitlines() if l and not l.startswith("#")):
                    rel = (Path(v).parent / seg) if str(base) == "." else base / Path(v).parent / seg
                    body = fetch(f"{stack.url}/v1/jobs/{hls}/outputs/{rel.as_posix()}")
                    local = playlist.parent / seg
                    if body != local.read_bytes() or len(body) == 0:
                        check(False, f"segment {rel} fetched through the edge equals the download")
                    segments += 1
            check(segments >= 6, f"fetched all {segments} HLS segments through the edge, each equal to the download")
            probe = ffprobe(master)
            check(any(s["codec_type"] == "video" for s in probe["streams"]), "ffprobe reads the HLS master playlist")
    return ids


def land_on(stack: Stack, clip: Path, cluster: str, preset: str, tries: int = 6) -> tuple[str | None, list[str]]:
    """Submits until one job lands on `cluster`; returns it and every accepted id."""
    accepted = []
    for _ in range(tries):
        jid, err = submit(stack, clip, preset)
        if jid is None:
            raise RuntimeError(f"submission failed: {err}")
        accepted.append(jid)
        if jid.startswith(cluster + "."):
            return jid, accepted
        time.sleep(1.5)  # let the edge see the new load
    return None, accepted


def kill_a_cloud(stack: Stack, tmp: Path) -> list[str]:
    long_clip = tmp / "long.mp4"
    make_clip(long_clip, 40, "1280x720")
    small = tmp / "small.mp4"
    make_clip(small, 1, "160x120")
    aws_job, accepted = land_on(stack, long_clip, "aws", "mp4-720p")
    check(aws_job is not None, f"a long job landed on aws ({accepted})")
    if aws_job is None:
        return accepted
    t0 = time.monotonic()
    while job(stack, aws_job)["status"] != "running":
        if time.monotonic() - t0 > 60:
            raise RuntimeError(f"{aws_job} did not start")
        time.sleep(0.3)
    time.sleep(1.0)  # well into the encode
    log(f"killing api-aws and worker-aws while {aws_job} runs")
    run(["docker", "kill", stack.container("api-aws"), stack.container("worker-aws")])
    killed = time.monotonic()
    first_ok = None
    attempts = []
    while time.monotonic() - killed < 15:
        jid, err = submit(stack, small, "mp4-360p", timeout=10)
        attempts.append((round(time.monotonic() - killed, 2), jid or err))
        if jid:
            accepted.append(jid)
            if first_ok is None:
                first_ok = time.monotonic() - killed
                check(jid.startswith("gcp."), f"the first submission after the kill went to gcp ({jid})")
                break
        time.sleep(0.2)
    log(f"submissions after the kill: {attempts}")
    check(first_ok is not None and first_ok <= 3.0,
          f"a new submission got 202 from gcp {first_ok if first_ok is None else round(first_ok, 2)} s after the kill (limit 3 s)")
    # A listing that would include aws must not hide aws's job silently: at least gcp answers.
    t0 = time.monotonic()
    stack.compose("start", "api-aws", "worker-aws")
    stack.wait_healthy(["api-aws", "worker-aws"], 180)
    log(f"aws back after {time.monotonic() - t0:.1f} s")
    view = wait_done(stack, aws_job, 400)
    check(view["status"] == "succeeded", f"the aws job accepted before the kill finished ({view['status']}, attempts {view['attempts']})")
    check(view["attempts"] == 2, f"it ran once more after the kill, no more (attempts {view['attempts']})")
    out = tmp / aws_job
    reelay(stack, "download", aws_job, "--to", str(out), timeout=120)
    mp4s = list(out.rglob("*.mp4"))
    check(len(mp4s) == 1, f"the aws job has exactly one output file ({[p.name for p in mp4s]})")
    if mp4s:
        d = float(ffprobe(mp4s[0])["format"]["duration"])
        check(abs(d - 40) < 0.5, f"the aws job's output is whole ({d:.2f} s of 40)")
    return accepted


def cut_a_cloud_off(stack: Stack, tmp: Path) -> list[str]:
    small = tmp / "small.mp4"
    net = stack.network("gcp-ingress")
    api = stack.container("api-gcp")
    # The worker too: it asks the edge for aws's tasks on that network (work stealing).
    worker = stack.container("worker-gcp")
    check(stack.health("gcp") == "up" and stack.health("aws") == "up", "both clouds up before the cut")
    limit = HEALTH["fall"] * HEALTH["interval_ms"] / 1000 + HEALTH["timeout_ms"] / 1000 + 1.0
    log(f"disconnecting api-gcp and worker-gcp from {PROJECT}'s gcp-ingress network")
    run(["docker", "network", "disconnect", net, api])
    run(["docker", "network", "disconnect", net, worker])
    cut = time.monotonic()
    results: list[tuple[float, str | None, str]] = []
    stop = threading.Event()

    def submitter() -> None:
        while not stop.is_set():
            at = time.monotonic() - cut
            jid, err = submit(stack, small, "mp4-360p", timeout=15)
            results.append((at, jid, err))
            time.sleep(0.25)

    th = threading.Thread(target=submitter)
    th.start()
    down_after = None
    while time.monotonic() - cut < 20:
        if stack.health("gcp") not in ("up", "unknown"):
            down_after = time.monotonic() - cut
            break
        time.sleep(0.1)
    time.sleep(3)
    stop.set()
    th.join()
    check(down_after is not None and down_after <= limit,
          f"the edge marked gcp down {down_after if down_after is None else round(down_after, 2)} s after the cut "
          f"(fall {HEALTH['fall']} x {HEALTH['interval_ms']} ms + timeout {HEALTH['timeout_ms']} ms + 1 s = {limit:.1f} s)")
    failed = [(round(a, 2), e) for a, j, e in results if j is None]
    check(len(results) >= 5 and not failed, f"{len(results)} submissions during the cut, none failed {failed}")
    late = [j for a, j, _ in results if j and down_after is not None and a > down_after]
    check(all(j.startswith("aws.") for j in late), f"after gcp was marked down every job went to aws ({late})")
    log("reconnecting api-gcp and worker-gcp")
    run(["docker", "network", "connect", "--alias", "api-gcp", net, api])
    run(["docker", "network", "connect", "--alias", "worker-gcp", net, worker])
    t0 = time.monotonic()
    while stack.health("gcp") != "up":
        if time.monotonic() - t0 > 30:
            break
        time.sleep(0.2)
    check(stack.health("gcp") == "up", f"gcp healthy again {time.monotonic() - t0:.1f} s after reconnecting")
    # Let aws finish what it got, so the cheaper idle gcp is where the next job starts first.
    accepted = [j for _, j, _ in results if j]
    for jid in accepted:
        wait_done(stack, jid, 300)
    gcp_job, more = land_on(stack, small, "gcp", "mp4-360p")
    check(gcp_job is not None, f"gcp receives work again ({more})")
    return accepted + more


def edge_config(tmp: Path, eager: bool = True) -> Path:
    """docker/compose/edge.toml with an eager stealing policy: the shipped one (60 s saved, 120 s
    of patience) leaves every test clip where it was placed, which is what it is for."""
    text = (ROOT / "docker/compose/edge.toml").read_text()
    path = tmp / "edge.toml"
    if not eager:
        path.write_text(text)  # the same inode: the bind mount sees it
        return path
    # A 4 s piece waits at home for the rest of the piece before it (a few seconds): worth a
    # move once 0.2 s are saved, no egress price (one machine), after 3 s of patience.
    eager = text
    for key, value in (("min_seconds_saved", "0.2"), ("min_wait_seconds", "3"), ("egress_usd_per_gb", "0")):
        eager = re.sub(rf"^{key} = .*$", f"{key} = {value}", eager, flags=re.M)
        check(f"\n{key} = {value}\n" in eager, f"the test's edge.toml: {key} = {value}")
    path.write_text(eager)
    path.chmod(0o644)  # read by the edge's UID 10001
    return path


def steal_across_clouds(stack: Stack, tmp: Path) -> list[str]:
    """A 40 s film split into 4 s ranges lands on one cloud; the other cloud's idle worker asks the
    edge, which names that cloud's waiting pieces, and claims them through the edge with its own
    peer token (the bytes through the owner's api: presign = false). The job succeeds at home
    with every piece run once, some on the other cloud, and one whole MP4."""
    film = tmp / "film.mp4"
    make_clip(film, 40, "1280x720")
    spec = tmp / "split.json"
    spec.write_text(json.dumps({"outputs": [{"preset": "mp4-720p"}], "split": {"segment_seconds": 4}}))
    p = reelay(stack, "submit", str(film), "--spec", str(spec), "--json", timeout=60)
    jid = json.loads(p.stdout)["id"]
    home = jid.split(".")[0]
    log(f"split film {jid} on {home}")
    view = wait_done(stack, jid, 400)
    check(view["status"] == "succeeded", f"the split film succeeded ({view['status']}, {view.get('error')})")
    tasks = view.get("tasks", [])
    pieces = [t for t in tasks if t["kind"] == "encode_segment"]
    away = [t["id"] for t in pieces if t.get("ran_on") not in (None, home)]
    log(f"pieces: {[(t['id'][-12:], t.get('ran_on'), t['attempts']) for t in pieces]}")
    try:
        with urllib.request.urlopen(f"{stack.url}/edge/metrics", timeout=5) as r:
            decisions = [l for l in r.read().decode().splitlines() if l.startswith("reelay_edge_steal_decisions_total")]
        log(f"the edge's stealing answers: {decisions}")
    except (OSError, ValueError) as e:
        log(f"/edge/metrics unreadable: {e}")
    check(len(pieces) >= 8, f"the film was cut into {len(pieces)} pieces (>= 8)")
    check(len(away) >= 1, f"{len(away)} of {len(pieces)} pieces ran on the other cloud, through the edge")
    check(all(t["attempts"] == 1 for t in tasks), f"every task ran once ({[(t['kind'], t['attempts']) for t in tasks]})")
    out = tmp / jid
    reelay(stack, "download", jid, "--to", str(out), timeout=120)
    mp4s = list(out.rglob("*.mp4"))
    check(len(mp4s) == 1, f"the split film has one MP4 ({[m.name for m in mp4s]})")
    if mp4s:
        probe = json.loads(run(["ffprobe", "-v", "error", "-count_packets", "-show_format", "-show_streams",
                                "-of", "json", str(mp4s[0])]).stdout)
        v = next(s for s in probe["streams"] if s["codec_type"] == "video")
        check(int(v["nb_read_packets"]) == 1000, f"the stitched film has all 1000 frames ({v['nb_read_packets']})")
        check(any(s["codec_type"] == "audio" for s in probe["streams"]), "the stitched film has audio")
        d = float(probe["format"]["duration"])
        check(abs(d - 40) <= 0.1, f"the stitched film lasts {d:.3f} s (40 s)")
    return [jid]


def check_hardening(stack: Stack) -> None:
    for service in HARDENED:
        cid = stack.container(service)
        info = stack.inspect(cid)
        hc = info["HostConfig"]
        uid = run(["docker", "exec", cid, "id", "-u"]).stdout.strip()
        gid = run(["docker", "exec", cid, "id", "-g"]).stdout.strip()
        check(uid == UID and gid == UID, f"{service} runs as {uid}:{gid}")
        w = run(["docker", "exec", cid, "sh", "-c", "echo x > /probe-write"], check_rc=False)
        check(w.returncode != 0 and "Read-only" in w.stderr, f"{service}: a write to / fails ({w.stderr.strip()})")
        check(hc.get("ReadonlyRootfs") is True, f"{service}: read-only root filesystem in its config")
        status = run(["docker", "exec", cid, "cat", "/proc/1/status"]).stdout
        cap = re.search(r"^CapEff:\s*(\w+)", status, re.M).group(1)
        nnp = re.search(r"^NoNewPrivs:\s*(\d)", status, re.M).group(1)
        check(int(cap, 16) == 0, f"{service}: no capabilities (CapEff {cap})")
        check(nnp == "1", f"{service}: no-new-privileges (NoNewPrivs {nnp})")
        health = info["State"].get("Health", {}).get("Status")
        check(health == "healthy", f"{service}: HEALTHCHECK reports {health}")
    for service in ["migrate-aws", "migrate-gcp", "identity-keys", "identity-trusted"]:
        info = stack.inspect(stack.container(service))
        check(info["State"]["ExitCode"] == 0 and info["Config"]["User"].startswith(UID),
              f"{service} ran as {info['Config']['User']} and exited {info['State']['ExitCode']}")


def leftovers() -> list[str]:
    found = []
    for kind in ("container", "network", "volume"):
        extra = ["-a"] if kind == "container" else []
        out = run(["docker", kind, "ls", *extra, "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"]).stdout.split()
        found += [f"{kind} {x}" for x in out]
    return found


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="reelay-compose-test."))
    env_file = tmp / "compose.env"
    run([str(ROOT / "scripts/compose-env.sh"), str(env_file)])
    port = free_port()
    with env_file.open("a") as f:
        f.write(f"EDGE_PORT={port}\nREELAY_WORKERS=1\nEDGE_CONFIG={edge_config(tmp)}\n"
                "RUST_LOG=info,reelay_server::worker::remote=debug\n")
    stack = Stack(env_file, port)
    stack.compose("down", "-v", "--remove-orphans", check_rc=False)  # a crashed earlier run
    ok = False
    try:
        t0 = time.monotonic()
        stack.compose("up", "-d", "--no-build", timeout=900)
        started_in = stack.wait_healthy(["api-aws", "worker-aws", "api-gcp", "worker-gcp", "edge"], 300)
        t_up = time.monotonic() - t0
        log(f"stack up and healthy in {t_up:.1f} s")
        t0 = time.monotonic()
        while not (stack.health("aws") == "up" and stack.health("gcp") == "up"):
            if time.monotonic() - t0 > 60:
                raise RuntimeError(f"edge status: {stack.status()}")
            time.sleep(0.5)
        get_token(stack)
        one_webhook_secret(stack)
        accepted = check_outputs(stack, tmp)
        check_hardening(stack)
        accepted += steal_across_clouds(stack, tmp)
        # The shipped policy again (nothing of these short tests moves), so that the kill and
        # the cut below see each job where the edge placed it.
        edge_config(tmp, eager=False)
        stack.compose("restart", "edge")
        stack.wait_healthy(["edge"], 120)
        t0 = time.monotonic()
        while not (stack.health("aws") == "up" and stack.health("gcp") == "up"):
            if time.monotonic() - t0 > 60:
                raise RuntimeError(f"edge status after its restart: {stack.status()}")
            time.sleep(0.5)
        accepted += kill_a_cloud(stack, tmp)
        accepted += cut_a_cloud_off(stack, tmp)
        # Nothing accepted is lost: every job that got a 202 succeeds.
        bad = []
        for jid in accepted:
            view = wait_done(stack, jid, 300)
            if view["status"] != "succeeded":
                bad.append((jid, view["status"], view.get("error")))
        check(not bad, f"all {len(accepted)} accepted jobs succeeded {bad}")
        sizes = run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}"]).stdout
        log("image sizes:\n  " + "\n  ".join(l for l in sizes.splitlines() if l.startswith("reelay-")))
        log(f"time to start the stack: {t_up:.1f} s (healthy after {started_in:.1f} s of waiting)")
        ok = not failures
    except Exception as e:  # noqa: BLE001 - report, then tear down
        log(f"ERROR {e}")
        failures.append(str(e))
    finally:
        if not ok:
            logs = stack.compose("logs", "--no-color", "--tail", "60", check_rc=False, timeout=60)
            (ROOT / "target").mkdir(exist_ok=True)
            (ROOT / "target/compose-test.log").write_text(logs.stdout + logs.stderr)
            log("container logs: target/compose-test.log")
        if os.environ.get("KEEP") == "1":
            log(f"KEEP=1: stack left up ({shlex.join([*COMPOSE, '-p', PROJECT, '--env-file', str(env_file)])} down -v)")
        else:
            stack.compose("down", "-v", "--remove-orphans", timeout=300, check_rc=False)
            left = leftovers()
            check(not left, f"docker compose down -v left nothing behind {left}")
            subprocess.run(["rm", "-rf", str(tmp)])
    if failures:
        log(f"{len(failures)} failed:\n  " + "\n  ".join(failures))
        return 1
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
