"""tus 1.0 uploads to a live `reelay serve` with an independent client (tuspy), and the reelay
CLI's own resumable upload after a dropped connection and after Ctrl-C.

Run by scripts/tus-test.sh, which starts the server and sets:
REELAY_URL (the cluster), REELAY_DATA_DIR (its data dir: local storage is checked byte for
byte), REELAY_BIN (the CLI), REELAY_CLIP (a generated H.264/AAC clip of a few MB),
REELAY_ARTIFACTS (logs).
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

URL = os.environ["REELAY_URL"]
DATA = Path(os.environ["REELAY_DATA_DIR"])
BIN = os.environ["REELAY_BIN"]
CLIP = Path(os.environ["REELAY_CLIP"])
ART = Path(os.environ.get("REELAY_ARTIFACTS", "/tmp"))


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def offset_of(upload_url):
    r = requests.head(upload_url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert r.status_code == 200, r.status_code
    return int(r.headers["Upload-Offset"])


def submit_upload(upload_id):
    spec = {"input": {"upload": upload_id}, "outputs": [{"preset": "mp4-360p"}]}
    r = requests.post(f"{URL}/v1/jobs", json=spec, timeout=60)
    assert r.status_code == 202, r.text
    return r.json()


def wait_succeeded(job_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = requests.get(f"{URL}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def check_output(job, tmp_path):
    """Fetches the MP4 and asks ffprobe what it is, as a user would."""
    [out] = [o for o in job["outputs"] if o["name"].endswith(".mp4")]
    r = requests.get(URL + out["url"], timeout=60)
    assert r.status_code == 200
    path = tmp_path / "out.mp4"
    path.write_bytes(r.content)
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
            check=True,
            capture_output=True,
        ).stdout
    )
    video = [s for s in probe["streams"] if s["codec_type"] == "video"][0]
    assert video["codec_name"] == "h264"
    assert min(int(video["width"]), int(video["height"])) == 360
    assert abs(float(probe["format"]["duration"]) - 4.0) < 0.3


def input_of(job_id):
    return DATA / "storage" / "inputs" / job_id / "source"


class DroppingProxy:
    """A TCP proxy to the cluster that, while armed, cuts (or stalls) every connection after
    `limit` bytes from the client: a dropped connection as a client sees it."""

    def __init__(self, target, limit, mode="cut"):
        host, port = target.split("//")[1].split(":")
        self.target = (host, int(port))
        self.limit, self.mode, self.armed = limit, mode, True
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(u, c), daemon=True).start()

    def _up(self, c, u):
        sent = 0
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                if self.armed and sent + len(data) > self.limit:
                    u.sendall(data[: self.limit - sent])
                    self.cuts += 1
                    if self.mode == "stall":
                        # Hold the connection open and send nothing (until the client dies).
                        while c.recv(65536):
                            pass
                    break
                sent += len(data)
                u.sendall(data)
        except OSError:
            pass
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _down(self, u, c):
        try:
            while True:
                data = u.recv(65536)
                if not data:
                    break
                c.sendall(data)
        except OSError:
            pass

    def close(self):
        self.sock.close()


def test_tuspy_uploads_in_chunks_resumes_with_a_new_client_and_the_upload_becomes_a_job(tmp_path):
    size = CLIP.stat().st_size
    chunk = 256 * 1024
    assert size > 3 * chunk
    first = tus_client.TusClient(f"{URL}/v1/uploads")
    up = first.uploader(str(CLIP), chunk_size=chunk, metadata={"filename": CLIP.name})
    up.upload_chunk()
    up.upload_chunk()
    url = up.url
    assert "/v1/uploads/" in url
    # "The process died": a fresh client that knows only the URL continues at the server's offset.
    assert offset_of(url) == 2 * chunk
    second = tus_client.TusClient(f"{URL}/v1/uploads")
    resumed = second.uploader(str(CLIP), url=url, chunk_size=chunk)
    assert resumed.get_offset() == 2 * chunk
    resumed.upload()
    assert offset_of(url) == size

    job = submit_upload(url.rsplit("/", 1)[1])
    assert sha(input_of(job["id"])) == sha(CLIP)
    check_output(wait_succeeded(job["id"]), tmp_path)
    # Used: the upload is gone.
    assert requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=10).status_code == 404


def test_tuspy_upload_cut_off_mid_patch_resumes_from_what_the_server_kept(tmp_path):
    size = CLIP.stat().st_size
    proxy = DroppingProxy(URL, limit=size // 2)
    try:
        c = tus_client.TusClient(f"{proxy.url}/v1/uploads")
        up = c.uploader(str(CLIP), chunk_size=size, metadata={"filename": CLIP.name})
        with pytest.raises((TusCommunicationError, requests.exceptions.RequestException)):
            up.upload()
        assert proxy.cuts == 1
        url = up.url.replace(proxy.url, URL)
        # What arrived before the cut is kept (committed once the server saw the body end).
        kept = 0
        for _ in range(50):
            kept = offset_of(url)
            if kept:
                break
            time.sleep(0.1)
        assert 0 < kept < size
    finally:
        proxy.close()
    again = tus_client.TusClient(f"{URL}/v1/uploads").uploader(str(CLIP), url=url, chunk_size=size)
    assert again.get_offset() == kept
    again.upload()
    job = submit_upload(url.rsplit("/", 1)[1])
    assert sha(input_of(job["id"])) == sha(CLIP)
    check_output(wait_succeeded(job["id"]), tmp_path)


def cli(args, server, state_dir, **kw):
    env = dict(os.environ, REELAY_STATE_DIR=str(state_dir), RUST_LOG="info", NO_COLOR="1")
    return subprocess.Popen(
        [BIN, "--server", server, "submit", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def parts_of_uploads():
    """Committed part offsets of every upload in the cluster's local storage."""
    root = DATA / "storage" / "uploads"
    if not root.exists():
        return {}
    return {
        # Only committed parts: the store's own staging files (`name#1`) are not.
        d.name: sorted(int(p.name) for p in (d / "parts").iterdir() if p.name.isdigit())
        if (d / "parts").exists()
        else []
        for d in root.iterdir()
    }


