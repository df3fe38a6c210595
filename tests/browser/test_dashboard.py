"""The dashboard in a real browser: Debian's Chromium, headless, driven by playwright.

Run by scripts/browser-test.sh (fixtures and environment: conftest.py). The tests run in file
order: the second and third look again at the job the first one made.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Route
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

if TYPE_CHECKING:
    from conftest import Env, Shared

log = logging.getLogger("browser-test")


def shot(env: Env, page: Page, name: str) -> None:
    path = env.artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    log.info("screenshot %s", path)


def watch(page: Page) -> list[str]:
    """Page errors and CSP violations are collected (the tests expect none); other console
    noise is only logged."""
    problems: list[str] = []
    csp = re.compile(
        r"Content Security Policy|Refused to (load|execute|apply|connect)", re.IGNORECASE
    )

    def on_console(m: ConsoleMessage) -> None:
        text = m.text
        if m.type in ("error", "warning"):
            log.info("console.%s: %s", m.type, text)
        if csp.search(text):
            problems.append("CSP: " + text)

    page.on("pageerror", lambda e: problems.append("page error: " + e.message))
    page.on("console", on_console)
    return problems


def play_until(page: Page, selector: str, seconds: float) -> dict[str, Any]:
    """Plays a <video> until its currentTime passes `seconds`; returns what the page saw."""
    page.wait_for_selector(selector, timeout=30_000)
    page.evaluate(
        """(sel) => {
          const v = document.querySelector(sel);
          v.muted = true;
          const p = v.play();
          if (p && p.catch) p.catch((e) => { v.dataset.playError = String(e); });
        }""",
        selector,
    )
    try:
        page.wait_for_function(
            """([sel, s]) => {
              const v = document.querySelector(sel);
              return v && v.currentTime > s;
            }""",
            arg=[selector, seconds],
            timeout=30_000,
            polling=100,
        )
    except PlaywrightTimeoutError:
        state = page.evaluate(
            """(sel) => {
              const v = document.querySelector(sel);
              return v && {
                currentTime: v.currentTime, readyState: v.readyState, networkState: v.networkState,
                error: v.error && { code: v.error.code, message: v.error.message },
                state: v.dataset.state, playError: v.dataset.playError, src: v.currentSrc,
              };
            }""",
            selector,
        )
        raise AssertionError(f"{selector} did not play: {json.dumps(state)}") from None
    return page.evaluate(
        """(sel) => {
          const v = document.querySelector(sel);
          return { currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight,
                   engine: v.dataset.engine || 'native' };
        }""",
        selector,
    )


def listener_pid(port: str) -> int | None:
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    m = re.search(r"pid=(\d+)", out)
    return int(m.group(1)) if m else None


def check_down_card(page: Page, name: str) -> dict[str, Any]:
    """A down cluster's card: greyed, "last seen N s ago", and none of the numbers of its last
    load reading (issue 12, finding 9: they used to stay on the card as if current)."""
    card = page.locator(f'#clusters .card[data-cluster="{name}"][data-state="down"]')
    card.wait_for(timeout=30_000)
    seen = card.evaluate(
        """(c) => ({
          classes: c.className,
          opacity: parseFloat(getComputedStyle(c).opacity),
          filter: getComputedStyle(c).filter,
          lastSeen: (c.querySelector('.last-seen') || {}).textContent || '',
          lastSeenMs: c.dataset.lastSeenMs || null,
          facts: Array.from(c.querySelectorAll('dt')).map((d) => d.textContent),
        })"""
    )
    log.info("down card of %s: %s", name, json.dumps(seen))
    assert "stale" in seen["classes"].split(), seen
    assert seen["opacity"] < 1 and "grayscale" in seen["filter"], f"greyed: {seen}"
    assert re.fullmatch(r"last seen \d+(\.\d)? (ms|s|min) ago", seen["lastSeen"]), seen
    assert seen["lastSeenMs"] is not None, seen
    stale_numbers = {"Capacity", "Running", "Queued", "Backlog", "Est. start", "Load age"}
    assert not stale_numbers & set(seen["facts"]), f"no stale numbers on a down card: {seen}"
    return seen


def card_name_for_port(page: Page, port: str) -> str | None:
    return page.evaluate(
        """(p) => {
          for (const c of document.querySelectorAll('#clusters .card')) {
            if (c.innerText.includes(':' + p)) return c.dataset.cluster;
          }
          return null;
        }""",
        port,
    )


def test_dashboard_submits_follows_and_plays_a_job_through_the_edge(
    browser: BrowserContext, env: Env, shared: Shared
) -> None:
    page = browser.new_page()
    problems = watch(page)

    # The page and its headers.
    resp = page.goto(env.edge + "/", wait_until="load")
    assert resp is not None and resp.status == 200
    h = resp.headers
    assert "default-src 'none'" in h.get("content-security-policy", ""), h
    assert h.get("x-content-type-options") == "nosniff"

    # Codecs this Chromium has (Debian builds it with the proprietary ones).
    codecs = page.evaluate(
        """() => ({
          mseH264Aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E, mp4a.40.2"'),
          mp4: document.createElement('video').canPlayType('video/mp4; codecs="avc1.42E01E, mp4a.40.2"'),
          nativeHls: document.createElement('video').canPlayType('application/vnd.apple.mpegurl'),
        })"""
    )
    log.info("codecs %s", json.dumps(codecs))
    assert codecs["mseH264Aac"], "this Chromium has no H.264/AAC in Media Source Extensions"

    # Every cluster behind the edge shows up healthy.
    for name in ("aws", "gcp"):
        page.wait_for_selector(
            f'#clusters .card[data-cluster="{name}"][data-state="up"]', timeout=20_000
        )
    facts = page.locator('#clusters .card[data-cluster="aws"] dl').inner_text()
    for word in ("Capacity", "Running", "Queued", "Backlog", "Placements", "Last check"):
        assert word in facts, f"cluster card lacks {word}: {facts}"
    page.wait_for_selector('#preset-list input[value="hls-abr"]', timeout=10_000)
    shot(env, page, "01-home")

    # A file that is not a video: refused with the API's code and message, shown as such.
    junk = env.artifacts / "not-a-video.mp4"
    junk.write_text("this is plain text pretending to be a video\n" * 50)
    page.check('#preset-list input[value="mp4-360p"]')
    page.set_input_files("#submit-file", str(junk))
    page.click("#submit-button")
    refused = page.locator("#submit-result .error")
    refused.wait_for(timeout=30_000)
    code = refused.get_attribute("data-code")
    refused_text = refused.inner_text()
    log.info("refused upload: %s", refused_text)
    assert code and code != "network_error" and not code.startswith("http_"), (
        f"expected an API error code, got {code}"
    )
    assert re.search(r"HTTP 4\d\d", refused_text), refused_text
    shot(env, page, "02-refused-upload")

    # Custom output JSON that the API rejects names the field.
    page.fill(
        "#submit-custom",
        '{"name": "bad", "container": "mp4", "video": {"codec": "h264", "crf": 99}}',
    )
    page.set_input_files("#submit-file", str(env.clip))
    page.click("#submit-button")
    page.wait_for_function(
        """() => {
          const e = document.querySelector('#submit-result .error');
          return e && e.dataset.code === 'invalid_spec';
        }""",
        timeout=30_000,
    )
    log.info("invalid spec: %s", page.locator("#submit-result .error").inner_text())
    page.fill("#submit-custom", "")

    # The real upload: hls-abr plus mp4-360p.
    page.check('#preset-list input[value="hls-abr"]')
    page.check('#preset-list input[value="mp4-360p"]')
    # Record every value the upload bar takes.
    page.evaluate(
        """() => {
          window.__uploadValues = [];
          const prog = document.getElementById('upload-progress');
          const orig = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
          Object.defineProperty(prog, 'value', {
            get() { return orig.get.call(this); },
            set(v) { window.__uploadValues.push(v); orig.set.call(this, v); },
          });
        }"""
    )
    page.set_input_files("#submit-file", str(env.clip))
    page.click("#submit-button")
    link = page.locator("#submit-result a[data-job-id]")
    link.wait_for(timeout=60_000)
    job_id = link.get_attribute("data-job-id")
    assert job_id, "the job link carries the job id"
    shared.job_id = job_id
    log.info("job %s", job_id)
    upload_values = page.evaluate("() => window.__uploadValues")
    assert upload_values and upload_values[-1] == 1, f"upload bar ends full: {upload_values}"
    assert page.locator("#upload-text").inner_text() == "done"

    # The job list follows it to the end; its bar reaches "done".
    row = f'#jobs-body tr[data-job-id="{job_id}"]'
    page.wait_for_selector(row, timeout=20_000)
    page.evaluate(
        """(sel) => {
          window.__barValues = [];
          const seen = () => {
            const b = document.querySelector(sel + ' .bar');
            if (b) window.__barValues.push(b.dataset.progress + ':' + document.querySelector(sel).dataset.status);
          };
          seen();
          new MutationObserver(seen).observe(document.getElementById('jobs-body'),
            { attributes: true, subtree: true, childList: true });
        }""",
        row,
    )
    shot(env, page, "03-job-listed")
    # The row says what the job is: the uploaded file's name (the id below it), the presets it
    # asked for, and (probed at upload) the input's duration.
    assert page.locator(f"{row} .job-name").inner_text() == env.clip.name
    assert page.locator(f"{row} td.job .id").inner_text() == job_id
    asked = page.locator(f"{row} td.outputs").inner_text()
    assert "hls-abr" in asked and "mp4-360p" in asked, asked
    duration = page.locator(f"{row} td.duration").inner_text()
    assert re.fullmatch(r"\d+:\d\d", duration), f"duration shown as m:ss: {duration!r}"
    page.wait_for_selector(
        f'{row}[data-status="succeeded"] .bar[data-progress="1.000"]', timeout=120_000
    )
    bar_values = list(dict.fromkeys(page.evaluate("() => window.__barValues")))
    log.info("list bar went through %s", " ".join(bar_values))
    assert page.locator(f"{row} .bar .label").inner_text() == "done"
    shot(env, page, "04-job-done")

    # The job page: outputs, and both players play straight from reelay.
    page.click(f"{row} a")
    page.wait_for_selector('#view-job[data-status="succeeded"]', timeout=20_000)
    page.wait_for_selector('#job-outputs tr[data-output="mp4-360p.mp4"]')
    assert page.locator("#job-cancel").is_hidden(), "no cancel button on a finished job"
    # The MP4's quality receipt is shown on its row; the HLS master's row shows one per rung.
    receipt = page.locator('#job-outputs tr[data-output="mp4-360p.mp4"] td.receipt').inner_text()
    assert receipt.startswith("PSNR ") and "SSIM 0." in receipt and "kbit/s" in receipt, receipt
    ladder = page.locator('#job-outputs tr[data-output$=".m3u8"] td.receipt').first.inner_text()
    rung_lines = re.findall(r"\d+×\d+ PSNR [\d.]+ dB · SSIM 0\.\d+ · \d+ kbit/s", ladder)
    # (the 160x120 clip makes a one-rung ladder; each rung's receipt has this shape)
    assert rung_lines, f"a receipt per HLS rung: {ladder!r}"
    hls = play_until(page, 'video[data-kind="hls"]', 0.5)
    log.info("HLS played %s", json.dumps(hls))
    assert hls["engine"] == "hls.js"
    assert hls["width"] > 0 and hls["height"] > 0, f"HLS video has a picture size: {hls}"
    mp4 = play_until(page, 'video[data-output="mp4-360p.mp4"]', 0.5)
    log.info("MP4 played %s", json.dumps(mp4))
    assert mp4["width"] > 0 and mp4["height"] > 0, f"MP4 video has a picture size: {mp4}"
    page.evaluate("() => document.querySelectorAll('video').forEach((v) => v.pause())")
    page.click("#job-files-button")
    page.wait_for_selector("#job-files li a")
    files = page.locator("#job-files li").count()
    assert files >= 3, f"every output file listed (HLS segments too), got {files}"
    shot(env, page, "05-job-page")

    # Filter by status.
    page.click('a[href="#/"]')
    page.select_option("#status-filter", "failed")
    page.wait_for_function("(sel) => !document.querySelector(sel)", arg=row, timeout=10_000)
    page.select_option("#status-filter", "succeeded")
    page.wait_for_selector(row, timeout=10_000)
    page.select_option("#status-filter", "")

    # A cluster's own dashboard shows that cluster alone.
    cpage = browser.new_page()
    cproblems = watch(cpage)
    cpage.goto(env.cluster + "/", wait_until="load")
    cpage.wait_for_selector('#clusters .card[data-state="up"]', timeout=20_000)
    assert cpage.locator("#clusters .card").count() == 1
    cpage.wait_for_selector("#jobs-body tr, #jobs-empty:not([hidden])", timeout=20_000)
    shot(env, cpage, "06-cluster-dashboard")
    cpage.close()
    assert cproblems == [], "no page errors or CSP violations on the cluster's dashboard"

    assert problems == [], "no page errors or CSP violations"


def test_under_a_token_the_dashboard_asks_for_it_sends_it_and_polls(
    browser: BrowserContext, env: Env, shared: Shared
) -> None:
    """Under a token (401), the dashboard asks for it, sends it and polls instead of streaming."""
    assert shared.job_id, "needs the job of the first test"
    token = "test-token-123"
    page = browser.new_page()
    problems = watch(page)
    seen = {"with_token": 0, "refused": 0, "event_streams": 0}

    # Play an API that wants a bearer token on everything under /v1/ except /v1/load.
    def wants_token(url: str) -> bool:
        path = urllib.parse.urlsplit(url).path
        return path.startswith("/v1/") and path != "/v1/load"

    def handle(route: Route) -> None:
        req = route.request
        if req.url.endswith("/events"):
            seen["event_streams"] += 1
        if req.headers.get("authorization") != "Bearer " + token:
            seen["refused"] += 1
            route.fulfill(
                status=401,
                content_type="application/json",
                body=json.dumps(
                    {"error": {"code": "unauthorized", "message": "a bearer token is required"}}
                ),
            )
            return
        seen["with_token"] += 1
        route.continue_()

    page.route(wants_token, handle)
    page.goto(env.edge + "/", wait_until="load")
    page.wait_for_selector("#token-box:not([hidden])", timeout=20_000)
    page.wait_for_function(
        "() => /unauthorized/.test(document.getElementById('jobs-error').textContent)",
        timeout=20_000,
    )
    shot(env, page, "07-token-asked")
    page.fill("#token-input", token)
    page.click('#token-form button[type="submit"]')
    page.wait_for_selector("#token-box", state="hidden")
    page.wait_for_selector("#jobs-error", state="hidden", timeout=20_000)
    page.wait_for_selector('#preset-list input[value="hls-abr"]', timeout=20_000)
    assert page.evaluate("() => sessionStorage.getItem('reelay.token')") == token
    assert re.search(r"polling", page.locator("#auth-state").inner_text())

    # The job page under the token: MP4 from a blob: URL, HLS with the header on every request.
    page.goto(env.edge + "/#/jobs/" + urllib.parse.quote(shared.job_id, safe=""), wait_until="load")
    page.wait_for_selector('#view-job[data-status="succeeded"]', timeout=20_000)
    mp4 = play_until(page, 'video[data-output="mp4-360p.mp4"]', 0.3)
    src = page.evaluate(
        """() => document.querySelector('video[data-output="mp4-360p.mp4"]').currentSrc"""
    )
    assert src.startswith("blob:"), f"MP4 under a token plays from a blob: URL, not {src}"
    hls = play_until(page, 'video[data-kind="hls"]', 0.3)
    log.info("under a token: MP4 %s HLS %s", json.dumps(mp4), json.dumps(hls))
    assert seen["event_streams"] == 0, f"no EventSource under a token: {seen}"
    assert seen["with_token"] > 5, json.dumps(seen)
    shot(env, page, "08-token-job-page")
    assert problems == [], "no page errors or CSP violations"


CAPTIONS_SRT = (
    "1\n00:00:00,200 --> 00:00:01,000\nHello from reelay\n\n"
    "2\n00:00:01,200 --> 00:00:01,900\nSecond cue\n"
)


def upload(env: Env, spec: dict, clip: pathlib.Path, captions: str | None = None) -> dict:
    """Submits `clip` through the edge as multipart (spec, an optional `captions` part, file)
    and waits for the job to succeed; returns its view."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n'
             f"{json.dumps(spec)}\r\n".encode()]
    if captions is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="captions"; filename="en.srt"'
            f"\r\n\r\n{captions}\r\n".encode()
        )
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{clip.name}"'
        "\r\nContent-Type: video/mp4\r\n\r\n".encode(),
        clip.read_bytes(),
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    req = urllib.request.Request(
        env.edge + "/v1/jobs",
        data=b"".join(parts),
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        job = json.load(r)
    deadline = time.monotonic() + 180
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.3)
        with urllib.request.urlopen(f"{env.edge}/v1/jobs/{job['id']}", timeout=10) as r:
            job = json.load(r)
    assert job["status"] == "succeeded", job
    return job


