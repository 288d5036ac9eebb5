// Browser tests of the chat demo against its own users: hostile messages of
// many shapes, sent by a raw WebSocket client in a page (the server must
// refuse them) and by a backend over REST (past the server's check: the
// page must survive them, live and in the room's history), then a normal
// message still renders in the other tab and the online count is the real
// one: it comes from the server's presence, never from a message.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {build, freePort, httpReady, launch, sleep, start, stop, stopAll} from './helpers.mjs';
import {signIn} from './chatnode.mjs';

const API_TOKEN = 'e2e-api-token';
const XSS = '<img src=x onerror="window.__pwned=(window.__pwned||0)+1">';
const FORGED = 424242;

// Messages no page may be stopped or misled by. Each is refused by the
// chat server's ReadHandler when a client sends it.
const HOSTILE = [
  {text: 'boom', at: 1e300},
  {text: 'boom', at: -1e300},
  {text: 'boom', at: 1e16},
  {text: 'boom', at: 'tomorrow'},
  {text: 'x', type: 'online', count: FORGED},
  {type: 'online', count: FORGED},
  {type: 'onSubscribe', data: FORGED},
  {text: {nested: {deep: [1, 2, {text: 'x'}]}}},
  {text: ['an', 'array']},
  {text: 12345678901234567890},
  {text: 'x', nick: {toString: 'evil'}},
  {text: 'x', nick: 1e300},
  {text: 'x', cid: {}},
  {text: 'x', at: {valueOf: 1}},
  {text: XSS, nick: XSS, extra: '<script>alert(1)</script>'},
  'a bare string',
  [{text: 'in an array'}],
  null,
  9007199254740993,
];

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

async function startChat() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const env = {FIRETOWER_ADDR: `127.0.0.1:${port}`, FIRETOWER_API_TOKEN: API_TOKEN, FIRETOWER_BROKER: '', FIRETOWER_TOPICSVC_TOKEN: ''};
  const proc = await start(chatBin, env, httpReady(base + '/'), `chat node ${base}`);
  return {proc, base};
}

async function openChat(base, nick) {
  const ctx = await browser.newContext({viewport: {width: 1100, height: 540}});
  await signIn(ctx, nick);
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss(); });
  await page.goto(`${base}/#world`);
    await page.waitForFunction(() => {
    const ft = window.chat && window.chat.ft;
    return ft && ft.state === 'open' && ft.topics().includes('/chat/world') && document.querySelector('#online').dataset.count !== '';
  }, null, {timeout: 15000});
  return {page, ctx, problems};
}

async function waitText(page, text, timeout = 10000) {
  try {
    await page.waitForFunction((t) => [...document.querySelectorAll('#messages li .text')].some((e) => e.textContent === t), text, {timeout});
  } catch (e) {
    const shown = await page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent));
    throw new Error(`message ${JSON.stringify(text)} never showed; the page shows ${JSON.stringify(shown)}`);
  }
}

async function waitOnline(page, n, timeout = 10000) {
  try {
    await page.waitForFunction((want) => document.querySelector('#online').dataset.count === String(want), n, {timeout});
  } catch (e) {
    throw new Error(`online count never became ${n}; it shows "${await page.textContent('#online')}"`);
  }
}

// members lists the user ids in a page's member list, in its order.
function members(page) {
  return page.$$eval('#member-list li', (lis) => lis.map((li) => li.dataset.user));
}

// comings lists the join and leave lines on a page.
function comings(page) {
  return page.$$eval('#messages li.system.join, #messages li.system.leave', (lis) => lis.map((li) => li.textContent));
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

// rawClient opens a plain WebSocket from a page of the node's origin (as a
// hostile script would) and returns send, which sends one frame and
// resolves with the node's reply to it, and fire, which only sends.
async function rawClient(base) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(base + '/topics/blank/count');
  await page.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws');
    window.replies = new Map();
    ws.onmessage = (ev) => {
      const f = JSON.parse(ev.data);
      if (f.id !== undefined) window.replies.set(f.id, f);
    };
    ws.onopen = () => { window.ws = ws; resolve(); };
    ws.onerror = () => reject(new Error('raw WebSocket failed'));
  }));
  let next = 0;
  const send = async (frame) => {
    const id = ++next;
    await page.evaluate(([f, i]) => window.ws.send(JSON.stringify({...f, id: i})), [frame, id]);
    await page.waitForFunction((i) => window.replies.has(i), id, {timeout: 5000});
    return page.evaluate((i) => window.replies.get(i), id);
  };
  // fire sends a frame and waits for nothing.
  const fire = (frame) => page.evaluate((f) => window.ws.send(JSON.stringify(f)), frame);
  return {send, fire, close: () => ctx.close()};
}

function restPublish(base, topic, data) {
  return fetch(base + '/publish', {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + API_TOKEN},
    body: JSON.stringify({topic, data}),
  });
}

