"""A CMAF output played to the end by three real players on a customer's own site: hls.js (its
HLS master playlist), dash.js and Shaka Player (its DASH manifest), each in headless Chromium
from a page on ANOTHER origin than the edge, every request carrying a token (so every file is
CORS-preflighted) and going through the edge. Both manifests name the same segment files: the
test checks that the players fetched segments and that HLS and DASH players asked for the very
same `.m4s` files. Run by scripts/browser-test.sh (fixtures: conftest.py).

The players are the copies vendored with their licences in crates/dashboard/assets/ (hls.js
1.7.4, dash.js 5.2.1, Shaka Player 5.2.12), so a clean clone has them.
"""

from __future__ import annotations

import json
import logging
import pathlib
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import BrowserContext
from conftest import submit_job
from test_cross_origin import submit_and_wait

if TYPE_CHECKING:
    from conftest import Env

log = logging.getLogger("browser-test")

ASSETS = pathlib.Path(__file__).resolve().parents[2] / "crates/dashboard/assets"
PLAYERS = ["hls.min.js", "dash.all.min.js", "shaka-player.compiled.js"]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>customer players</title></head>
<body>
<video id="v" muted playsinline width="320"></video>
<script src="hls.min.js"></script>
<script src="dash.all.min.js"></script>
<script src="shaka-player.compiled.js"></script>
<script>
  window.seen = { errors: [], ended: false, urls: [], events: [] };
  const auth = (tok) => 'Bearer ' + tok;
  const v = () => document.getElementById('v');
  v().addEventListener('ended', () => { window.seen.ended = true; });
  // Every media event with the clock, for the log and a failure message: dash.js once paused
  // at 1.5 s here (seeking@2.000, pause@1.500) because ffmpeg's MPD said PT2.0S for a clip whose
  // media lasts 2.02 s; reelay now writes the exact duration.
  for (const ev of ['play', 'pause', 'waiting', 'stalled', 'seeking', 'seeked', 'playing', 'durationchange']) {
    v().addEventListener(ev, () => window.seen.events.push(ev + '@' + v().currentTime.toFixed(3) + '/' + v().duration));
  }
  v().addEventListener('error', () => window.seen.errors.push('video:' + (v().error && v().error.message)));
  window.playHls = (src, tok) => {
    const hls = new Hls({ xhrSetup: (xhr, url) => {
      window.seen.urls.push(url);
      xhr.setRequestHeader('Authorization', auth(tok));
    } });
    hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.seen.errors.push('hls.js:' + d.details); });
    hls.loadSource(src);
    hls.attachMedia(v());
    v().play().catch((e) => window.seen.errors.push('play:' + e));
  };
  window.playDashJs = (src, tok) => {
    const p = dashjs.MediaPlayer().create();
    p.addRequestInterceptor((req) => {
      window.seen.urls.push(req.url);
      req.headers = Object.assign({}, req.headers || {}, { Authorization: auth(tok) });
      return Promise.resolve(req);
    });
    p.on(dashjs.MediaPlayer.events.ERROR, (e) => window.seen.errors.push('dash.js:' + JSON.stringify(e.error || e)));
    p.initialize(v(), src, true);
  };
  window.playShaka = (src, tok) => {
    shaka.polyfill.installAll();
    const p = new shaka.Player();
    p.getNetworkingEngine().registerRequestFilter((_type, req) => {
      window.seen.urls.push(req.uris[0]);
      req.headers['Authorization'] = auth(tok);
    });
    p.addEventListener('error', (e) => window.seen.errors.push('shaka:' + (e.detail && e.detail.code)));
    p.attach(v())
      .then(() => p.load(src))
      .then(() => v().play())
      .catch((e) => window.seen.errors.push('shaka:' + (e.code || e)));
  };
