// Unit tests of firetower.js: framing, request/reply matching, reconnect with
// backoff, resubscription, ping timeouts, recovery of history topics by
// offset and epoch, history and presence requests, and join and leave
// frames. The WebSocket and the clock are fakes injected through connect's
// options, so time is advanced by hand and nothing here waits on a real
// timer.
//
//   node --test js/
import test from 'node:test';
import assert from 'node:assert/strict';
import firetower, {connect, FiretowerError} from './firetower.mjs';

// A manual clock: timers fire only when the test advances time.
class Clock {
  constructor() { this.now = 0; this.seq = 0; this.timers = new Map(); }
  setTimeout = (fn, ms) => {
    const id = ++this.seq;
    this.timers.set(id, {at: this.now + ms, fn});
    return id;
  };
  clearTimeout = (id) => { this.timers.delete(id); };
  // advance runs every timer due within ms, in time order, including timers
  // that those timers set.
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && id < next[0]))) next = [id, t];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
  pending() { return [...this.timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b); }
}

// A fake WebSocket that records what the client sends and lets the test play
// the node's part.
function fakeSocketClass() {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(s) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(JSON.parse(s));
    }
    close(code, reason) { this.closed = {code, reason}; this.readyState = 3; }
    // test side
    open() { this.readyState = 1; this.onopen && this.onopen({}); }
    recv(frame) { this.onmessage && this.onmessage({data: typeof frame === 'string' ? frame : JSON.stringify(frame)}); }
    drop(code = 1006, reason = '') { this.readyState = 3; this.onclose && this.onclose({code, reason}); }
    last() { return this.sent[this.sent.length - 1]; }
  }
  return {FakeWS, sockets};
}

function setup(opts = {}) {
  const clock = new Clock();
  const {FakeWS, sockets} = fakeSocketClass();
  const states = [];
  const errors = [];
  const ft = connect(opts.url ?? 'ws://node.test/ws', {
    WebSocket: FakeWS,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0,
    window: null,
    ...opts,
  });
  ft.onState((s, d) => states.push([s, d]));
  ft.onError((e) => errors.push(e));
  return {ft, clock, sockets, states, errors, ws: () => sockets[sockets.length - 1]};
}

// settled reports a promise's outcome without waiting for it to settle.
async function settled(p) {
  const marker = Symbol('pending');
  const r = await Promise.race([p.then((v) => ({ok: v}), (e) => ({err: e})), Promise.resolve().then(() => marker)]);
  return r === marker ? 'pending' : r;
}

test('module and script forms are the same object', () => {
  assert.equal(globalThis.firetower, firetower);
  assert.equal(firetower.connect, connect);
  assert.equal(typeof firetower.version, 'string');
});

test('url: batch=1 is added unless disabled, http becomes ws', () => {
  const {FakeWS, sockets} = fakeSocketClass();
  const o = {WebSocket: FakeWS, window: null};
  connect('ws://h:1/ws', o).close();
  connect('https://h/ws?x=1', o).close();
  connect('http://h/ws', {...o, batch: false}).close();
  assert.deepEqual(sockets.map((s) => s.url), ['ws://h:1/ws?batch=1', 'wss://h/ws?x=1&batch=1', 'ws://h/ws']);
});

test('subscribe before open is sent once the connection opens, and resolves on its reply', async () => {
  const {ft, ws, states} = setup();
  const p = ft.subscribe('/chat/world');
  const q = ft.subscribe(['a', 'b']);
  assert.equal(ws().sent.length, 0);
  assert.equal(await settled(p), 'pending');
  ws().open();
  // Both requests go out as one frame carrying every wanted topic.
  assert.equal(ws().sent.length, 1);
  const f = ws().last();
  assert.equal(f.type, 'subscribe');
  assert.deepEqual(f.topic, ['/chat/world', 'a', 'b']);
  ws().recv({type: 'subscribed', topic: f.topic, id: f.id});
  assert.deepEqual(await p, ['/chat/world']);
  assert.deepEqual(await q, ['a', 'b']);
  assert.deepEqual(states.map((s) => s[0]), ['connecting', 'open']);
});

test('framing: a batched array and a single object dispatch the same way, in order', () => {
  const {ft, ws} = setup();
  ws().open();
  const got = [];
  ft.on('a', (data, frame) => got.push(['a', data, frame.id]));
  ft.on('b', (data) => got.push(['b', data]));
  const frames = [];
  ft.onFrame((f) => frames.push(f.type));
  ws().recv([
    {type: 'publish', topic: 'a', data: {text: 'one'}, id: 'm1'},
    {type: 'publish', topic: 'b', data: 2},
    {type: 'publish', topic: 'c', data: 'nobody listens'},
    {type: 'custom', x: 1},
  ]);
  ws().recv({type: 'publish', topic: 'a', data: '<img src=x onerror=alert(1)>', id: 'm2'});
  assert.deepEqual(got, [['a', {text: 'one'}, 'm1'], ['b', 2], ['a', '<img src=x onerror=alert(1)>', 'm2']]);
  assert.deepEqual(frames, ['publish', 'publish', 'publish', 'custom', 'publish']);
});

