// Browser tests of the chat demo's presence in headless Chromium: who is in
// a room (the member list), the join and leave lines, a page reload that
// the server's grace (3 s, the default) hides from the others, and
// notifications a backend sends to a user, in every tab of theirs.
//
//   cd e2e && npm ci && node --test chat-presence.test.mjs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {build, launch, proxy, sleep, stop, stopAll, waitFor} from './helpers.mjs';
import {API_TOKEN, signIn, startChat as startChatNode} from './chatnode.mjs';

// The server's PresenceGrace: the demo runs with firetower's default.
const GRACE = 3000;
const HOSTILE_NAME = '<img src=x onerror=alert(1)>';

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

// user opens a browser context signed in as id (shown as name); its tabs
// share the identity, as a real browser's do.
async function user(id, name = id) {
  const ctx = await browser.newContext({viewport: {width: 1200, height: 600}});
  await signIn(ctx, id, name);
  return ctx;
}

// tab opens the chat in a new tab of ctx and waits until the page is in
// the room and has its member list.
async function tab(ctx, base, room = 'world') {
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  // A connection refused while a test cuts the network is logged by the
  // browser, not by the page.
  page.on('console', (m) => { if (m.type() === 'error' && !/WebSocket connection to .* failed/.test(m.text())) problems.push('console: ' + m.text()); });
  page.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss(); });
  await page.goto(`${base}/#${room}`);
  await inRoom(page, room);
  return {page, problems};
}

async function inRoom(page, room) {
  await page.waitForFunction((topic) => {
    const ft = window.chat && window.chat.ft;
    return ft && ft.state === 'open' && ft.topics().includes(topic) && document.querySelector('#online').dataset.count !== '';
  }, '/chat/' + room, {timeout: 15000});
}

// members lists a page's member list: [user id, shown name].
function members(page) {
  return page.$$eval('#member-list li', (lis) => lis.map((li) => [li.dataset.user, li.querySelector('.name').textContent]));
}

// comings lists a page's join and leave lines.
function comings(page) {
  return page.$$eval('#messages li.system.join, #messages li.system.leave', (lis) => lis.map((li) => li.textContent));
}

async function waitMembers(page, want, timeout = 10000) {
  await waitFor(`member list ${JSON.stringify(want)}`, async () => {
    const got = await members(page);
    return JSON.stringify(got) === JSON.stringify(want) || got;
  }, timeout);
}

async function waitComings(page, want, timeout = 10000) {
  await waitFor(`join and leave lines ${JSON.stringify(want)}`, async () => {
    const got = await comings(page);
    return JSON.stringify(got) === JSON.stringify(want) || got;
  }, timeout);
}

test('two users in a room see each other, sorted by name; a join line when the second arrives, a leave line after the first goes', async () => {
  const node = await startChat();
  const bobCtx = await user('bob', 'Bob');
  const bob = await tab(bobCtx, node.base);
  await waitMembers(bob.page, [['bob', 'Bob (you)']]);
  // Zoe signs in with the id "alice": the list is sorted by the name shown.
  const aliceCtx = await user('alice', 'Zoe');
  const alice = await tab(aliceCtx, node.base);
  await waitMembers(bob.page, [['bob', 'Bob (you)'], ['alice', 'Zoe']]);
  await waitMembers(alice.page, [['bob', 'Bob'], ['alice', 'Zoe (you)']]);
  await waitComings(bob.page, ['Zoe joined']);
  // The page that arrived sees no line for those already there, nor for
  // itself.
  assert.deepEqual(await comings(alice.page), []);
  assert.equal(await bob.page.$eval('#online', (e) => e.dataset.count), '2');

  // A second tab of alice's is no new member and no join.
  const alice2 = await tab(aliceCtx, node.base);
  await waitMembers(alice2.page, [['bob', 'Bob'], ['alice', 'Zoe (you)']]);
  await sleep(500);
  assert.deepEqual(await comings(bob.page), ['Zoe joined']);
  await waitMembers(bob.page, [['bob', 'Bob (you)'], ['alice', 'Zoe']]);

  // Alice closes her pages: the leave comes once the grace is over, not
  // before.
  const closed = Date.now();
  await aliceCtx.close();
  await sleep(GRACE - 1000);
  assert.deepEqual(await comings(bob.page), ['Zoe joined'], 'a leave before the grace was over');
  assert.deepEqual((await members(bob.page)).map((m) => m[0]), ['bob', 'alice']);
  await waitComings(bob.page, ['Zoe joined', 'Zoe left'], GRACE + 5000);
  assert.ok(Date.now() - closed >= GRACE - 200, 'the leave came before the grace was over');
  await waitMembers(bob.page, [['bob', 'Bob (you)']]);
  assert.equal(await bob.page.$eval('#online', (e) => e.dataset.count), '1');
  for (const p of [bob, alice, alice2]) assert.deepEqual(p.problems, []);
  await bobCtx.close();
  await stop(node.proc);
});