</script>
</body></html>
"""


# What the page's <video> did, for the log and for a failure message.
VIDEO_STATE = """() => { const v = document.getElementById('v');
  const b = []; for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
  return {t: v.currentTime, d: v.duration, w: v.videoWidth, h: v.videoHeight, paused: v.paused,
          ready: v.readyState, network: v.networkState, buffered: b}; }"""


@pytest.fixture(scope="module")
def players_origin(other_origin) -> str:
    """A site on another origin serving the page and the three vendored players."""
    for name in PLAYERS:
        if not (ASSETS / name).is_file():
            pytest.fail(f"no {name} in {ASSETS}", pytrace=False)
    return other_origin({"index.html": PAGE, **{name: ASSETS / name for name in PLAYERS}})


@pytest.fixture(scope="module")
def cmaf_job(env: Env) -> dict:
    return submit_and_wait(env, ["cmaf", "storyboard"])


def submit_outputs(env: Env, outputs: list[dict]) -> dict:
    """Uploads the clip with custom outputs; waits for success."""
    return submit_job(env, {"outputs": outputs})


@pytest.fixture(scope="module")
def av1_job(env: Env) -> dict:
    """An AV1 ladder packaged as CMAF: Chromium decodes AV1 in software (dav1d), so the
    players' codec checks run against reelay's own `av01.` strings."""
    return submit_outputs(env, [{"name": "cmaf", "container": "cmaf", "video": {"codec": "av1"}}])


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers.get("Content-Type", ""), r.read()


def test_cmaf_job_lists_both_manifests_with_their_content_types(env: Env, cmaf_job: dict) -> None:
    names = {o["name"]: o for o in cmaf_job["outputs"]}
    assert set(names) == {
        "cmaf/master.m3u8",
        "cmaf/manifest.mpd",
        "storyboard/storyboard.vtt",
    }, cmaf_job["outputs"]
    base = f"{env.edge}/v1/jobs/{cmaf_job['id']}/outputs/cmaf"
    ctype, mpd = fetch(base + "/manifest.mpd")
    assert ctype == "application/dash+xml", ctype
    assert b'codecs="avc1.' in mpd and b'codecs="mp4a.40.2"' in mpd, mpd[:400]
    ctype, _ = fetch(base + "/master.m3u8")
    assert ctype == "application/vnd.apple.mpegurl", ctype
    ctype, _ = fetch(base + "/seg-0-00001.m4s")
    assert ctype in ("video/iso.segment", "video/mp4"), ctype


@pytest.mark.parametrize("codec", ["h264", "av1"])
@pytest.mark.parametrize(
    ("player", "manifest"),
    [("playHls", "master.m3u8"), ("playDashJs", "manifest.mpd"), ("playShaka", "manifest.mpd")],
)
def test_a_player_on_another_origin_plays_the_cmaf_output_to_the_end(
    env: Env,
    browser: BrowserContext,
    players_origin: str,
    request: pytest.FixtureRequest,
    codec: str,
    player: str,
    manifest: str,
) -> None:
    assert urllib.parse.urlsplit(players_origin).netloc != urllib.parse.urlsplit(env.edge).netloc
    job = request.getfixturevalue("cmaf_job" if codec == "h264" else "av1_job")
    src = f"{env.edge}/v1/jobs/{job['id']}/outputs/cmaf/{manifest}"
    if codec == "av1":
        _, mpd = fetch(f"{env.edge}/v1/jobs/{job['id']}/outputs/cmaf/manifest.mpd")
        assert b'codecs="av01.' in mpd, mpd[:600]
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append("page error: " + e.message))
    page.on(
        "console",
        lambda m: log.info("%s console.%s: %s", player, m.type, m.text)
        if m.type in ("error", "warning")
        else None,
    )
    page.goto(players_origin + "/index.html")
    page.evaluate("([fn, src, tok]) => window[fn](src, tok)", [player, src, "player"])
    try:
        page.wait_for_function(
            "() => window.seen.ended || window.seen.errors.length > 0",
            timeout=45_000,
            polling=100,
        )
    except Exception:
        raise AssertionError(
            f"{player} did not play to the end: {page.evaluate('() => window.seen')}"
            f" video: {page.evaluate(VIDEO_STATE)}"
        ) from None
    seen = page.evaluate("() => window.seen")
    state = page.evaluate(VIDEO_STATE)
    log.info(
        "%s %s: %s errors %s events %s",
        player,
        codec,
        json.dumps(state),
        seen["errors"],
        seen["events"],
    )
    page.screenshot(path=str(env.artifacts / f"cmaf-{codec}-{player}.png"))
    assert not seen["errors"], seen["errors"]
    assert seen["ended"], seen
    # The whole clip (2 s) was played, with real pictures.
    assert state["t"] >= 1.9, state
    assert state["w"] > 0 and state["h"] > 0, state
    segments = sorted({u.rsplit("/", 1)[-1] for u in seen["urls"] if u.endswith(".m4s")})
    assert any(s.startswith("init-") for s in segments), seen["urls"]
    assert any(s.startswith("seg-") for s in segments), seen["urls"]
    # HLS and DASH players fetch the same files (one copy of the media).
    assert all(
        s.startswith(("init-", "seg-")) for s in segments
    ), f"{player} fetched segments that are not the shared CMAF ones: {segments}"
    assert not problems, problems


def test_the_dashboard_plays_a_cmaf_output_with_hls_js_and_dash_js(
    env: Env, browser: BrowserContext, cmaf_job: dict
) -> None:
    """The job page shows a player per manifest: hls.js for master.m3u8 and dash.js (embedded
    in the binary, under the dashboard's strict CSP) for manifest.mpd."""
    from test_dashboard import play_until

    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append("page error: " + e.message))
    page.on(
        "console",
        lambda m: problems.append("console: " + m.text)
        if m.type == "error" and "Content Security Policy" in m.text
        else None,
    )
    page.goto(
        env.edge + "/#/jobs/" + urllib.parse.quote(cmaf_job["id"], safe=""), wait_until="load"
    )
    page.wait_for_selector('#view-job[data-status="succeeded"]', timeout=20_000)
    dash = play_until(page, 'video[data-kind="dash"]', 1.0)
    hls = play_until(page, 'video[data-kind="hls"]', 1.0)
    log.info("dashboard: dash %s hls %s", json.dumps(dash), json.dumps(hls))
    page.screenshot(path=str(env.artifacts / "cmaf-dashboard.png"))
    assert dash["engine"] == "dash.js" and dash["width"] > 0, dash
    assert hls["engine"] == "hls.js" and hls["width"] > 0, hls
    # The storyboard output: a scrub bar whose preview is a tile of a sprite sheet that loads.
    page.wait_for_selector(".scrub-preview[data-cue]", timeout=20_000)
    scrub = page.evaluate(
        """async () => {
          const range = document.querySelector('input[data-kind="storyboard"]');
          range.value = String(Number(range.max) * 0.9);
          range.dispatchEvent(new Event('input'));
          const p = document.querySelector('.scrub-preview');
          const loaded = await new Promise((res) => {
            const i = new Image();
            i.onload = () => res([i.naturalWidth, i.naturalHeight]);
            i.onerror = () => res(null);
            i.src = p.dataset.src;
          });
          return { cue: p.dataset.cue, max: range.max, w: p.offsetWidth, h: p.offsetHeight,
                   background: p.style.backgroundImage, sheet: loaded };
        }"""
    )
    log.info("dashboard storyboard: %s", json.dumps(scrub))
    assert scrub["cue"].startswith("sprite_001.jpg#xywh=0,0,"), scrub
    assert scrub["sheet"] and scrub["sheet"][0] > 0, scrub
    assert scrub["w"] > 0 and scrub["h"] > 0 and "sprite_001.jpg" in scrub["background"], scrub
    assert not problems, problems