test('replies settle the request with the matching id, in any order', async () => {
  const {ft, ws} = setup();
  ws().open();
  const p1 = ft.publish('t', {n: 1});
  const p2 = ft.publish('t', {n: 2});
  const [f1, f2] = ws().sent;
  assert.deepEqual([f1.type, f1.topic, f1.data], ['publish', 't', {n: 1}]);
  assert.notEqual(f1.id, f2.id);
  // A message whose id equals a request id is a message, not a reply.
  ws().recv({type: 'publish', topic: 't', data: {}, id: f1.id});
  assert.equal(await settled(p1), 'pending');
  ws().recv([{type: 'published', topic: ['t'], id: f2.id, messageId: 'm-2'}, {type: 'published', topic: ['t'], id: f1.id, messageId: 'm-1'}]);
  assert.deepEqual(await p1, {messageId: 'm-1', topic: ['t']});
  assert.deepEqual(await p2, {messageId: 'm-2', topic: ['t']});
});

test('an error reply rejects with the node code; refused topics are dropped, the others asked again', async () => {
  const {ft, ws, errors} = setup();
  ws().open();
  const p = ft.subscribe(['ok1', 'secret', 'ok2']);
  const f = ws().last();
  ws().recv({type: 'error', code: 'forbidden', message: 'not allowed', topic: ['secret'], id: f.id});
  const r = await settled(p);
  assert.ok(r.err instanceof FiretowerError);
  assert.equal(r.err.code, 'forbidden');
  assert.deepEqual(r.err.topic, ['secret']);
  assert.deepEqual(ft.topics(), ['ok1', 'ok2']);
  const again = ws().last();
  assert.equal(again.type, 'subscribe');
  assert.deepEqual(again.topic, ['ok1', 'ok2']);
  assert.notEqual(again.id, f.id);
  // A publish refused by the node rejects too.
  const pub = ft.publish('ok1', 1);
  ws().recv({type: 'error', code: 'unavailable', message: 'broker down', id: ws().last().id});
  assert.equal((await settled(pub)).err.code, 'unavailable');
  // An error that answers no request goes to onError.
  ws().recv({type: 'error', code: 'rate_limited', message: 'slow down'});
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'rate_limited');
});

test('an error without topics refuses the whole subscribe', async () => {
  const {ft, ws} = setup();
  ws().open();
  const p = ft.subscribe(['x', 'y']);
  ws().recv({type: 'error', code: 'too_many_topics', message: 'limit 128', id: ws().last().id});
  assert.equal((await settled(p)).err.code, 'too_many_topics');
  assert.deepEqual(ft.topics(), []);
  assert.equal(ws().sent.length, 1);
});

test('unavailable: the subscription is asked for again after a backoff, and the promise waits for it', async () => {
  const {ft, ws, clock, errors} = setup({reconnectDelay: 100});
  ws().open();
  const p = ft.subscribe(['a', 'b']);
  ws().recv({type: 'error', code: 'unavailable', message: 'broker down', topic: ['a', 'b'], id: ws().last().id});
  assert.equal(await settled(p), 'pending');
  assert.deepEqual(ft.topics(), ['a', 'b']);
  assert.equal(errors[0].code, 'unavailable');
  assert.equal(ws().sent.length, 1);
  clock.advance(100);
  const again = ws().last();
  assert.equal(ws().sent.length, 2);
  assert.deepEqual(again.topic, ['a', 'b']);
  ws().recv({type: 'error', code: 'unavailable', message: 'still down', topic: ['a', 'b'], id: again.id});
  clock.advance(199);
  assert.equal(ws().sent.length, 2, 'the second retry waits twice as long');
  clock.advance(1);
  ws().recv({type: 'subscribed', topic: ['a', 'b'], id: ws().last().id});
  assert.deepEqual(await p, ['a', 'b']);
  // A request that runs out of time reports the last error, not a bare timeout.
  const q = ft.subscribe('c');
  ws().recv({type: 'error', code: 'unavailable', message: 'down again', topic: ['c'], id: ws().last().id});
  clock.advance(10000);
  assert.equal((await settled(q)).err.code, 'unavailable');
});

test('a frame that is not JSON is reported, and the connection goes on', () => {
  const {ft, ws, errors} = setup();
  ws().open();
  const got = [];
  ft.on('a', (d) => got.push(d));
  ws().recv('hello, v0 bare data');
  ws().recv({type: 'publish', topic: 'a', data: 1});
  assert.equal(errors[0].code, 'bad_frame');
  assert.deepEqual(got, [1]);
  assert.equal(ft.state, 'open');
});

test('reconnect: exponential backoff, capped, with jitter; attempts reset once open', () => {
  let r = 0;
  const {ft, ws, sockets, clock, states} = setup({random: () => r, reconnectDelay: 100, reconnectDelayMax: 1000});
  ws().open();
  const delays = [];
  for (let i = 0; i < 6; i++) {
    ws().drop();
    const [s, d] = states[states.length - 1];
    assert.equal(s, 'reconnecting');
    assert.equal(d.attempt, i + 1);
    delays.push(d.delay);
    clock.advance(d.delay - 1);
    assert.equal(sockets.length, i + 1, 'dialled before the delay passed');
    clock.advance(1);
    assert.equal(sockets.length, i + 2, 'did not dial after the delay');
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1000, 1000]);
  // Jitter takes up to half of the delay off.
  r = 0.999;
  ws().drop();
  const d = states[states.length - 1][1].delay;
  assert.ok(d >= 500 && d < 502, `delay ${d} with jitter`);
  clock.advance(d);
  ws().open();
  ws().drop();
  assert.equal(states[states.length - 1][1].attempt, 1);
  assert.equal(ft.state, 'reconnecting');
});

