// firetower's operations dashboard. The page holds no data: every figure
// comes from the node's feed ({prefix}/dashboard/events, one JSON event a
// second) and its topic search ({prefix}/topics), both authorized like
// POST /publish. The token is kept in sessionStorage (this tab only) and
// sent as a bearer header; the feed is read with fetch, because
// EventSource cannot send headers. Data is put on the page with
// textContent only, never parsed as HTML. An event may lack any field or
// carry null (an idle node sends no topics; a node of another version may
// send other fields): what is missing shows as "–", and an event that
// cannot be shown is reported as such, never as the feed ending.
'use strict';

(() => {
  const TOKEN_KEY = 'firetower.dashboard.token';
  const $ = (id) => document.getElementById(id);
  // Relative to {prefix}/dashboard, so a prefix needs no configuration.
  const url = (p) => new URL(p, location.href).toString();

  // The feed's values, read defensively: obj and list give {} and [] for
  // anything else (null or absent included), num gives null for anything
  // but a finite number.
  const obj = (v) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? v : {});
  const list = (v) => (Array.isArray(v) ? v : []);
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  // sum adds the numbers among its arguments; null if there are none.
  const sum = (...vs) => vs.reduce((acc, v) => (num(v) === null ? acc : (acc ?? 0) + v), null);

  const state = {
    token: null,
    controller: null,
    last: null, // the last event
    events: 0, // events received since the page loaded
    latencyWindow: [], // recent latency histograms, for a recent p99
    searchSeq: 0,
    retry: null,
    shownAt: 0, // when the last event was shown (ms), for a note on one that was not
  };
  window.dashboard = state; // for the browser tests and curious operators

  // A token in the fragment (/dashboard#token=...) never reaches a server
  // or a Referer; it moves to sessionStorage and leaves the address bar.
  function takeTokenFromFragment() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return;
    try {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    } catch (e) { /* storage disabled: ask instead */ }
    history.replaceState(null, '', location.pathname + location.search);
  }

  function storedToken() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function headers() {
    return state.token ? {Authorization: 'Bearer ' + state.token} : {};
  }

  function setStatus(s, text) {
    const el = $('status');
    el.dataset.state = s;
    el.textContent = text;
  }

  function showLogin(message) {
    $('main').hidden = true;
    $('login').hidden = false;
    $('logout').hidden = true;
    $('login-error').textContent = message || '';
    $('token').focus();
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === 'string') return body.error;
    } catch (e) { /* not JSON */ }
    return resp.status + ' ' + resp.statusText;
  }

  // connect opens the feed and reads it until it ends; then it retries,
  // unless the server refused the token.
  async function connect() {
    clearTimeout(state.retry);
    state.controller?.abort();
    const controller = new AbortController();
    state.controller = controller;
    setStatus('connecting', 'connecting…');
    let resp;
    try {
      resp = await fetch(url('dashboard/events'), {headers: headers(), cache: 'no-store', signal: controller.signal});
    } catch (e) {
      if (controller.signal.aborted) return;
      return retryLater('unreachable');
    }
    if (resp.status === 401 || resp.status === 403) {
      const why = await errorText(resp);
      setStatus('refused', 'refused');
      if (state.token) {
        try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
        state.token = null;
      }
      showLogin(why);
      return;
    }
    if (!resp.ok || !resp.body) {
      return retryLater(await errorText(resp));
    }
    $('login').hidden = true;
    $('main').hidden = false;
    $('logout').hidden = !state.token;
    setStatus('live', 'live');
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const chunk = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = chunk.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n');
          if (data) take(data);
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    if (!controller.signal.aborted) retryLater('feed ended');
  }

  // take shows one event of the feed. An event that is not JSON or that
  // render cannot show is reported on the console and on the page, and
  // the feed goes on: the status is the feed's, not the page's.
  function take(data) {
    state.events++;
    let d;
    try {
      d = JSON.parse(data);
    } catch (e) {
      return renderFailed('an event of the feed is not JSON', e);
    }
    try {
      render(d);
    } catch (e) {
      return renderFailed('an event of the feed could not be shown', e);
    }
    $('render-error').hidden = true;
    if (state.events % 5 === 0 && $('search').value) search();
  }

  function renderFailed(what, err) {
    console.error('firetower dashboard: ' + what + ':', err);
    const note = $('render-error');
    note.textContent = what + ' (' + (err && err.message || err) + '); ' +
      (state.shownAt ? 'the figures are those of ' + new Date(state.shownAt).toLocaleTimeString() : 'no event shown yet');
    note.hidden = false;
  }

  function retryLater(why) {
    setStatus('error', why + ', retrying…');
    state.retry = setTimeout(connect, 2000);
  }

  // Formatting. Each formatter shows a missing number (null) as "–".
  const NONE = '–';
  const fmtInt = (n) => (num(n) === null ? NONE : Math.round(n).toLocaleString('en-US'));
  function fmtRate(n) {
    if (num(n) === null) return NONE;
    if (n >= 100) return fmtInt(n);
    if (n >= 10) return n.toFixed(1);
    return n.toFixed(n === 0 ? 0 : 2);
  }
  function fmtBytes(n) {
    if (num(n) === null) return NONE;
    const units = ['B', 'KB', 'MB', 'GB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? Math.round(n) : n.toFixed(1)) + ' ' + units[i];
  }
  function fmtDuration(ms) {
    if (num(ms) === null) return NONE;
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    const h = Math.floor(s / 3600);
    if (h < 48) return h + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(h / 24) + ' d ' + (h % 24) + ' h';
  }
  function fmtSeconds(sec) {
    if (sec < 0.001) return Math.round(sec * 1e6) + ' µs';
    if (sec < 1) return Number((sec * 1000).toPrecision(2)) + ' ms';
    return sec.toFixed(1) + ' s';
  }

  function setText(id, text) { $(id).textContent = text; }
  function setWarn(id, n) {
    const el = $(id);
    el.textContent = fmtInt(n);
    el.dataset.nonzero = String(num(n) !== null && n > 0);
  }

  // p99 over the last minute of the node's cumulative latency histogram;
  // null when the event has no histogram, or none to compare with.
  function recentP99(node) {
    const h = obj(node.latency);
    const buckets = list(h.buckets);
    const counts = list(h.counts);
    const count = num(h.count);
    if (count === null || buckets.length === 0 || counts.length !== buckets.length ||
      !counts.every((c) => num(c) !== null)) return null;
    const w = state.latencyWindow;
    // A histogram of other buckets (another node version) starts afresh.
    if (w.length && w[0].counts.length !== counts.length) w.length = 0;
    w.push({counts, count});
    if (w.length > 61) w.shift();
    const first = w[0];
    const total = count - first.count;
    if (!(total > 0)) return null;
    const want = 0.99 * total;
    for (let i = 0; i < buckets.length; i++) {
      if (counts[i] - first.counts[i] >= want) return num(buckets[i]);
    }
    return Infinity;
  }

  // fillTable puts rows of [text, className] cells in tbody; a row of one
  // cell (a note such as "no topics") spans the table.
  function fillTable(tbody, rows) {
    const frag = document.createDocumentFragment();
    const columns = tbody.parentElement.tHead?.rows[0]?.cells.length || 1;
    for (const cells of rows) {
      const tr = document.createElement('tr');
      if (cells.className) tr.className = cells.className;
      for (const [text, cls] of cells) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        if (cells.length === 1) td.colSpan = columns;
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
  }

  // topicRows makes table rows of a list of {topic, count}, leaving out
  // entries without a topic.
  function topicRows(topics) {
    return list(topics)
      .filter((t) => typeof obj(t).topic === 'string')
      .map((t) => [[t.topic], [fmtInt(t.count), 'num']]);
  }

  const str = (v) => (typeof v === 'string' ? v : '');

  function render(event) {
    state.last = event;
    const d = obj(event);
    const n = obj(d.node);
    const rates = obj(d.rates);
    const topics = obj(d.topics);
    const time = num(d.time);
    const startedAt = num(d.startedAt);
    setText('connections', fmtInt(n.connections));
    setText('subscriptions', fmtInt(n.subscriptions));
    setText('topics-total', str(topics.error) ? '?' : fmtInt(topics.total));
    setText('published-rate', fmtRate(rates.published));
    setText('delivered-rate', fmtRate(rates.delivered));
    setText('framesin-rate', fmtRate(rates.framesIn));
    setText('bytesout-rate', fmtBytes(rates.bytesOut));
    const p99 = recentP99(n);
    setText('latency-p99', p99 === null ? NONE : p99 === Infinity ? '> 5 s' : '≤ ' + fmtSeconds(p99));
    setWarn('dropped', sum(n.droppedQueueFull, n.rateLimited, n.droppedInvalid));
    setText('dropped-detail', fmtInt(n.droppedQueueFull) + ' queue full · ' + fmtInt(n.rateLimited) + ' rate limited · ' + fmtInt(n.droppedInvalid) + ' invalid');
    setWarn('slow', n.slowClosed);
    setWarn('broker-errors', n.brokerErrors);
    setText('uptime', time === null || startedAt === null ? NONE : fmtDuration(time - startedAt));
    // A remote broker's session (topic service client): up or reconnecting.
    const br = obj(d.broker);
    $('broker-card').hidden = !('connected' in br);
    if ('connected' in br) {
      const link = $('broker-link');
      link.textContent = br.connected ? 'connected' : 'reconnecting';
      link.dataset.nonzero = String(!br.connected);
      setText('broker-detail', 'reconnects ' + fmtInt(num(br.reconnects_total) ?? 0));
    }
    setText('updated', time === null ? '' : 'updated ' + new Date(time).toLocaleTimeString());

    drawCharts(d.history);

    const top = topicRows(topics.top);
    fillTable($('top-topics').tBodies[0], str(topics.error)
      ? [[['topics unavailable: ' + topics.error]]]
      : top.length ? top : [[['no topics with subscribers', 'muted']]]);

    if (Array.isArray(d.nodes)) {
      const nodes = d.nodes.filter((node) => node !== null && typeof node === 'object');
      setText('nodes-info', nodes.length + (nodes.length === 1 ? ' node' : ' nodes'));
      fillTable($('nodes').tBodies[0], nodes.map((node) => {
        const beat = num(node.lastHeartbeat);
        const age = time !== null && beat ? time - beat : null;
        const row = [[String(node.id ?? '?')], [fmtInt(node.connections), 'num'], [fmtInt(node.topics), 'num'],
          [!beat ? 'never' : age === null ? NONE : fmtDuration(Math.max(age, 0)) + ' ago', 'num']];
        if (age > 5000) row.className = 'stale';
        return row;
      }));
    } else {
      setText('nodes-info', str(d.nodesError) ? 'nodes unavailable: ' + d.nodesError : 'the broker does not list its nodes');
      fillTable($('nodes').tBodies[0], []);
    }
    state.shownAt = Date.now();
  }

  // drawCharts draws the history of an event; values that are not
  // numbers count as 0.
  function drawCharts(history) {
    const h = obj(history);
    const values = (v) => list(v).map((x) => num(x) ?? 0);
    const connections = values(h.connections);
    const step = num(h.step) ?? 1000;
    setText('chart-span', connections.length > 1 ? 'last ' + fmtDuration((connections.length - 1) * step) : '');
    drawChart($('chart-connections'), [{values: connections, color: '#f78c40'}]);
    drawChart($('chart-messages'), [
      {values: values(h.published), color: '#f78c40'},
      {values: values(h.delivered), color: '#4fb3ff'},
    ]);
  }

  // drawChart draws lines of equally spaced values, scaled to the largest.
  function drawChart(canvas, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const hgt = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, hgt);
    const left = 44;
    const top = 8;
    const bottom = hgt - 18;
    const right = w - 6;
    let max = 0;
    for (const s of series) for (const v of s.values) max = Math.max(max, v);
    max = niceMax(max);
    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#8b98a5';
    ctx.strokeStyle = '#273240';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = bottom - (bottom - top) * i / 4;
      ctx.beginPath();
      ctx.moveTo(left, Math.round(y) + 0.5);
      ctx.lineTo(right, Math.round(y) + 0.5);
      ctx.stroke();
      ctx.fillText(fmtAxis(max * i / 4), left - 6, y);
    }
    const len = Math.max(...series.map((s) => s.values.length), 2);
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    ctx.fillText('-' + fmtDuration((len - 1) * 1000), left, bottom + 4);
    ctx.textAlign = 'right';
    ctx.fillText('now', right, bottom + 4);
    const x = (i, n) => right - (right - left) * (n - 1 - i) / (len - 1);
    const y = (v) => bottom - (bottom - top) * (max ? v / max : 0);
    for (const s of series) {
      const n = s.values.length;
      if (n === 0) continue;
      ctx.beginPath();
      s.values.forEach((v, i) => (i ? ctx.lineTo(x(i, n), y(v)) : ctx.moveTo(x(i, n), y(v))));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.stroke();
      if (series.length === 1) {
        ctx.lineTo(x(n - 1, n), bottom);
        ctx.lineTo(x(0, n), bottom);
        ctx.closePath();
        ctx.globalAlpha = 0.15;
        ctx.fillStyle = s.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
    }
  }

  // niceMax rounds a chart's top up so that its four gridlines fall on
  // round numbers.
  function niceMax(v) {
    if (v <= 40) return Math.max(4, Math.ceil(v / 4) * 4);
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 1.2, 1.6, 2, 2.4, 4, 6, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmtAxis(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
    return String(Math.round(v * 10) / 10);
  }

  // search asks the server: with 100,000 topics the filter belongs there.
  async function search() {
    const q = $('search').value;
    const seq = ++state.searchSeq;
    const body = $('search-results').tBodies[0];
    if (!q) {
      setText('search-info', '');
      body.replaceChildren();
      return;
    }
    let resp;
    try {
      resp = await fetch(url('topics?limit=20&q=' + encodeURIComponent(q)), {headers: headers(), cache: 'no-store'});
    } catch (e) {
      if (seq === state.searchSeq) setText('search-info', 'search failed');
      return;
    }
    if (seq !== state.searchSeq) return; // a newer search is under way
    if (!resp.ok) {
      setText('search-info', 'search failed: ' + await errorText(resp));
      return;
    }
    let page;
    try {
      page = obj(await resp.json());
    } catch (e) {
      if (seq === state.searchSeq) setText('search-info', 'search failed: the answer is not JSON');
      return;
    }
    if (seq !== state.searchSeq) return;
    const rows = topicRows(page.topics);
    const total = num(page.total) ?? rows.length;
    setText('search-info', total === 0 ? 'no topic contains it'
      : total + (total === 1 ? ' topic' : ' topics') + (total > rows.length ? ', busiest ' + rows.length + ' shown' : ''));
    fillTable(body, rows);
  }

  let searchTimer;
  function init() {
    takeTokenFromFragment();
    state.token = storedToken();
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      state.token = token;
      try { sessionStorage.setItem(TOKEN_KEY, token); } catch (err) { /* this page load only */ }
      $('token').value = '';
      connect();
    });
    $('logout').addEventListener('click', () => {
      state.controller?.abort();
      clearTimeout(state.retry);
      try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
      state.token = null;
      setStatus('refused', 'signed out');
      showLogin('');
    });
    $('search').addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(search, 200);
    });
    window.addEventListener('resize', () => state.events && drawCharts(obj(state.last).history));
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