def test_cli_resumes_after_a_dropped_connection_within_one_run(tmp_path):
    state = tmp_path / "state"
    proxy = DroppingProxy(URL, limit=CLIP.stat().st_size // 3)
    try:
        threading.Timer(2.0, lambda: setattr(proxy, "armed", False)).start()
        p = cli([str(CLIP), "--preset", "mp4-360p", "--resumable-above", "0", "--wait"], proxy.url, state)
        out, err = p.communicate(timeout=180)
        (ART / "cli-dropped.log").write_text(err)
        assert p.returncode == 0, err
        assert proxy.cuts >= 1
        assert "upload interrupted; resuming" in err
    finally:
        proxy.close()
    job_id = out.strip().splitlines()[0]
    assert sha(input_of(job_id)) == sha(CLIP)
    check_output(requests.get(f"{URL}/v1/jobs/{job_id}", timeout=10).json(), tmp_path)
    assert not any(state.iterdir()), "the state file goes once the job exists"


def test_cli_run_again_after_ctrl_c_continues_where_it_stopped(tmp_path):
    state = tmp_path / "state"
    size = CLIP.stat().st_size
    before = set(parts_of_uploads())
    proxy = DroppingProxy(URL, limit=size // 2, mode="stall")
    try:
        p = cli([str(CLIP), "--preset", "mp4-360p", "--resumable-above", "0"], proxy.url, state)
        deadline = time.time() + 30
        while proxy.cuts == 0 and time.time() < deadline:
            time.sleep(0.1)
        assert proxy.cuts == 1, "the upload never reached the stall"
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
        (ART / "cli-ctrl-c.log").write_text(err)
        assert p.returncode != 0
        assert len(list(state.iterdir())) == 1, "the upload URL is kept for the next run"
        # The server keeps what arrived once the connection is gone.
        new = []
        for _ in range(100):
            new = [u for u, parts in parts_of_uploads().items() if u not in before and parts]
            if new:
                break
            time.sleep(0.1)
        assert len(new) == 1, parts_of_uploads()
        upload = new[0]
        kept = offset_of(f"{URL}/v1/uploads/{upload}")
        assert 0 < kept < size

        # The same command again (same server, now passing everything): it continues at `kept`.
        proxy.armed = False
        p = cli([str(CLIP), "--preset", "mp4-360p", "--resumable-above", "0", "--wait"], proxy.url, state)
        out, err = p.communicate(timeout=180)
        (ART / "cli-rerun.log").write_text(err)
    finally:
        proxy.close()
    assert p.returncode == 0, err
    assert "resuming the upload" in err and f"offset={kept}" in err, err
    job_id = out.strip().splitlines()[0]
    assert sha(input_of(job_id)) == sha(CLIP)
    assert not any(state.iterdir())
    # The upload whose PATCHes continued is the one the first run began (now used and deleted).
    left = [f for f in (DATA / "storage" / "uploads" / upload).rglob("*") if f.is_file()]
    assert left == [], left