test('reconnect re-subscribes every wanted topic; in-flight publishes reject, in-flight subscribes wait', async () => {
  const {ft, ws, sockets, clock} = setup();
  ws().open();
  const s1 = ft.subscribe(['a', 'b']);
  ws().recv({type: 'subscribed', topic: ['a', 'b'], id: ws().last().id});
  await s1;
  const s2 = ft.subscribe('c');
  const pub = ft.publish('a', 'lost?');
  const first = ws();
  first.drop(1001, 'going away');
  const r = await settled(pub);
  assert.equal(r.err.code, 'disconnected');
  assert.equal(await settled(s2), 'pending');
  // Published while reconnecting: queued, sent after the resubscription.
  const queued = ft.publish('b', 'later');
  clock.advance(500);
  assert.equal(sockets.length, 2);
  const got = [];
  ft.on('a', (d) => got.push(d));
  ws().open();
  const [sub, pub2] = ws().sent;
  assert.equal(sub.type, 'subscribe');
  assert.deepEqual(sub.topic.slice().sort(), ['a', 'b', 'c']);
  assert.deepEqual([pub2.type, pub2.topic, pub2.data], ['publish', 'b', 'later']);
  ws().recv([{type: 'subscribed', topic: sub.topic, id: sub.id}, {type: 'published', topic: ['b'], id: pub2.id, messageId: 'm'}, {type: 'publish', topic: 'a', data: 'back'}]);
  assert.deepEqual(await s2, ['c']);
  assert.equal((await queued).messageId, 'm');
  assert.deepEqual(got, ['back']);
  // The old socket's late events are ignored.
  first.recv({type: 'publish', topic: 'a', data: 'ghost'});
  assert.deepEqual(got, ['back']);
});

test('unsubscribe removes topics from what reconnects ask for', async () => {
  const {ft, ws, clock} = setup();
  ws().open();
  ft.subscribe(['a', 'b']);
  ws().recv({type: 'subscribed', topic: ['a', 'b'], id: ws().last().id});
  const u = ft.unsubscribe('a');
  const f = ws().last();
  assert.equal(f.type, 'unSubscribe');
  assert.deepEqual(f.topic, ['a']);
  ws().recv({type: 'unsubscribed', topic: ['a'], id: f.id});
  assert.deepEqual(await u, ['a']);
  ws().drop();
  // While disconnected, unsubscribe has nothing to ask the node.
  assert.deepEqual(await ft.unsubscribe('b'), ['b']);
  ft.subscribe('c');
  clock.advance(500);
  ws().open();
  assert.deepEqual(ws().sent.map((x) => [x.type, x.topic]), [['subscribe', ['c']]]);
});

test('ping: a silent connection is replaced; any frame keeps it alive', () => {
  const {ft, ws, sockets, clock, states} = setup({pingInterval: 1000, pingTimeout: 300});
  ws().open();
  clock.advance(1000);
  assert.deepEqual(ws().last(), {type: 'ping'});
  clock.advance(200);
  ws().recv({type: 'pong'});
  clock.advance(800); // t=2000: the second ping

  assert.equal(ft.state, 'open');
  assert.equal(ws().sent.filter((f) => f.type === 'ping').length, 2);
  // No answer to the second ping.
  clock.advance(299);
  assert.equal(ft.state, 'open');
  clock.advance(1);
  assert.equal(ft.state, 'reconnecting');
  const [, d] = states[states.length - 1];
  assert.equal(d.code, 4000);
  assert.deepEqual(sockets[0].closed.code, 4000);
  clock.advance(d.delay);
  assert.equal(sockets.length, 2);
  ws().open();
  assert.equal(ft.state, 'open');
});

test('request timeout rejects a publish that never got an answer', async () => {
  const {ft, ws, clock} = setup({requestTimeout: 2000});
  const p = ft.publish('t', 1); // queued: not open yet
  clock.advance(1999);
  assert.equal(await settled(p), 'pending');
  clock.advance(1);
  assert.equal((await settled(p)).err.code, 'timeout');
  ws().open();
  // The timed-out publish is not sent late.
  assert.equal(ws().sent.filter((f) => f.type === 'publish').length, 0);
});

test('close rejects what is pending, stops reconnecting and is idempotent', async () => {
  const {ft, ws, sockets, clock, states} = setup();
  ws().open();
  const s = ft.subscribe('a');
  const p = ft.publish('a', 1);
  ft.close();
  ft.close();
  assert.equal((await settled(s)).err.code, 'closed');
  assert.equal((await settled(p)).err.code, 'closed');
  assert.equal(sockets[0].closed.code, 1000);
  clock.advance(60000);
  assert.equal(sockets.length, 1);
  assert.deepEqual(states.map((x) => x[0]), ['connecting', 'open', 'closed']);
  assert.equal(clock.timers.size, 0, 'timers left behind');
  // After close, requests fail at once rather than wait for a timeout.
  assert.equal((await settled(ft.subscribe('b'))).err.code, 'closed');
  assert.equal((await settled(ft.publish('b', 1))).err.code, 'closed');
});