test('a reload makes no leave and no join line on the other page, and the member list never loses the user', async () => {
  const node = await startChat();
  const aliceCtx = await user('alice');
  const alice = await tab(aliceCtx, node.base);
  const bobCtx = await user('bob');
  const bob = await tab(bobCtx, node.base);
  await waitMembers(alice.page, [['alice', 'alice (you)'], ['bob', 'bob']]);
  await waitComings(alice.page, ['bob joined']);

  // Sample alice's member list from inside her page, at every change of
  // the list and every 20 ms, for as long as the reload takes and well
  // past the grace.
  await alice.page.evaluate(() => {
    window.__samples = [];
    const ul = document.querySelector('#member-list');
    const sample = () => window.__samples.push([...ul.children].map((li) => li.dataset.user).join(','));
    new MutationObserver(sample).observe(ul, {childList: true, subtree: true, characterData: true});
    window.__sampler = setInterval(sample, 20);
  });
  await bob.page.reload();
  await inRoom(bob.page, 'world');
  await waitMembers(bob.page, [['alice', 'alice'], ['bob', 'bob (you)']]);
  await sleep(GRACE + 2000);
  const samples = await alice.page.evaluate(() => { clearInterval(window.__sampler); return window.__samples; });
  assert.ok(samples.length > 100, `only ${samples.length} samples`);
  const lost = samples.filter((s) => s !== 'alice,bob');
  assert.deepEqual(lost, [], 'the member list changed during the reload');
  assert.deepEqual(await comings(alice.page), ['bob joined'], 'the reload showed as a leave or a join');
  // The reloaded page itself shows no line for alice, who was there.
  assert.deepEqual(await comings(bob.page), []);

  // Still one room: a message after the reload reaches alice.
  await bob.page.fill('#text', 'back after the reload');
  await bob.page.press('#text', 'Enter');
  await alice.page.waitForFunction(() => [...document.querySelectorAll('#messages li.msg .text')].some((e) => e.textContent === 'back after the reload'), null, {timeout: 10000});
  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
  await aliceCtx.close();
  await bobCtx.close();
  await stop(node.proc);
});

