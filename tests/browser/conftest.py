"""Fixtures for the dashboard browser test: Debian's Chromium, headless, driven by playwright.

Run by scripts/browser-test.sh, which starts `reelay up` on free ports and passes:
  REELAY_EDGE_URL           the edge (nginx) base URL
  REELAY_CLUSTER_URL        one cluster's base URL (its own dashboard)
  REELAY_KILL_CLUSTER_PORT  port of a cluster the last test may kill (optional: skipped without)
  REELAY_CLIP               a short H.264/AAC clip to upload
  REELAY_ARTIFACTS          where screenshots go (default tests/browser/artifacts)
  CHROMIUM                  the browser binary (default /usr/bin/chromium)
  REELAY_HLS_JS             hls.min.js for the cross-origin player page (test_cross_origin.py)

The browser is never downloaded (`playwright install` is not used): playwright launches the
binary named by CHROMIUM. Every test gets its own browser with a fresh profile directory.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import logging
import os
import pathlib
import shutil
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import BrowserContext, Playwright, sync_playwright

log = logging.getLogger("browser-test")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclasses.dataclass(frozen=True)
class Env:
    edge: str
    cluster: str
    clip: pathlib.Path
    artifacts: pathlib.Path
    kill_port: str | None
    chromium: str


@dataclasses.dataclass
class Shared:
    """What one test leaves for the next (pytest runs them in file order)."""

    job_id: str | None = None


@pytest.fixture(scope="session")
def env() -> Env:
    missing = [
        n for n in ("REELAY_EDGE_URL", "REELAY_CLUSTER_URL", "REELAY_CLIP") if not os.environ.get(n)
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set (scripts/browser-test.sh sets them)", pytrace=False
        )
    chromium = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        pytest.fail(f"no browser at {chromium} (set CHROMIUM)", pytrace=False)
    artifacts = pathlib.Path(
        os.environ.get("REELAY_ARTIFACTS") or pathlib.Path(__file__).parent / "artifacts"
    ).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return Env(
        edge=os.environ["REELAY_EDGE_URL"].rstrip("/"),
        cluster=os.environ["REELAY_CLUSTER_URL"].rstrip("/"),
        clip=pathlib.Path(os.environ["REELAY_CLIP"]).resolve(),
        artifacts=artifacts,
        kill_port=os.environ.get("REELAY_KILL_CLUSTER_PORT") or None,
        chromium=chromium,
    )


@pytest.fixture(scope="session")
def shared() -> Shared:
    return Shared()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Keeps each phase's report on the test item, so that the browser fixture knows at teardown
    # whether the test failed.
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report


@pytest.fixture
def browser(
    playwright: Playwright, env: Env, request: pytest.FixtureRequest
) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile (launch_persistent_context makes the directory
    its --user-data-dir). When the test fails, every page still open is screenshotted."""
    profile = tempfile.mkdtemp(prefix="reelay-chromium-")
    try:
        ctx = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=env.chromium,
            headless=True,
            viewport={"width": 1280, "height": 900},
            args=CHROMIUM_ARGS,
        )
        ctx.set_default_timeout(30_000)
        try:
            yield ctx
        finally:
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                _failure_screenshots(ctx, env, request.node.name)
            ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _failure_screenshots(ctx: BrowserContext, env: Env, test: str) -> None:
    for i, page in enumerate(ctx.pages):
        if page.url == "about:blank":  # the persistent context's first, unused tab
            continue
        path = env.artifacts / f"FAILED-{test}-{i}.png"
        try:
            page.screenshot(path=str(path), full_page=True, timeout=10_000)
            log.info("failure screenshot %s", path)
        except Exception as e:  # noqa: BLE001 - the test's own failure matters more
            log.warning("no failure screenshot of page %d: %s", i, e)


class _QuietSite(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("other-origin site: " + format, *args)


@pytest.fixture(scope="module")
def other_origin() -> Iterator[Callable[[dict[str, str | pathlib.Path]], str]]:
    """A customer's own site on ANOTHER origin than the edge (Python's http.server on its own
    port): call it with the site's files, name -> page text or a file to copy (a player
    script), and it answers the site's base URL. Every site it started stops with the module."""
    sites: list[tuple[http.server.ThreadingHTTPServer, pathlib.Path]] = []

    def start(files: dict[str, str | pathlib.Path]) -> str:
        root = pathlib.Path(tempfile.mkdtemp(prefix="reelay-player-site-"))
        for name, content in files.items():
            if isinstance(content, pathlib.Path):
                shutil.copy(content, root / name)
            else:
                (root / name).write_text(content)
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_QuietSite, directory=str(root))
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sites.append((server, root))
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield start
    finally:
        for server, root in sites:
            server.shutdown()
            shutil.rmtree(root, ignore_errors=True)


def submit_job(
    env: Env,
    spec: dict,
    parts: list[tuple[str, str, str, str]] = (),
    timeout: float = 180,
) -> dict:
    """Uploads the clip through the edge (multipart: spec, the side `parts` as (part name, file
    name, content type, text), then the file) and waits until the job succeeded."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{json.dumps(spec)}\r\n'
    for name, filename, content_type, text in parts:
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n{text}\r\n"
        )
    body = b"".join(
        [
            head.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n".encode(),
            env.clip.read_bytes(),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    req = urllib.request.Request(
        env.edge + "/v1/jobs",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        job = json.load(r)
    deadline = time.monotonic() + timeout
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.3)
        with urllib.request.urlopen(f"{env.edge}/v1/jobs/{job['id']}", timeout=10) as r:
            job = json.load(r)
    assert job["status"] == "succeeded", job
    return job
