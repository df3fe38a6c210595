// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
//
// Run by scripts/browser-test.sh, which starts `reelay up` on free ports and passes:
//   REELAY_EDGE_URL     the edge (nginx) base URL
//   REELAY_CLUSTER_URL  one cluster's base URL (its own dashboard)
//   REELAY_KILL_CLUSTER_PORT  port of a cluster this test may kill at the end (optional)
//   REELAY_CLIP         a short H.264/AAC clip to upload
//   REELAY_ARTIFACTS    where screenshots go
//   CHROMIUM            the browser binary (default /usr/bin/chromium)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const EDGE = process.env.REELAY_EDGE_URL;
const CLUSTER = process.env.REELAY_CLUSTER_URL;
const CLIP = process.env.REELAY_CLIP;
const ART = process.env.REELAY_ARTIFACTS || path.resolve('artifacts');
const KILL_PORT = process.env.REELAY_KILL_CLUSTER_PORT;
const BROWSER = process.env.CHROMIUM || '/usr/bin/chromium';

assert.ok(EDGE && CLUSTER && CLIP, 'REELAY_EDGE_URL, REELAY_CLUSTER_URL and REELAY_CLIP are required');
fs.mkdirSync(ART, { recursive: true });

const log = (...a) => console.log('[browser-test]', ...a);

/** The job the first test made; the later tests look at it again. */
let jobId = null;

async function shot(page, name) {
  const file = path.join(ART, name + '.png');
  await page.screenshot({ path: file, fullPage: true });
  log('screenshot', file);
}

async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'reelay-chromium-'));
  // launchPersistentContext passes this directory as a fresh --user-data-dir.
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: BROWSER,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
  return {
    ctx,
    async close() {
      await ctx.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Page errors and CSP violations fail the test; other console noise is only logged. */
function watch(page) {
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    const t = m.text();
    if (m.type() === 'error' || m.type() === 'warning') log('console.' + m.type() + ':', t);
    if (/Content Security Policy|Refused to (load|execute|apply|connect)/i.test(t)) problems.push('CSP: ' + t);
  });
  return problems;
}

/** Plays a <video> until its currentTime passes `seconds`; returns what the page saw. */
async function playUntil(page, selector, seconds) {
  await page.waitForSelector(selector, { timeout: 30000 });
  await page.evaluate((sel) => {
    const v = document.querySelector(sel);
    v.muted = true;
    const p = v.play();
    if (p && p.catch) p.catch((e) => { v.dataset.playError = String(e); });
  }, selector);
  try {
    await page.waitForFunction(
      ([sel, s]) => {
        const v = document.querySelector(sel);
        return v && v.currentTime > s;
      },
      [selector, seconds],
      { timeout: 30000, polling: 100 },
    );
  } catch (e) {
    const state = await page.evaluate((sel) => {
      const v = document.querySelector(sel);
      return v && {
        currentTime: v.currentTime, readyState: v.readyState, networkState: v.networkState,
        error: v.error && { code: v.error.code, message: v.error.message },
        state: v.dataset.state, playError: v.dataset.playError, src: v.currentSrc,
      };
    }, selector);
    throw new Error(selector + ' did not play: ' + JSON.stringify(state));
  }
  return page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return { currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight, engine: v.dataset.engine || 'native' };
  }, selector);
}