test('misuse rejects with a TypeError', async () => {
  const {ft} = setup();
  for (const p of [ft.subscribe([]), ft.subscribe(['']), ft.subscribe(7), ft.unsubscribe(''), ft.publish('', 1), ft.publish(null, 1)]) {
    const r = await settled(p);
    assert.ok(r.err instanceof TypeError, String(r.err));
  }
  assert.deepEqual(ft.topics(), []);
});

test('a handler that throws does not stop the others', () => {
  const {ft, ws, errors} = setup();
  ws().open();
  const got = [];
  ft.on('a', () => { throw new Error('boom'); });
  ft.on('a', (d) => got.push(d));
  const off = ft.on('a', (d) => got.push('x' + d));
  off();
  ws().recv([{type: 'publish', topic: 'a', data: 1}, {type: 'publish', topic: 'a', data: 2}]);
  assert.deepEqual(got, [1, 2]);
  assert.equal(errors.length, 2);
  assert.equal(errors[0].message, 'boom');
});

test('the online event cuts the reconnect wait short', () => {
  const listeners = {};
  const win = {
    addEventListener: (t, fn) => { listeners[t] = fn; },
    removeEventListener: (t, fn) => { if (listeners[t] === fn) delete listeners[t]; },
  };
  const {ft, ws, sockets} = setup({window: win, reconnectDelay: 10000});
  ws().open();
  ws().drop();
  assert.equal(sockets.length, 1);
  listeners.online();
  assert.equal(sockets.length, 2);
  ft.close();
  assert.equal(listeners.online, undefined);
});

test('connect before the page has a WebSocket fails loudly', () => {
  assert.throws(() => connect('ws://h/ws', {WebSocket: null, window: null}), /no WebSocket/);
});

// --- history and recovery ---

// joined subscribes to topics on an open connection and answers with the
// given streams, the way a node answers for topics that keep history.
async function joined(ft, ws, topics, streams) {
  const p = ft.subscribe(topics);
  const f = ws().last();
  assert.equal(f.type, 'subscribe');
  ws().recv({type: 'subscribed', topic: f.topic, id: f.id, streams});
  await p;
  return f;
}

// reconnect drops the connection, dials the next one and opens it, and
// returns the subscribe frame it sent.
function reconnect(ws, clock) {
  ws().drop();
  clock.advance(30000);
  ws().open();
  const f = ws().sent[0];
  assert.equal(f.type, 'subscribe');
  return f;
}

test('streams: the position comes from the subscribed reply and advances with each message', async () => {
  const {ft, ws} = setup();
  ws().open();
  const failures = [];
  ft.onRecoveryFailed((t, s) => failures.push([t, s]));
  const got = [];
  ft.on('a', (data, frame, meta) => got.push([data, frame.offset, meta]));
  ft.on('c', (data, frame, meta) => got.push([data, frame.offset, meta]));
  const f = await joined(ft, ws, ['a', 'b', 'c'], {a: {epoch: 'E', offset: 25}, b: {epoch: 'F', offset: 9}});
  assert.equal(f.since, undefined, 'a first subscribe has nothing to recover');
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 25});
  assert.deepEqual(ft.position('b'), {epoch: 'F', offset: 9});
  assert.equal(ft.position('c'), undefined, 'c keeps no history');
  ws().recv([
    {type: 'publish', topic: 'a', data: 'x', id: 'm26', offset: 26},
    {type: 'publish', topic: 'c', data: 'plain', id: 'mc'},
    {type: 'publish', topic: 'a', data: 'y', id: 'm27', offset: 27},
  ]);
  assert.deepEqual(got, [
    ['x', 26, {offset: 26, epoch: 'E', recovered: false}],
    ['plain', undefined, {offset: undefined, epoch: undefined, recovered: false}],
    ['y', 27, {offset: 27, epoch: 'E', recovered: false}],
  ]);
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 27});
  assert.deepEqual(ft.position('b'), {epoch: 'F', offset: 9}, 'a message of another topic moves nothing');
  assert.deepEqual(failures, []);
  // The position handed out is a copy.
  ft.position('a').offset = 0;
  assert.equal(ft.position('a').offset, 27);
});

test('reconnect: the subscribe asks to recover each topic from its position', async () => {
  const {ft, ws, clock} = setup();
  ws().open();
  await joined(ft, ws, ['a', 'b', 'c'], {a: {epoch: 'E', offset: 25}, b: {epoch: 'F', offset: 9}});
  ws().recv({type: 'publish', topic: 'a', data: 1, offset: 26});
  const f = reconnect(ws, clock);
  assert.deepEqual(f.topic, ['a', 'b', 'c']);
  assert.deepEqual(f.since, {a: {epoch: 'E', offset: 26}, b: {epoch: 'F', offset: 9}});
  // Every reconnect asks again, from where the handlers got to by then.
  ws().recv([
    {type: 'subscribed', topic: f.topic, id: f.id, streams: {a: {epoch: 'E', offset: 26, recovered: true}, b: {epoch: 'F', offset: 9, recovered: true}}},
    {type: 'publish', topic: 'b', data: 2, offset: 10},
  ]);
  assert.deepEqual(reconnect(ws, clock).since, {a: {epoch: 'E', offset: 26}, b: {epoch: 'F', offset: 10}});
});

