// Browser tests of the chat demo's history and recovery in headless
// Chromium: a room keeps its last 100 messages, a page that joins shows
// them, and a page whose connection dropped (a network cut, the node behind
// it restarted) shows what was said meanwhile, each message exactly once and
// in order. The messages are published by a backend over REST while the
// page is away, so only the history can bring them.
//
//   cd e2e && npm ci && node --test chat-history.test.mjs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {build, freePort, httpReady, launch, proxy, sleep, start, stop, stopAll, tcpReady, waitFor} from './helpers.mjs';
import {API_TOKEN, SVC_TOKEN, XSS, signIn, startChat as startChatNode} from './chatnode.mjs';

const RELOADED = /showing the room's history again/;

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

// publish sends data to a room as a backend does, through base's REST API,
// and returns the offset the room's stream gave it.
async function publish(base, room, data) {
  const res = await fetch(base + '/publish', {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + API_TOKEN},
    body: JSON.stringify({topic: '/chat/' + room, data}),
  });
  const body = await res.text();
  assert.equal(res.status, 200, `POST /publish: ${body}`);
  const offset = JSON.parse(body).offsets?.['/chat/' + room];
  assert.ok(Number.isSafeInteger(offset) && offset > 0, `POST /publish answered ${body}: no offset for the room`);
  return offset;
}

// say publishes each of texts in turn (each answered before the next goes,
// so their offsets are in this order).
async function say(base, room, texts) {
  for (const text of texts) await publish(base, room, {text, nick: 'backend'});
}

const numbered = (prefix, n, from = 1) => Array.from({length: n}, (_, i) => `${prefix} ${from + i}`);

// openChat opens the chat in a context of its own and waits until it is in
// the room. window.__recoveryFailed collects the topics whose recovery
// failed; window.__sameDocument tells that the page was not reloaded.
// setup, if given, is called with the page before it loads.
async function openChat(base, nick, room = 'world', setup = undefined) {
  const ctx = await browser.newContext({viewport: {width: 1100, height: 540}});
  await signIn(ctx, nick);
  const page = await ctx.newPage();
  if (setup) await setup(page);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss(); });
  await page.goto(`${base}/#${room}`);
    await page.waitForFunction((topic) => {
    const ft = window.chat && window.chat.ft;
    return ft && ft.state === 'open' && ft.topics().includes(topic) && document.querySelector('#online').dataset.count !== '';
  }, '/chat/' + room, {timeout: 15000});
  await page.evaluate(() => {
    window.__sameDocument = true;
    window.__recoveryFailed = [];
    window.chat.ft.onRecoveryFailed((topic) => window.__recoveryFailed.push(topic));
  });
  return {page, ctx, problems, close: () => ctx.close()};
}

// holdHistory makes a page's history requests wait, on their way to the
// node, until release(); held resolves once one is waiting. Meanwhile the
// live messages go on reaching the page.
function holdHistory() {
  let isHeld;
  const h = {held: new Promise((resolve) => { isHeld = resolve; }), waiting: [], holding: true};
  h.setup = (page) => page.routeWebSocket((url) => url.pathname === '/ws', (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      if (h.holding && typeof m === 'string' && JSON.parse(m).type === 'history') {
        h.waiting.push(() => server.send(m));
        isHeld();
        return;
      }
      server.send(m);
    });
  });
  h.release = () => {
    h.holding = false;
    for (const send of h.waiting.splice(0)) send();
  };
  return h;
}

// shown lists the chat lines on a page: {text, offset, status}.
function shown(page) {
  return page.$$eval('#messages li.msg', (lis) => lis.map((li) => ({
    text: li.querySelector('.text').textContent,
    offset: li.dataset.offset === undefined ? null : Number(li.dataset.offset),
    status: li.dataset.status,
  })));
}

// expectShown waits until the page shows as many chat lines as want, gives
// a duplicate time to turn up, then checks the page shows exactly want, in
// this order, each with an offset above the one before.
async function expectShown(page, want, what) {
  await waitFor(`${what}: ${want.length} messages shown`, async () => {
    const got = await shown(page);
    return got.length >= want.length || got.map((m) => m.text);
  }, 20000);
  await sleep(500);
  const got = await shown(page);
  assert.deepEqual(got.map((m) => m.text), want, `${what}: the page shows other messages`);
  for (let i = 1; i < got.length; i++) {
    assert.ok(got[i].offset > got[i - 1].offset, `${what}: offsets ${got[i - 1].offset} then ${got[i].offset} at ${i}`);
  }
  assert.ok(got.every((m) => m.status === 'delivered'), `${what}: statuses ${got.map((m) => m.status)}`);
}

// write sends text from the page as its user does, and waits until it came
// back from the server.
async function write(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
  await waitFor(`${JSON.stringify(text)} delivered`, async () => {
    const got = await shown(page);
    return got.some((m) => m.text === text && m.status === 'delivered') || got;
  });
}

