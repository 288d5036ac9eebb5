// Browser tests of the chat demo (_examples/chat) in headless Chromium:
// real chat servers, a real topic service for the cluster case, real pages.
//
//   cd e2e && npm ci && node --test
//
// FIRETOWER_UPDATE_SCREENSHOT=1 also writes docs/chat.png, the README's
// picture; every run writes e2e/artifacts/chat.png.
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {copyFileSync, existsSync} from 'node:fs';
import path from 'node:path';
import {ROOT, artifacts, build, freePort, httpReady, launch, sleep, start, stop, stopAll, tcpReady} from './helpers.mjs';
import {API_TOKEN, SVC_TOKEN, XSS, signIn, startChat as startChatNode} from './chatnode.mjs';


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

const startChat = (opts) => startChatNode(chatBin, opts);

// openChat opens the chat in a context of its own (its own storage, so its
// own nickname) and waits until it is in the room.
async function openChat(base, nick, room = 'world') {
  const ctx = await browser.newContext({viewport: {width: 1100, height: 540}});
  await signIn(ctx, nick);
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss(); });
  await page.goto(`${base}/#${room}`);
    await waitJoined(page, room);
  return {page, ctx, problems, close: () => ctx.close()};
}

async function waitJoined(page, room) {
  await page.waitForFunction((topic) => {
    const ft = window.chat && window.chat.ft;
    return ft && ft.state === 'open' && ft.topics().includes(topic) && document.querySelector('#online').dataset.count !== '';
  }, '/chat/' + room, {timeout: 15000});
  assert.equal(await page.textContent('#room-title'), '#' + room);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

// texts lists the messages on a page: [nick, text, status].
function texts(page) {
  return page.$$eval('#messages li.msg', (lis) => lis.map((li) => [
    li.querySelector('.who').textContent, li.querySelector('.text').textContent, li.dataset.status,
  ]));
}

async function waitText(page, text, timeout = 10000) {
  try {
    await page.waitForFunction((t) => [...document.querySelectorAll('#messages li.msg .text')].some((e) => e.textContent === t), text, {timeout});
  } catch (e) {
    throw new Error(`message ${JSON.stringify(text)} never showed; the page shows ${JSON.stringify(await texts(page))}`);
  }
}

async function waitOnline(page, n, timeout = 10000) {
  try {
    await page.waitForFunction((want) => document.querySelector('#online').dataset.count === String(want), n, {timeout});
  } catch (e) {
    throw new Error(`online count never became ${n}; it shows "${await page.textContent('#online')}"`);
  }
}

test('two pages in a room: messages arrive as text and run nothing; online count 1 -> 2 -> 1 (the members, from presence)', async () => {
  const node = await startChat();
  const alice = await openChat(node.base, 'alice');
  await waitOnline(alice.page, 1);
  const bob = await openChat(node.base, 'bob');
  await waitOnline(alice.page, 2);
  await waitOnline(bob.page, 2);

  await say(alice.page, 'hi bob, this is firetower');
  await waitText(bob.page, 'hi bob, this is firetower');
  await say(bob.page, 'hello alice! markup stays text: ' + XSS);
  await waitText(alice.page, 'hello alice! markup stays text: ' + XSS);
  await say(alice.page, 'unicode arrives as sent: żółw, naïve café, Ωμέγα, and so do   spaces');
  await waitText(bob.page, 'unicode arrives as sent: żółw, naïve café, Ωμέγα, and so do   spaces');

  // Give an injected onerror every chance to fire, then check it did not.
  await sleep(300);
  for (const p of [alice, bob]) {
    assert.equal(await p.page.evaluate(() => window.__pwned), undefined, 'injected script ran');
    assert.equal(await p.page.$$eval('#messages img', (x) => x.length), 0, 'a message became an <img> element');
    assert.deepEqual(p.problems, []);
  }
  // Bob's own message is "delivered" once it came back to his page, which
  // may be after alice saw it.
  const statuses = () => bob.page.evaluate(() => [...document.querySelectorAll('#messages li.msg')].map((li) => li.dataset.status));
  await bob.page.waitForFunction(() => [...document.querySelectorAll('#messages li.msg')].every((li) => li.dataset.status === 'delivered'), null, {timeout: 10000})
    .catch(async (e) => { throw new Error(`statuses on bob's page ${await statuses()}: ${e.message}`); });
  assert.equal((await statuses()).length, 3);
  assert.deepEqual((await texts(alice.page)).map((m) => m[0]), ['alice', 'bob', 'alice']);

  await waitOnline(alice.page, 2);
  const shot = path.join(artifacts(), 'chat.png');
  await alice.page.screenshot({path: shot});
  if (process.env.FIRETOWER_UPDATE_SCREENSHOT === '1') copyFileSync(shot, path.join(ROOT, 'docs', 'chat.png'));

  await bob.close();
  await waitOnline(alice.page, 1);
  await alice.close();
  await stop(node.proc);
});

test('switching rooms moves the page, its messages and the counts', async () => {
  const node = await startChat();
  const alice = await openChat(node.base, 'alice', 'world');
  const bob = await openChat(node.base, 'bob', 'world');
  await waitOnline(alice.page, 2);

  await bob.page.click('#rooms a[href="#2"]');
  await waitJoined(bob.page, '2');
  await waitOnline(alice.page, 1);
  await waitOnline(bob.page, 1);
  assert.deepEqual(await bob.page.evaluate(() => window.chat.ft.topics()), ['/chat/2']);

  await say(alice.page, 'only for world');
  await say(bob.page, 'only for room 2');
  await waitText(alice.page, 'only for world');
  await waitText(bob.page, 'only for room 2');
  // Give a misrouted message time to show up.
  await sleep(300);
  assert.deepEqual((await texts(bob.page)).map((m) => m[1]), ['only for room 2']);
  assert.deepEqual((await texts(alice.page)).map((m) => m[1]), ['only for world']);

  // A room typed into the form, then back to one visited before: its
  // messages were kept.
  await alice.page.fill('#room-input', 'team-7');
  await alice.page.press('#room-input', 'Enter');
  await waitJoined(alice.page, 'team-7');
  await alice.page.click('#rooms a[href="#2"]');
  await waitJoined(alice.page, '2');
  await waitOnline(bob.page, 2);
  await say(alice.page, 'alice joined you');
  await waitText(bob.page, 'alice joined you');
  // Back in world, bob sees what was said there while he was away: the
  // room's history.
  await bob.page.click('#rooms a[href="#world"]');
  await waitJoined(bob.page, 'world');
  await waitText(bob.page, 'only for world');
  assert.deepEqual((await texts(bob.page)).map((m) => m[1]), ['only for world']);
  await bob.page.click('#rooms a[href="#2"]');
  await waitJoined(bob.page, '2');
  await sleep(300); // the history read on joining again adds nothing
  assert.deepEqual((await texts(bob.page)).map((m) => m[1]), ['only for room 2', 'alice joined you']);

  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
  await alice.close();
  await bob.close();
  await stop(node.proc);
});

test('server restart: the page shows it is reconnecting, marks an unsent message, then talks again without a reload', async () => {
  let node = await startChat();
  const alice = await openChat(node.base, 'alice');
  const bob = await openChat(node.base, 'bob');
  await alice.page.evaluate(() => { window.__sameDocument = true; });

  await stop(node.proc);
  await alice.page.waitForFunction(() => document.querySelector('#state').dataset.state === 'reconnecting', null, {timeout: 10000});
  assert.match(await alice.page.textContent('#state'), /reconnecting/);

  // Sent while the server is down: it waits, then is marked as not sent.
  await say(alice.page, 'sent while the server was down');
  await alice.page.waitForSelector('#messages li.msg[data-status="failed"] button.retry', {timeout: 15000});
  assert.match(await alice.page.textContent('#messages li.msg[data-status="failed"]'), /not sent/);

  node = await startChat({port: node.port});
  for (const p of [alice, bob]) {
    await p.page.waitForFunction(() => document.querySelector('#state').dataset.state === 'open', null, {timeout: 30000});
    await waitJoined(p.page, 'world');
  }
  await waitOnline(alice.page, 2);

  // The retry button sends the message that failed.
  await alice.page.click('#messages li.msg[data-status="failed"] button.retry');
  await waitText(bob.page, 'sent while the server was down');
  await alice.page.waitForSelector('#messages li.msg[data-status="delivered"]', {timeout: 10000});
  assert.equal(await alice.page.$$eval('#messages li.msg[data-status="failed"]', (x) => x.length), 0);

  await say(bob.page, 'back again');
  await waitText(alice.page, 'back again');
  assert.equal(await alice.page.evaluate(() => window.__sameDocument), true, 'the page was reloaded');
  assert.ok((await alice.page.$$eval('#messages li.system', (x) => x.map((e) => e.textContent))).includes('reconnected'));
  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
  await alice.close();
  await bob.close();
  await stop(node.proc);
});

test('cluster: pages on two nodes of one topic service talk to each other', async () => {
  const svcPkg = path.join(ROOT, 'cmd', 'firetower-topicsvc');
  assert.ok(existsSync(svcPkg), `the topic service binary's package ${svcPkg} is missing`);
  const svcBin = build('./cmd/firetower-topicsvc', 'firetower-topicsvc');
  const svcPort = await freePort();
  const svc = await start(svcBin, {
    FIRETOWER_TOPICSVC_LISTEN: `127.0.0.1:${svcPort}`,
    FIRETOWER_TOPICSVC_TOKEN: SVC_TOKEN,
  }, tcpReady(svcPort), 'topic service');
  const broker = `topicsvc://127.0.0.1:${svcPort}`;
  const n1 = await startChat({broker});
  const n2 = await startChat({broker});

  const alice = await openChat(n1.base, 'alice');
  const bob = await openChat(n2.base, 'bob');
  // The count is cluster-wide: each node sees the other's subscriber, and
  // each page lists both.
  await waitOnline(alice.page, 2);
  await waitOnline(bob.page, 2);
  for (const p of [alice, bob]) assert.deepEqual(await p.page.$$eval('#member-list li', (lis) => lis.map((li) => li.dataset.user)), ['alice', 'bob']);
  await say(alice.page, 'from node 1');
  await waitText(bob.page, 'from node 1');
  await say(bob.page, 'from node 2 ' + XSS);
  await waitText(alice.page, 'from node 2 ' + XSS);
  assert.equal(await alice.page.evaluate(() => window.__pwned), undefined);

  await bob.close();
  await waitOnline(alice.page, 1);
  // Who comes and goes is cluster-wide too: bob came and went on node 2.
  assert.deepEqual(await alice.page.$$eval('#messages li.system.join, #messages li.system.leave', (lis) => lis.map((li) => li.textContent)), ['bob joined', 'bob left']);
  assert.deepEqual(await alice.page.$$eval('#member-list li', (lis) => lis.map((li) => li.dataset.user)), ['alice']);
  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
  await alice.close();
  await stop(n1.proc);
  await stop(n2.proc);
  await stop(svc);
});

test('a node that stops answering is noticed by the app-level ping, and the client comes back when it answers again', async () => {
  const node = await startChat();
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(node.base + '/topics/blank/count');
  await page.evaluate(async () => {
    const {connect} = await import('/firetower.mjs');
    const ft = connect('/ws', {pingInterval: 300, pingTimeout: 300, reconnectDelay: 100, reconnectDelayMax: 500});
    window.states = [];
    ft.onState((s, d) => window.states.push([s, d.code || 0]));
    await ft.subscribe('/chat/ping');
    window.ft = ft;
  });
  // The process is frozen, not gone: its TCP connections stay open and
  // silent, which only a ping can tell from a quiet room.
  node.proc.p.kill('SIGSTOP');
  try {
    await page.waitForFunction(() => window.ft.state === 'reconnecting', null, {timeout: 5000});
    assert.deepEqual((await page.evaluate(() => window.states)).find((s) => s[0] === 'reconnecting'), ['reconnecting', 4000]);
  } finally {
    node.proc.p.kill('SIGCONT');
  }
  await page.waitForFunction(() => window.ft.state === 'open', null, {timeout: 15000});
  await page.evaluate(() => window.ft.subscribe('/chat/ping')); // confirmed on the new connection
  await page.evaluate(() => window.ft.close());
  await ctx.close();
  await stop(node.proc);
});

test('firetower.js works as a plain script and firetower.mjs as a module; a REST publish reaches both', async () => {
  const node = await startChat();
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(e.message));
  // A document of the node's origin that is not the chat page.
  await page.goto(node.base + '/topics/blank/count');
  const urls = await page.evaluate(async () => {
    const s = document.createElement('script');
    s.src = '/firetower.js';
    await new Promise((resolve, reject) => { s.onload = resolve; s.onerror = reject; document.head.append(s); });
    const mod = await import('/firetower.mjs');
    if (mod.connect !== window.firetower.connect) throw new Error('module and script differ');
    const asScript = window.firetower.connect('/ws');
    const asModule = mod.connect('/ws', {batch: false});
    window.received = [];
    window.clients = [asScript, asModule];
    // Only the backend's message.
    const keep = (who) => (d, f) => { if (d && d.text) window.received.push([who, d, typeof f.id]); };
    asScript.on('/chat/e2e-rest', keep('script'));
    asModule.on('/chat/e2e-rest', keep('module'));
    await Promise.all([asScript.subscribe('/chat/e2e-rest'), asModule.subscribe('/chat/e2e-rest')]);
    return [asScript.url, asModule.url];
  });
  assert.deepEqual(urls, [`ws://127.0.0.1:${node.port}/ws?batch=1`, `ws://127.0.0.1:${node.port}/ws`]);

  const body = `{"topic":"/chat/e2e-rest","data":{"text":"pushed by a backend","n":42,"s":"żółw"}}`;
  const json = {'Content-Type': 'application/json'};
  const noAuth = await fetch(node.base + '/publish', {method: 'POST', body, headers: json});
  assert.equal(noAuth.status, 401);
  const res = await fetch(node.base + '/publish', {method: 'POST', body, headers: {...json, Authorization: 'Bearer ' + API_TOKEN}});
  assert.equal(res.status, 200, await res.text());
  await page.waitForFunction(() => window.received.length === 2, null, {timeout: 10000}).catch(async (e) => {
    throw new Error(`the page received ${JSON.stringify(await page.evaluate(() => window.received))}: ${e.message}`);
  });
  const received = (await page.evaluate(() => window.received)).sort();
  const want = {text: 'pushed by a backend', n: 42, s: 'żółw'};
  assert.deepEqual(received, [['module', want, 'string'], ['script', want, 'string']]);
  await page.evaluate(() => window.clients.forEach((c) => c.close()));
  assert.deepEqual(problems, []);
  await ctx.close();
  await stop(node.proc);
});