test('recovery: missed messages reach the same handlers in order, with their offsets, before the live ones', async () => {
  const {ft, ws, clock} = setup();
  ws().open();
  const got = [];
  ft.on('a', (data, frame, meta) => got.push([data, meta.offset, meta.recovered]));
  await joined(ft, ws, 'a', {a: {epoch: 'E', offset: 26}});
  const f = reconnect(ws, clock);
  assert.deepEqual(f.since, {a: {epoch: 'E', offset: 26}});
  // The reply announces the top (29); the missed messages up to it follow,
  // and must not be taken for duplicates of that top.
  ws().recv([
    {type: 'subscribed', topic: ['a'], id: f.id, streams: {a: {epoch: 'E', offset: 29, recovered: true}}},
    {type: 'publish', topic: 'a', data: 'm27', offset: 27},
    {type: 'publish', topic: 'a', data: 'm28', offset: 28},
  ]);
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 28});
  ws().recv([
    {type: 'publish', topic: 'a', data: 'm29', offset: 29},
    {type: 'publish', topic: 'a', data: 'live30', offset: 30},
  ]);
  assert.deepEqual(got, [['m27', 27, true], ['m28', 28, true], ['m29', 29, true], ['live30', 30, false]]);
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 30});
});

test('duplicates: a message at or below the position is never handed twice', async () => {
  const {ft, ws} = setup();
  ws().open();
  const got = [];
  const frames = [];
  ft.on('a', (data) => got.push(data));
  ft.onFrame((f) => { if (f.type === 'publish') frames.push(f.offset); });
  await joined(ft, ws, 'a', {a: {epoch: 'E', offset: 25}});
  ws().recv([
    {type: 'publish', topic: 'a', data: 'old', offset: 25},
    {type: 'publish', topic: 'a', data: 'older', offset: 3},
    {type: 'publish', topic: 'a', data: 'new', offset: 26},
    {type: 'publish', topic: 'a', data: 'again', offset: 26},
    {type: 'publish', topic: 'a', data: 'next', offset: 27},
  ]);
  assert.deepEqual(got, ['new', 'next']);
  assert.deepEqual(frames, [25, 3, 26, 26, 27], 'onFrame still sees every frame');
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 27});
});

test('a subscribe on a live connection that recovers a topic drops what live messages already brought', async () => {
  const {ft, ws, clock} = setup({reconnectDelay: 100});
  ws().open();
  const got = [];
  ft.on('a', (data, frame, meta) => got.push([data, meta.recovered]));
  await joined(ft, ws, 'a', {a: {epoch: 'E', offset: 5}});
  // A subscribe refused for a while: the retry asks for every wanted topic,
  // the live one included.
  ft.subscribe('x');
  ws().recv({type: 'error', code: 'unavailable', message: 'broker down', topic: ['x'], id: ws().last().id});
  clock.advance(100);
  const f = ws().last();
  assert.deepEqual(f.topic, ['a', 'x']);
  assert.deepEqual(f.since, {a: {epoch: 'E', offset: 5}});
  // A live message comes before the reply; the node then replays it.
  ws().recv([
    {type: 'publish', topic: 'a', data: 'six', offset: 6},
    {type: 'subscribed', topic: f.topic, id: f.id, streams: {a: {epoch: 'E', offset: 6, recovered: true}}},
    {type: 'publish', topic: 'a', data: 'six again', offset: 6},
    {type: 'publish', topic: 'a', data: 'seven', offset: 7},
  ]);
  assert.deepEqual(got, [['six', false], ['seven', false]]);
});

test('recovery failure: onRecoveryFailed is told, and the handlers go on from the new stream', async () => {
  const {ft, ws, clock, errors} = setup();
  ws().open();
  const failures = [];
  const off = ft.onRecoveryFailed((topic, stream) => failures.push([topic, stream]));
  ft.onRecoveryFailed(() => { throw new Error('app bug'); });
  const got = [];
  ft.on('a', (data, frame, meta) => got.push([data, meta.epoch, meta.offset]));
  await joined(ft, ws, ['a', 'b', 'c'], {a: {epoch: 'E', offset: 26}, b: {epoch: 'F', offset: 9}, c: {epoch: 'H', offset: 1}});
  const f = reconnect(ws, clock);
  assert.deepEqual(Object.keys(f.since).sort(), ['a', 'b', 'c']);
  // a: the store lost the stream (a new epoch); b: recovered; c: keeps no
  // history any more (no entry at all).
  ws().recv({type: 'subscribed', topic: f.topic, id: f.id, streams: {
    a: {epoch: 'G', offset: 3, recovered: false},
    b: {epoch: 'F', offset: 9, recovered: true},
  }});
  assert.deepEqual(failures, [
    ['a', {epoch: 'G', offset: 3, recovered: false, since: {epoch: 'E', offset: 26}}],
    ['c', {recovered: false, since: {epoch: 'H', offset: 1}}],
  ]);
  assert.equal(errors.filter((e) => e.message === 'app bug').length, 2, 'a throwing callback is reported, not raised');
  assert.deepEqual(ft.position('a'), {epoch: 'G', offset: 3});
  assert.equal(ft.position('c'), undefined);
  // Offsets of the new epoch: up to its top the messages are not for the
  // handlers (the app reloads them), then live ones come.
  ws().recv([
    {type: 'publish', topic: 'a', data: 'from before', offset: 3},
    {type: 'publish', topic: 'a', data: 'four', offset: 4},
  ]);
  assert.deepEqual(got, [['four', 'G', 4]]);
  // The window was trimmed: the same epoch, but since+1 is gone.
  off();
  const g = reconnect(ws, clock);
  assert.deepEqual(g.since, {a: {epoch: 'G', offset: 4}, b: {epoch: 'F', offset: 9}});
  const seen = [];
  ft.onRecoveryFailed((topic, stream) => seen.push([topic, stream.offset]));
  ws().recv({type: 'subscribed', topic: g.topic, id: g.id, streams: {a: {epoch: 'G', offset: 500, recovered: false}, b: {epoch: 'F', offset: 9, recovered: true}}});
  assert.deepEqual(seen, [['a', 500]]);
  assert.equal(failures.length, 2, 'a removed callback is not called');
  assert.deepEqual(ft.position('a'), {epoch: 'G', offset: 500});
});

