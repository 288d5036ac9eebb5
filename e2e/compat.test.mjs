// A firetower v0.x page against a node started with bare data
// (FIRETOWER_BARE_DATA=1 in the chat example, Config.BareData in the
// library): the page speaks the v0 protocol, as the v0 web client did, and
// must work unchanged.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {build, freePort, httpReady, launch, start, stop, stopAll, tcpReady} from './helpers.mjs';

const API_TOKEN = 'e2e-api-token';
let browser;
let chatBin;

before(async () => {
  chatBin = build('./_examples/chat', 'chat');
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await stopAll();
});

// v0Client is what a v0.x page ran: a bare WebSocket, subscribe frames with
// a comma-separated topic and an empty data string, publish frames without
// an id, every incoming frame handed to the page raw, "heartbeat" ignored.
function v0Client() {
  window.frames0 = [];
  const ws = new WebSocket('ws://' + location.host + '/ws');
  window.v0 = {
    ws,
    subscribe: (topics) => ws.send(JSON.stringify({type: 'subscribe', topic: topics.join(','), data: ''})),
    unsubscribe: (topics) => ws.send(JSON.stringify({type: 'unSubscribe', topic: topics.join(','), data: ''})),
    publish: (topic, data) => ws.send(JSON.stringify({type: 'publish', topic, data})),
  };
  ws.onmessage = (ev) => { if (ev.data !== 'heartbeat') window.frames0.push(JSON.parse(ev.data)); };
  return new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('websocket failed')); });
}

async function v0Page(base) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(base + '/topics/blank/count'); // any document of the node's origin
  await page.evaluate(v0Client);
  return {page, ctx};
}

const frames = (p) => p.page.evaluate(() => window.frames0);
async function waitFrames(p, pred, what) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const got = await frames(p);
    if (pred(got)) return got;
    if (Date.now() > deadline) throw new Error(`${what} never arrived; the page got ${JSON.stringify(got)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a firetower v0.x page works unchanged against a node with bare data', async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const node = await start(chatBin, {FIRETOWER_ADDR: `127.0.0.1:${port}`, FIRETOWER_API_TOKEN: API_TOKEN, FIRETOWER_BARE_DATA: '1'}, httpReady(base + '/'), 'chat node with bare data');

  const a = await v0Page(base);
  await a.page.evaluate(() => window.v0.subscribe(['/chat/world', '/chat/2']));
  // The v0 chat's presence frame, as data: {"type":"onSubscribe","data":N}.
  await waitFrames(a, (f) => f.some((x) => x.type === 'onSubscribe' && x.data === 1), 'the count 1');

  const b = await v0Page(base);
  await b.page.evaluate(() => window.v0.subscribe(['/chat/world']));
  await waitFrames(a, (f) => f.some((x) => x.type === 'onSubscribe' && x.data === 2), 'the count 2');

  // A v0 client publish: the data arrives bare at the other page.
  const msg = {from: 'v0 user', data: 'hello <b>as before</b>', type: 'publish'};
  await b.page.evaluate((m) => window.v0.publish('/chat/world', m), msg);
  await waitFrames(a, (f) => f.some((x) => x.type === 'publish'), 'the v0 publish');
  // A backend publish over REST, to a topic only a listens to.
  const res = await fetch(base + '/publish', {
    method: 'POST',
    headers: {Authorization: 'Bearer ' + API_TOKEN, 'Content-Type': 'application/json'},
    body: JSON.stringify({topic: '/chat/2', data: {type: 'event', data: {type: 'info', msg: 'from the backend'}}}),
  });
  assert.equal(res.status, 200, await res.text());
  const got = await waitFrames(a, (f) => f.some((x) => x.type === 'event'), 'the REST publish');

  // Nothing but the published data: no envelopes, no replies.
  assert.deepEqual(got.filter((x) => !x.type.startsWith('on')), [msg, {type: 'event', data: {type: 'info', msg: 'from the backend'}}]);
  for (const f of [...got, ...await frames(b)]) {
    assert.ok(!['subscribed', 'unsubscribed', 'published', 'pong'].includes(f.type), `v1 frame ${JSON.stringify(f)} sent to a v0 page`);
    assert.equal(f.topic, undefined, `an envelope reached a v0 page: ${JSON.stringify(f)}`);
  }

  await b.page.evaluate(() => window.v0.unsubscribe(['/chat/world']));
  await waitFrames(a, (f) => f.some((x) => x.type === 'onUnsubscribe' && x.data === 1), 'the count back to 1');
  await a.ctx.close();
  await b.ctx.close();
  await stop(node);
});

test('migration: a v0.x page on a bare-data node and a firetower.js page on a v1 node share one cluster', async () => {
  const svcBin = build('./cmd/firetower-topicsvc', 'firetower-topicsvc');
  const svcPort = await freePort();
  const svc = await start(svcBin, {FIRETOWER_TOPICSVC_LISTEN: `127.0.0.1:${svcPort}`, FIRETOWER_TOPICSVC_TOKEN: 'e2e'}, tcpReady(svcPort), 'topic service');
  const nodes = [];
  for (const bare of ['1', '']) {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = {FIRETOWER_ADDR: `127.0.0.1:${port}`, FIRETOWER_BARE_DATA: bare, FIRETOWER_BROKER: `topicsvc://127.0.0.1:${svcPort}`, FIRETOWER_TOPICSVC_TOKEN: 'e2e'};
    nodes.push({base, proc: await start(chatBin, env, httpReady(base + '/'), `chat node (bare data: ${bare || 'off'})`)});
  }
  const old = await v0Page(nodes[0].base);
  await old.page.evaluate(() => window.v0.subscribe(['/chat/mixed']));
  await waitFrames(old, (f) => f.some((x) => x.type === 'onSubscribe'), 'the subscription');

  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(nodes[1].base + '/topics/blank/count');
  await page.evaluate(async () => {
    await import('/firetower.mjs');
    const ft = window.firetower.connect('/ws');
    window.got = [];
    ft.on('/chat/mixed', (d) => { if (d.text || d.from) window.got.push(d); });
    await ft.subscribe('/chat/mixed');
    window.ft = ft;
  });
  // v1 page -> v0 page: the v0 page gets the bare data.
  const ack = await page.evaluate(() => window.ft.publish('/chat/mixed', {nick: 'new', text: 'from firetower.js'}));
  assert.equal(typeof ack.messageId, 'string');
  await waitFrames(old, (f) => f.some((x) => x.text === 'from firetower.js'), 'the firetower.js message');
  // v0 page -> v1 page: the firetower.js page gets the envelope.
  await old.page.evaluate(() => window.v0.publish('/chat/mixed', {from: 'old', data: 'from a v0 page', type: 'publish'}));
  await page.waitForFunction(() => window.got.some((d) => d.data === 'from a v0 page'), null, {timeout: 10000});
  assert.deepEqual(await page.evaluate(() => window.got), [{nick: 'new', text: 'from firetower.js'}, {from: 'old', data: 'from a v0 page', type: 'publish'}]);

  await page.evaluate(() => window.ft.close());
  await ctx.close();
  await old.ctx.close();
  for (const n of nodes) await stop(n.proc);
  await stop(svc);
});