def fact_of(page: Page, label: str) -> str | None:
    """The job page's fact `label` (its <dd> text), None when absent."""
    return page.evaluate(
        """(label) => {
          for (const dt of document.querySelectorAll('#job-facts dt')) {
            if (dt.textContent === label) return dt.nextElementSibling.textContent;
          }
          return null;
        }""",
        label,
    )


# Text tracks of one <video> with their cues: [{kind, label, language, mode, cues: [[s, e, text]]}].
TRACKS_OF = """(sel) => Array.from(document.querySelector(sel).textTracks).map((t) => ({
  kind: t.kind, label: t.label, language: t.language, mode: t.mode,
  cues: t.cues ? Array.from(t.cues).map((c) => [c.startTime, c.endTime, c.text]) : null }))"""


def cues_shown(page: Page, video: str, what: str) -> list[dict]:
    """Waits until `video` has a text track holding the caption file's two cues."""
    try:
        page.wait_for_function(
            """(sel) => { const v = document.querySelector(sel);
              return v && Array.from(v.textTracks).some((t) => t.cues && t.cues.length >= 2); }""",
            arg=video,
            timeout=45_000,
            polling=100,
        )
    except PlaywrightTimeoutError:
        raise AssertionError(f"{what}: no text track with cues: {page.evaluate(TRACKS_OF, video)}") from None
    tracks = page.evaluate(TRACKS_OF, video)
    log.info("%s text tracks: %s", what, json.dumps(tracks))
    track = next(t for t in tracks if t["cues"] and len(t["cues"]) >= 2)
    assert track["kind"] in ("subtitles", "captions"), track
    assert track["language"] == "en", track
    assert [c[2] for c in track["cues"][:2]] == ["Hello from reelay", "Second cue"], track
    (s0, e0, _), (s1, e1, _) = track["cues"][:2]
    assert abs(s0 - 0.2) < 0.1 and abs(e0 - 1.0) < 0.1, track
    assert abs(s1 - 1.2) < 0.1 and abs(e1 - 1.9) < 0.1, track
    return tracks