function state(page) {
  return page.evaluate(() => window.chat.ft.state);
}

async function waitState(page, want, timeout = 15000) {
  await waitFor(`the page's connection ${want}`, async () => (await state(page)) === want || (await state(page)), timeout);
}

// checkClean checks that nothing a message held ran or became markup, and
// that the page threw nothing and was not reloaded.
async function checkClean(p) {
  assert.equal(await p.page.evaluate(() => window.__pwned), undefined, 'injected script ran');
  assert.equal(await p.page.$$eval('#messages img', (x) => x.length), 0, 'a message became an <img> element');
  assert.equal(await p.page.evaluate(() => window.__sameDocument), true, 'the page was reloaded');
  assert.deepEqual(p.problems, []);
}

const systemNotes = (page) => page.$$eval('#messages li.system', (x) => x.map((e) => e.textContent));

test('joining a room shows what was said before, in order, then the live messages, each once', async () => {
  const node = await startChat();
  const before = numbered('said before', 30);
  await say(node.base, 'world', before.slice(0, 15));
  // What a backend may publish besides chat lines stays in the history;
  // the page shows the markup as text and skips what is not a chat line.
  await publish(node.base, 'world', {text: XSS, nick: XSS});
  await publish(node.base, 'world', {type: 'online', count: 424242});
  await publish(node.base, 'world', 'a bare string');
  await publish(node.base, 'world', {text: {nested: true}});
  await publish(node.base, 'world', {text: 'boom', at: 1e300, nick: ['x']});
  await say(node.base, 'world', before.slice(15));

  // Messages come while the page's history request is on its way: they
  // reach the page live, then again in the history. Each shows once.
  const hold = holdHistory();
  const alice = await openChat(node.base, 'alice', 'world', hold.setup);
  await hold.held;
  const during = numbered('said while the history was asked for', 10);
  await say(node.base, 'world', during);
  await expectShown(alice.page, during, 'the live messages, before the history');
  hold.release();
  const want = [...before.slice(0, 15), XSS, 'boom', ...before.slice(15), ...during];
  await expectShown(alice.page, want, 'the first page');
  assert.equal(await alice.page.$eval('#online', (e) => e.dataset.count), '1', 'a count in the history was taken for the room\'s');

  // A page opened now gets all of it from the history, and what follows live.
  const bob = await openChat(node.base, 'bob');
  await expectShown(bob.page, want, 'a page opened later');
  await say(node.base, 'world', ['live after both joined']);
  await expectShown(bob.page, [...want, 'live after both joined'], 'a live message');
  await write(bob.page, 'bob says hi');
  for (const p of [alice, bob]) await expectShown(p.page, [...want, 'live after both joined', 'bob says hi'], 'live messages');
  assert.equal(await bob.page.$$eval('#messages li.msg.own', (x) => x.map((e) => e.querySelector('.text').textContent).join()), 'bob says hi');

  // The history is the newest 100.
  await say(node.base, 'full', numbered('line', 130));
  const carol = await openChat(node.base, 'carol', 'full');
  await expectShown(carol.page, numbered('line', 100, 31), 'a room of 130 messages');

  for (const p of [alice, bob, carol]) {
    await checkClean(p);
    await p.close();
  }
  await stop(node.proc);
});

test('the connection drops: what was said meanwhile shows after the reconnect, each once, in order', async () => {
  const node = await startChat();
  const net = await proxy(node.port);
  const base = `http://127.0.0.1:${net.port}`;
  try {
    const alice = await openChat(base, 'alice');
    await write(alice.page, 'alice before the cut');
    await say(node.base, 'world', ['backend before the cut']);
    await expectShown(alice.page, ['alice before the cut', 'backend before the cut'], 'before the cut');

    // The network drops the page's connection and refuses new ones.
    net.cut();
    await waitState(alice.page, 'reconnecting');
    const missed = numbered('missed', 12);
    await say(node.base, 'world', missed);
    await sleep(300);
    assert.equal(await state(alice.page), 'reconnecting', 'the page got through while the network was cut');
    assert.equal((await shown(alice.page)).length, 2, 'a message reached the page while it was disconnected');

    net.restore();
    await waitState(alice.page, 'open', 40000);
    const want = ['alice before the cut', 'backend before the cut', ...missed];
    await expectShown(alice.page, want, 'after the reconnect');
    await say(node.base, 'world', ['after the reconnect']);
    await expectShown(alice.page, [...want, 'after the reconnect'], 'live after the reconnect');
    // Recovered, not reloaded.
    assert.deepEqual(await alice.page.evaluate(() => window.__recoveryFailed), []);
    const notes = await systemNotes(alice.page);
    assert.ok(notes.includes('reconnected'), `notes ${notes}`);
    assert.ok(!notes.some((n) => RELOADED.test(n)), `notes ${notes}`);

    // And once more.
    net.cut();
    await waitState(alice.page, 'reconnecting');
    await say(node.base, 'world', ['missed again']);
    net.restore();
    await waitState(alice.page, 'open', 40000);
    await expectShown(alice.page, [...want, 'after the reconnect', 'missed again'], 'after the second reconnect');

    await checkClean(alice);
    await alice.close();
  } finally {
    await net.close();
    await stop(node.proc);
  }
});