test('unsubscribe and refusal forget the position', async () => {
  const {ft, ws, clock} = setup();
  ws().open();
  await joined(ft, ws, ['a', 'b', 'c'], {a: {epoch: 'E', offset: 1}, b: {epoch: 'E', offset: 2}, c: {epoch: 'E', offset: 3}});
  const u = ft.unsubscribe('a');
  ws().recv({type: 'unsubscribed', topic: ['a'], id: ws().last().id});
  await u;
  assert.equal(ft.position('a'), undefined);
  const f = reconnect(ws, clock);
  assert.deepEqual(f.since, {b: {epoch: 'E', offset: 2}, c: {epoch: 'E', offset: 3}});
  ws().recv({type: 'error', code: 'forbidden', message: 'no longer yours', topic: ['b'], id: f.id});
  assert.equal(ft.position('b'), undefined);
  const again = ws().last();
  assert.deepEqual(again.topic, ['c']);
  assert.deepEqual(again.since, {c: {epoch: 'E', offset: 3}});
  // Subscribed again later, a topic starts afresh.
  ws().recv({type: 'subscribed', topic: ['c'], id: again.id, streams: {c: {epoch: 'E', offset: 3, recovered: true}}});
  const p = ft.subscribe('a');
  const s = ws().last();
  assert.equal(s.since, undefined);
  // A reply for a topic unsubscribed meanwhile leaves no position behind.
  ft.unsubscribe('a');
  ws().recv({type: 'subscribed', topic: ['a'], id: s.id, streams: {a: {epoch: 'E', offset: 9}}});
  await p;
  assert.equal(ft.position('a'), undefined);
});

test('history: the request goes out with limit and since, and its reply is matched by id', async () => {
  const {ft, ws} = setup();
  ws().open();
  await joined(ft, ws, 'a', {a: {epoch: 'E', offset: 25}});
  const h1 = ft.history('a', {limit: 50});
  const f1 = ws().last();
  assert.deepEqual(f1, {type: 'history', topic: 'a', limit: 50, id: f1.id});
  const h2 = ft.history('a', {since: {epoch: 'E', offset: 17}});
  const f2 = ws().last();
  assert.deepEqual(f2, {type: 'history', topic: 'a', since: {epoch: 'E', offset: 17}, id: f2.id});
  const h3 = ft.history('b');
  assert.deepEqual(ws().last(), {type: 'history', topic: 'b', id: ws().last().id});
  // A message whose id equals the request's is a message, not the answer.
  ws().recv({type: 'publish', topic: 'a', data: 'live', id: f1.id, offset: 26});
  assert.equal(await settled(h1), 'pending');
  const msgs = [{id: 'm24', offset: 24, data: {text: 'x'}}, {id: 'm25', offset: 25, data: 'y'}];
  ws().recv([
    {type: 'history', topic: 'a', id: f2.id, epoch: 'E', offset: 26, messages: msgs.concat([{id: 'm26', offset: 26, data: 'live'}])},
    {type: 'history', topic: 'a', id: f1.id, epoch: 'E', offset: 25, messages: msgs},
  ]);
  assert.deepEqual(await h1, {topic: 'a', epoch: 'E', offset: 25, messages: msgs});
  assert.deepEqual((await h2).messages.map((m) => m.offset), [24, 25, 26]);
  assert.equal(await settled(h3), 'pending');
  ws().recv({type: 'history', topic: 'b', id: ws().last().id, epoch: 'F', offset: 0, messages: []});
  assert.deepEqual(await h3, {topic: 'b', epoch: 'F', offset: 0, messages: []});
  // Reading history moves no position.
  assert.deepEqual(ft.position('a'), {epoch: 'E', offset: 26});
});

