// Browser tests of the operations dashboard when its feed has little to
// say: a node with no topics and no connections, and feeds whose events
// carry nulls, lack fields or are not JSON at all (a node of another
// version, a broker that reports nothing). The page shows what it has,
// reports what it cannot show as such, and its status says how the feed is.
//
//   cd e2e && npm ci && node --test dashboard-idle.test.mjs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {build, freePort, httpReady, launch, newPage, sleep, start, stopAll, waitFor} from './helpers.mjs';

const API_TOKEN = 'e2e-dashboard-idle-token';

let browser;
let node; // a chat node with the embedded broker that nobody uses
let feed; // a stub event stream, in place of the node's /dashboard/events

before(async () => {
  const chatBin = build('./_examples/chat', 'chat');
  browser = await launch();
  const port = await freePort();
  node = `http://127.0.0.1:${port}`;
  await start(chatBin, {FIRETOWER_ADDR: `127.0.0.1:${port}`, FIRETOWER_API_TOKEN: API_TOKEN}, httpReady(node + '/'), 'chat node');
  feed = await feedServer();
});

after(async () => {
  feed?.close();
  await browser?.close();
  await stopAll();
});

// feedServer answers every request with an event stream that stays open
// until the client leaves; send writes one event (a value as JSON, a
// string as it is) to every open stream.
async function feedServer() {
  const streams = new Set();
  const server = http.createServer((req, res) => {
    res.writeHead(200, {'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store'});
    res.write(': stub feed\n\n');
    streams.add(res);
    req.on('close', () => streams.delete(res));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/events`,
    get streams() { return streams.size; },
    send(event) {
      const data = typeof event === 'string' ? event : JSON.stringify(event);
      for (const res of streams) res.write(`data: ${data}\n\n`);
    },
    close() {
      for (const res of streams) res.destroy();
      server.close();
    },
  };
}

// openDashboard opens the node's dashboard with the token, in a context
// closed when test t ends; with stubbed, its feed comes from the stub
// server instead (the page, its script and its origin stay the node's).
async function openDashboard(t, {stubbed = false} = {}) {
  const p = await newPage(browser);
  t.after(() => p.ctx.close());
  if (stubbed) await p.page.route(node + '/dashboard/events', (route) => route.continue({url: feed.url}));
  await p.page.goto(node + '/dashboard#token=' + API_TOKEN);
  return p;
}

const text = (page, sel) => page.textContent(sel);
const feedState = (page) => page.getAttribute('#status', 'data-state');
const events = (page) => page.evaluate(() => window.dashboard.events);
const rows = (page, table) => page.$$eval(`#${table} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));

// staysLive checks that the feed shows as live, and nothing else, for ms.
async function staysLive(page, ms = 1500) {
  const seen = new Set();
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) {
    seen.add(`${await feedState(page)}: ${await text(page, '#status')}`);
  }
  assert.deepEqual([...seen], ['live: live']);
}

// sendAndWait sends one event and waits until the page has taken it.
async function sendAndWait(page, event) {
  const n = await events(page);
  feed.send(event);
  await waitFor('the event taken', async () => (await events(page)) === n + 1);
}

test('an idle node: figures of zero, no topics, and the feed live', async (t) => {
  const {page, problems} = await openDashboard(t);
  await waitFor('the live feed', async () => (await feedState(page)) === 'live');
  // Three events, one a second, each with no topics ("top" is null or []).
  await waitFor('three events', async () => (await events(page)) >= 3, 10000);
  await staysLive(page);
  const last = await page.evaluate(() => window.dashboard.last);
  assert.equal(last.node.connections, 0);
  assert.equal(last.topics.total, 0);
  for (const id of ['connections', 'subscriptions', 'topics-total', 'published-rate', 'delivered-rate',
    'framesin-rate', 'dropped', 'slow', 'broker-errors']) {
    assert.equal(await text(page, '#' + id), '0', id);
  }
  assert.equal(await text(page, '#bytesout-rate'), '0 B');
  assert.equal(await text(page, '#latency-p99'), '–');
  assert.match(await text(page, '#uptime'), /^\d+ s$/);
  assert.deepEqual(await rows(page, 'top-topics'), [['no topics with subscribers']]);
  assert.equal(await text(page, '#nodes-info'), '1 node');
  assert.equal((await rows(page, 'nodes')).length, 1);
  // The embedded broker has no link to report, only its streams (none yet).
  assert.equal(last.broker.streams, 0);
  assert.equal('connected' in last.broker, false);
  assert.equal(await page.isHidden('#broker-card'), true);
  assert.equal(await page.isHidden('#render-error'), true);
  assert.deepEqual(problems, []);
});

test('events with nulls, missing fields and odd types: shown as far as they go, the feed live', async (t) => {
  const {page, problems} = await openDashboard(t, {stubbed: true});
  await waitFor('the stub feed open', async () => feed.streams === 1 && (await feedState(page)) === 'live');

  for (const event of [{time: 1, node: {}, topics: {top: null}}, {}, null, 7]) {
    await sendAndWait(page, event);
    await staysLive(page, 300);
    for (const id of ['connections', 'subscriptions', 'topics-total', 'published-rate', 'dropped', 'uptime']) {
      assert.equal(await text(page, '#' + id), '–', `${id} of ${JSON.stringify(event)}`);
    }
    assert.deepEqual(await rows(page, 'top-topics'), [['no topics with subscribers']], JSON.stringify(event));
    assert.deepEqual(await rows(page, 'nodes'), []);
    assert.equal(await text(page, '#nodes-info'), 'the broker does not list its nodes');
    assert.equal(await page.isHidden('#broker-card'), true, 'no broker link to show');
  }

  // Values of the wrong type are left out, the rest is shown.
  const now = Date.now();
  await sendAndWait(page, {
    time: now, startedAt: now - 5000,
    node: {connections: '7', subscriptions: 3, rateLimited: 2, latency: {buckets: [0.001], counts: null, count: 4}},
    rates: null,
    history: {connections: null, published: [1, null, 'x'], step: 'soon'},
    topics: {total: 2, top: [null, {topic: '/a', count: 2}, {count: 1}, 'b']},
    nodes: [null, {id: 'n1', connections: 1}],
    broker: 5,
  });
  await staysLive(page, 300);
  assert.equal(await text(page, '#connections'), '–');
  assert.equal(await text(page, '#subscriptions'), '3');
  assert.equal(await text(page, '#topics-total'), '2');
  assert.equal(await text(page, '#published-rate'), '–');
  assert.equal(await text(page, '#dropped'), '2');
  assert.equal(await text(page, '#latency-p99'), '–');
  assert.equal(await text(page, '#uptime'), '5 s');
  assert.deepEqual(await rows(page, 'top-topics'), [['/a', '2']]);
  assert.deepEqual(await rows(page, 'nodes'), [['n1', '1', '–', 'never']]);

  // Then a whole event, as the node sends it: every figure is back.
  const resp = await fetch(node + '/stats', {headers: {Authorization: 'Bearer ' + API_TOKEN}});
  assert.equal(resp.status, 200);
  await sendAndWait(page, await resp.json());
  await staysLive(page, 300);
  assert.equal(await text(page, '#connections'), '0');
  assert.equal(await text(page, '#topics-total'), '0');
  assert.equal(await text(page, '#nodes-info'), '1 node');
  assert.equal(await page.isHidden('#render-error'), true);
  assert.deepEqual(problems, []);
});

test('an event that cannot be shown is reported as such, and the feed stays live', async (t) => {
  const {page, problems} = await openDashboard(t, {stubbed: true});
  await waitFor('the stub feed open', async () => feed.streams === 1 && (await feedState(page)) === 'live');
  const now = Date.now();
  await sendAndWait(page, {time: now, startedAt: now - 1000, node: {connections: 4}, topics: {total: 0, top: []}});
  assert.equal(await text(page, '#connections'), '4');

  await sendAndWait(page, '{"time": 2, "node": {"connec');
  await page.waitForSelector('#render-error:not([hidden])');
  assert.match(await text(page, '#render-error'), /not JSON/);
  await staysLive(page, 500);
  assert.equal(await text(page, '#connections'), '4', 'the figures of the last good event stay');
  // The page's console line reaches the test by its own event, which may
  // come after the note is shown.
  await waitFor('the console line of the bad event', () => problems.length >= 1);
  assert.equal(problems.length, 1, problems.join('\n'));
  assert.match(problems[0], /^console: firetower dashboard: .*not JSON/);

  // The next good event is shown, and the note goes.
  await sendAndWait(page, {time: now + 1000, startedAt: now - 1000, node: {connections: 5}, topics: {total: 0, top: []}});
  assert.equal(await text(page, '#connections'), '5');
  assert.equal(await page.isHidden('#render-error'), true);
  await staysLive(page, 300);
  assert.equal(problems.length, 1, problems.join('\n'));
});