test('a connection cut and back within the grace: the list stays through the reconnect and is reconciled, the others see nothing', async () => {
  // Alice is away while carol opens a page and joins, which can take
  // seconds on a loaded machine: this node's grace is long enough for
  // that, so the test says whether a reconnect within the grace is hidden,
  // not how fast a browser opens a page.
  const grace = 15000;
  const node = await startChat({presenceGrace: `${grace}ms`});
  const px = await proxy(node.port);
  const aliceCtx = await user('alice');
  const alice = await tab(aliceCtx, `http://127.0.0.1:${px.port}`);
  const bobCtx = await user('bob');
  const bob = await tab(bobCtx, node.base);
  await waitMembers(alice.page, [['alice', 'alice (you)'], ['bob', 'bob']]);
  await alice.page.evaluate(() => {
    window.__samples = [];
    const ul = document.querySelector('#member-list');
    const sample = () => window.__samples.push([...ul.children].map((li) => li.dataset.user).join(','));
    new MutationObserver(sample).observe(ul, {childList: true, subtree: true, characterData: true});
    window.__sampler = setInterval(sample, 20);
  });
  px.cut();
  const cutAt = Date.now();
  await alice.page.waitForFunction(() => window.chat.ft.state === 'reconnecting', null, {timeout: 10000});
  assert.equal(await alice.page.$eval('#members', (e) => e.classList.contains('stale')), true, 'the list is not marked as possibly out of date');
  // Carol comes while alice is away: alice misses her join frame.
  const carolCtx = await user('carol');
  const carol = await tab(carolCtx, node.base);
  await waitComings(bob.page, ['carol joined']);
  px.restore();
  // The network is back, as the browser would say: no waiting out the
  // backoff of the attempts the cut refused.
  await alice.page.evaluate(() => window.dispatchEvent(new Event('online')));
  await alice.page.waitForFunction(() => window.chat.ft.state === 'open', null, {timeout: 10000});
  assert.ok(Date.now() - cutAt < grace, `alice was away ${Date.now() - cutAt} ms, longer than the grace`);
  // The answer read after the reconnect brings her in, with no line.
  await waitMembers(alice.page, [['alice', 'alice (you)'], ['bob', 'bob'], ['carol', 'carol']]);
  assert.equal(await alice.page.$eval('#members', (e) => e.classList.contains('stale')), false);
  // Until the leave of the cut connection would have come, and a second.
  await sleep(Math.max(0, cutAt + grace + 1000 - Date.now()));
  const samples = await alice.page.evaluate(() => { clearInterval(window.__sampler); return window.__samples; });
  const bad = samples.filter((x) => x !== 'alice,bob' && x !== 'alice,bob,carol');
  assert.deepEqual(bad, [], 'the member list was cleared or rebuilt through the reconnect');
  assert.ok(samples.includes('alice,bob') && samples.at(-1) === 'alice,bob,carol', `samples ${samples.slice(0, 3)}...${samples.slice(-3)}`);
  assert.deepEqual(await comings(alice.page), ['bob joined']);
  // Alice was back within the grace: bob and carol saw her neither leave
  // nor come back.
  assert.deepEqual(await comings(bob.page), ['carol joined']);
  assert.deepEqual(await comings(carol.page), []);
  for (const p of [alice, bob, carol]) assert.deepEqual(p.problems, []);
  await aliceCtx.close();
  await bobCtx.close();
  await carolCtx.close();
  await px.close();
  await stop(node.proc);
});

test('a REST publish to users ["alice"] shows as a notification in both of alice\'s tabs, and in no one else\'s', async () => {
  const node = await startChat();
  const aliceCtx = await user('alice', 'Alice');
  const tab1 = await tab(aliceCtx, node.base);
  const tab2 = await tab(aliceCtx, node.base, '2');
  const bobCtx = await user('bob', 'Bob');
  const bob = await tab(bobCtx, node.base);

  const text = 'your build finished <b>ok</b>';
  const res = await fetch(node.base + '/publish', {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + API_TOKEN},
    body: JSON.stringify({users: ['alice'], data: {text}}),
  });
  assert.equal(res.status, 200, await res.text());
  for (const p of [tab1, tab2]) {
    await p.page.waitForFunction((t) => [...document.querySelectorAll('#notices .notice .text')].some((e) => e.textContent === t), text, {timeout: 10000});
    assert.equal(await p.page.$$eval('#notices b', (x) => x.length), 0, 'the notification became markup');
  }
  // Data of another shape is no notification, and takes nothing down.
  for (const data of [null, 'a bare string', {text: 7}, {html: '<b>x</b>'}]) {
    const r = await fetch(node.base + '/publish', {
      method: 'POST',
      headers: {'Content-Type': 'application/json', Authorization: 'Bearer ' + API_TOKEN},
      body: JSON.stringify({users: ['alice'], data}),
    });
    assert.equal(r.status, 200, await r.text());
  }
  await sleep(500);
  assert.equal(await bob.page.$$eval('#notices .notice', (x) => x.length), 0, 'bob got alice\'s notification');
  for (const p of [tab1, tab2]) {
    assert.equal(await p.page.$$eval('#notices .notice', (x) => x.length), 1);
    // Dismissed with its button.
    await p.page.click('#notices .notice .close');
    assert.equal(await p.page.$$eval('#notices .notice', (x) => x.length), 0);
  }
  // A notification is not a chat message.
  assert.equal(await tab1.page.$$eval('#messages li', (lis) => lis.filter((li) => li.textContent.includes('build finished')).length), 0);
  for (const p of [tab1, tab2, bob]) assert.deepEqual(p.problems, []);
  await aliceCtx.close();
  await bobCtx.close();
  await stop(node.proc);
});

