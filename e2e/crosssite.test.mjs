// A browser is the victim: a page of an app that mounts firetower with
// AuthorizeREST checking the app's session cookie (e2e/cookieapp).
//
// - Another origin's page auto-submits an enctype=text/plain form to the
//   app's /publish while the visitor is logged in: nothing is published.
// - A backend's REST publish holding invalid UTF-8 is refused (400), and
//   the page stays connected and gets the next valid message.
//
//   cd e2e && npm ci && node --test crosssite.test.mjs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {build, freePort, httpReady, launch, newPage, sleep, start, stopAll, waitFor} from './helpers.mjs';

let browser;
let app;
let attacker;

before(async () => {
  const bin = build('./e2e/cookieapp', 'cookieapp');
  const [appPort, attackerPort] = [await freePort(), await freePort()];
  app = `http://127.0.0.1:${appPort}`;
  attacker = `http://127.0.0.1:${attackerPort}`;
  await start(bin, {COOKIEAPP_ADDR: `127.0.0.1:${appPort}`, COOKIEAPP_ATTACKER_ADDR: `127.0.0.1:${attackerPort}`}, httpReady(app + '/published'), 'cookieapp');
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await stopAll();
});

const published = async () => (await (await fetch(app + '/published')).json()).published;

// openVictim logs a visitor in and opens the app's page, subscribed.
async function openVictim() {
  const {ctx, page, problems} = await newPage(browser);
  await page.goto(app + '/login');
  await page.evaluate(() => window.subscribed);
  return {ctx, page, problems};
}

// publishAsVisitor publishes from the app's own page, with its cookie:
// the way the app means publish to be used.
async function publishAsVisitor(page, data) {
  return page.evaluate(async (data) => (await fetch('/publish', {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({topic: '/victim', data}),
  })).status, data);
}

test('a form on another origin cannot publish with the visitor cookie', async () => {
  const {ctx, page, problems} = await openVictim();
  const before = await published();
  const evil = await ctx.newPage();
  const answered = evil.waitForResponse((r) => r.url() === app + '/publish');
  await evil.goto(attacker + '/attack');
  const resp = await answered;
  assert.equal(resp.status(), 403, await resp.text());
  assert.equal(await published(), before, 'the form published');
  // The page's own publish, with the same cookie, goes through.
  assert.equal(await publishAsVisitor(page, {ok: 1}), 200);
  await waitFor('the page gets its own message', async () => (await page.evaluate(() => window.received.length)) === 1);
  await sleep(300);
  assert.deepEqual(await page.evaluate(() => window.received), [{ok: 1}], 'only the page\'s own message arrived');
  assert.deepEqual(problems.filter((p) => !/status of (403|404)/.test(p)), []);
  await ctx.close();
});

test('a REST publish of invalid UTF-8 is refused and the page stays connected', async () => {
  const {ctx, page, problems} = await openVictim();
  const post = (body) => fetch(app + '/publish', {
    method: 'POST',
    headers: {'Content-Type': 'application/json', Cookie: 'session=logged-in'},
    body,
  });
  const bad = Buffer.concat([Buffer.from('{"topic":"/victim","data":{"text":"'), Buffer.from([0xff]), Buffer.from('"}}')]);
  const refused = await post(bad);
  assert.equal(refused.status, 400, await refused.text());
  const ok = await post(JSON.stringify({topic: '/victim', data: {text: 'next'}}));
  assert.equal(ok.status, 200, await ok.text());
  await waitFor('the next valid message', async () => (await page.evaluate(() => window.received.length)) === 1);
  assert.deepEqual(await page.evaluate(() => window.received), [{text: 'next'}]);
  assert.deepEqual(await page.evaluate(() => window.states), ['connecting', 'open'], 'the connection never dropped');
  assert.deepEqual(problems.filter((p) => !/status of 404/.test(p)), []);
  await ctx.close();
});