test('more was said while disconnected than the room keeps: the page shows the room again from its history, once', async () => {
  const node = await startChat();
  const net = await proxy(node.port);
  const base = `http://127.0.0.1:${net.port}`;
  try {
    const alice = await openChat(base, 'alice');
    await say(node.base, 'world', numbered('early', 5));
    await expectShown(alice.page, numbered('early', 5), 'before the cut');

    net.cut();
    await waitState(alice.page, 'reconnecting');
    // Sent while cut off: it fails, and stays on the page for a retry.
    await alice.page.fill('#text', 'unsent while cut off');
    await alice.page.press('#text', 'Enter');
    await say(node.base, 'world', numbered('flood', 120));
    await alice.page.waitForSelector('#messages li.msg[data-status="failed"]', {timeout: 15000});
    net.restore();
    await waitState(alice.page, 'open', 40000);

    // The 5 early ones and the first 20 of the flood are gone from the
    // room: the page shows its last 100, and keeps the unsent message.
    await waitFor('the recovery failure reported', async () => (await alice.page.evaluate(() => window.__recoveryFailed)).includes('/chat/world'));
    const want = numbered('flood', 100, 21);
    await waitFor('the room reloaded', async () => {
      const texts = (await shown(alice.page)).map((m) => m.text);
      return texts.length === 101 || texts.length;
    }, 20000);
    await sleep(500);
    const got = await shown(alice.page);
    assert.deepEqual(got.map((m) => m.text), [...want, 'unsent while cut off']);
    assert.equal(got.at(-1).status, 'failed');
    assert.ok((await systemNotes(alice.page)).some((n) => RELOADED.test(n)));

    // The room goes on: the retried message and live ones, once each.
    await alice.page.click('#messages li.msg[data-status="failed"] button.retry');
    await waitFor('the retried message delivered', async () => (await shown(alice.page)).every((m) => m.status === 'delivered'));
    await say(node.base, 'world', ['after the reload']);
    await expectShown(alice.page, [...want, 'unsent while cut off', 'after the reload'], 'after the reload');

    await checkClean(alice);
    await alice.close();
  } finally {
    await net.close();
    await stop(node.proc);
  }
});

// The room's stream is the topic service's (over gRPC): the restarted node
// reads what the page missed from there.
test('cluster: the node behind the page restarts; what was said through another node meanwhile shows once, in order', async () => {
  const svcBin = build('./cmd/firetower-topicsvc', 'firetower-topicsvc');
  const svcPort = await freePort();
  const svc = await start(svcBin, {
    FIRETOWER_TOPICSVC_LISTEN: `127.0.0.1:${svcPort}`,
    FIRETOWER_TOPICSVC_TOKEN: SVC_TOKEN,
  }, tcpReady(svcPort), 'topic service');
  const broker = `topicsvc://127.0.0.1:${svcPort}`;
  let n1 = await startChat({broker});
  const n2 = await startChat({broker});
  try {
    await say(n2.base, 'world', ['through node 2 before the page opened']);
    const alice = await openChat(n1.base, 'alice');
    const bob = await openChat(n2.base, 'bob');
    await write(alice.page, 'alice on node 1');
    const first = ['through node 2 before the page opened', 'alice on node 1'];
    for (const p of [alice, bob]) await expectShown(p.page, first, 'before the restart');

    await stop(n1.proc);
    await waitState(alice.page, 'reconnecting');
    const missed = numbered('through node 2 while node 1 was down', 10);
    await say(n2.base, 'world', missed);
    await expectShown(bob.page, [...first, ...missed], 'the page on node 2');
    await write(bob.page, 'bob while node 1 was down');
    const want = [...first, ...missed, 'bob while node 1 was down'];

    n1 = await startChat({port: n1.port, broker});
    await waitState(alice.page, 'open', 40000);
    await expectShown(alice.page, want, 'the page on the restarted node');
    await say(n1.base, 'world', ['through node 1 after its restart']);
    await say(n2.base, 'world', ['through node 2 after the restart']);
    const all = [...want, 'through node 1 after its restart', 'through node 2 after the restart'];
    for (const p of [alice, bob]) await expectShown(p.page, all, 'after the restart');
    // Recovered from the topic service, not reloaded.
    assert.deepEqual(await alice.page.evaluate(() => window.__recoveryFailed), []);
    assert.ok(!(await systemNotes(alice.page)).some((n) => RELOADED.test(n)));

    for (const p of [alice, bob]) {
      await checkClean(p);
      await p.close();
    }
  } finally {
    await stop(n1.proc);
    await stop(n2.proc);
    await stop(svc);
  }
});