def test_job_page_subtitles_split_playable_and_metadata_filter(
    browser: BrowserContext, env: Env
) -> None:
    """The job page's players offer the job's subtitles (hls.js and dash.js from the manifests'
    subtitle renditions, the MP4 player from the WebVTT sidecar as a <track>), with the caption
    file's cues once switched on; the page says whether the job was split (ranges, or why not)
    and when it became playable; the job list narrows to a metadata key=value."""
    suite = "dash-" + uuid.uuid4().hex[:8]
    captioned = upload(
        env,
        {
            "outputs": [{"preset": "hls-abr"}, {"preset": "cmaf"}, {"preset": "mp4-360p"}],
            "captions": {"files": [{"language": "en", "label": "English"}]},
            "metadata": {"suite": suite, "kind": "captions"},
        },
        env.clip,
        CAPTIONS_SRT,
    )
    names = {o["name"] for o in captioned["outputs"]}
    assert "captions/0-en.vtt" in names, names
    # A split job: 16 s, ranges of 4 s (rounded up to the HLS segment grid), progressive HLS.
    with tempfile.TemporaryDirectory(prefix="reelay-split-") as d:
        long_clip = pathlib.Path(d) / "long.mp4"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=16",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=16",
             "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25", "-c:a", "aac", "-shortest",
             str(long_clip)],
            check=True,
        )
        split = upload(
            env,
            {
                "outputs": [{"preset": "hls-abr"}],
                "split": {"segment_seconds": 4},
                "metadata": {"suite": suite, "kind": "split"},
            },
            long_clip,
        )
    assert split["split"]["applied"] is True, split["split"]
    assert split.get("playable_at"), f"a split HLS job becomes playable: {split}"

    page = browser.new_page()
    problems = watch(page)
    page.goto(env.edge + "/#/jobs/" + urllib.parse.quote(captioned["id"], safe=""), wait_until="load")
    page.wait_for_selector('#view-job[data-status="succeeded"]', timeout=20_000)
    page.wait_for_selector("#job-players .player", timeout=20_000)
    # Why the captioned job was not split: the view's reason and message, shown as such.
    shown = fact_of(page, "Split")
    assert shown and shown.startswith("no · side_files: "), shown
    assert captioned["split"]["message"] in shown, (shown, captioned["split"])
    assert fact_of(page, "Playable") is None, "only a split job has a playable time"
    # The sidecar is not a player of its own (it is a track of the others).
    assert page.locator('#job-players .player[data-output="captions/0-en.vtt"]').count() == 0

    # hls.js (hls-abr and the cmaf master): the subtitle menu lists English; picked, the
    # <video> gets the cues.
    for out in ("hls-abr/master.m3u8", "cmaf/master.m3u8"):
        video = f'video[data-kind="hls"][data-output="{out}"]'
        menu = f'select.subtitles[data-output="{out}"]'
        page.wait_for_selector(f'{menu}[data-tracks="1"]', state="attached", timeout=30_000)
        assert "English" in page.locator(menu).inner_text()
        page.select_option(menu, "0")
        play_until(page, video, 0.2)
        cues_shown(page, video, "hls.js " + out)
        page.evaluate("(sel) => document.querySelector(sel).pause()", video)
    # dash.js (the cmaf MPD): the text adaptation set, off until picked.
    video = 'video[data-kind="dash"][data-output="cmaf/manifest.mpd"]'
    menu = 'select.subtitles[data-output="cmaf/manifest.mpd"]'
    page.wait_for_selector(f'{menu}[data-tracks="1"]', state="attached", timeout=30_000)
    assert page.locator(menu).input_value() == "-1", "subtitles start off"
    assert "English" in page.locator(menu).inner_text(), "the MPD's <Label> names the track"
    page.select_option(menu, "0")
    play_until(page, video, 0.2)
    cues_shown(page, video, "dash.js cmaf")
    page.evaluate("(sel) => document.querySelector(sel).pause()", video)
    # The MP4 player: the sidecar as a <track>, switched on as the browser's own menu would.
    video = 'video[data-output="mp4-360p.mp4"]'
    track = page.locator(f'{video} track[data-output="captions/0-en.vtt"]')
    assert track.count() == 1
    assert track.get_attribute("srclang") == "en" and track.get_attribute("kind") == "subtitles"
    page.evaluate("(sel) => { document.querySelector(sel).textTracks[0].mode = 'showing'; }", video)
    cues_shown(page, video, "mp4 <track>")
    shot(env, page, "12-job-subtitles")

    # The split job: its ranges and when it became playable.
    page.goto(env.edge + "/#/jobs/" + urllib.parse.quote(split["id"], safe=""), wait_until="load")
    page.wait_for_selector('#view-job[data-status="succeeded"]', timeout=20_000)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#job-facts dt')).some((d) => d.textContent === 'Split')"
    )
    s = split["split"]
    assert fact_of(page, "Split") == f"yes · {s['ranges']} ranges of up to {s['segment_seconds']} s", (
        fact_of(page, "Split"),
        s,
    )
    playable = fact_of(page, "Playable")
    assert playable and re.search(r"after it started$", playable), playable
    shot(env, page, "13-job-split")

    # The list's metadata box: exactly this test's two jobs, then one, then none.
    page.goto(env.edge + "/", wait_until="load")
    page.wait_for_selector("#jobs-body tr", timeout=20_000)

    def listed_after(text: str) -> set[str]:
        page.fill("#metadata-filter", text)
        page.press("#metadata-filter", "Enter")
        # The page marks the list it rendered with the filters it asked for (status|metadata).
        page.wait_for_function(
            "(t) => document.getElementById('jobs-panel').dataset.listed === '|' + t",
            arg=" ".join(text.split()),
        )
        return set(
            page.evaluate(
                "() => Array.from(document.querySelectorAll('#jobs-body tr')).map((r) => r.dataset.jobId)"
            )
        )

    assert listed_after(f"suite={suite}") == {captioned["id"], split["id"]}
    assert listed_after(f"suite={suite} kind=split") == {split["id"]}
    assert listed_after(f"suite={suite}-none") == set()
    assert "with suite=" in page.locator("#jobs-empty").inner_text()
    # Not key=value: a hint, and the list stays as it was.
    page.fill("#metadata-filter", "nonsense")
    page.press("#metadata-filter", "Enter")
    page.wait_for_selector("#metadata-hint:not([hidden])")
    assert listed_after("") and page.locator("#metadata-hint").is_hidden()
    shot(env, page, "14-metadata-filter")
    assert problems == [], "no page errors or CSP violations"