test('hostile messages from a raw WebSocket client are refused, and the room goes on', async () => {
  const node = await startChat();
  const alice = await openChat(node.base, 'alice');
  const bob = await openChat(node.base, 'bob');
  await waitOnline(alice.page, 2);
  const raw = await rawClient(node.base);

  for (const data of HOSTILE) {
    const reply = await raw.send({type: 'publish', topic: '/chat/world', data});
    assert.equal(reply.type, 'error', `the server accepted ${JSON.stringify(data)}: ${JSON.stringify(reply)}`);
    assert.equal(reply.code, 'forbidden');
  }
  // Nothing outside the rooms takes a client publish, and a client cannot
  // forge the frames of presence: a join or a leave it sends is not
  // relayed to the room.
  for (const data of [{type: 'online', count: FORGED}, {text: 'x'}]) {
    const reply = await raw.send({type: 'publish', topic: '/online/chat/world', data});
    assert.equal(reply.code, 'forbidden', `a client published ${JSON.stringify(data)} outside the rooms: ${JSON.stringify(reply)}`);
  }
  // (The server answers a refused frame of its own type with nothing.)
  await raw.fire({type: 'join', topic: '/chat/world', user: 'mallory', info: {name: 'mallory'}});
  await raw.fire({type: 'leave', topic: '/chat/world', user: 'bob'});
  // Markup is a message like any other, and shows as text.
  const ok = await raw.send({type: 'publish', topic: '/chat/world', data: {text: XSS, nick: '<b>mallory</b>', at: Date.now()}});
  assert.equal(ok.type, 'published', JSON.stringify(ok));
  await waitText(bob.page, XSS);

  await say(alice.page, 'still talking after the raw client');
  await waitText(bob.page, 'still talking after the raw client');
  await sleep(300);
  // Only bob's real join shows, on the page that was there before him.
  assert.deepEqual(await comings(alice.page), ['bob joined']);
  assert.deepEqual(await comings(bob.page), []);
  for (const p of [alice, bob]) {
    assert.equal(await p.page.$eval('#online', (e) => e.dataset.count), '2');
    assert.deepEqual(await members(p.page), ['alice', 'bob']);
    assert.equal(await p.page.evaluate(() => window.__pwned), undefined, 'injected script ran');
    assert.deepEqual(p.problems, []);
  }
  await raw.close();
  await alice.ctx.close();
  await bob.ctx.close();
  await stop(node.proc);
});

test('hostile messages past the server check (a backend over REST) leave the page rendering and the count real', async () => {
  const node = await startChat();
  const alice = await openChat(node.base, 'alice');
  const bob = await openChat(node.base, 'bob');
  await waitOnline(bob.page, 2);

  for (const data of HOSTILE) {
    const res = await restPublish(node.base, '/chat/world', data);
    assert.equal(res.status, 200, await res.text());
  }
  // Shapes of presence frames published as data in the room are messages,
  // not joins or leaves: they change no member list.
  for (const data of [{type: 'join', topic: '/chat/world', user: 'mallory', info: {name: XSS}}, {type: 'leave', topic: '/chat/world', user: 'bob'}, {type: 'online', count: FORGED}]) {
    const res = await restPublish(node.base, '/chat/world', data);
    assert.equal(res.status, 200, await res.text());
  }
  await say(alice.page, 'a normal message after the storm');
  await waitText(bob.page, 'a normal message after the storm');
  await sleep(300);
  assert.equal(await bob.page.$eval('#online', (e) => e.dataset.count), '2');
  assert.doesNotMatch(await bob.page.textContent('#online'), new RegExp(String(FORGED)));
  assert.deepEqual(await members(bob.page), ['alice', 'bob']);
  assert.deepEqual(await comings(bob.page), [], 'a message was taken for a join or a leave');
  // The lines with an out-of-range time still show, at the time they came.
  await waitText(bob.page, 'boom');
  for (const p of [alice, bob]) {
    assert.equal(await p.page.evaluate(() => window.__pwned), undefined, 'injected script ran');
    assert.equal(await p.page.$$eval('#messages img, #messages script, #messages b', (x) => x.length), 0, 'a message became markup');
    assert.deepEqual(p.problems, []);
  }
  // A page that opens now meets the same messages in the room's history,
  // and shows them as bob's page does.
  const lines = (page) => page.$$eval('#messages li.msg', (lis) => lis.map((li) => [li.querySelector('.who').textContent, li.querySelector('.text').textContent]));
  const carol = await openChat(node.base, 'carol');
  await waitText(carol.page, 'a normal message after the storm');
  await sleep(300);
  assert.deepEqual(await lines(carol.page), await lines(bob.page));
  await waitOnline(carol.page, 3);
  assert.equal(await carol.page.evaluate(() => window.__pwned), undefined, 'injected script ran');
  assert.equal(await carol.page.$$eval('#messages img, #messages script, #messages b', (x) => x.length), 0, 'a message in the history became markup');
  assert.deepEqual(carol.problems, []);
  await carol.ctx.close();
  // The count still follows the room.
  await alice.ctx.close();
  await waitOnline(bob.page, 1);
  await bob.ctx.close();
  await stop(node.proc);
});
