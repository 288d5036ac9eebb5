// Browser tests of the operations dashboard ({prefix}/dashboard) in
// headless Chromium: a real topic service, two chat demo nodes on it,
// real WebSocket clients opened from a page, REST publishes.
//
//   cd e2e && npm ci && node --test dashboard.test.mjs
//
// FIRETOWER_UPDATE_SCREENSHOT=1 also writes docs/dashboard.png, the
// README's picture; every run writes e2e/artifacts/dashboard.png.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {copyFileSync} from 'node:fs';
import path from 'node:path';
import {ROOT, artifacts, build, freePort, httpReady, launch, newPage, sleep, start, stopAll, tcpReady, waitFor} from './helpers.mjs';

const API_TOKEN = 'e2e-dashboard-token';
const SVC_TOKEN = 'e2e-dashboard-topicsvc-token';
// A valid topic (no whitespace) that is also HTML: it must show as text.
const XSS_TOPIC = '/chat/<img/src=x/onerror=window.__pwned=1>';

let browser;
let nodeA;
let nodeB;

before(async () => {
  const chatBin = build('./_examples/chat', 'chat');
  const svcBin = build('./cmd/firetower-topicsvc', 'firetower-topicsvc');
  browser = await launch();
  const svcPort = await freePort();
  await start(svcBin, {
    FIRETOWER_TOPICSVC_LISTEN: `127.0.0.1:${svcPort}`,
    FIRETOWER_TOPICSVC_TOKEN: SVC_TOKEN,
  }, tcpReady(svcPort), 'topic service');
  const startNode = async (label) => {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    await start(chatBin, {
      FIRETOWER_ADDR: `127.0.0.1:${port}`,
      FIRETOWER_API_TOKEN: API_TOKEN,
      FIRETOWER_BROKER: `topicsvc://127.0.0.1:${svcPort}`,
      FIRETOWER_TOPICSVC_TOKEN: SVC_TOKEN,
    }, httpReady(base + '/'), `chat node ${label}`);
    return base;
  };
  nodeA = await startNode('A');
  nodeB = await startNode('B');
});

after(async () => {
  await browser?.close();
  await stopAll();
});

// loadPage opens a document of base's origin (no WebSocket of its own)
// from which the test opens WebSocket clients, as browsers would.
async function loadPage(base) {
  const {ctx, page} = await newPage(browser);
  await page.goto(base + '/firetower.js');
  await page.evaluate(() => {
    window.socks = [];
    window.openSub = (topic) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.onopen = () => ws.send(JSON.stringify({type: 'subscribe', topic}));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === 'subscribed') resolve(window.socks.push(ws) - 1);
        if (f.type === 'error') reject(new Error(e.data));
      };
      ws.onerror = () => reject(new Error('websocket error'));
    });
  });
  return {ctx, page, open: (topic) => page.evaluate((t) => window.openSub(t), topic)};
}

async function publish(base, topic, data) {
  const resp = await fetch(base + '/publish', {
    method: 'POST',
    headers: {Authorization: 'Bearer ' + API_TOKEN, 'Content-Type': 'application/json'},
    body: JSON.stringify({topic, data}),
  });
  assert.equal(resp.status, 200, await resp.text());
}

const text = (page, sel) => page.textContent(sel);
const num = async (page, sel) => Number((await text(page, sel)).replace(/[^0-9.]/g, ''));

test('the dashboard is refused without the token and shows no figures', async () => {
  for (const p of ['/stats', '/topics', '/dashboard/events']) {
    const none = await fetch(nodeA + p);
    assert.equal(none.status, 401, p);
    const wrong = await fetch(nodeA + p, {headers: {Authorization: 'Bearer nope'}});
    assert.equal(wrong.status, 401, p);
  }
  const {ctx, page, problems} = await newPage(browser);
  await page.goto(nodeA + '/dashboard');
  await page.waitForSelector('#login:not([hidden])');
  assert.equal(await page.isHidden('#main'), true);
  assert.equal(await page.getAttribute('#status', 'data-state'), 'refused');
  assert.match(await text(page, '#login-error'), /bearer token/);
  assert.equal(await text(page, '#connections'), '–');

  await page.fill('#token', 'not-the-token');
  await page.press('#token', 'Enter');
  await waitFor('a second refusal', async () => (await page.evaluate(() => sessionStorage.getItem('firetower.dashboard.token'))) === null &&
    (await page.getAttribute('#status', 'data-state')) === 'refused');
  assert.equal(await page.isHidden('#main'), true);
  assert.equal(await page.evaluate(() => window.dashboard.events), 0);

  // The right token opens it, and is kept for this tab only.
  await page.fill('#token', API_TOKEN);
  await page.press('#token', 'Enter');
  await page.waitForSelector('#main:not([hidden])');
  await waitFor('the live feed', async () => (await page.getAttribute('#status', 'data-state')) === 'live');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('firetower.dashboard.token')), API_TOKEN);
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('firetower.dashboard.token')), null);
  assert.deepEqual(problems, []);
  await ctx.close();
});