def test_a_cluster_dies_the_edge_dashboard_says_so_and_keeps_working(
    browser: BrowserContext, env: Env, shared: Shared
) -> None:
    if not env.kill_port:
        pytest.skip("REELAY_KILL_CLUSTER_PORT not set")
    assert shared.job_id, "needs the job of the first test"
    job_id = shared.job_id
    page = browser.new_page()
    problems = watch(page)
    page.goto(env.edge + "/", wait_until="load")
    page.wait_for_selector('#clusters .card[data-state="up"]', timeout=20_000)
    row = f'#jobs-body tr[data-job-id="{job_id}"]'
    page.wait_for_selector(row, timeout=20_000)
    pid = listener_pid(env.kill_port)
    assert pid, f"no process listens on {env.kill_port}"
    name = card_name_for_port(page, env.kill_port)
    assert name, f"no cluster card shows port {env.kill_port}"
    log.info("killing cluster %s (pid %d, port %s)", name, pid, env.kill_port)
    os.kill(pid, signal.SIGKILL)
    page.wait_for_selector(
        f'#clusters .card[data-cluster="{name}"][data-state="down"]', timeout=30_000
    )
    check_down_card(page, name)
    page.wait_for_function(
        """() => {
          const w = document.getElementById('jobs-warning');
          return w && !w.hidden;
        }""",
        timeout=30_000,
    )
    warning = page.locator("#jobs-warning").inner_text()
    assert name in warning, f"the job list's warning names {name}: {warning}"
    assert page.locator('#clusters .card[data-state="up"]').count() >= 1, (
        "the other cluster stays up"
    )
    if job_id.startswith(name + "."):
        # Its jobs stay listed, greyed out, after the next poll.
        page.wait_for_timeout(3500)
        assert page.locator(f"{row}.stale").count() == 1, (
            "the dead cluster's job stays listed as stale"
        )
        # Its job page says the cluster is unavailable.
        page.goto(env.edge + "/#/jobs/" + urllib.parse.quote(job_id, safe=""), wait_until="load")
        page.wait_for_function(
            "() => /cluster_unavailable/.test(document.getElementById('job-error').textContent)",
            timeout=20_000,
        )
        shot(env, page, "10-job-of-dead-cluster")
        page.goto(env.edge + "/", wait_until="load")
        page.wait_for_selector(
            f'#clusters .card[data-cluster="{name}"][data-state="down"]', timeout=20_000
        )
    shot(env, page, "09-cluster-down")

    # A dashboard opened after the cluster died: greyed from the first paint, and the listing
    # (partial, from the edge's JSON) names the cluster without any earlier poll to remember.
    fresh = browser.new_page()
    fresh_problems = watch(fresh)
    fresh.goto(env.edge + "/", wait_until="load")
    first = check_down_card(fresh, name)
    fresh.wait_for_timeout(2500)
    later = check_down_card(fresh, name)
    assert int(later["lastSeenMs"]) > int(first["lastSeenMs"]), (first, later)
    fresh.wait_for_function(
        """(n) => {
          const w = document.getElementById('jobs-warning');
          return w && !w.hidden && w.textContent.includes(n);
        }""",
        arg=name,
        timeout=20_000,
    )
    empty = fresh.locator("#jobs-empty")
    if empty.is_visible():
        assert "answered" in empty.inner_text(), empty.inner_text()
    listing = fresh.evaluate(
        """async () => (await fetch('/v1/jobs', { cache: 'no-store' })).json()"""
    )
    assert listing["partial"] is True and listing["missing_clusters"] == [name], listing
    shot(env, fresh, "11-fresh-dashboard-cluster-down")
    assert problems == [], "no page errors or CSP violations"
    assert fresh_problems == [], "no page errors or CSP violations on the fresh page"