test('history: a refusal rejects with the node code; misuse with a TypeError', async () => {
  const {ft, ws, errors} = setup();
  ws().open();
  const forbidden = ft.history('/secret', {limit: 10});
  ws().recv({type: 'error', code: 'forbidden', message: 'not allowed', topic: '/secret', id: ws().last().id});
  const r1 = (await settled(forbidden)).err;
  assert.ok(r1 instanceof FiretowerError);
  assert.equal(r1.code, 'forbidden');
  assert.deepEqual(r1.topic, ['/secret']);
  const plain = ft.history('/plain');
  ws().recv([{type: 'error', code: 'bad_request', message: 'topic /plain keeps no history', topic: '/plain', id: ws().last().id}]);
  const r2 = (await settled(plain)).err;
  assert.equal(r2.code, 'bad_request');
  assert.match(r2.message, /keeps no history/);
  assert.equal(errors.length, 0, 'an answered refusal is not also an onError');
  const sent = ws().sent.length;
  for (const p of [ft.history(''), ft.history(7), ft.history('a', {limit: 0}), ft.history('a', {limit: 1.5}), ft.history('a', {limit: '5'}), ft.history('a', {since: {offset: 1}}), ft.history('a', {since: {epoch: 'E', offset: -1}})]) {
    const r = await settled(p);
    assert.ok(r.err instanceof TypeError, String(r.err));
  }
  assert.equal(ws().sent.length, sent, 'nothing is sent for misuse');
});

test('history: asked while disconnected or cut off by a reconnect, it is asked on the next connection; close rejects it', async () => {
  const {ft, ws, clock} = setup();
  const early = ft.history('a', {limit: 5});
  const sub = ft.subscribe('a');
  ws().open();
  assert.deepEqual(ws().sent.map((f) => f.type), ['subscribe', 'history']);
  const first = ws().sent[1];
  assert.deepEqual([first.topic, first.limit], ['a', 5]);
  ws().drop();
  assert.equal(await settled(early), 'pending');
  clock.advance(500);
  ws().open();
  const again = ws().sent.find((f) => f.type === 'history');
  assert.deepEqual([again.topic, again.limit], ['a', 5]);
  ws().recv({type: 'history', topic: 'a', id: again.id, epoch: 'E', offset: 1, messages: [{id: 'm1', offset: 1, data: 1}]});
  assert.equal((await early).messages.length, 1);
  const late = ft.history('a');
  ft.close();
  assert.equal((await settled(late)).err.code, 'closed');
  assert.equal((await settled(sub)).err.code, 'closed');
  assert.equal((await settled(ft.history('a'))).err.code, 'closed');
});

test('onMessage: a message to the user reaches every onMessage handler, not the topic handlers', () => {
  const {ft, ws} = setup();
  ws().open();
  const got = [];
  const topic = [];
  ft.on('message', (d) => topic.push(d));
  const off = ft.onMessage((data, f) => got.push([data, f.id]));
  ft.onMessage((data) => got.push(['second', data]));
  ws().recv([{type: 'message', data: {text: 'hi'}, id: 'm1'}]);
  off();
  ws().recv({type: 'message', data: 2, id: 'm2'});
  assert.deepEqual(got, [[{text: 'hi'}, 'm1'], ['second', {text: 'hi'}], ['second', 2]]);
  assert.deepEqual(topic, []);
});

test('close code 4001 (user disconnected): no reconnect, state closed with the code and reason', async () => {
  const {ft, ws, sockets, clock, states} = setup();
  ws().open();
  const s = ft.subscribe('a');
  ws().drop(4001, 'banned');
  assert.equal((await settled(s)).err.code, 'closed');
  clock.advance(120000);
  assert.equal(sockets.length, 1, 'reconnected after 4001');
  const last = states[states.length - 1];
  assert.equal(last[0], 'closed');
  assert.equal(last[1].code, 4001);
  assert.equal(last[1].reason, 'banned');
  assert.equal(clock.timers.size, 0, 'timers left behind');
  assert.equal((await settled(ft.subscribe('b'))).err.code, 'closed');
  // Another application close code still reconnects.
  const other = setup();
  other.ws().open();
  other.ws().drop(4002, 'x');
  other.clock.advance(60000);
  assert.equal(other.sockets.length, 2);
});

// --- presence, joins and leaves ---

test('presence: the request goes out with an id and resolves with the answer matched by it', async () => {
  const {ft, ws} = setup();
  ws().open();
  const p1 = ft.presence('/chat/a');
  const f1 = ws().last();
  assert.deepEqual(f1, {type: 'presence', topic: '/chat/a', id: f1.id});
  const p2 = ft.presence('/chat/b');
  const f2 = ws().last();
  assert.notEqual(f1.id, f2.id);
  // A message whose id equals the request's is a message, not the answer.
  ws().recv({type: 'publish', topic: '/chat/a', data: 'x', id: f1.id});
  assert.equal(await settled(p1), 'pending');
  const clients = [
    {conn: 'c1', user: 'alice', info: {name: 'Alice'}},
    {conn: 'c2', user: 'alice', info: {name: 'Alice'}},
    {conn: 'c3', user: 'bob', info: {}},
  ];
  ws().recv([
    {type: 'presence', topic: '/chat/b', id: f2.id, users: 0, connections: 1, clients: [{conn: 'c9', user: '', info: {}}]},
    {type: 'presence', topic: '/chat/a', id: f1.id, users: 2, connections: 3, clients},
  ]);
  assert.deepEqual(await p1, {topic: '/chat/a', users: 2, connections: 3, clients});
  assert.deepEqual(await p2, {topic: '/chat/b', users: 0, connections: 1, clients: [{conn: 'c9', user: '', info: {}}]});
});

