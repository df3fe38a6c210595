// reelay dashboard. Plain JavaScript, no framework, no build step.
//
// Rules kept throughout: every string that comes from the API reaches the page through
// textContent or a checked attribute (never parsed as HTML); links only point at same-origin
// paths; nothing breaks when a request fails: the panel says why and the next poll tries again.
(function () {
  'use strict';

  const MODE = document.body.dataset.mode === 'edge' ? 'edge' : 'cluster';
  const TOKEN_KEY = 'reelay.token';
  const STATUS_EVERY_MS = 2000;
  const LIST_EVERY_MS = 3000;
  const JOB_POLL_MS = 1000;
  const HISTORY_MS = 10 * 60 * 1000;
  const BIN_MS = 30 * 1000;
  // Chromium allows 6 connections per origin over HTTP/1.1; each EventSource holds one.
  const MAX_STREAMS = 3;
  const STREAM_RETRY_MS = 15000;
  const PALETTE = ['#1d4ed8', '#c2410c', '#15803d', '#7c3aed', '#0e7490', '#be185d', '#4d7c0f', '#a16207'];

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM and formatting helpers

  /** Builds an element; `text` sets textContent, other props become attributes. */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = String(v);
        else if (k === 'href') {
          const safe = sameOriginPath(v);
          if (safe) e.setAttribute('href', safe);
        } else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  /** Only absolute paths on this origin (and in-page hashes) may become links or media URLs.
   *  Judged by the browser's own URL parser, which drops tabs and newlines: `/\t/evil/x`
   *  passes a prefix test but is the other origin's `//evil/x`. */
  function sameOriginPath(u) {
    const s = String(u);
    if (s.startsWith('#/')) return s;
    if (!s.startsWith('/')) return null;
    let url;
    try {
      url = new URL(s, location.href);
    } catch (_e) {
      return null;
    }
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  }

  /** The token goes only to this origin: a player fetches whatever URL a manifest names. */
  function tokenFor(u) {
    try {
      return new URL(String(u), location.href).origin === location.origin ? token() : null;
    } catch (_e) {
      return null;
    }
  }

  function fmtBytes(n) {
    if (typeof n !== 'number' || !isFinite(n)) return '';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function fmtSeconds(s) {
    if (typeof s !== 'number' || !isFinite(s)) return '';
    if (s === 0) return '0 s';
    if (s < 1) return Math.round(s * 1000) + ' ms';
    if (s < 90) return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    return (s / 3600).toFixed(1) + ' h';
  }

  function fmtAgo(ms) {
    if (!ms) return 'never';
    const s = (Date.now() - ms) / 1000;
    if (s < 1.5) return 'just now';
    return fmtSeconds(Math.max(0, s)) + ' ago';
  }

  function parseTime(s) {
    if (!s) return null;
    const t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  function fmtTime(s) {
    const t = parseTime(s);
    if (t === null) return '';
    const d = new Date(t);
    const today = new Date();
    return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function clamp01(p) {
    return typeof p === 'number' && isFinite(p) ? Math.max(0, Math.min(1, p)) : 0;
  }

  function isTerminal(status) {
    return status === 'succeeded' || status === 'failed' || status === 'cancelled';
  }

  function tookSeconds(v) {
    const a = parseTime(v.started_at);
    if (a === null) return null;
    const b = parseTime(v.finished_at);
    return ((b === null ? Date.now() : b) - a) / 1000;
  }

  function jobPath(id) {
    return '/v1/jobs/' + encodeURIComponent(id);
  }

  // ---------------------------------------------------------------- API access and errors

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function withAuth(headers) {
    const t = token();
    if (t) headers.set('Authorization', 'Bearer ' + t);
    return headers;
  }

  /** The API's `{"error":{"code","message"}}`, or the best description of another answer. */
  function errorFrom(status, text, statusText) {
    let code = status ? 'http_' + status : 'network_error';
    let message = statusText || (status ? 'HTTP ' + status : 'no answer');
    let parsed = false;
    try {
      const b = JSON.parse(text);
      if (b && b.error && typeof b.error.code === 'string') {
        code = b.error.code;
        message = String(b.error.message || '');
        parsed = true;
      }
    } catch (_) { /* not JSON */ }
    if (!parsed && text && text.length < 300 && !/^\s*</.test(text)) message = text.trim();
    if (status === 401) askForToken();
    return new ApiError(status, code, message);
  }

  async function api(path, opts) {
    opts = opts || {};
    const init = Object.assign({}, opts, {
      headers: withAuth(new Headers(opts.headers || {})),
      cache: 'no-store',
      credentials: 'same-origin',
    });
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network_error', 'could not reach reelay (' + ((e && e.message) || e) + ')');
    }
    const text = await resp.text().catch(() => '');
    if (!resp.ok) throw errorFrom(resp.status, text, resp.statusText);
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch (_) {
        throw new ApiError(resp.status, 'bad_response', 'unreadable answer from ' + path);
      }
    }
    return { body, headers: resp.headers, status: resp.status };
  }

  /** Fills an error box with `code` and message, or hides it for `null`. */
  function showError(box, err, prefix) {
    box.replaceChildren();
    if (!err) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    box.append(el('span', { class: 'code', text: err.code || 'error' }));
    box.append(document.createTextNode(' ' + (prefix || '') + (err.message || String(err))));
    if (err.status === 503 || err.status === 502 || err.status === 504 || err.status === 0) {
      box.append(el('span', { class: 'muted small', text: '  (retrying)' }));
    }
  }

  // ---------------------------------------------------------------- token (future auth)

  function askForToken() {
    if (!$('token-box').hidden) return;
    $('token-box').hidden = false;
    closeListStreams();
  }

  function updateAuthState() {
    const has = !!token();
    $('forget-token').hidden = !has;
    $('auth-state').textContent = has ? 'token set: live updates by polling' : '';
  }

  function liveStreams() {
    return !token() && typeof EventSource === 'function';
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const v = $('token-input').value.trim();
    if (!v) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, v);
    } catch (_) { /* storage disabled: the token lives until reload */ }
    $('token-input').value = '';
    $('token-box').hidden = true;
    updateAuthState();
    closeListStreams();
    pollStatus();
    pollJobs();
    loadPresets();
  });

  $('forget-token').addEventListener('click', () => {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* nothing stored */ }
    updateAuthState();
  });

  // ---------------------------------------------------------------- clusters and charts

  const colors = new Map();
  function colorOf(name) {
    if (!colors.has(name)) colors.set(name, PALETTE[colors.size % PALETTE.length]);
    return colors.get(name);
  }

  /** {t, queued: {cluster: n | null}, placements: {cluster: n}} every status poll. */
  const history = [];
  /** Finished jobs seen so far: id -> {t, cluster}; feeds the throughput chart. */
  const finished = new Map();
  let statusOkAt = 0;

  function remember(sample) {
    history.push(sample);
    const cut = Date.now() - HISTORY_MS;
    while (history.length && history[0].t < cut) history.shift();
  }

  function noteFinished(view) {
    if (!view || !isTerminal(view.status) || finished.has(view.id)) return;
    const t = parseTime(view.finished_at);
    if (t !== null) finished.set(view.id, { t, cluster: view.cluster });
  }

  function placementsLastMinute(name) {
    const now = history.length ? history[history.length - 1] : null;
    if (!now || now.placements[name] === undefined) return null;
    let base = null;
    for (const s of history) {
      if (s.placements[name] !== undefined && s.t >= now.t - 60000) {
        base = s;
        break;
      }
    }
    if (!base) return null;
    return Math.max(0, now.placements[name] - base.placements[name]);
  }

  function stateOf(c) {
    if (c.health === 'down') return 'down';
    if (!c.accepting) return 'draining';
    return c.health === 'up' ? 'up' : 'unknown';
  }

  function fact(dl, label, value, cls) {
    dl.append(el('dt', { text: label }), el('dd', { class: cls, text: value }));
  }

  /**
   * The edge's last answer to this cluster's idle slots: "took aws.… from aws (saves 12 s),
   * 3 s ago" or "stays: nothing_ready, just now". Ages come from the edge (no clock skew).
   */
  function stealText(s) {
    const a = s.answer || {};
    const ago = s.age_ms < 1500 ? 'just now' : fmtSeconds(s.age_ms / 1000) + ' ago';
    if (a.from) {
      const saves = typeof a.saved_seconds === 'number' ? ' (saves ' + fmtSeconds(a.saved_seconds) + ')' : '';
      return 'told to take ' + (a.task_id || 'a task') + ' from ' + a.from + saves + ', ' + ago;
    }
    return 'stays: ' + (a.reason || 'unknown') + ', ' + ago;
  }

  /** "last seen 12 s ago" for a cluster that stopped answering (its age comes from the edge). */
  function lastSeenText(c) {
    if (typeof c.last_seen_age_ms !== 'number') return 'not seen up since the edge started';
    return 'last seen ' + fmtSeconds(Math.max(0, c.last_seen_age_ms / 1000)) + ' ago';
  }

  function clusterCard(c) {
    const state = stateOf(c);
    // A down cluster's last load reading is the past, not its present: the card is greyed and
    // says when the cluster was last seen instead of showing those numbers.
    const down = state === 'down';
    const card = el('article', {
      class: 'card ' + state + (down ? ' stale' : ''),
      'data-cluster': c.name,
      'data-state': state,
      'data-last-seen-ms': down && typeof c.last_seen_age_ms === 'number' ? String(c.last_seen_age_ms) : null,
    });
    card.append(el('h3', null, el('span', { text: c.name }), el('span', { class: 'badge ' + state, text: state }),
      c.local ? el('span', { class: 'muted small', text: 'local' }) : null));
    if (down) card.append(el('p', { class: 'last-seen', text: lastSeenText(c) }));
    const dl = el('dl');
    fact(dl, 'Cloud', c.name + (c.url ? ' · ' + c.url : ''));
    fact(dl, 'Health', c.health + (c.accepting ? ', accepting' : ', not accepting new jobs'));
    const l = down ? null : c.load;
    if (down) {
      fact(dl, 'Load', 'unknown while down');
    } else if (l) {
      fact(dl, 'Capacity', l.capacity + (l.capacity === 1 ? ' slot' : ' slots'));
      fact(dl, 'Running', String(l.running));
      fact(dl, 'Queued', l.queued + (c.pending_placements ? ' (+' + c.pending_placements + ' just placed)' : ''));
      fact(dl, 'Backlog', fmtSeconds(l.backlog_seconds) + ' per slot');
    } else {
      fact(dl, 'Load', 'no reading yet');
    }
    if (typeof c.placements === 'number') {
      const recent = placementsLastMinute(c.name);
      fact(dl, 'Placements', c.placements + ' total' + (recent === null ? '' : ', ' + recent + ' in the last minute'));
    }
    if (!down && typeof c.estimated_start_seconds === 'number') {
      fact(dl, 'Est. start', fmtSeconds(c.estimated_start_seconds) + ' · cost ' + c.cost + ' · weight ' + c.weight);
    }
    const chk = c.last_check;
    if (chk) {
      fact(dl, 'Last check', fmtAgo(chk.at_unix_ms) + ', ' + (chk.ok ? 'ok' : 'failed') + ' in ' + chk.latency_ms + ' ms');
    } else {
      fact(dl, 'Last check', 'not yet');
    }
    if (!down && typeof c.load_age_ms === 'number') fact(dl, 'Load age', fmtSeconds(c.load_age_ms / 1000));
    if (c.steal_answer) fact(dl, 'Work stealing', stealText(c.steal_answer), 'steal-answer');
    if (Array.isArray(c.steal_cooldowns) && c.steal_cooldowns.length) {
      fact(dl, 'Cooldown', c.steal_cooldowns.map(function (x) {
        return 'takes nothing from ' + x.cluster + ' for ' + fmtSeconds(x.seconds_left);
      }).join('; '), 'steal-cooldown');
    }
    card.append(dl);
    if (chk && chk.error) card.append(el('div', { class: 'check-error', text: chk.error }));
    if (c.resolve_error) card.append(el('div', { class: 'check-error', text: 'resolve: ' + c.resolve_error }));
    return card;
  }

  function renderEdge(st) {
    const sum = $('edge-summary');
    sum.replaceChildren();
    const r = st.last_reload;
    sum.append(
      el('span', { text: 'edge mode ' + st.mode }),
      el('span', { text: 'nginx ' + (st.nginx && st.nginx.running ? 'running' : 'NOT running') + (st.nginx && st.nginx.restarts ? ' (' + st.nginx.restarts + ' restarts)' : ''), class: st.nginx && st.nginx.running ? null : 'bad' }),
      el('span', { text: 'config generation ' + st.generation }),
      el('span', { text: st.reloads + ' reloads, ' + st.failed_reloads + ' failed', class: st.failed_reloads ? 'bad' : null }),
      r ? el('span', { text: 'last reload ' + fmtAgo(r.at_unix_ms) + (r.ok ? ' ok' : ' FAILED: ' + (r.error || '')), class: r.ok ? null : 'bad' }) : null,
    );
    if (st.fail_open) sum.append(el('span', { class: 'bad', text: 'FAIL-OPEN: no cluster is healthy, every cluster is used' }));
    if (st.config_error) sum.append(el('span', { class: 'bad', text: 'edge.toml not applied: ' + st.config_error }));
    $('where').textContent = 'edge · ' + st.clusters.length + ' clusters';
    const sample = { t: Date.now(), queued: {}, placements: {} };
    for (const c of st.clusters) {
      colorOf(c.name);
      sample.queued[c.name] = c.load && c.health !== 'down' ? c.load.queued : null;
      sample.placements[c.name] = c.placements;
    }
    remember(sample);
    $('clusters').replaceChildren(...st.clusters.map(clusterCard));
    downClusters = st.clusters.filter((c) => c.health === 'down').map((c) => c.name);
    updateJobsWarning();
  }

  let ownName = '';
  function renderLoad(l) {
    ownName = l.cluster;
    $('edge-summary').replaceChildren();
    $('where').textContent = 'cluster ' + l.cluster;
    colorOf(l.cluster);
    remember({ t: Date.now(), queued: { [l.cluster]: l.queued }, placements: {} });
    const c = {
      name: l.cluster,
      health: 'up',
      accepting: l.accepting,
      load: l,
      last_check: { at_unix_ms: Date.now(), ok: true, latency_ms: lastLoadLatency },
    };
    $('clusters').replaceChildren(clusterCard(c));
  }

  let lastLoadLatency = 0;
  async function pollStatus() {
    const started = performance.now();
    try {
      if (MODE === 'edge') {
        const { body } = await api('/edge/status');
        renderEdge(body);
      } else {
        const { body } = await api('/v1/load');
        lastLoadLatency = Math.round(performance.now() - started);
        renderLoad(body);
      }
      statusOkAt = Date.now();
      showError($('clusters-error'), null);
    } catch (e) {
      showError($('clusters-error'), e, MODE === 'edge' ? 'edge status unavailable: ' : 'load report unavailable: ');
      if (MODE === 'cluster' && ownName) {
        // This cluster stopped answering: the same greyed "last seen" card as on the edge.
        $('clusters').replaceChildren(clusterCard({
          name: ownName,
          health: 'down',
          accepting: false,
          last_seen_age_ms: statusOkAt ? Date.now() - statusOkAt : null,
          last_check: { at_unix_ms: Date.now(), ok: false, latency_ms: Math.round(performance.now() - started), error: e.message },
        }));
      } else {
        for (const card of $('clusters').children) card.classList.add('stale');
      }
      if (MODE === 'cluster') remember({ t: Date.now(), queued: {}, placements: {} });
    }
    $('clusters-updated').textContent = statusOkAt ? 'updated ' + fmtAgo(statusOkAt) : '';
    drawCharts();
  }

  /** Sizes a canvas for the screen and returns its 2D context and CSS size. */
  function prepare(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = '11px system-ui, sans-serif';
    return { ctx, w, h };
  }

  const PAD = { l: 34, r: 8, t: 8, b: 18 };

  function niceMax(v) {
    if (v <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function axes(ctx, w, h, max, t0, t1) {
    ctx.strokeStyle = '#e5e7eb';
    ctx.fillStyle = '#6b7280';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = PAD.t + (h - PAD.t - PAD.b) * (1 - i / 4);
      ctx.beginPath();
      ctx.moveTo(PAD.l, y);
      ctx.lineTo(w - PAD.r, y);
      ctx.stroke();
      const v = (max * i) / 4;
      ctx.fillText(Number.isInteger(v) ? String(v) : v.toFixed(1), 2, y + 4);
    }
    for (let m = 0; m <= 10; m += 2) {
      const t = t1 - m * 60000;
      const x = PAD.l + ((t - t0) / (t1 - t0)) * (w - PAD.l - PAD.r);
      ctx.fillText(m === 0 ? 'now' : '-' + m + 'm', Math.min(x - 8, w - 26), h - 4);
    }
  }

  function legend(box, names) {
    box.replaceChildren(...names.map((n) => {
      const sw = el('span', { class: 'swatch' });
      sw.style.background = colorOf(n);
      return el('span', null, sw, n);
    }));
  }

  function drawCharts() {
    const t1 = Date.now();
    const t0 = t1 - HISTORY_MS;
    const names = Array.from(colors.keys());

    // Queue depth: one line per cluster; a down cluster leaves a gap.
    {
      const { ctx, w, h } = prepare($('chart-queue'));
      let max = 0;
      for (const s of history) for (const n of names) if (s.queued[n] != null) max = Math.max(max, s.queued[n]);
      max = niceMax(max);
      axes(ctx, w, h, max, t0, t1);
      const X = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (w - PAD.l - PAD.r);
      const Y = (v) => PAD.t + (h - PAD.t - PAD.b) * (1 - v / max);
      for (const n of names) {
        ctx.strokeStyle = colorOf(n);
        ctx.lineWidth = 2;
        ctx.beginPath();
        let pen = false;
        for (const s of history) {
          const v = s.queued[n];
          if (v == null) {
            pen = false;
            continue;
          }
          if (pen) ctx.lineTo(X(s.t), Y(v));
          else ctx.moveTo(X(s.t), Y(v));
          pen = true;
        }
        ctx.stroke();
      }
      legend($('legend-queue'), names);
    }

    // Throughput: finished jobs per minute in 30 s bins, stacked by cluster.
    {
      const { ctx, w, h } = prepare($('chart-throughput'));
      const nb = HISTORY_MS / BIN_MS;
      const bins = Array.from({ length: nb }, () => new Map());
      for (const [id, f] of finished) {
        if (f.t < t0) {
          finished.delete(id);
          continue;
        }
        const i = Math.min(nb - 1, Math.floor((f.t - t0) / BIN_MS));
        bins[i].set(f.cluster, (bins[i].get(f.cluster) || 0) + 1);
      }
      const perMin = 60000 / BIN_MS;
      let max = 0;
      for (const b of bins) {
        let tot = 0;
        for (const v of b.values()) tot += v * perMin;
        max = Math.max(max, tot);
      }
      max = niceMax(max);
      axes(ctx, w, h, max, t0, t1);
      const bw = (w - PAD.l - PAD.r) / nb;
      bins.forEach((b, i) => {
        let base = 0;
        for (const n of names) {
          const v = (b.get(n) || 0) * perMin;
          if (!v) continue;
          const y0 = PAD.t + (h - PAD.t - PAD.b) * (1 - base / max);
          const y1 = PAD.t + (h - PAD.t - PAD.b) * (1 - (base + v) / max);
          ctx.fillStyle = colorOf(n);
          ctx.fillRect(PAD.l + i * bw + 1, y1, Math.max(1, bw - 2), y0 - y1);
          base += v;
        }
      });
      legend($('legend-throughput'), names);
    }
  }

  // ---------------------------------------------------------------- live job updates (SSE)

  const listStreams = new Map(); // job id -> EventSource
  const streamFailedAt = new Map(); // job id -> ms; polling covers it until STREAM_RETRY_MS

  /** Follows a job's events; calls onView for each, ends itself on a terminal status. */
  function follow(id, onView, onEnd) {
    const es = new EventSource(jobPath(id) + '/events');
    let done = false;
    const stop = (failed) => {
      if (done) return;
      done = true;
      es.close();
      onEnd(failed);
    };
    es.addEventListener('job', (ev) => {
      let v;
      try {
        v = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      onView(v);
      if (isTerminal(v.status)) stop(false);
    });
    // EventSource would reconnect forever to a stream that ended or a cluster that is down:
    // close it and let polling carry on.
    es.addEventListener('error', () => stop(true));
    return { close: () => stop(false) };
  }

  function closeListStreams() {
    for (const s of listStreams.values()) s.close();
    listStreams.clear();
  }

  function syncListStreams(active) {
    const want = new Set(active);
    for (const [id, s] of listStreams) {
      if (!want.has(id)) {
        s.close();
        listStreams.delete(id);
      }
    }
    if (!liveStreams() || currentView !== 'home') {
      closeListStreams();
      return;
    }
    for (const id of active) {
      if (listStreams.size >= MAX_STREAMS) break;
      if (listStreams.has(id)) continue;
      const failed = streamFailedAt.get(id);
      if (failed && Date.now() - failed < STREAM_RETRY_MS) continue;
      const s = follow(id, upsertJob, (wasError) => {
        listStreams.delete(id);
        if (wasError) streamFailedAt.set(id, Date.now());
      });
      listStreams.set(id, s);
    }
  }

  // ---------------------------------------------------------------- job list

  const jobs = new Map(); // id -> latest view
  const rows = new Map(); // id -> {tr, cells}
  let order = [];
  let filter = '';
  /** `metadata.<key>=<value>` pairs the list is narrowed to (every one must match). */
  let metaFilter = [];
  let listLimit = 50;
  let throughputFetchedAt = 0;

  /** Keeps whichever of two views of one job is further along (a poll may lag an event). */
  function fresher(a, b) {
    if (!a) return b;
    if (isTerminal(a.status) && !isTerminal(b.status)) return a;
    if (isTerminal(b.status)) return b;
    if (a.status === 'running' && b.status === 'queued') return a;
    if (a.status === b.status && a.attempts === b.attempts && a.progress > b.progress) return Object.assign({}, b, { progress: a.progress });
    return b;
  }

  function bar(status, progress) {
    const fill = el('div', { class: 'fill' });
    const label = el('span', { class: 'label' });
    const b = el('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, fill, label);
    setBar(b, status, progress);
    return b;
  }

  function setBar(b, status, progress) {
    const p = status === 'succeeded' ? 1 : clamp01(progress);
    b.className = 'bar ' + status;
    b.firstChild.style.width = (p * 100).toFixed(1) + '%';
    b.lastChild.textContent = status === 'succeeded' ? 'done' : Math.floor(p * 100) + '%';
    b.setAttribute('aria-valuenow', String(Math.round(p * 100)));
    b.dataset.progress = p.toFixed(3);
  }

  /** The media length as m:ss (h:mm:ss from an hour). */
  function fmtClock(s) {
    if (typeof s !== 'number' || !isFinite(s) || s < 0) return '';
    const t = Math.round(s);
    const mm = String(Math.floor(t / 60) % 60);
    const ss = String(t % 60).padStart(2, '0');
    return t >= 3600 ? Math.floor(t / 3600) + ':' + mm.padStart(2, '0') + ':' + ss : mm + ':' + ss;
  }

  /** What a job asked for: its presets, or its custom outputs' names. */
  function requested(v) {
    const r = Array.isArray(v.requested_outputs) ? v.requested_outputs : [];
    return r.map((o) => (o && (o.preset || o.name)) || '').filter(Boolean);
  }

  function makeRow(id) {
    // The input's name is the link once known; the id stays below it, small.
    const link = el('a', { href: '#/jobs/' + encodeURIComponent(id), text: id, class: 'job-name' });
    const cells = {
      id: el('td', { class: 'job' }, link, el('div', { class: 'id muted small', text: id })),
      cluster: el('td'),
      status: el('td'),
      progress: el('td', { class: 'progress-col' }, bar('queued', 0)),
      created: el('td', { class: 'small' }),
      duration: el('td', { class: 'small duration' }),
      took: el('td', { class: 'small' }),
      outputs: el('td', { class: 'small outputs' }),
    };
    const tr = el('tr', { 'data-job-id': id }, Object.values(cells));
    return { tr, cells };
  }

  function fillRow(r, v) {
    r.tr.dataset.status = v.status;
    r.cells.cluster.textContent = v.cluster;
    r.cells.status.replaceChildren(el('span', { class: 'badge ' + v.status, text: v.status }));
    if (v.error) r.cells.status.append(el('div', { class: 'err', text: v.error.code, title: v.error.message }));
    if (v.attempts > 1) r.cells.status.append(el('div', { class: 'muted small', text: 'attempt ' + v.attempts }));
    setBar(r.cells.progress.firstChild, v.status, v.progress);
    r.cells.created.textContent = fmtTime(v.created_at);
    r.cells.created.title = v.created_at || '';
    const took = tookSeconds(v);
    r.cells.took.textContent = took === null ? '' : fmtSeconds(took);
    const input = v.input || {};
    r.cells.id.firstChild.textContent = input.name || v.id;
    r.cells.id.firstChild.title = input.name ? v.id : '';
    r.cells.duration.textContent = fmtClock(input.duration_seconds);
    const asked = requested(v);
    r.cells.outputs.textContent = asked.length ? asked.join(', ')
      : (v.outputs && v.outputs.length ? String(v.outputs.length) : '');
  }

  /** A new view of one job (from a poll, an event or a submission). */
  function upsertJob(v) {
    if (!v || typeof v.id !== 'string') return;
    const cur = fresher(jobs.get(v.id), v);
    jobs.set(v.id, cur);
    noteFinished(cur);
    const r = rows.get(v.id);
    if (r) fillRow(r, cur);
    if (jobView.id === v.id) renderJob(cur);
  }

  function renderJobs(fetched) {
    const keep = new Set();
    const body = $('jobs-body');
    // Rows of clusters that did not answer stay, marked stale, instead of vanishing.
    const unavailable = new Set(listMissing.concat(downClusters));
    const list = fetched.slice();
    const seen = new Set(fetched.map((v) => v && v.id));
    for (const [id, r] of rows) {
      const v = jobs.get(id);
      if (v && !seen.has(id) && unavailable.has(v.cluster)) list.push(v);
      r.tr.classList.toggle('stale', !!v && unavailable.has(v.cluster));
    }
    list.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
    order = [];
    for (const v of list) {
      if (!v || typeof v.id !== 'string') continue;
      keep.add(v.id);
      order.push(v.id);
      const cur = fresher(jobs.get(v.id), v);
      jobs.set(v.id, cur);
      noteFinished(cur);
      let r = rows.get(v.id);
      if (!r) {
        r = makeRow(v.id);
        rows.set(v.id, r);
      }
      fillRow(r, cur);
      body.append(r.tr); // moves an existing row into list order
    }
    for (const [id, r] of rows) {
      if (!keep.has(id)) {
        r.tr.remove();
        rows.delete(id);
      }
    }
    $('jobs-empty').hidden = order.length > 0;
    if (!$('jobs-empty').hidden) {
      const narrowed = filter || metaFilter.length;
      const none = (filter ? 'No ' + filter + ' jobs' : 'No jobs') + (metaFilter.length ? ' with ' + metaFilter.map(([k, val]) => k + '=' + val).join(' ') : '');
      // A partial listing with nothing in it says nothing about the clusters it lacks.
      $('jobs-empty').textContent = listMissing.length ? none + ' on the clusters that answered.' : (narrowed ? none + '.' : 'No jobs yet.');
    }
    const active = order.filter((id) => !isTerminal(jobs.get(id).status));
    syncListStreams(active);
  }

  // Clusters whose jobs the list lacks: named by the partial listing itself (`missing_clusters`),
  // or known down from /edge/status between two list polls.
  let listMissing = [];
  let downClusters = [];
  function updateJobsWarning() {
    const names = Array.from(new Set(listMissing.concat(downClusters))).sort();
    const warn = $('jobs-warning');
    warn.hidden = names.length === 0;
    warn.textContent = names.length ? 'Not listed right now: the jobs of ' + names.join(', ') + ' (cluster unavailable).' : '';
  }

  let listTimer = 0;
  let listInFlight = false;
  const STALE_LIST = new Error('stale list');
  /** The list's filters as one string: `status|k=v k=v` (the dataset the page exposes). */
  function listKey() {
    return filter + '|' + metaFilter.map(([k, val]) => k + '=' + val).join(' ');
  }
  async function pollJobs() {
    clearTimeout(listTimer);
    if (currentView !== 'home') return;
    if (listInFlight) return;
    listInFlight = true;
    const qs = new URLSearchParams({ limit: String(listLimit) });
    if (filter) qs.set('status', filter);
    for (const [k, val] of metaFilter) qs.append('metadata.' + k, val);
    const asked = listKey();
    try {
      const { body, headers } = await api('/v1/jobs?' + qs.toString());
      // The filters changed while this page was on its way: it is not the list asked for now.
      if (asked !== listKey()) throw STALE_LIST;
      // A partial page names the clusters it lacks (older edges: only in a header).
      const header = headers.get('x-reelay-missing-clusters');
      listMissing = body && Array.isArray(body.missing_clusters)
        ? body.missing_clusters.map(String)
        : (header ? header.split(',').filter(Boolean) : []);
      updateJobsWarning();
      renderJobs(Array.isArray(body && body.jobs) ? body.jobs : []);
      $('jobs-more').hidden = !(body && body.next_cursor) || listLimit >= 500;
      showError($('jobs-error'), null);
      $('jobs-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      $('jobs-panel').dataset.listed = asked;
    } catch (e) {
      if (e !== STALE_LIST) showError($('jobs-error'), e, 'job list unavailable: ');
    }
    // The throughput chart needs finished jobs even when the list shows only some statuses.
    if ((filter || metaFilter.length) && Date.now() - throughputFetchedAt > 10000) {
      throughputFetchedAt = Date.now();
      api('/v1/jobs?limit=200').then(({ body }) => {
        for (const v of (body && body.jobs) || []) noteFinished(v);
      }).catch(() => { /* the chart just misses some points */ });
    }
    listInFlight = false;
    if (currentView === 'home') listTimer = setTimeout(pollJobs, asked === listKey() ? LIST_EVERY_MS : 0);
  }

  $('status-filter').addEventListener('change', () => {
    filter = $('status-filter').value;
    listLimit = 50;
    for (const r of rows.values()) r.tr.remove();
    rows.clear();
    pollJobs();
  });
  /** `order_id=A-1 tenant=acme` → pairs (null when a word is not key=value). */
  function parseMetaFilter(text) {
    const pairs = [];
    for (const word of String(text).trim().split(/\s+/).filter(Boolean)) {
      const at = word.indexOf('=');
      if (at <= 0) return null;
      pairs.push([word.slice(0, at), word.slice(at + 1)]);
    }
    return pairs;
  }
  $('metadata-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const pairs = parseMetaFilter($('metadata-filter').value);
    const hint = $('metadata-hint');
    hint.hidden = pairs !== null;
    hint.textContent = pairs === null ? 'use key=value (pairs separated by spaces)' : '';
    if (pairs === null) return;
    metaFilter = pairs;
    listLimit = 50;
    for (const r of rows.values()) r.tr.remove();
    rows.clear();
    pollJobs();
  });
  // Clearing the box (its x button, or emptied) shows every job again.
  $('metadata-filter').addEventListener('search', () => {
    if (!$('metadata-filter').value) $('metadata-form').requestSubmit();
  });

  $('jobs-more').addEventListener('click', () => {
    listLimit = Math.min(500, listLimit + 50);
    pollJobs();
  });

  // ---------------------------------------------------------------- submit form

  async function loadPresets() {
    const box = $('preset-list');
    try {
      const { body } = await api('/v1/presets');
      const list = (body && body.presets) || [];
      box.replaceChildren(...list.map((p) => {
        const id = 'preset-' + p.name;
        return el('label', { title: p.description || '' },
          el('input', { type: 'checkbox', name: 'preset', value: p.name, id }),
          ' ' + p.name, ' ', el('span', { class: 'desc', text: p.container }));
      }));
    } catch (e) {
      const err = el('div', { class: 'error' });
      showError(err, e, 'presets unavailable: ');
      const retry = el('button', { type: 'button', text: 'Try again' });
      retry.addEventListener('click', loadPresets);
      box.replaceChildren(err, retry);
    }
  }

  function sourceKind() {
    const r = document.querySelector('input[name="source"]:checked');
    return r ? r.value : 'file';
  }
  for (const r of document.querySelectorAll('input[name="source"]')) {
    r.addEventListener('change', () => {
      $('source-file-row').hidden = sourceKind() !== 'file';
      $('source-url-row').hidden = sourceKind() !== 'url';
    });
  }

  function submitMessage(kind, ...parts) {
    const box = $('submit-result');
    box.replaceChildren();
    if (!kind) return;
    if (kind === 'error') {
      const e = parts[0];
      const d = el('div', { class: 'error', 'data-code': e.code || 'error' });
      d.append(el('span', { class: 'code', text: e.code || 'error' }), document.createTextNode(' ' + (e.message || '')));
      if (e.status) d.append(el('span', { class: 'muted small', text: '  (HTTP ' + e.status + ')' }));
      box.append(d);
    } else {
      box.append(el('div', { class: 'ok-box' }, parts));
    }
  }

  /** The outputs asked for: ticked presets, then the custom JSON (an object or an array). */
  function chosenOutputs() {
    const outputs = [];
    for (const c of document.querySelectorAll('#preset-list input[name="preset"]:checked')) outputs.push({ preset: c.value });
    const raw = $('submit-custom').value.trim();
    if (raw) {
      let v;
      try {
        v = JSON.parse(raw);
      } catch (e) {
        throw new ApiError(0, 'invalid_custom_outputs', 'custom outputs: not JSON (' + e.message + ')');
      }
      const list = Array.isArray(v) ? v : [v];
      for (const o of list) {
        if (!o || typeof o !== 'object' || Array.isArray(o)) throw new ApiError(0, 'invalid_custom_outputs', 'custom outputs: each output must be a JSON object');
        outputs.push(o);
      }
    }
    if (!outputs.length) throw new ApiError(0, 'no_outputs', 'choose at least one preset or give a custom output');
    return outputs;
  }

  let uploading = null;
  $('submit-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (uploading) return;
    submitMessage(null);
    let spec;
    try {
      spec = { outputs: chosenOutputs() };
      const prio = parseInt($('submit-priority').value, 10);
      if (prio) spec.priority = prio;
    } catch (err) {
      submitMessage('error', err);
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/jobs');
    const t = token();
    if (t) xhr.setRequestHeader('Authorization', 'Bearer ' + t);
    let body;
    if (sourceKind() === 'url') {
      const url = $('submit-url').value.trim();
      if (!url) {
        submitMessage('error', new ApiError(0, 'no_input', 'give the URL of the input'));
        return;
      }
      spec.input = { url };
      xhr.setRequestHeader('Content-Type', 'application/json');
      body = JSON.stringify(spec);
    } else {
      const file = $('submit-file').files[0];
      if (!file) {
        submitMessage('error', new ApiError(0, 'no_input', 'choose a file to upload'));
        return;
      }
      // The cluster reads the part `spec` first, then streams `file` to disk.
      body = new FormData();
      body.append('spec', JSON.stringify(spec));
      body.append('file', file, file.name);
    }
    const prog = $('upload-progress');
    const text = $('upload-text');
    const button = $('submit-button');
    prog.hidden = false;
    prog.value = 0;
    text.textContent = 'sending…';
    button.disabled = true;
    uploading = xhr;
    const finish = () => {
      uploading = null;
      button.disabled = false;
    };
    xhr.upload.addEventListener('progress', (ev) => {
      if (!ev.lengthComputable) return;
      prog.value = ev.total ? ev.loaded / ev.total : 1;
      text.textContent = 'uploading ' + fmtBytes(ev.loaded) + ' of ' + fmtBytes(ev.total) + ' (' + Math.floor((ev.loaded / Math.max(1, ev.total)) * 100) + '%)';
    });
    xhr.upload.addEventListener('load', () => {
      prog.value = 1;
      text.textContent = 'uploaded; the cluster is checking the input…';
    });
    xhr.addEventListener('load', () => {
      finish();
      if (xhr.status >= 200 && xhr.status < 300) {
        let v = null;
        try {
          v = JSON.parse(xhr.responseText);
        } catch (_) { /* handled below */ }
        if (!v || typeof v.id !== 'string') {
          submitMessage('error', new ApiError(xhr.status, 'bad_response', 'the job was accepted but the answer is unreadable'));
          return;
        }
        text.textContent = 'done';
        upsertJob(v);
        submitMessage('ok', xhr.status === 200 ? 'Already submitted: job ' : 'Job ',
          el('a', { href: '#/jobs/' + encodeURIComponent(v.id), text: v.id, 'data-job-id': v.id }),
          ' on cluster ' + v.cluster + ' (' + v.status + ').');
        pollJobs();
      } else {
        text.textContent = 'refused';
        submitMessage('error', errorFrom(xhr.status, xhr.responseText, xhr.statusText));
      }
    });
    xhr.addEventListener('error', () => {
      finish();
      text.textContent = 'failed';
      submitMessage('error', new ApiError(0, 'network_error', 'the request did not complete: the connection was closed (is reelay up? an upload larger than the server accepts is cut off too)'));
    });
    xhr.addEventListener('abort', () => {
      finish();
      text.textContent = 'stopped';
    });
    xhr.send(body);
  });

  // ---------------------------------------------------------------- job page

  const jobView = { id: null, follow: null, timer: 0, players: [], outputsShown: false, blobUrls: [] };

  function leaveJob() {
    if (jobView.follow) jobView.follow.close();
    clearTimeout(jobView.timer);
    for (const p of jobView.players) p.destroy();
    for (const u of jobView.blobUrls) URL.revokeObjectURL(u);
    Object.assign(jobView, { id: null, follow: null, timer: 0, players: [], outputsShown: false, blobUrls: [] });
  }

  function openJob(id) {
    leaveJob();
    jobView.id = id;
    $('job-title').textContent = id;
    $('job-status').textContent = '';
    $('job-status').className = 'badge';
    $('job-facts').replaceChildren();
    $('job-outputs').replaceChildren();
    $('job-players').replaceChildren();
    $('job-files').replaceChildren();
    $('job-files').hidden = true;
    $('job-outputs-panel').hidden = true;
    $('job-players-panel').hidden = true;
    $('job-cancel').hidden = true;
    $('job-progress').value = 0;
    $('job-progress-text').textContent = '';
    showError($('job-failure'), null);
    showError($('job-error'), null);
    // What the list last knew, until the cluster answers (it may be down).
    const known = jobs.get(id);
    if (known) renderJob(known, true);
    loadJob(id);
  }

  async function loadJob(id) {
    if (jobView.id !== id) return;
    let v = null;
    try {
      v = (await api(jobPath(id))).body;
      showError($('job-error'), null);
    } catch (e) {
      if (jobView.id !== id) return;
      showError($('job-error'), e);
      // Unknown job: stop. Anything else (cluster down, edge restarting): try again.
      if (e.status !== 404 && e.status !== 400) jobView.timer = setTimeout(() => loadJob(id), 3000);
      return;
    }
    if (jobView.id !== id) return;
    upsertJob(v);
    renderJob(jobs.get(id) || v);
    const cur = jobs.get(id) || v;
    if (isTerminal(cur.status)) return;
    if (liveStreams() && !jobView.follow) {
      jobView.follow = follow(id, upsertJob, (failed) => {
        jobView.follow = null;
        if (jobView.id === id) jobView.timer = setTimeout(() => loadJob(id), failed ? 2000 : 0);
      });
    } else if (!jobView.follow) {
      jobView.timer = setTimeout(() => loadJob(id), JOB_POLL_MS);
    }
  }

  function renderJob(v, fromList) {
    if (jobView.id !== v.id) return;
    $('job-status').textContent = v.status;
    $('job-status').className = 'badge ' + v.status;
    $('view-job').dataset.status = v.status;
    const p = v.status === 'succeeded' ? 1 : clamp01(v.progress);
    $('job-progress').value = p;
    $('job-progress-text').textContent = v.status === 'succeeded' ? 'done' : Math.floor(p * 100) + '% · ' + v.status;
    const facts = $('job-facts');
    facts.replaceChildren();
    const input = v.input || {};
    if (input.name || input.duration_seconds !== null && input.duration_seconds !== undefined) {
      const parts = [input.name || ''];
      if (typeof input.duration_seconds === 'number') parts.push(fmtClock(input.duration_seconds));
      if (input.width && input.height) parts.push(input.width + '×' + input.height);
      const codecs = [input.video_codec, input.audio_codec].filter(Boolean).join('/');
      if (codecs) parts.push(codecs);
      if (typeof input.size === 'number') parts.push(fmtBytes(input.size));
      fact(facts, 'Input', parts.filter(Boolean).join(' · '));
    }
    const asked = requested(v);
    if (asked.length) fact(facts, 'Asked for', asked.join(', '));
    const meta = v.metadata && typeof v.metadata === 'object' ? Object.entries(v.metadata) : [];
    if (meta.length) fact(facts, 'Metadata', meta.map(([k, val]) => k + '=' + val).join('  '));
    fact(facts, 'Cluster', v.cluster);
    fact(facts, 'Attempts', String(v.attempts));
    fact(facts, 'Created', fmtTime(v.created_at));
    if (v.started_at) fact(facts, 'Started', fmtTime(v.started_at));
    if (v.finished_at) fact(facts, 'Finished', fmtTime(v.finished_at));
    const took = tookSeconds(v);
    if (took !== null) fact(facts, isTerminal(v.status) ? 'Took' : 'Running for', fmtSeconds(took));
    // Whether it was split (split-and-stitch) and into what, or why not; when it could play.
    const split = splitText(v.split);
    if (split) fact(facts, 'Split', split, 'split' + (v.split.applied ? ' applied' : ''));
    if (v.playable_at) {
      const since = v.started_at ? (parseTime(v.playable_at) - parseTime(v.started_at)) / 1000 : null;
      fact(facts, 'Playable', fmtTime(v.playable_at) + (since !== null && isFinite(since) && since >= 0 ? ' · ' + fmtSeconds(since) + ' after it started' : ''), 'playable');
    }
    // One line per task: a plain job has one (transcode), a split job its pieces.
    if (v.tasks && v.tasks.length) {
      fact(facts, 'Tasks', v.tasks.map((t) => {
        const key = t.id.startsWith(v.id + '.') ? t.id.slice(v.id.length + 1) : t.id;
        const pct = t.status === 'running' ? ' ' + Math.floor(clamp01(t.progress) * 100) + '%' : '';
        return key + ': ' + t.status + pct + (t.attempts > 1 ? ' (attempt ' + t.attempts + ')' : '');
      }).join(', '));
    }
    showError($('job-failure'), v.error ? new ApiError(null, v.error.code, v.error.message) : null);
    $('job-cancel').hidden = isTerminal(v.status);
    if (!fromList && v.outputs && v.outputs.length && !jobView.outputsShown) {
      jobView.outputsShown = true;
      showOutputs(v);
    }
  }

  /** The view's `split` in words: "3 ranges of up to 4 s" (auto starts HLS jobs with shorter
   *  ones), or "no · too_short: <message>". */
  function splitText(s) {
    if (!s || typeof s !== 'object') return '';
    if (s.applied) {
      const n = typeof s.ranges === 'number' ? s.ranges + ' range' + (s.ranges === 1 ? '' : 's') : 'ranges';
      return 'yes · ' + n + (typeof s.segment_seconds === 'number' ? ' of up to ' + s.segment_seconds + ' s' : '');
    }
    return 'no · ' + [s.reason, s.message].filter(Boolean).join(': ');
  }

  $('job-cancel').addEventListener('click', async () => {
    const id = jobView.id;
    if (!id || !window.confirm('Cancel job ' + id + '? Its ffmpeg is stopped and partial outputs are removed.')) return;
    const b = $('job-cancel');
    b.disabled = true;
    try {
      const { body } = await api(jobPath(id), { method: 'DELETE' });
      if (body && body.id) upsertJob(body);
      showError($('job-error'), null);
    } catch (e) {
      showError($('job-error'), e, 'not cancelled: ');
    }
    b.disabled = false;
    loadJob(id);
  });

  $('job-files-button').addEventListener('click', async () => {
    const id = jobView.id;
    const list = $('job-files');
    try {
      const { body } = await api(jobPath(id) + '/outputs');
      list.replaceChildren(...((body && body.files) || []).map((f) =>
        el('li', null, el('a', { href: f.url, text: f.name }), ' ', el('span', { class: 'muted', text: fmtBytes(f.size) }))));
      list.hidden = false;
    } catch (e) {
      const li = el('li', { class: 'error' });
      showError(li, e);
      list.replaceChildren(li);
      list.hidden = false;
    }
  });

  /** An output's quality (PSNR/SSIM, bitrate) and loudness receipts as one line ('' without). */
  function receiptText(o) {
    const num = (x, d) => (typeof x === 'number' && isFinite(x) ? x.toFixed(d) : null);
    const parts = [];
    const quality = (q) => {
      const out = ['PSNR ' + (num(q.psnr_db, 2) === null ? 'inf' : num(q.psnr_db, 2) + ' dB') + ' · SSIM ' + (num(q.ssim, 4) || '?')];
      if (num(q.bitrate_kbps, 0) !== null) out.push(num(q.bitrate_kbps, 0) + ' kbit/s');
      return out.join(' · ');
    };
    const q = o.quality;
    if (q && typeof q === 'object') parts.push(quality(q));
    // A ladder's receipts, one per rung (largest first): "1280×720 PSNR … · SSIM … · … kbit/s".
    if (Array.isArray(o.rungs)) {
      for (const r of o.rungs) {
        if (r && r.quality && typeof r.quality === 'object') {
          parts.push((r.width && r.height ? r.width + '×' + r.height + ' ' : 'rung ' + r.rung + ' ') + quality(r.quality));
        }
      }
    }
    const l = o.loudness;
    if (l && typeof l === 'object') {
      const lufs = (m) => (m && num(m.integrated_lufs, 1) !== null ? num(m.integrated_lufs, 1) + ' LUFS' : 'silent');
      let s = 'loudness ' + lufs(l.input);
      if (num(l.target_lufs, 1) !== null) s += ' → target ' + num(l.target_lufs, 1);
      if (l.output) s += ', measured ' + lufs(l.output);
      parts.push(s);
    }
    return parts.join(' · ');
  }

  function showOutputs(v) {
    const tbody = $('job-outputs');
    tbody.replaceChildren(...v.outputs.map((o) => el('tr', { 'data-output': o.name },
      el('td', { text: o.name }),
      el('td', { class: 'small', text: o.content_type }),
      el('td', { class: 'small', text: fmtBytes(o.size) }),
      el('td', { class: 'small receipt', text: receiptText(o) }),
      el('td', null, sameOriginPath(o.url) ? el('a', { href: o.url, download: true, text: 'download' }) : null))));
    $('job-outputs-panel').hidden = false;
    const players = $('job-players');
    // The job's caption sidecars: <track>s of its file players (the streaming players find
    // the same tracks in their manifests).
    const captions = v.outputs.filter(isCaption);
    for (const o of v.outputs) {
      if (isCaption(o)) continue;
      const p = playerFor(o, captions);
      if (!p) continue;
      jobView.players.push(p);
      players.append(p.box);
    }
    $('job-players-panel').hidden = players.children.length === 0;
  }

  const playerLoading = {};
  /** A player library is loaded only when a job page has an output it plays. */
  function loadPlayer(file, global, label) {
    if (window[global]) return Promise.resolve(window[global]);
    if (!playerLoading[file]) {
      playerLoading[file] = new Promise((resolve, reject) => {
        const s = el('script', { src: '/ui/' + file });
        s.addEventListener('load', () => resolve(window[global]));
        s.addEventListener('error', () => {
          playerLoading[file] = null;
          reject(new Error('could not load ' + label));
        });
        document.head.append(s);
      });
    }
    return playerLoading[file];
  }
  const loadHls = () => loadPlayer('hls.min.js', 'Hls', 'hls.js');
  const loadDashJs = () => loadPlayer('dash.all.min.js', 'dashjs', 'dash.js');

  /** Under a token, <video src> cannot send it: fetch the file and play it from a blob: URL. */
  async function mediaUrl(url) {
    if (!token()) return url;
    const resp = await fetch(url, { headers: withAuth(new Headers()) });
    if (!resp.ok) throw errorFrom(resp.status, await resp.text().catch(() => ''), resp.statusText);
    const u = URL.createObjectURL(await resp.blob());
    jobView.blobUrls.push(u);
    return u;
  }

  function watchMedia(media, state) {
    const say = (s) => {
      state.textContent = s;
      media.dataset.state = s;
    };
    media.addEventListener('loadedmetadata', () => say('ready' + (media.duration ? ' · ' + fmtSeconds(media.duration) : '')));
    media.addEventListener('playing', () => say('playing'));
    media.addEventListener('pause', () => say('paused'));
    media.addEventListener('ended', () => say('ended'));
    media.addEventListener('error', () => {
      const err = media.error;
      const why = { 1: 'aborted', 2: 'network error', 3: 'cannot decode', 4: 'format or codec not supported by this browser' };
      say('cannot play: ' + ((err && why[err.code]) || 'unknown error') + (err && err.message ? ' (' + err.message + ')' : ''));
    });
    return say;
  }

  /** Cues of a WebVTT thumbnails track: `sprite_001.jpg#xywh=x,y,w,h` beside the track only. */
  function parseThumbnailsVtt(text) {
    const secs = (s) => s.trim().split(':').map(Number).reduce((a, b) => a * 60 + b, 0);
    const lines = text.split(/\r?\n/);
    const out = [];
    for (let i = 0; i + 1 < lines.length; i++) {
      const m = /^(\S+)\s+-->\s+(\S+)/.exec(lines[i]);
      const r = m && /^([A-Za-z0-9._-]+)#xywh=(\d+),(\d+),(\d+),(\d+)$/.exec(lines[i + 1].trim());
      if (!r) continue;
      out.push({ start: secs(m[1]), end: secs(m[2]), file: r[1], x: +r[2], y: +r[3], w: +r[4], h: +r[5] });
    }
    return out;
  }

  /** A caption sidecar (`captions/<n>[-<language>].vtt`), as opposed to a storyboard's track. */
  function isCaption(o) {
    return /^captions\/[^/]+\.vtt$/.test(String(o.name)) && String(o.content_type || '').toLowerCase().startsWith('text/vtt');
  }

  /** `captions/0-pt-BR.vtt` → `pt-BR` ('' without a language). */
  function captionLanguage(o) {
    const m = /^captions\/\d+-(.+)\.vtt$/.exec(String(o.name));
    return m ? m[1] : '';
  }

  /**
   * A "Subtitles" menu under a streaming player: off, or one of the tracks the player found in
   * the manifest. `pick(i)` switches (i = -1: off); `fill(tracks, current)` lists them.
   */
  function subtitleMenu(o, kind, pick) {
    const sel = el('select', { class: 'subtitles', 'data-output': o.name, 'data-kind': kind, 'aria-label': 'subtitles of ' + o.name });
    const label = el('label', { class: 'small subtitles', hidden: true }, 'Subtitles ', sel);
    sel.addEventListener('change', () => pick(Number(sel.value)));
    return {
      label,
      fill(tracks, current) {
        sel.replaceChildren(el('option', { value: '-1', text: 'off' }),
          ...tracks.map((t, i) => el('option', { value: String(i), text: [t.label, t.lang].filter(Boolean).join(' · ') || 'track ' + (i + 1) })));
        sel.value = String(typeof current === 'number' && current >= 0 && current < tracks.length ? current : -1);
        label.hidden = tracks.length === 0;
        sel.dataset.tracks = String(tracks.length);
      },
    };
  }

  function playerFor(o, captions) {
    const ct = String(o.content_type || '').toLowerCase();
    const url = sameOriginPath(o.url);
    if (!url) return null;
    const state = el('div', { class: 'state' });
    const box = el('div', { class: 'player', 'data-output': o.name }, el('h3', { text: o.name }));
    let media = null;
    let hls = null;
    let dash = null;
    let subs = null;
    if (ct === 'application/vnd.apple.mpegurl' || ct === 'application/x-mpegurl') {
      media = el('video', { controls: true, muted: true, playsinline: true, preload: 'metadata', 'data-output': o.name, 'data-kind': 'hls' });
      media.muted = true;
      const say = watchMedia(media, state);
      say('loading player…');
      loadHls().then((Hls) => {
        if (!box.isConnected && jobView.players.indexOf(player) < 0) return;
        if (Hls && Hls.isSupported()) {
          hls = new Hls({
            enableWorker: false, // a blob: worker would need a wider CSP
            xhrSetup: (xhr, url) => {
              const t = tokenFor(url);
              if (t) xhr.setRequestHeader('Authorization', 'Bearer ' + t);
            },
          });
          hls.on(Hls.Events.ERROR, (_ev, data) => {
            if (data && data.fatal) say('cannot play: ' + data.type + ' / ' + data.details);
          });
          hls.on(Hls.Events.MANIFEST_PARSED, (_ev, data) => {
            say('ready · ' + ((data && data.levels && data.levels.length) || 0) + ' renditions (hls.js)');
          });
          // The master playlist's subtitle renditions: text tracks of the <video>, shown when
          // picked (hls.js loads the WebVTT and adds its cues).
          subs = subtitleMenu(o, 'hls', (i) => {
            hls.subtitleDisplay = i >= 0;
            hls.subtitleTrack = i;
          });
          hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => {
            subs.fill((hls.subtitleTracks || []).map((t) => ({ label: t.name, lang: t.lang })), hls.subtitleTrack);
          });
          hls.on(Hls.Events.SUBTITLE_TRACK_SWITCH, () => {
            subs.fill((hls.subtitleTracks || []).map((t) => ({ label: t.name, lang: t.lang })), hls.subtitleTrack);
          });
          box.insertBefore(subs.label, state);
          hls.loadSource(url);
          hls.attachMedia(media);
          media.dataset.engine = 'hls.js';
        } else if (media.canPlayType('application/vnd.apple.mpegurl')) {
          media.dataset.engine = 'native';
          media.src = url;
        } else {
          say('cannot play: this browser has neither Media Source Extensions nor native HLS');
        }
      }).catch((e) => say('cannot play: ' + e.message));
    } else if (ct === 'application/dash+xml') {
      // A DASH manifest (dash, or the MPD of a cmaf output next to its HLS master): dash.js.
      media = el('video', { controls: true, muted: true, playsinline: true, preload: 'metadata', 'data-output': o.name, 'data-kind': 'dash' });
      media.muted = true;
      const say = watchMedia(media, state);
      say('loading player…');
      loadDashJs().then((dashjs) => {
        if (!box.isConnected && jobView.players.indexOf(player) < 0) return;
        if (!dashjs || !window.MediaSource) {
          say('cannot play: this browser has no Media Source Extensions for DASH');
          return;
        }
        dash = dashjs.MediaPlayer().create();
        dash.addRequestInterceptor((req) => {
          const t = tokenFor(req.url);
          if (t) req.headers = Object.assign({}, req.headers || {}, { Authorization: 'Bearer ' + t });
          return Promise.resolve(req);
        });
        dash.on(dashjs.MediaPlayer.events.ERROR, (e) => {
          const err = (e && e.error) || {};
          say('cannot play: ' + (err.message || err.code || 'dash.js error'));
        });
        // The MPD's text adaptation sets (sidecar WebVTT): text tracks of the <video>, off
        // until picked.
        dash.updateSettings({ streaming: { text: { defaultEnabled: false } } });
        const textTracks = () => dash.getTracksFor('text') || [];
        subs = subtitleMenu(o, 'dash', (i) => {
          if (i < 0) {
            dash.enableText(false);
            return;
          }
          dash.enableText(true);
          dash.setTextTrack(i);
        });
        const listText = () => {
          const tracks = textTracks();
          const cur = dash.getCurrentTrackFor('text');
          subs.fill(tracks.map((t) => ({ label: (t.labels && t.labels[0] && t.labels[0].text) || '', lang: t.lang })),
            dash.isTextEnabled() && cur ? tracks.indexOf(cur) : -1);
        };
        dash.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, listText);
        dash.on(dashjs.MediaPlayer.events.TEXT_TRACKS_ADDED, listText);
        box.insertBefore(subs.label, state);
        dash.initialize(media, url, false);
        media.dataset.engine = 'dash.js';
      }).catch((e) => say('cannot play: ' + e.message));
    } else if (ct.startsWith('text/vtt')) {
      // A storyboard's WebVTT thumbnails track: a scrub bar showing the tile of each moment.
      const base = url.slice(0, url.lastIndexOf('/') + 1);
      const preview = el('div', { class: 'scrub-preview', 'data-output': o.name });
      const range = el('input', { type: 'range', min: '0', max: '0', step: '0.1', value: '0', 'data-kind': 'storyboard', 'aria-label': 'scrub preview of ' + o.name });
      media = el('div', { class: 'storyboard', 'data-output': o.name }, preview, range);
      state.textContent = 'loading thumbnails…';
      (async () => {
        const resp = await fetch(url, { headers: withAuth(new Headers()) });
        if (!resp.ok) throw errorFrom(resp.status, await resp.text().catch(() => ''), resp.statusText);
        const cues = parseThumbnailsVtt(await resp.text());
        if (!cues.length) throw new Error('no thumbnails in the track');
        const sheets = {};
        for (const c of cues) {
          if (!sheets[c.file]) sheets[c.file] = await mediaUrl(base + c.file);
        }
        range.max = String(cues[cues.length - 1].end);
        const show = () => {
          const t = Number(range.value);
          const c = cues.find((x) => t >= x.start && t < x.end) || cues[cues.length - 1];
          preview.style.width = c.w + 'px';
          preview.style.height = c.h + 'px';
          preview.style.backgroundImage = 'url("' + sheets[c.file] + '")';
          preview.style.backgroundPosition = '-' + c.x + 'px -' + c.y + 'px';
          preview.dataset.cue = c.file + '#xywh=' + [c.x, c.y, c.w, c.h].join(',');
          preview.dataset.src = sheets[c.file];
        };
        range.addEventListener('input', show);
        show();
        state.textContent = cues.length + ' thumbnails · drag to scrub';
        media.dataset.state = 'ready';
      })().catch((e) => { state.textContent = 'cannot load thumbnails: ' + e.message; });
    } else if (ct.startsWith('video/')) {
      media = el('video', { controls: true, muted: true, playsinline: true, preload: 'metadata', 'data-output': o.name, 'data-kind': 'file' });
      media.muted = true;
      const say = watchMedia(media, state);
      if (!media.canPlayType(ct.split(';')[0])) say('this browser may not play ' + ct);
      mediaUrl(url).then((u) => { media.src = u; }).catch((e) => say('cannot load: ' + e.message));
      // The job's caption sidecars as <track>s (the browser's own menu switches them).
      for (const c of captions || []) {
        const src = sameOriginPath(c.url);
        if (!src) continue;
        const lang = captionLanguage(c);
        const track = el('track', { kind: 'subtitles', label: lang || c.name, srclang: lang || null, 'data-output': c.name });
        media.append(track);
        mediaUrl(src).then((u) => { track.src = u; }).catch((e) => say('captions ' + c.name + ': ' + e.message));
      }
    } else if (ct.startsWith('audio/')) {
      media = el('audio', { controls: true, preload: 'metadata', 'data-output': o.name, 'data-kind': 'file' });
      watchMedia(media, state);
      mediaUrl(url).then((u) => { media.src = u; }).catch((e) => { state.textContent = 'cannot load: ' + e.message; });
    } else if (ct.startsWith('image/')) {
      media = el('img', { alt: o.name, 'data-output': o.name });
      mediaUrl(url).then((u) => { media.src = u; }).catch((e) => { state.textContent = 'cannot load: ' + e.message; });
    } else {
      return null;
    }
    box.append(media, state);
    const player = {
      box,
      destroy() {
        if (hls) hls.destroy();
        if (dash) dash.destroy();
        if (media.pause) media.pause();
        media.removeAttribute('src');
        box.remove();
      },
    };
    return player;
  }

  // ---------------------------------------------------------------- views and timers

  let currentView = null;
  function route() {
    const m = /^#\/jobs\/([^/?#]+)$/.exec(location.hash);
    if (m) {
      let id;
      try {
        id = decodeURIComponent(m[1]);
      } catch (_) {
        id = m[1];
      }
      currentView = 'job';
      closeListStreams();
      clearTimeout(listTimer);
      $('view-home').hidden = true;
      $('view-job').hidden = false;
      if (jobView.id !== id) openJob(id);
    } else {
      leaveJob();
      currentView = 'home';
      $('view-job').hidden = true;
      $('view-home').hidden = false;
      pollJobs();
      drawCharts();
    }
  }

  async function statusLoop() {
    await pollStatus();
    setTimeout(statusLoop, STATUS_EVERY_MS);
  }

  function start() {
    $('noscript-hint').hidden = true;
    $('clusters-title').textContent = MODE === 'edge' ? 'Clusters behind this edge' : 'This cluster';
    updateAuthState();
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', drawCharts);
    route();
    statusLoop();
    loadPresets();
    // Keep relative times ("3 s ago", running-for) moving between polls.
    setInterval(() => {
      if (currentView === 'home') {
        for (const [id, r] of rows) {
          const v = jobs.get(id);
          if (v && v.status === 'running') fillRow(r, v);
        }
      }
    }, 1000);
  }

  start();
})();
