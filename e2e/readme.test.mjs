// The README's quick start, run as written: its main.go and index.html
// are taken from README.md, put in a new module next to nothing but this
// checkout (the replace line the README gives), built, and opened in
// headless Chromium; then a backend publishes with curl's request and
// counts, as the README shows.
//
//   cd e2e && npm ci && node --test readme.test.mjs
import {test, before, after} from 'node:test';
import assert from 'node:assert/strict';
import {execFileSync} from 'node:child_process';
import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {ROOT, freePort, httpReady, launch, newPage, start, stopAll, waitFor} from './helpers.mjs';

const TOKEN = 'e2e-readme-token';

// quickStart returns the code blocks of the README's "Quick start"
// section, by language.
function quickStart() {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## /m).find((s) => s.startsWith('Quick start'));
  assert.ok(section, 'README.md has a Quick start section');
  const blocks = {};
  for (const m of section.matchAll(/^```(\w+)\n([\s\S]*?)^```$/gm)) blocks[m[1]] ??= m[2];
  assert.ok(blocks.go && blocks.html && blocks.sh, `the Quick start has go, html and sh blocks: ${Object.keys(blocks)}`);
  return blocks;
}

let browser;
let dir;
let base;

before(async () => {
  const {go, html, sh} = quickStart();
  // The commands the README gives, from a checkout: init, replace, tidy.
  assert.match(sh, /go mod init hello/);
  assert.match(sh, /go mod edit -replace github\.com\/OSMeteor\/firetower=/);
  assert.match(sh, /go mod tidy/);
  assert.match(sh, /export FIRETOWER_API_TOKEN=/);
  dir = mkdtempSync(path.join(os.tmpdir(), 'firetower-readme-'));
  const port = await freePort();
  assert.ok(go.includes('":9999"'), 'the quick start listens on :9999');
  writeFileSync(path.join(dir, 'main.go'), go.replace('":9999"', `"127.0.0.1:${port}"`));
  writeFileSync(path.join(dir, 'index.html'), html);
  const run = (...args) => {
    try {
      execFileSync('go', args, {cwd: dir, stdio: ['ignore', 'pipe', 'pipe']});
    } catch (e) {
      throw new Error(`go ${args.join(' ')} failed:\n${e.stderr || e.message}`);
    }
  };
  run('mod', 'init', 'hello');
  run('mod', 'edit', `-replace=github.com/OSMeteor/firetower=${ROOT}`);
  run('mod', 'tidy');
  run('build', '-o', 'hello', '.');
  base = `http://127.0.0.1:${port}`;
  await start(path.join(dir, 'hello'), {FIRETOWER_API_TOKEN: TOKEN, GIN_MODE: 'release'}, httpReady(base + '/'), 'quick start', dir);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await stopAll();
  if (dir) rmSync(dir, {recursive: true, force: true});
});

test('the quick start page connects, subscribes, publishes and shows what a backend sends', async () => {
  const {ctx, page, problems} = await newPage(browser);
  // The browser asks for /favicon.ico, which the quick start does not
  // serve; every other request must succeed.
  const failed = [];
  page.on('response', (r) => { if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) failed.push(`${r.status()} ${r.url()}`); });
  await page.goto(base + '/');
  await waitFor('the client open', async () => (await page.textContent('#status')) === 'open');
  await waitFor("the page's own message", async () =>
    (await page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent))).includes('hi from the page'));

  // The README's curl lines: a publish with the token, and a count.
  const resp = await fetch(base + '/publish', {
    method: 'POST',
    headers: {Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json'},
    body: JSON.stringify({topic: '/chat/world', data: {text: 'hi'}}),
  });
  assert.equal(resp.status, 200, await resp.text());
  await waitFor("the backend's message", async () =>
    (await page.$$eval('#messages li', (lis) => lis.map((li) => li.textContent))).includes('hi'));
  const count = await (await fetch(base + '/topics/%2Fchat%2Fworld/count')).json();
  assert.deepEqual(count, {topic: '/chat/world', count: 1});
  const refused = await fetch(base + '/publish', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{"topic":"/chat/world","data":1}'});
  assert.equal(refused.status, 401, 'a publish without the token is refused');
  assert.deepEqual(failed, []);
  assert.deepEqual(problems.filter((p) => !/status of 404/.test(p)), []);
  await ctx.close();
});