test('a hostile name shows as text in the member list, the join line and the messages', async () => {
  const node = await startChat();
  const aliceCtx = await user('alice', 'Alice');
  const alice = await tab(aliceCtx, node.base);
  await alice.page.evaluate(() => { window.alert = () => { window.__alerted = (window.__alerted || 0) + 1; }; });
  const malCtx = await user('mallory', HOSTILE_NAME);
  const mal = await tab(malCtx, node.base);
  await mal.page.evaluate(() => { window.alert = () => { window.__alerted = (window.__alerted || 0) + 1; }; });
  // Sorted by name: '<' comes before the letters.
  await waitMembers(alice.page, [['mallory', HOSTILE_NAME], ['alice', 'Alice (you)']]);
  await waitMembers(mal.page, [['mallory', HOSTILE_NAME + ' (you)'], ['alice', 'Alice']]);
  await waitComings(alice.page, [HOSTILE_NAME + ' joined']);
  await mal.page.fill('#text', 'hello');
  await mal.page.press('#text', 'Enter');
  await alice.page.waitForFunction((n) => [...document.querySelectorAll('#messages li.msg .who')].some((e) => e.textContent === n), HOSTILE_NAME, {timeout: 10000});
  // The sign-in form shows the name as it was given.
  assert.equal(await mal.page.inputValue('#nick'), HOSTILE_NAME);
  await sleep(300);
  for (const p of [alice, mal]) {
    assert.equal(await p.page.$$eval('img', (x) => x.length), 0, 'a name became an <img> element');
    assert.equal(await p.page.evaluate(() => window.__alerted), undefined, 'injected script ran');
    assert.deepEqual(p.problems, []);
  }
  await malCtx.close();
  await waitComings(alice.page, [HOSTILE_NAME + ' joined', HOSTILE_NAME + ' left'], GRACE + 5000);
  await aliceCtx.close();
  await stop(node.proc);
});

test('the sign-in form changes who the page is: the others see the new name, the old one leaves', async () => {
  const node = await startChat();
  const aliceCtx = await user('alice', 'Alice');
  const alice = await tab(aliceCtx, node.base);
  const bobCtx = await user('bob', 'Bob');
  const bob = await tab(bobCtx, node.base);
  await waitMembers(alice.page, [['alice', 'Alice (you)'], ['bob', 'Bob']]);
  // An id the server would refuse is refused by the form, and nothing
  // changes.
  await bob.page.fill('#user', 'no spaces allowed');
  await bob.page.click('#sign-in');
  await sleep(300);
  assert.equal(await bob.page.evaluate(() => window.chat.me.user), 'bob');
  assert.equal(await bob.page.evaluate(() => localStorage.getItem('firetower.user')), 'bob');
  // A valid one reloads the page as that user.
  await bob.page.fill('#user', 'robert');
  await bob.page.fill('#nick', 'Robert');
  await Promise.all([bob.page.waitForNavigation(), bob.page.click('#sign-in')]);
  await inRoom(bob.page, 'world');
  assert.deepEqual(await bob.page.evaluate(() => window.chat.me), {user: 'robert', name: 'Robert'});
  await waitMembers(alice.page, [['alice', 'Alice (you)'], ['bob', 'Bob'], ['robert', 'Robert']]);
  await waitMembers(alice.page, [['alice', 'Alice (you)'], ['robert', 'Robert']], GRACE + 5000);
  assert.deepEqual(await comings(alice.page), ['Bob joined', 'Robert joined', 'Bob left']);
  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
  await aliceCtx.close();
  await bobCtx.close();
  await stop(node.proc);
});
