// Shared parts of the browser tests: building and running the Go servers,
// and launching the system's Chromium. Servers listen on 127.0.0.1 at ports
// picked here; every process started is stopped, and every proxy closed,
// by stopAll.
import assert from 'node:assert/strict';
import {spawn, execFileSync} from 'node:child_process';
import {accessSync, constants, existsSync, mkdirSync} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {chromium} from 'playwright-core';

export const E2E = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(E2E, '..');
export const ARTIFACTS = path.join(E2E, 'artifacts');
const BIN = path.join(E2E, '.bin');

// The system's browser, never a downloaded one: FIRETOWER_CHROMIUM
// (scripts/test.sh passes the one it found), else chromium or
// chromium-browser on the PATH, else the Debian package's.
export const CHROMIUM = process.env.FIRETOWER_CHROMIUM || findChromium();

function findChromium() {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    for (const name of ['chromium', 'chromium-browser']) {
      const p = path.join(dir, name);
      try {
        accessSync(p, constants.X_OK);
        return p;
      } catch (e) { /* not here */ }
    }
  }
  return '/usr/bin/chromium';
}

const procs = new Set();

// build compiles a main package of the module into e2e/.bin and returns the
// binary's path. FIRETOWER_E2E_<NAME>_BIN names a prebuilt binary instead.
export function build(pkg, name) {
  const given = process.env[`FIRETOWER_E2E_${name.toUpperCase().replace(/-/g, '_')}_BIN`];
  if (given) return given;
  mkdirSync(BIN, {recursive: true});
  const out = path.join(BIN, name);
  try {
    execFileSync('go', ['build', '-o', out, pkg], {cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe']});
  } catch (e) {
    throw new Error(`go build ${pkg} failed:\n${e.stderr || e.message}`);
  }
  return out;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const {port} = s.address();
      s.close(() => resolve(port));
    });
  });
}

// start runs a server binary and resolves once ready() passes. Its output
// is kept for the failure message. cwd is its working directory (default:
// the test's own).
export async function start(bin, env, ready, label, cwd = undefined) {
  const p = spawn(bin, [], {cwd, env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']});
  const proc = {p, label, log: '', exited: null};
  p.stdout.on('data', (d) => { proc.log += d; });
  p.stderr.on('data', (d) => { proc.log += d; });
  proc.done = new Promise((resolve) => p.on('exit', (code, sig) => { proc.exited = {code, sig}; procs.delete(proc); resolve(); }));
  procs.add(proc);
  const deadline = Date.now() + 20000;
  for (;;) {
    if (proc.exited) throw new Error(`${label} exited (${JSON.stringify(proc.exited)}) before it was ready:\n${proc.log}`);
    if (await ready().catch(() => false)) return proc;
    if (Date.now() > deadline) {
      await stop(proc);
      throw new Error(`${label} not ready within 20 s:\n${proc.log}`);
    }
    await sleep(100);
  }
}

export async function stop(proc) {
  if (!proc || proc.exited) return;
  proc.p.kill('SIGTERM');
  const t = setTimeout(() => proc.p.kill('SIGKILL'), 5000);
  await proc.done;
  clearTimeout(t);
}

// closers holds the close of every proxy still open: stopAll runs them, so
// that a test failing before its own close does not leave a listening
// server that keeps the test process from ever exiting.
const closers = new Set();

export async function stopAll() {
  await Promise.all([...[...procs].map(stop), ...[...closers].map((c) => c())]);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function httpReady(url) {
  return async () => (await fetch(url)).ok;
}

export function tcpReady(port) {
  return () => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

// launch starts headless Chromium with a fresh profile (playwright-core
// makes a new temporary user data dir for every launch and removes it on
// close). A missing browser fails the tests; it is never skipped.
export async function launch() {
  if (!existsSync(CHROMIUM)) {
    const where = process.env.FIRETOWER_CHROMIUM ? `${CHROMIUM} (FIRETOWER_CHROMIUM)` : `${CHROMIUM}, nor chromium or chromium-browser on the PATH`;
    throw new Error(`Chromium not found at ${where}: install the Debian package (apt-get install chromium) or set FIRETOWER_CHROMIUM`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

// newPage opens a page in a fresh context of browser. problems collects
// what a page must not do: throw, log an error (other than a refused
// request, 401 or 403) or open a dialog.
export async function newPage(browser, viewport = {width: 1280, height: 860}) {
  const ctx = await browser.newContext({viewport});
  const page = await ctx.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !/401|403/.test(m.text())) problems.push('console: ' + m.text()); });
  page.on('dialog', (d) => { problems.push('dialog: ' + d.message()); d.dismiss(); });
  return {ctx, page, problems};
}

// waitFor polls check until it returns true, and fails the test with its
// last answer (or error) after timeout ms.
export async function waitFor(what, check, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last === true) return;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) assert.fail(`${what} within ${timeout} ms; last: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

export function artifacts() {
  mkdirSync(ARTIFACTS, {recursive: true});
  return ARTIFACTS;
}

// proxy forwards TCP connections from a port of its own to 127.0.0.1:target,
// so that a test can cut a page's connections as a network would: cut()
// drops every connection and refuses new ones (accepted, then dropped at
// once) until restore().
export async function proxy(target) {
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((down) => {
    if (refusing) {
      down.destroy();
      return;
    }
    const up = net.connect(target, '127.0.0.1');
    sockets.add(down);
    sockets.add(up);
    const drop = () => {
      down.destroy();
      up.destroy();
      sockets.delete(down);
      sockets.delete(up);
    };
    down.on('error', drop).on('close', drop);
    up.on('error', drop).on('close', drop);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  let closed;
  const close = () => {
    closed ??= new Promise((resolve) => {
      closers.delete(close);
      refusing = true;
      for (const s of sockets) s.destroy();
      server.close(resolve);
    });
    return closed;
  };
  closers.add(close);
  return {
    port: server.address().port,
    cut() {
      refusing = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() { refusing = false; },
    close,
  };
}