test('presence: info is always an object and a malformed answer resolves to what it can', async () => {
  const {ft, ws} = setup();
  ws().open();
  const p = ft.presence('t');
  ws().recv({type: 'presence', topic: 't', id: ws().last().id, users: -1, connections: 'x', clients: [null, 7, {conn: 'c1', user: 'u', info: null}, {conn: 'c2', info: [1]}]});
  assert.deepEqual(await p, {topic: 't', users: 0, connections: 0, clients: [{conn: 'c1', user: 'u', info: {}}, {conn: 'c2', user: '', info: {}}]});
  const q = ft.presence('t');
  ws().recv({type: 'presence', topic: 't', id: ws().last().id});
  assert.deepEqual(await q, {topic: 't', users: 0, connections: 0, clients: []});
});

test('presence: error frames reject with the node code; misuse with a TypeError', async () => {
  const {ft, ws, errors} = setup();
  ws().open();
  for (const code of ['forbidden', 'bad_request', 'unavailable']) {
    const p = ft.presence('/x');
    ws().recv({type: 'error', code, message: 'no presence for you', topic: '/x', id: ws().last().id});
    const r = (await settled(p)).err;
    assert.ok(r instanceof FiretowerError, String(r));
    assert.equal(r.code, code);
    assert.deepEqual(r.topic, ['/x']);
  }
  assert.equal(errors.length, 0, 'an answered refusal is not also an onError');
  const sent = ws().sent.length;
  for (const p of [ft.presence(''), ft.presence(7), ft.presence()]) {
    assert.ok((await settled(p)).err instanceof TypeError);
  }
  assert.equal(ws().sent.length, sent, 'nothing is sent for misuse');
});

test('presence: asked while disconnected or cut off by a reconnect, it is asked on the next connection; close and the timeout reject it', async () => {
  const {ft, ws, clock} = setup();
  const early = ft.presence('/chat/a');
  const sub = ft.subscribe('/chat/a');
  ws().open();
  assert.deepEqual(ws().sent.map((f) => f.type), ['subscribe', 'presence']);
  ws().recv({type: 'subscribed', topic: ['/chat/a'], id: ws().sent[0].id});
  await sub;
  ws().drop();
  assert.equal(await settled(early), 'pending');
  clock.advance(500);
  ws().open();
  const again = ws().sent.find((f) => f.type === 'presence');
  assert.deepEqual(again, {type: 'presence', topic: '/chat/a', id: again.id});
  ws().recv({type: 'presence', topic: '/chat/a', id: again.id, users: 1, connections: 1, clients: [{conn: 'c', user: 'u', info: {name: 'U'}}]});
  assert.equal((await early).users, 1);
  // No answer at all: the request timeout.
  const silent = ft.presence('/chat/a');
  clock.advance(10000);
  assert.equal((await settled(silent)).err.code, 'timeout');
  const late = ft.presence('/chat/a');
  ft.close();
  assert.equal((await settled(late)).err.code, 'closed');
  assert.equal((await settled(ft.presence('/chat/a'))).err.code, 'closed');
});

test('onJoin and onLeave: per topic, with user and info; not messages; off removes them', () => {
  const {ft, ws} = setup();
  ws().open();
  const msgs = [];
  const joins = [];
  const leaves = [];
  const frames = [];
  ft.on('/chat/a', (d) => msgs.push(d));
  ft.onFrame((f) => frames.push(f.type));
  const offJoin = ft.onJoin('/chat/a', (user, info, f) => joins.push([user, info, f.type]));
  ft.onJoin('/chat/b', (user) => joins.push(['b', user]));
  const offLeave = ft.onLeave('/chat/a', (user, f) => leaves.push([user, f.topic]));
  ws().recv([
    {type: 'join', topic: '/chat/a', user: 'alice', info: {name: '<b>Alice</b>'}},
    {type: 'join', topic: '/chat/b', user: 'bob', info: {}},
    {type: 'join', topic: '/chat/a', user: 'carol'},
    {type: 'publish', topic: '/chat/a', data: 'hi'},
    {type: 'leave', topic: '/chat/a', user: 'alice'},
    {type: 'leave', topic: '/chat/c', user: 'dave'},
    {type: 'join', topic: '/chat/a', user: 42, info: {}},
  ]);
  assert.deepEqual(joins, [['alice', {name: '<b>Alice</b>'}, 'join'], ['b', 'bob'], ['carol', {}, 'join']]);
  assert.deepEqual(leaves, [['alice', '/chat/a']]);
  assert.deepEqual(msgs, ['hi'], 'a join or leave reached a message handler');
  assert.deepEqual(frames, ['join', 'join', 'join', 'publish', 'leave', 'leave', 'join']);
  offJoin();
  offLeave();
  ws().recv([{type: 'join', topic: '/chat/a', user: 'erin', info: {}}, {type: 'leave', topic: '/chat/a', user: 'carol'}]);
  assert.equal(joins.length, 3);
  assert.equal(leaves.length, 1);
});

test('onJoin: a handler that throws does not stop the others', () => {
  const {ft, ws, errors} = setup();
  ws().open();
  const got = [];
  ft.onJoin('t', () => { throw new Error('boom'); });
  ft.onJoin('t', (user) => got.push(user));
  ws().recv({type: 'join', topic: 't', user: 'u', info: {}});
  assert.deepEqual(got, ['u']);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].message, 'boom');
});
