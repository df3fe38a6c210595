"""Outputs read by a web player on the customer's own site: a page on ANOTHER origin (a Python
http.server on its own port, so another origin than the edge) loads hls.js and plays an hls-abr
output through the edge, and reads an output with a Range request. Run by
scripts/browser-test.sh (fixtures: conftest.py).

The player adds `Authorization: Bearer ...` to every request (hls.js `xhrSetup`), as a player of
a protected cluster must, which makes Chromium send a CORS preflight before each file; the
browser-test stack runs open (anonymous), so the clusters ignore the token's value, but the
preflight, the CORS headers and their passage through the edge are all real. The job API must
stay closed to the page.

The page's hls.js is copied at run time from REELAY_HLS_JS (default: the copy the dashboard
vendors with its licence, crates/dashboard/assets/hls.min.js, so a clean clone has it).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import pytest
from conftest import submit_job
from playwright.sync_api import BrowserContext

if TYPE_CHECKING:
    from conftest import Env

log = logging.getLogger("browser-test")

HLS_JS = pathlib.Path(
    os.environ.get("REELAY_HLS_JS")
    or str(pathlib.Path(__file__).resolve().parents[2] / "crates/dashboard/assets/hls.min.js")
)

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>customer player</title></head>
<body>
<video id="v" muted playsinline width="320"></video>
<script src="hls.min.js"></script>
<script>
  window.seen = { errors: [], fragments: 0 };
  window.play = (src, token) => {
    const v = document.getElementById('v');
    const hls = new Hls({
      // What a player of a protected cluster does: the token on every request.
      xhrSetup: (xhr) => xhr.setRequestHeader('Authorization', 'Bearer ' + token),
    });
    hls.on(Hls.Events.ERROR, (_e, d) =>
      window.seen.errors.push(d.type + ':' + d.details + (d.fatal ? ':fatal' : '')));
    hls.on(Hls.Events.FRAG_LOADED, () => { window.seen.fragments += 1; });
    hls.on(Hls.Events.MANIFEST_PARSED, (_e, d) => {
      window.seen.levels = d.levels.length;
      v.play().catch((e) => window.seen.errors.push('play:' + e));
    });
    hls.loadSource(src);
    hls.attachMedia(v);
  };
</script>
</body></html>
"""


@pytest.fixture(scope="module")
def page_origin(other_origin) -> str:
    """A tiny site on another origin: the page and hls.js."""
    if not HLS_JS.is_file():
        pytest.fail(f"no hls.js at {HLS_JS} (set REELAY_HLS_JS)", pytrace=False)
    return other_origin({"index.html": PAGE, "hls.min.js": HLS_JS})


def submit_and_wait(env: Env, presets: list[str]) -> dict:
    """Uploads the clip through the edge with these presets and waits for the job."""
    return submit_job(env, {"outputs": [{"preset": p} for p in presets]}, timeout=120)


def test_a_player_on_another_origin_plays_hls_and_reads_ranges_through_the_edge(
    env: Env, browser: BrowserContext, page_origin: str
) -> None:
    job = submit_and_wait(env, ["hls-abr", "mp4-360p"])
    outputs = f"{env.edge}/v1/jobs/{job['id']}/outputs"
    assert urllib.parse.urlsplit(page_origin).netloc != urllib.parse.urlsplit(env.edge).netloc

    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append("page error: " + e.message))
    page.on(
        "console",
        lambda m: log.info("player console.%s: %s", m.type, m.text)
        if m.type in ("error", "warning")
        else None,
    )
    page.goto(page_origin + "/index.html")
    assert page.evaluate("() => typeof Hls !== 'undefined' && Hls.isSupported()")

    # hls.js on this origin plays the master playlist through the edge, every request
    # preflighted (Authorization) and answered with CORS headers.
    page.evaluate("([src, tok]) => play(src, tok)", [f"{outputs}/hls-abr/master.m3u8", "player"])
    try:
        page.wait_for_function(
            "() => document.getElementById('v').currentTime > 1.0", timeout=30_000, polling=100
        )
    except Exception:
        raise AssertionError(
            f"the cross-origin player did not play: {page.evaluate('() => window.seen')}"
        ) from None
    seen = page.evaluate("() => window.seen")
    log.info("cross-origin hls.js: %s", json.dumps(seen))
    assert seen["levels"] >= 1 and seen["fragments"] >= 1, seen
    assert not [e for e in seen["errors"] if e.endswith(":fatal")], seen

    # A Range read with the token, as a progressive player or a segment fetcher does: the page
    # sees 206, Content-Range and Accept-Ranges (exposed) and exactly the bytes asked for.
    ranged = page.evaluate(
        """async ([url, tok]) => {
          const r = await fetch(url, {headers: {Authorization: 'Bearer ' + tok, Range: 'bytes=0-99'}});
          const b = await r.arrayBuffer();
          return {status: r.status, contentRange: r.headers.get('content-range'),
                  acceptRanges: r.headers.get('accept-ranges'), length: b.byteLength};
        }""",
        [f"{outputs}/mp4-360p.mp4", "player"],
    )
    log.info("cross-origin range: %s", json.dumps(ranged))
    assert ranged["status"] == 206, ranged
    assert (ranged["contentRange"] or "").startswith("bytes 0-99/"), ranged
    assert ranged["acceptRanges"] == "bytes", ranged
    assert ranged["length"] == 100, ranged

    # The job API stays closed to another origin: the browser refuses to hand over the answer.
    for url, method in [(f"{env.edge}/v1/jobs/{job['id']}", "GET"), (f"{env.edge}/v1/jobs", "GET")]:
        outcome = page.evaluate(
            """async ([url, method]) => {
              try { const r = await fetch(url, {method}); return 'answered ' + r.status; }
              catch (e) { return 'blocked'; }
            }""",
            [url, method],
        )
        assert outcome == "blocked", f"{method} {url}: {outcome}"
    assert not problems, problems
