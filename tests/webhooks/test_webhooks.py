"""Webhooks from a live `reelay serve` (scripts/webhooks-test.sh), received by a Python server
that verifies every request with `standardwebhooks` (PyPI), an implementation independent of
reelay's: signatures of per-job `notify` endpoints (the owner's secret) and of a configured
subscription (its own secret and event filter); a receiver that answers 503 and then refuses
connections for a while still gets every event afterwards, in order per job; redelivery by hand
sends the same `webhook-id` again; every attempt is visible through the API."""

import http.server
import json
import os
import threading
import time
import urllib.request

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

URL = os.environ["REELAY_URL"]
RECEIVER_PORT = int(os.environ["REELAY_RECEIVER_PORT"])
CLIP_PORT = int(os.environ["REELAY_CLIP_PORT"])
CLIP = os.environ["REELAY_CLIP"]
SUB_SECRET = os.environ["REELAY_SUB_SECRET"]


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Received:
    """Every request the receiver got: (path, headers, body, verified type or error)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.mode = "up"  # or "503"

    def add(self, item):
        with self.lock:
            self.items.append(item)

    def snapshot(self):
        with self.lock:
            return list(self.items)


RECEIVED = Received()
SECRETS = {}


class Receiver(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        if RECEIVED.mode == "503":
            self.send_response(503)
            self.end_headers()
            return
        secret = SECRETS[self.path]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            payload = Webhook(secret).verify(body, headers)
            verdict = "ok"
        except WebhookVerificationError as e:
            payload, verdict = json.loads(body), f"bad signature: {e}"
        RECEIVED.add(
            {
                "path": self.path,
                "id": headers.get("webhook-id"),
                "type": payload.get("type"),
                "job": payload.get("data", {}).get("id"),
                "status": payload.get("data", {}).get("status"),
                "verdict": verdict,
            }
        )
        self.send_response(204)
        self.end_headers()


class ClipServer(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        with open(CLIP, "rb") as f:
            data = f.read()
        self.send_response(200)
        self.send_header("content-type", "video/mp4")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(handler, port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def receiver():
    clip = serve(ClipServer, CLIP_PORT)
    status, body = api("GET", "/v1/webhooks/secret")
    assert status == 200 and body["secret"].startswith("whsec_"), body
    SECRETS["/notify"] = body["secret"]
    SECRETS["/ops"] = SUB_SECRET
    server = serve(Receiver, RECEIVER_PORT)
    yield server
    server.shutdown()
    clip.shutdown()


def submit():
    status, job = api(
        "POST",
        "/v1/jobs",
        {
            "input": {"url": f"http://127.0.0.1:{CLIP_PORT}/clip.mp4"},
            "outputs": [{"preset": "thumbnail"}],
            "notify": [{"url": f"http://127.0.0.1:{RECEIVER_PORT}/notify"}],
        },
    )
    assert status == 202, job
    return job["id"]


def wait_job(job_id, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        _, job = api("GET", f"/v1/jobs/{job_id}")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


WANT_NOTIFY = ["job.created", "job.started", "job.succeeded"]


def arrivals(job_id, path):
    """The event types of the job at the path, in order of first arrival of each webhook-id."""
    seen, out = set(), []
    for r in RECEIVED.snapshot():
        if r["job"] == job_id and r["path"] == path and r["id"] not in seen:
            seen.add(r["id"])
            out.append(r["type"])
    return out


def wait_arrivals(job_ids, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if all(
            arrivals(j, "/notify") == WANT_NOTIFY and arrivals(j, "/ops") == ["job.succeeded"]
            for j in job_ids
        ):
            return
        time.sleep(0.2)
    raise AssertionError(
        {j: (arrivals(j, "/notify"), arrivals(j, "/ops")) for j in job_ids}
    )


def test_every_signature_verifies(receiver):
    jobs = [submit() for _ in range(2)]
    for j in jobs:
        assert wait_job(j)["status"] == "succeeded"
    wait_arrivals(jobs)
    got = [r for r in RECEIVED.snapshot() if r["job"] in jobs]
    assert got and all(r["verdict"] == "ok" for r in got), got
    # The terminal event carries the final job view.
    assert all(r["status"] == "succeeded" for r in got if r["type"] == "job.succeeded")
    # A wrong secret does not verify (the check is real).
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify("{}", {"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"})


def test_a_receiver_that_is_down_gets_everything_afterwards_in_order(receiver):
    RECEIVED.mode = "503"
    jobs = [submit() for _ in range(3)]
    for j in jobs:
        assert wait_job(j)["status"] == "succeeded"
    time.sleep(1.5)
    # Then it is gone altogether: connections refused.
    receiver.shutdown()
    receiver.server_close()
    time.sleep(2.5)
    assert all(arrivals(j, "/notify") == [] for j in jobs)
    RECEIVED.mode = "up"
    back = serve(Receiver, RECEIVER_PORT)
    try:
        wait_arrivals(jobs, timeout=90)
    finally:
        back.shutdown()
        back.server_close()
    for j in jobs:
        status, body = api("GET", f"/v1/jobs/{j}/webhooks")
        assert status == 200
        notify = [d for d in body["deliveries"] if d["endpoint"] == "notify:0"]
        assert [d["event_type"] for d in notify] == WANT_NOTIFY
        assert all(d["state"] == "delivered" for d in notify), notify
        first = notify[0]["attempt_log"]
        codes = [a["status_code"] for a in first]
        # Refused while down (503s, then no answer at all), delivered at last.
        assert 503 in codes and codes[-1] == 204, first
        assert any(a["status_code"] is None and a.get("error") for a in first), first
        assert all(a["latency_ms"] >= 0 for a in first)
    globals()["DOWN_JOBS"] = jobs


def test_redelivery_sends_the_same_message_again(receiver):
    back = serve(Receiver, RECEIVER_PORT)
    try:
        job = submit()
        wait_job(job)
        wait_arrivals([job])
        _, body = api("GET", f"/v1/jobs/{job}/webhooks")
        d = next(d for d in body["deliveries"] if d["event_type"] == "job.succeeded" and d["endpoint"] == "notify:0")
        before = sum(1 for r in RECEIVED.snapshot() if r["id"] == d["id"])
        status, again = api("POST", f"/v1/jobs/{job}/webhooks/{d['id']}/redeliver")
        assert status == 202 and again["id"] == d["id"], again
        end = time.time() + 30
        while time.time() < end and sum(1 for r in RECEIVED.snapshot() if r["id"] == d["id"]) == before:
            time.sleep(0.2)
        hits = [r for r in RECEIVED.snapshot() if r["id"] == d["id"]]
        assert len(hits) == before + 1 and all(r["verdict"] == "ok" for r in hits)
        status, err = api("POST", f"/v1/jobs/{job}/webhooks/msg_nope/redeliver")
        assert status == 404 and "error" in err
    finally:
        back.shutdown()
        back.server_close()