test('the dashboard submits, follows and plays a job through the edge', { timeout: 240000 }, async () => {
  const browser = await launch();
  try {
    const page = await browser.ctx.newPage();
    const problems = watch(page);

    // The page and its headers.
    const resp = await page.goto(EDGE + '/', { waitUntil: 'load' });
    assert.equal(resp.status(), 200);
    const h = resp.headers();
    assert.match(h['content-security-policy'], /default-src 'none'/);
    assert.equal(h['x-content-type-options'], 'nosniff');

    // Codecs this Chromium has (Debian builds it with the proprietary ones).
    const codecs = await page.evaluate(() => ({
      mseH264Aac: MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E, mp4a.40.2"'),
      mp4: document.createElement('video').canPlayType('video/mp4; codecs="avc1.42E01E, mp4a.40.2"'),
      nativeHls: document.createElement('video').canPlayType('application/vnd.apple.mpegurl'),
    }));
    log('codecs', JSON.stringify(codecs));
    assert.ok(codecs.mseH264Aac, 'this Chromium has no H.264/AAC in Media Source Extensions');

    // Every cluster behind the edge shows up healthy.
    for (const name of ['aws', 'gcp']) {
      await page.waitForSelector(`#clusters .card[data-cluster="${name}"][data-state="up"]`, { timeout: 20000 });
    }
    const facts = await page.locator('#clusters .card[data-cluster="aws"] dl').innerText();
    for (const word of ['Capacity', 'Running', 'Queued', 'Backlog', 'Placements', 'Last check']) {
      assert.ok(facts.includes(word), `cluster card lacks ${word}: ${facts}`);
    }
    await page.waitForSelector('#preset-list input[value="hls-abr"]', { timeout: 10000 });
    await shot(page, '01-home');

    // A file that is not a video: refused with the API's code and message, shown as such.
    const junk = path.join(ART, 'not-a-video.mp4');
    fs.writeFileSync(junk, 'this is plain text pretending to be a video\n'.repeat(50));
    await page.check('#preset-list input[value="mp4-360p"]');
    await page.setInputFiles('#submit-file', junk);
    await page.click('#submit-button');
    const refused = page.locator('#submit-result .error');
    await refused.waitFor({ timeout: 30000 });
    const code = await refused.getAttribute('data-code');
    const refusedText = await refused.innerText();
    log('refused upload:', refusedText);
    assert.ok(code && code !== 'network_error' && !code.startsWith('http_'), 'expected an API error code, got ' + code);
    assert.match(refusedText, /HTTP 4\d\d/);
    await shot(page, '02-refused-upload');

    // Custom output JSON that the API rejects names the field.
    await page.fill('#submit-custom', '{"name": "bad", "container": "mp4", "video": {"codec": "h264", "crf": 99}}');
    await page.setInputFiles('#submit-file', CLIP);
    await page.click('#submit-button');
    await page.waitForFunction(() => {
      const e = document.querySelector('#submit-result .error');
      return e && e.dataset.code === 'invalid_spec';
    }, null, { timeout: 30000 });
    log('invalid spec:', await page.locator('#submit-result .error').innerText());
    await page.fill('#submit-custom', '');

    // The real upload: hls-abr plus mp4-360p.
    await page.check('#preset-list input[value="hls-abr"]');
    await page.check('#preset-list input[value="mp4-360p"]');
    // Record every value the upload bar and the job's list bar take.
    await page.evaluate(() => {
      window.__uploadValues = [];
      const prog = document.getElementById('upload-progress');
      const orig = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
      Object.defineProperty(prog, 'value', {
        get() { return orig.get.call(this); },
        set(v) { window.__uploadValues.push(v); orig.set.call(this, v); },
      });
    });
    await page.setInputFiles('#submit-file', CLIP);
    await page.click('#submit-button');
    const link = page.locator('#submit-result a[data-job-id]');
    await link.waitFor({ timeout: 60000 });
    const id = await link.getAttribute('data-job-id');
    jobId = id;
    log('job', id);
    const uploadValues = await page.evaluate(() => window.__uploadValues);
    assert.equal(uploadValues[uploadValues.length - 1], 1, 'upload bar ends full: ' + JSON.stringify(uploadValues));
    assert.equal(await page.locator('#upload-text').innerText(), 'done');

    // The job list follows it to the end; its bar reaches "done".
    const row = `#jobs-body tr[data-job-id="${id}"]`;
    await page.waitForSelector(row, { timeout: 20000 });
    await page.evaluate((sel) => {
      window.__barValues = [];
      const seen = () => {
        const b = document.querySelector(sel + ' .bar');
        if (b) window.__barValues.push(b.dataset.progress + ':' + document.querySelector(sel).dataset.status);
      };
      seen();
      new MutationObserver(seen).observe(document.getElementById('jobs-body'), { attributes: true, subtree: true, childList: true });
    }, row);
    await shot(page, '03-job-listed');
    await page.waitForSelector(`${row}[data-status="succeeded"] .bar[data-progress="1.000"]`, { timeout: 120000 });
    const barValues = [...new Set(await page.evaluate(() => window.__barValues))];
    log('list bar went through', barValues.join(' '));
    assert.equal(await page.locator(`${row} .bar .label`).innerText(), 'done');
    await shot(page, '04-job-done');

    // The job page: outputs, and both players play straight from reelay.
    await page.click(`${row} a`);
    await page.waitForSelector('#view-job[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForSelector('#job-outputs tr[data-output="mp4-360p.mp4"]');
    assert.ok(await page.locator('#job-cancel').isHidden(), 'no cancel button on a finished job');
    const hls = await playUntil(page, 'video[data-kind="hls"]', 0.5);
    log('HLS played', JSON.stringify(hls));
    assert.equal(hls.engine, 'hls.js');
    assert.ok(hls.width > 0 && hls.height > 0, 'HLS video has a picture size');
    const mp4 = await playUntil(page, 'video[data-output="mp4-360p.mp4"]', 0.5);
    log('MP4 played', JSON.stringify(mp4));
    assert.ok(mp4.width > 0 && mp4.height > 0, 'MP4 video has a picture size');
    await page.evaluate(() => document.querySelectorAll('video').forEach((v) => v.pause()));
    await page.click('#job-files-button');
    await page.waitForSelector('#job-files li a');
    assert.ok((await page.locator('#job-files li').count()) >= 3, 'every output file listed (HLS segments too)');
    await shot(page, '05-job-page');

    // Filter by status.
    await page.click('a[href="#/"]');
    await page.selectOption('#status-filter', 'failed');
    await page.waitForFunction((sel) => !document.querySelector(sel), row, { timeout: 10000 });
    await page.selectOption('#status-filter', 'succeeded');
    await page.waitForSelector(row, { timeout: 10000 });
    await page.selectOption('#status-filter', '');

    // A cluster's own dashboard shows that cluster alone.
    const cpage = await browser.ctx.newPage();
    const cproblems = watch(cpage);
    await cpage.goto(CLUSTER + '/', { waitUntil: 'load' });
    await cpage.waitForSelector('#clusters .card[data-state="up"]', { timeout: 20000 });
    assert.equal(await cpage.locator('#clusters .card').count(), 1);
    await cpage.waitForSelector('#jobs-body tr, #jobs-empty:not([hidden])', { timeout: 20000 });
    await shot(cpage, '06-cluster-dashboard');
    await cpage.close();
    assert.deepEqual(cproblems, []);

    assert.deepEqual(problems, [], 'no page errors or CSP violations');
  } finally {
    await browser.close();
  }
});

test('under a token (401), the dashboard asks for it, sends it and polls instead of streaming', { timeout: 120000 }, async () => {
  assert.ok(jobId, 'needs the job of the first test');
  const TOKEN = 'test-token-123';
  const browser = await launch();
  try {
    const page = await browser.ctx.newPage();
    const problems = watch(page);
    const seen = { withToken: 0, refused: 0, eventStreams: 0 };
    // Play an API that wants a bearer token on everything under /v1/ except /v1/load.
    await page.route((url) => url.pathname.startsWith('/v1/') && url.pathname !== '/v1/load', async (route) => {
      const req = route.request();
      if (req.url().endsWith('/events')) seen.eventStreams++;
      if (req.headers()['authorization'] !== 'Bearer ' + TOKEN) {
        seen.refused++;
        return route.fulfill({
          status: 401,
          contentType: 'application/json',
          body: JSON.stringify({ error: { code: 'unauthorized', message: 'a bearer token is required' } }),
        });
      }
      seen.withToken++;
      return route.continue();
    });
    await page.goto(EDGE + '/', { waitUntil: 'load' });
    await page.waitForSelector('#token-box:not([hidden])', { timeout: 20000 });
    await page.waitForFunction(() => /unauthorized/.test(document.getElementById('jobs-error').textContent), null, { timeout: 20000 });
    await shot(page, '07-token-asked');
    await page.fill('#token-input', TOKEN);
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-box', { state: 'hidden' });
    await page.waitForSelector('#jobs-error', { state: 'hidden', timeout: 20000 });
    await page.waitForSelector('#preset-list input[value="hls-abr"]', { timeout: 20000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('reelay.token')), TOKEN);
    assert.match(await page.locator('#auth-state').innerText(), /polling/);

    // The job page under the token: MP4 from a blob: URL, HLS with the header on every request.
    await page.goto(EDGE + '/#/jobs/' + encodeURIComponent(jobId), { waitUntil: 'load' });
    await page.waitForSelector('#view-job[data-status="succeeded"]', { timeout: 20000 });
    const mp4 = await playUntil(page, 'video[data-output="mp4-360p.mp4"]', 0.3);
    const src = await page.evaluate(() => document.querySelector('video[data-output="mp4-360p.mp4"]').currentSrc);
    assert.match(src, /^blob:/, 'MP4 under a token plays from a blob: URL');
    const hls = await playUntil(page, 'video[data-kind="hls"]', 0.3);
    log('under a token: MP4', JSON.stringify(mp4), 'HLS', JSON.stringify(hls));
    assert.equal(seen.eventStreams, 0, 'no EventSource under a token');
    assert.ok(seen.withToken > 5, JSON.stringify(seen));
    await shot(page, '08-token-job-page');
    assert.deepEqual(problems, [], 'no page errors or CSP violations');
  } finally {
    await browser.close();
  }
});

test('a cluster dies: the edge dashboard says so and keeps working', { timeout: 120000, skip: !KILL_PORT && 'REELAY_KILL_CLUSTER_PORT not set' }, async () => {
  const browser = await launch();
  try {
    const page = await browser.ctx.newPage();
    const problems = watch(page);
    await page.goto(EDGE + '/', { waitUntil: 'load' });
    await page.waitForSelector('#clusters .card[data-state="up"]', { timeout: 20000 });
    const row = `#jobs-body tr[data-job-id="${jobId}"]`;
    await page.waitForSelector(row, { timeout: 20000 });
    const pid = listenerPid(KILL_PORT);
    assert.ok(pid, 'no process listens on ' + KILL_PORT);
    const name = await cardNameForPort(page, KILL_PORT);
    assert.ok(name, 'no cluster card shows port ' + KILL_PORT);
    log(`killing cluster ${name} (pid ${pid}, port ${KILL_PORT})`);
    process.kill(pid, 'SIGKILL');
    await page.waitForSelector(`#clusters .card[data-cluster="${name}"][data-state="down"]`, { timeout: 30000 });
    await page.waitForFunction(() => {
      const w = document.getElementById('jobs-warning');
      return w && !w.hidden;
    }, null, { timeout: 30000 });
    assert.match(await page.locator('#jobs-warning').innerText(), new RegExp(name));
    assert.ok(await page.locator('#clusters .card[data-state="up"]').count() >= 1, 'the other cluster stays up');
    if (jobId.startsWith(name + '.')) {
      // Its jobs stay listed, greyed out, after the next poll.
      await page.waitForTimeout(3500);
      assert.ok(await page.locator(`${row}.stale`).count() === 1, 'the dead cluster\'s job stays listed as stale');
      // Its job page says the cluster is unavailable.
      await page.goto(EDGE + '/#/jobs/' + encodeURIComponent(jobId), { waitUntil: 'load' });
      await page.waitForFunction(() => /cluster_unavailable/.test(document.getElementById('job-error').textContent), null, { timeout: 20000 });
      await shot(page, '10-job-of-dead-cluster');
      await page.goto(EDGE + '/', { waitUntil: 'load' });
      await page.waitForSelector(`#clusters .card[data-cluster="${name}"][data-state="down"]`, { timeout: 20000 });
    }
    await shot(page, '09-cluster-down');
    assert.deepEqual(problems, [], 'no page errors or CSP violations');
  } finally {
    await browser.close();
  }
});

function listenerPid(port) {
  const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8' });
  const m = /pid=(\d+)/.exec(out);
  return m ? Number(m[1]) : null;
}

async function cardNameForPort(page, port) {
  return page.evaluate((p) => {
    for (const c of document.querySelectorAll('#clusters .card')) {
      if (c.innerText.includes(':' + p)) return c.dataset.cluster;
    }
    return null;
  }, String(port));
}