CAPTIONS_SRT = "1\n00:00:00,200 --> 00:00:01,000\nHello from reelay\n\n2\n00:00:01,200 --> 00:00:01,900\nSecond cue\n"


def submit_with_captions(env: Env, outputs: list[dict]) -> dict:
    """Uploads the clip with a caption file of its own (multipart: spec, captions, file)."""
    spec = {"outputs": outputs, "captions": {"files": [{"language": "en", "label": "English"}]}}
    return submit_job(env, spec, [("captions", "en.srt", "application/x-subrip", CAPTIONS_SRT)])


# The page's <video> text tracks and their cues (start, end, text), for the test and its log.
TEXT_TRACKS = """() => Array.from(document.getElementById('v').textTracks).map((t) => ({
  kind: t.kind, label: t.label, language: t.language, mode: t.mode,
  cues: t.cues ? Array.from(t.cues).map((c) => [c.startTime, c.endTime, c.text]) : null }))"""


@pytest.fixture(scope="module")
def captions_job(env: Env) -> dict:
    return submit_with_captions(
        env, [{"preset": "cmaf"}, {"preset": "hls-cmaf"}, {"preset": "hls-abr"}]
    )


@pytest.mark.parametrize("ladder", ["cmaf", "hls-cmaf", "hls-abr"])
def test_hls_js_on_another_origin_shows_the_cmaf_captions_as_a_text_track(
    env: Env, browser: BrowserContext, players_origin: str, captions_job: dict, ladder: str
) -> None:
    """A job carrying a caption file: hls.js, from the customer's page on another origin, finds
    the subtitle rendition in the master playlist (CMAF, HLS fMP4 and HLS MPEG-TS, where the
    sidecar's X-TIMESTAMP-MAP must match the TS clock), loads the sidecar through the edge (CORS,
    with a token) and exposes it as a text track of the <video> whose cues are the caption
    file's, at the caption file's times."""
    job = captions_job
    assert "captions/0-en.vtt" in {o["name"] for o in job["outputs"]}, job["outputs"]
    src = f"{env.edge}/v1/jobs/{job['id']}/outputs/{ladder}/master.m3u8"
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append("page error: " + e.message))
    page.goto(players_origin + "/index.html")
    page.evaluate("([src, tok]) => window.playHls(src, tok)", [src, "player"])
    try:
        page.wait_for_function(
            """() => window.seen.errors.length > 0 || Array.from(
                 document.getElementById('v').textTracks).some((t) => t.cues && t.cues.length >= 2)""",
            timeout=45_000,
            polling=100,
        )
    except Exception:
        raise AssertionError(
            f"no text track with cues: {page.evaluate(TEXT_TRACKS)} seen: "
            f"{page.evaluate('() => window.seen')}"
        ) from None
    tracks = page.evaluate(TEXT_TRACKS)
    seen = page.evaluate("() => window.seen")
    log.info("hls.js captions %s: %s", ladder, json.dumps(tracks))
    page.screenshot(path=str(env.artifacts / f"captions-{ladder}-hls.png"))
    assert not seen["errors"], seen["errors"]
    track = next(t for t in tracks if t["cues"])
    assert track["kind"] in ("subtitles", "captions"), track
    assert track["language"] == "en" and track["label"] == "English", track
    texts = [c[2] for c in track["cues"]]
    assert texts[:2] == ["Hello from reelay", "Second cue"], track
    # The cues sit where the caption file put them on the media timeline (within a frame or two).
    (s0, e0, _), (s1, e1, _) = track["cues"][:2]
    assert abs(s0 - 0.2) < 0.1 and abs(e0 - 1.0) < 0.1, track
    assert abs(s1 - 1.2) < 0.1 and abs(e1 - 1.9) < 0.1, track
    # The sidecar came through the edge like the media (the player fetched it cross-origin).
    assert any(u.endswith(".vtt") for u in seen["urls"]), seen["urls"]
    assert not problems, problems