test('its figures follow connections, publishes, drops and the cluster; screenshot', async () => {
  const {ctx, page, problems} = await newPage(browser);
  // The token in the fragment: used, stored, and gone from the address bar.
  await page.goto(nodeA + '/dashboard#token=' + API_TOKEN);
  await waitFor('the live feed', async () => (await page.getAttribute('#status', 'data-state')) === 'live');
  assert.equal(new URL(page.url()).hash, '');
  const before = await page.evaluate(() => window.dashboard.last.node);
  assert.equal(before.connections, 0);
  await waitFor('two nodes listed', async () => (await page.$$('#nodes tbody tr')).length === 2);

  const a = await loadPage(nodeA);
  const b = await loadPage(nodeB);
  // Clients arrive over a few seconds, so the chart has a slope.
  const plan = [
    [a, '/chat/lobby', 6], [b, '/chat/lobby', 5], [a, '/chat/news', 4],
    [b, '/chat/random', 3], [a, XSS_TOPIC, 2],
  ];
  for (const [side, topic, n] of plan) {
    for (let i = 0; i < n; i++) await side.open(topic);
    await sleep(700);
  }
  await waitFor('12 connections on node A', async () => (await text(page, '#connections')) === '12');
  await waitFor('cluster-wide busiest topic', async () => {
    const rows = await page.$$eval('#top-topics tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    return rows.length >= 4 && rows[0][0] === '/chat/lobby' && rows[0][1] === '11' || rows;
  });
  const topics = await page.$$eval('#top-topics tbody td:first-child', (tds) => tds.map((td) => td.textContent));
  assert.ok(topics.includes(XSS_TOPIC), `the HTML-looking topic is shown as text: ${topics}`);
  assert.equal(await page.$$eval('#top-topics img', (x) => x.length), 0);
  await waitFor('node connection counts', async () => {
    const conns = await page.$$eval('#nodes tbody tr td:nth-child(2)', (tds) => tds.map((td) => td.textContent).sort());
    return conns.join() === '12,8' || conns;
  });
  assert.equal(await text(page, '#broker-link'), 'connected');
  assert.match(await text(page, '#broker-detail'), /^reconnects 0$/);
  const beats = await page.$$eval('#nodes tbody tr td:nth-child(4)', (tds) => tds.map((td) => td.textContent));
  assert.ok(beats.every((s) => / ago$/.test(s)), beats.join());

  // Messages: published on A, delivered on A to its 6 lobby clients.
  const publishing = (async () => {
    for (let i = 0; i < 120; i++) {
      await publish(nodeA, '/chat/lobby', {text: 'tick ' + i});
      await sleep(25);
    }
  })();
  await waitFor('a publish rate', async () => (await num(page, '#published-rate')) > 0 && (await num(page, '#delivered-rate')) > 0);
  // Deliveries were written: the node's latency histogram gives a p99.
  await waitFor('a delivery p99', async () => /^≤ /.test(await text(page, '#latency-p99')));
  // A client over its inbound rate: its extra frames are dropped, and as
  // it keeps on, it is closed (1008). The node allows a burst of 200 and
  // 100 a second, so 500 pings leave at least 50 dropped even if reading
  // them all takes the node two seconds. It is a connection of its own,
  // subscribed to nothing, so the other figures stay as they are.
  const closeCode = a.page.evaluate(() => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/ws`);
    ws.onopen = () => { for (let i = 0; i < 500; i++) ws.send('{"type":"ping"}'); };
    ws.onclose = (e) => resolve(e.code);
  }));
  await waitFor('dropped messages', async () => (await num(page, '#dropped')) >= 50);
  assert.equal(await closeCode, 1008, 'the flooding client is closed with 1008');
  await waitFor('12 connections again', async () => (await text(page, '#connections')) === '12');
  assert.match(await text(page, '#dropped-detail'), /rate limited/);
  assert.equal(await page.getAttribute('#dropped', 'data-nonzero'), 'true');

  // Search runs on the server.
  await page.fill('#search', 'rand');
  await waitFor('a search result', async () => {
    const rows = await page.$$eval('#search-results tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    return (rows.length === 1 && rows[0][0] === '/chat/random' && rows[0][1] === '3') || rows;
  });
  assert.equal(await text(page, '#search-info'), '1 topic');
  await publishing;

  // Enough history for the chart, then the picture.
  await sleep(1500);
  const shot = path.join(artifacts(), 'dashboard.png');
  await page.screenshot({path: shot, fullPage: true});
  if (process.env.FIRETOWER_UPDATE_SCREENSHOT === '1') copyFileSync(shot, path.join(ROOT, 'docs', 'dashboard.png'));
  const chart = await page.evaluate(() => window.dashboard.last.history.connections);
  assert.ok(chart.length >= 5 && chart.at(-1) === 12 && Math.min(...chart) === 0, `connection history ${chart}`);

  // Clients leave: the figures follow.
  await a.page.evaluate(() => window.socks.slice(6).forEach((ws) => ws.close()));
  await waitFor('6 connections', async () => (await text(page, '#connections')) === '6');
  assert.equal(await text(page, '#slow'), '0');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.deepEqual(problems, []);
  for (const c of [a, b, {ctx}]) await c.ctx.close();
});
