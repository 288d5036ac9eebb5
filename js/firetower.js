/*
 * firetower.js: the browser client of firetower (wire protocol v1).
 *
 * No dependencies and no build step. Load it as a plain script, which defines
 * globalThis.firetower:
 *
 *   <script src="/firetower.js"></script>
 *   <script>const ft = firetower.connect('/ws');</script>
 *
 * or as an ES module through firetower.mjs, a thin wrapper around this file:
 *
 *   import {connect} from '/firetower.mjs';
 *
 * The logic lives only here; firetower.mjs imports this file for its side
 * effect and re-exports globalThis.firetower, so the two forms cannot drift.
 */
(function (root, factory) {
  'use strict';
  var api = factory(root);
  root.firetower = api;
  // CommonJS (node's test runner, bundlers). In a browser `module` is undefined.
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : this, function (root) {
  'use strict';

  var VERSION = '1.2.0';

  // Replies are the frames that answer a client frame and echo its id. A
  // "publish" frame from the node also has an id, but that is the message id,
  // so it must never be matched against pending requests.
  var REPLIES = {subscribed: 1, unsubscribed: 1, published: 1, history: 1, presence: 1, pong: 1, error: 1};

  // Error codes that say "not now" rather than "no": a subscription refused
  // with one of them is asked for again.
  var TRANSIENT = {unavailable: 1, rate_limited: 1};

  var DEFAULTS = {
    batch: true,
    pingInterval: 25000,
    pingTimeout: 10000,
    requestTimeout: 10000,
    reconnectDelay: 500,
    reconnectDelayMax: 30000,
    jitter: 0.5,
  };

  // WebSocket close code the client uses when it gives up on a silent
  // connection; 4000-4999 is the range reserved for applications.
  var CLOSE_DEAD = 4000;

  // WebSocket close code of a connection the server closed for good: its
  // user was disconnected (Tower.DisconnectUser, POST /disconnect). The
  // client does not reconnect after it.
  var CLOSE_USER_DISCONNECTED = 4001;

  class FiretowerError extends Error {
    constructor(code, message, frame) {
      super('firetower: ' + message);
      this.name = 'FiretowerError';
      this.code = code;
      this.frame = frame;
      this.topic = frame && frame.topic !== undefined ? asList(frame.topic) : undefined;
    }
  }

  function closedError() {
    return new FiretowerError('closed', 'the client was closed');
  }

  function asList(topics) {
    if (Array.isArray(topics)) return topics.slice();
    if (typeof topics === 'string') return topics.split(',').filter(function (t) { return t !== ''; });
    return [];
  }

  function isOffset(v) {
    return typeof v === 'number' && v >= 0 && Math.floor(v) === v;
  }

  function isPosition(v) {
    return !!v && typeof v === 'object' && typeof v.epoch === 'string' && isOffset(v.offset);
  }

  function own(obj, key) {
    return Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
  }

  // infoOf is a connection's public info as the node sent it: always an
  // object ({} when there is none).
  function infoOf(v) {
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  }

  function checkTopics(topics) {
    var list = asList(topics);
    if (list.length === 0) throw new TypeError('firetower: no topic given');
    for (var i = 0; i < list.length; i++) {
      if (typeof list[i] !== 'string' || list[i] === '') {
        throw new TypeError('firetower: a topic must be a non-empty string');
      }
    }
    return list;
  }

  // resolveURL turns '/ws', 'http://h/ws' or 'ws://h/ws' into an absolute
  // ws(s) URL and adds batch=1 when batching is wanted. Relative URLs resolve
  // against the page, so a page served by the node just says connect('/ws').
  function resolveURL(url, batch) {
    var base = root.location && root.location.href;
    var u = base ? new URL(url || '/ws', base) : new URL(url);
    if (u.protocol === 'http:') u.protocol = 'ws:';
    else if (u.protocol === 'https:') u.protocol = 'wss:';
    if (batch) u.searchParams.set('batch', '1');
    return u.toString();
  }

  class Client {
    constructor(url, options) {
      var o = Object.assign({}, DEFAULTS, options || {});
      this._o = o;
      this.url = resolveURL(url, o.batch);
      this._WS = o.WebSocket || root.WebSocket;
      if (typeof this._WS !== 'function') {
        throw new TypeError('firetower: no WebSocket available; pass options.WebSocket');
      }
      this._setTimeout = o.setTimeout || root.setTimeout.bind(root);
      this._clearTimeout = o.clearTimeout || root.clearTimeout.bind(root);
      this._random = o.random || Math.random;

      this.state = 'connecting';
      this._ws = null;
      this._attempt = 0;
      this._nextId = 1;
      // id -> {kind, topics, waiters}: frames sent on the current connection.
      this._pending = new Map();
      // Requests made while not open, sent in order once the connection opens.
      this._queue = [];
      // Every topic the application wants; sent again on each new connection.
      this._topics = new Set();
      this._handlers = new Map();
      // topic -> {epoch, offset, recoverTo}: how far the handlers got in a
      // topic that keeps history. recoverTo is the top that a recovering
      // subscription announced; messages up to it are the recovered ones.
      this._streams = new Map();
      this._recoveryFns = new Set();
      this._stateFns = new Set();
      this._errorFns = new Set();
      this._frameFns = new Set();
      this._messageFns = new Set();
      // topic -> Set of fn: handlers of the topic's join and leave frames.
      this._joinFns = new Map();
      this._leaveFns = new Map();
      this._retryTimer = null;
      this._pingTimer = null;
      this._deadTimer = null;
      this._subTimer = null;
      this._subAttempt = 0;
      this._subWaiting = [];

      this._onOnline = this._onOnline.bind(this);
      this._win = o.window !== undefined ? o.window : root;
      if (this._win && typeof this._win.addEventListener === 'function') {
        this._win.addEventListener('online', this._onOnline);
      }
      this._dial();
    }

    // subscribe asks for topics and resolves with them once the node
    // confirmed. It survives a reconnect (the client subscribes again on the
    // new connection) and rejects on an error reply, close() or the timeout.
    subscribe(topics) {
      var self = this;
      return new Promise(function (resolve, reject) {
        var list = checkTopics(topics);
        if (self.state === 'closed') throw closedError();
        list.forEach(function (t) { self._topics.add(t); });
        var w = self._waiter(resolve, reject, list);
        if (self.state === 'open') {
          self._sendSubscribe(list, [w]);
        } else {
          self._queue.push({kind: 'subscribe', topics: list, waiter: w});
        }
      });
    }

    unsubscribe(topics) {
      var self = this;
      return new Promise(function (resolve, reject) {
        var list = checkTopics(topics);
        list.forEach(function (t) { self._topics.delete(t); self._streams.delete(t); });
        if (self.state !== 'open') {
          // No connection holds the subscription, and the next one will
          // not ask for these topics.
          resolve(list);
          return;
        }
        var w = self._waiter(resolve, reject, list);
        self._request({type: 'unSubscribe', topic: list}, 'unsubscribe', list, [w]);
      });
    }

    // publish resolves with {messageId, topic} once the node accepted the
    // message. It rejects when the connection drops before the ack: delivery
    // is at most once, so the caller decides whether to send again.
    publish(topic, data) {
      var self = this;
      var frame = {type: 'publish', topic: topic, data: data === undefined ? null : data};
      return new Promise(function (resolve, reject) {
        if (typeof topic !== 'string' || topic === '') {
          throw new TypeError('firetower: a topic must be a non-empty string');
        }
        if (self.state === 'closed') throw closedError();
        var w = self._waiter(resolve, reject, [topic]);
        if (self.state === 'open') {
          self._request(frame, 'publish', [topic], [w]);
        } else {
          self._queue.push({kind: 'publish', frame: frame, waiter: w});
        }
      });
    }

    // history asks for the messages a topic keeps: the newest limit, or those
    // after options.since. It is a read, so a connection lost before the
    // answer asks again on the next one (within requestTimeout).
    history(topic, options) {
      var self = this;
      var o = options || {};
      return new Promise(function (resolve, reject) {
        if (typeof topic !== 'string' || topic === '') {
          throw new TypeError('firetower: a topic must be a non-empty string');
        }
        if (o.limit !== undefined && !(isOffset(o.limit) && o.limit > 0)) {
          throw new TypeError('firetower: limit must be a positive integer');
        }
        if (o.since !== undefined && !isPosition(o.since)) {
          throw new TypeError('firetower: since must be {epoch, offset}');
        }
        if (self.state === 'closed') throw closedError();
        var frame = {type: 'history', topic: topic};
        if (o.limit !== undefined) frame.limit = o.limit;
        if (o.since !== undefined) frame.since = {epoch: o.since.epoch, offset: o.since.offset};
        var w = self._waiter(resolve, reject, [topic]);
        if (self.state === 'open') {
          self._request(frame, 'history', [topic], [w]);
        } else {
          self._queue.push({kind: 'history', frame: frame, waiter: w});
        }
      });
    }

    // presence asks who is subscribed to a topic that keeps presence:
    // {topic, users, connections, clients}. Like history it is a read, so a
    // connection lost before the answer asks again on the next one (within
    // requestTimeout).
    presence(topic) {
      var self = this;
      return new Promise(function (resolve, reject) {
        if (typeof topic !== 'string' || topic === '') {
          throw new TypeError('firetower: a topic must be a non-empty string');
        }
        if (self.state === 'closed') throw closedError();
        var frame = {type: 'presence', topic: topic};
        var w = self._waiter(resolve, reject, [topic]);
        if (self.state === 'open') {
          self._request(frame, 'presence', [topic], [w]);
        } else {
          self._queue.push({kind: 'presence', frame: frame, waiter: w});
        }
      });
    }

    // onJoin calls fn(user, info, frame) when a user's first connection
    // subscribes to topic (a topic with join and leave announcements);
    // onLeave calls fn(user, frame) once their last one has gone.
    onJoin(topic, fn) {
      return this._onTopic(this._joinFns, topic, fn);
    }

    onLeave(topic, fn) {
      return this._onTopic(this._leaveFns, topic, fn);
    }

    _onTopic(map, topic, fn) {
      var set = map.get(topic);
      if (!set) { set = new Set(); map.set(topic, set); }
      set.add(fn);
      return function off() {
        set.delete(fn);
        if (set.size === 0 && map.get(topic) === set) map.delete(topic);
      };
    }

    // position is where the handlers of a topic with history got to.
    position(topic) {
      var s = this._streams.get(topic);
      return s ? {epoch: s.epoch, offset: s.offset} : undefined;
    }

    // send writes a raw frame (a custom message for the node's ReadHandler)
    // and reports whether it was written; nothing is queued or awaited.
    send(frame) {
      if (this.state !== 'open') return false;
      return this._write(frame);
    }

    on(topic, fn) {
      var set = this._handlers.get(topic);
      if (!set) { set = new Set(); this._handlers.set(topic, set); }
      set.add(fn);
      var self = this;
      return function off() {
        set.delete(fn);
        if (set.size === 0 && self._handlers.get(topic) === set) self._handlers.delete(topic);
      };
    }

    // onState calls fn now with the current state, then on every change.
    onState(fn) {
      this._stateFns.add(fn);
      this._call(fn, [this.state, {attempt: this._attempt}]);
      var set = this._stateFns;
      return function off() { set.delete(fn); };
    }

    onError(fn) {
      this._errorFns.add(fn);
      var set = this._errorFns;
      return function off() { set.delete(fn); };
    }

    // onMessage calls fn(data, frame) for each message the server sent to
    // this connection's user (Tower.PublishToUser, POST /publish with
    // "users"), with no subscription needed.
    onMessage(fn) {
      this._messageFns.add(fn);
      var set = this._messageFns;
      return function off() { set.delete(fn); };
    }

    onFrame(fn) {
      this._frameFns.add(fn);
      var set = this._frameFns;
      return function off() { set.delete(fn); };
    }

    // onRecoveryFailed is told of each topic whose messages missed while
    // disconnected could not be recovered, so the application can reload it.
    onRecoveryFailed(fn) {
      this._recoveryFns.add(fn);
      var set = this._recoveryFns;
      return function off() { set.delete(fn); };
    }

    topics() {
      return Array.from(this._topics);
    }

    close() {
      if (this.state === 'closed') return;
      if (this._win && typeof this._win.removeEventListener === 'function') {
        this._win.removeEventListener('online', this._onOnline);
      }
      this._clearTimer('_retryTimer');
      var ws = this._ws;
      this._drop('closed', 'the client was closed');
      this._setState('closed', {attempt: this._attempt});
      if (ws) {
        try { ws.close(1000); } catch (e) { /* already closing */ }
      }
    }

    // --- connection ---

    _dial() {
      var ws;
      try {
        ws = new this._WS(this.url);
      } catch (e) {
        // A bad URL throws synchronously; treat it like a failed attempt so a
        // transient failure in the constructor does not stop reconnecting.
        this._emitError(new FiretowerError('connect', String(e && e.message || e)));
        this._retry(0, '');
        return;
      }
      this._ws = ws;
      var self = this;
      ws.onopen = function () { if (self._ws === ws) self._opened(); };
      ws.onmessage = function (ev) { if (self._ws === ws) self._receive(ev.data); };
      ws.onclose = function (ev) { if (self._ws === ws) self._lost(ev.code, ev.reason); };
      ws.onerror = function () { /* a close event follows and does the work */ };
    }

    _opened() {
      this._attempt = 0;
      this._setState('open', {attempt: 0});
      var queue = this._queue;
      this._queue = [];
      // One subscribe frame carries every wanted topic; requests queued while
      // disconnected settle with it instead of sending their own frames.
      var waiters = [];
      queue.forEach(function (q) { if (q.kind === 'subscribe') waiters.push(q.waiter); });
      var all = Array.from(this._topics);
      if (all.length > 0) {
        this._sendSubscribe(all, waiters);
      } else {
        // Everything asked for was unsubscribed again before the connection
        // opened; those requests are vacuously done.
        waiters.forEach(function (w) { w.resolve(w.topics); });
      }
      for (var i = 0; i < queue.length && this.state === 'open'; i++) {
        var q = queue[i];
        if ((q.kind === 'publish' || q.kind === 'history' || q.kind === 'presence') && !q.waiter.done) {
          this._request(q.frame, q.kind, q.waiter.topics, [q.waiter]);
        }
      }
      this._schedulePing();
    }

    _lost(code, reason) {
      if (this.state === 'closed') return;
      if (code === CLOSE_USER_DISCONNECTED) {
        // The server closed this user's connections for good: reconnecting
        // would only be refused or closed again.
        if (this._win && typeof this._win.removeEventListener === 'function') {
          this._win.removeEventListener('online', this._onOnline);
        }
        this._clearTimer('_retryTimer');
        this._drop('closed', 'disconnected by the server (' + code + (reason ? ' ' + reason : '') + ')');
        this._setState('closed', {attempt: this._attempt, code: code, reason: reason});
        return;
      }
      this._drop('disconnected', 'connection lost' + (code ? ' (' + code + (reason ? ' ' + reason : '') + ')' : ''));
      this._retry(code, reason);
    }

    // _backoff is the delay before the attempt-th retry: doubling from
    // reconnectDelay up to reconnectDelayMax, with "equal jitter" (between
    // 1-jitter and 1 times that) so that the many clients one server restart
    // dropped do not all come back at the same moment.
    _backoff(attempt) {
      var base = Math.min(this._o.reconnectDelayMax, this._o.reconnectDelay * Math.pow(2, attempt - 1));
      return Math.round(base * (1 - this._o.jitter * this._random()));
    }

    _retry(code, reason) {
      this._attempt++;
      var delay = this._backoff(this._attempt);
      this._setState('reconnecting', {attempt: this._attempt, delay: delay, code: code, reason: reason});
      var self = this;
      this._retryTimer = this._setTimeout(function () {
        self._retryTimer = null;
        if (self.state === 'reconnecting') self._dial();
      }, delay);
    }

    _onOnline() {
      // The browser says the network is back: do not sit out the backoff.
      if (this.state === 'reconnecting' && this._retryTimer !== null) {
        this._clearTimer('_retryTimer');
        this._dial();
      }
    }

    // _drop detaches the current socket and settles what was in flight on it.
    _drop(code, message) {
      var ws = this._ws;
      this._ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      }
      this._clearTimer('_pingTimer');
      this._clearTimer('_deadTimer');
      this._clearTimer('_subTimer');
      this._subAttempt = 0;
      var pending = this._pending;
      // Subscriptions waiting out a broker failure fold into the next
      // connection's subscribe, like those in flight.
      pending.set(0, {kind: 'subscribe', topics: [], waiters: this._subWaiting});
      this._subWaiting = [];
      this._pending = new Map();
      var closing = code === 'closed';
      var err = new FiretowerError(code, message);
      var requeue = [];
      pending.forEach(function (p) {
        p.waiters.forEach(function (w) {
          if (p.kind === 'subscribe' && !closing) {
            // The topics are still wanted and go out again on the next
            // connection; the promise settles with that subscription.
            requeue.push({kind: 'subscribe', topics: w.topics, waiter: w});
          } else if ((p.kind === 'history' || p.kind === 'presence') && !closing) {
            // A read is safe to ask again.
            requeue.push({kind: p.kind, frame: p.frame, waiter: w});
          } else if (p.kind === 'unsubscribe') {
            // The topics left the wanted set already, and a connection that
            // is gone holds no subscription: the goal is met.
            w.resolve(w.topics);
          } else {
            w.reject(err);
          }
        });
      });
      if (closing) {
        this._queue.forEach(function (q) { q.waiter.reject(err); });
        this._queue = [];
      } else {
        this._queue = requeue.concat(this._queue);
      }
    }

    // --- liveness ---

    _schedulePing() {
      var self = this;
      this._clearTimer('_pingTimer');
      this._pingTimer = this._setTimeout(function () {
        self._pingTimer = null;
        if (self.state !== 'open') return;
        self._write({type: 'ping'});
        if (self._deadTimer === null) {
          self._deadTimer = self._setTimeout(function () {
            self._deadTimer = null;
            self._dead();
          }, self._o.pingTimeout);
        }
        self._schedulePing();
      }, this._o.pingInterval);
    }

    // _dead gives up on a connection that stopped answering. Closing a dead
    // TCP connection can take minutes in a browser, so the client detaches
    // from it at once and dials a new one.
    _dead() {
      var ws = this._ws;
      this._lost(CLOSE_DEAD, 'no pong within ' + this._o.pingTimeout + ' ms');
      if (ws) {
        try { ws.close(CLOSE_DEAD, 'ping timeout'); } catch (e) { /* ignore */ }
      }
    }

    // --- frames ---

    _receive(text) {
      // Any frame proves the connection alive, not only a pong.
      this._clearTimer('_deadTimer');
      var v;
      try {
        v = JSON.parse(text);
      } catch (e) {
        this._emitError(new FiretowerError('bad_frame', 'the node sent a frame that is not JSON'));
        return;
      }
      if (Array.isArray(v)) {
        for (var i = 0; i < v.length && this._ws; i++) this._dispatch(v[i]);
      } else {
        this._dispatch(v);
      }
    }

    _dispatch(f) {
      if (!f || typeof f !== 'object') return;
      var self = this;
      this._frameFns.forEach(function (fn) { self._call(fn, [f]); });
      if (f.type === 'message') {
        Array.from(this._messageFns).forEach(function (fn) { self._call(fn, [f.data, f]); });
        return;
      }
      if (f.type === 'join' || f.type === 'leave') {
        // Announcements, not messages: only their own handlers get them.
        var fns = (f.type === 'join' ? this._joinFns : this._leaveFns).get(f.topic);
        if (fns && typeof f.user === 'string') {
          var args = f.type === 'join' ? [f.user, infoOf(f.info), f] : [f.user, f];
          Array.from(fns).forEach(function (fn) { self._call(fn, args); });
        }
        return;
      }
      if (f.type === 'publish') {
        var meta = this._advance(f);
        if (!meta) return;
        var set = this._handlers.get(f.topic);
        if (set) {
          Array.from(set).forEach(function (fn) { self._call(fn, [f.data, f, meta]); });
        }
        return;
      }
      if (!REPLIES[f.type]) return;
      var p = f.id !== undefined ? this._pending.get(f.id) : undefined;
      if (f.type === 'subscribed') this._positions(f, p && p.kind === 'subscribe' ? p.since : undefined);
      if (!p) {
        if (f.type === 'error') this._emitError(new FiretowerError(f.code || 'error', f.message || 'error', f));
        return;
      }
      this._pending.delete(f.id);
      if (f.type === 'error') {
        this._failed(p, f);
        return;
      }
      if (p.kind === 'publish') {
        var ack = {messageId: f.messageId, topic: asList(f.topic)};
        p.waiters.forEach(function (w) { w.resolve(ack); });
      } else if (p.kind === 'history') {
        var h = {
          topic: typeof f.topic === 'string' ? f.topic : p.topics[0],
          epoch: f.epoch,
          offset: f.offset,
          messages: Array.isArray(f.messages) ? f.messages : [],
        };
        p.waiters.forEach(function (w) { w.resolve(h); });
      } else if (p.kind === 'presence') {
        var clients = Array.isArray(f.clients) ? f.clients.filter(function (c) { return c && typeof c === 'object'; }) : [];
        var pr = {
          topic: typeof f.topic === 'string' ? f.topic : p.topics[0],
          users: isOffset(f.users) ? f.users : 0,
          connections: isOffset(f.connections) ? f.connections : 0,
          clients: clients.map(function (c) {
            return {conn: typeof c.conn === 'string' ? c.conn : '', user: typeof c.user === 'string' ? c.user : '', info: infoOf(c.info)};
          }),
        };
        p.waiters.forEach(function (w) { w.resolve(pr); });
      } else {
        if (p.kind === 'subscribe') this._subAttempt = 0;
        p.waiters.forEach(function (w) { w.resolve(w.topics); });
      }
    }

    _failed(p, f) {
      var err = new FiretowerError(f.code || 'error', f.message || f.code || 'error', f);
      if (p.kind === 'subscribe' && TRANSIENT[err.code]) {
        // The broker is down or the node is shedding load: the topics stay
        // wanted and the client asks again after a backoff. The promises
        // wait for that (bounded by requestTimeout) rather than fail at once.
        p.waiters.forEach(function (w) { w.lastError = err; });
        this._emitError(err);
        this._subscribeLater(p.waiters);
        return;
      }
      if (p.kind === 'subscribe') {
        // The named topics were refused: stop wanting them, or every
        // reconnect would ask again. Topics the node did not name are asked
        // for once more, so one forbidden topic does not cost the others.
        var refused = f.topic !== undefined ? asList(f.topic) : p.topics;
        var self = this;
        refused.forEach(function (t) { self._topics.delete(t); self._streams.delete(t); });
        var rest = p.topics.filter(function (t) { return self._topics.has(t) && refused.indexOf(t) < 0; });
        var failed = [];
        var ok = [];
        p.waiters.forEach(function (w) {
          var hit = w.topics.some(function (t) { return refused.indexOf(t) >= 0; });
          (hit ? failed : ok).push(w);
        });
        failed.forEach(function (w) { w.reject(err); });
        if (rest.length > 0 && refused.length > 0 && refused.length < p.topics.length) {
          this._sendSubscribe(rest, ok);
        } else {
          ok.forEach(function (w) { w.reject(err); });
        }
        if (p.waiters.length === 0) this._emitError(err);
        return;
      }
      p.waiters.forEach(function (w) { w.reject(err); });
    }

    _subscribeLater(waiters) {
      var self = this;
      this._subWaiting = this._subWaiting.concat(waiters);
      if (this._subTimer !== null) return;
      this._subAttempt++;
      var delay = this._backoff(this._subAttempt);
      this._subTimer = this._setTimeout(function () {
        self._subTimer = null;
        if (self.state !== 'open') return;
        var waiting = self._subWaiting.filter(function (w) { return !w.done; });
        self._subWaiting = [];
        var all = Array.from(self._topics);
        if (all.length > 0) self._sendSubscribe(all, waiting);
        else waiting.forEach(function (w) { w.resolve(w.topics); });
      }, delay);
    }

    // _sendSubscribe asks for topics, and for those the client has a
    // position in, to recover what came after it.
    _sendSubscribe(topics, waiters) {
      var frame = {type: 'subscribe', topic: topics};
      var since = {};
      var any = false;
      for (var i = 0; i < topics.length; i++) {
        var s = this._streams.get(topics[i]);
        if (s) {
          since[topics[i]] = {epoch: s.epoch, offset: s.offset};
          any = true;
        }
      }
      if (any) frame.since = since;
      var p = this._request(frame, 'subscribe', topics, waiters);
      p.since = since;
    }

    _request(frame, kind, topics, waiters) {
      var id = this._nextId++;
      frame.id = id;
      var p = {kind: kind, topics: topics, waiters: waiters, frame: frame};
      this._pending.set(id, p);
      this._write(frame);
      return p;
    }

    // --- streams ---

    // _positions takes the position of each topic from a subscribed reply.
    // since is what the subscribe frame asked to recover from.
    _positions(f, since) {
      var streams = f.streams && typeof f.streams === 'object' ? f.streams : {};
      var asked = since || {};
      var topics = asList(f.topic);
      for (var i = 0; i < topics.length; i++) {
        var t = topics[i];
        // A topic unsubscribed while the subscribe was on its way: its
        // position would only make a later subscribe ask for a stale past.
        if (!this._topics.has(t)) continue;
        var st = own(streams, t);
        var from = own(asked, t);
        var cur = this._streams.get(t);
        if (!isPosition(st)) {
          // The topic keeps no history (any more): there is nothing to
          // track, and whatever was missed since `from` is gone.
          this._streams.delete(t);
          if (from) this._recoveryFailed(t, {recovered: false, since: from});
          continue;
        }
        if (cur && cur.epoch !== st.epoch) cur = undefined;
        if (from && st.recovered === true && from.epoch === st.epoch) {
          // The messages after `from` up to the top follow this reply; they
          // advance the position as they come, marked as recovered. Live
          // messages on this connection may have moved it on already.
          var base = cur ? Math.max(cur.offset, from.offset) : from.offset;
          cur = {epoch: st.epoch, offset: base};
          if (st.offset > base) cur.recoverTo = st.offset;
          this._streams.set(t, cur);
          continue;
        }
        // Not recovering: the handlers go on from the top. Never back in
        // the same epoch, where live messages may have passed it.
        if (cur) {
          if (st.offset > cur.offset) cur.offset = st.offset;
          delete cur.recoverTo;
        } else {
          this._streams.set(t, {epoch: st.epoch, offset: st.offset});
        }
        if (from) this._recoveryFailed(t, {epoch: st.epoch, offset: st.offset, recovered: false, since: from});
      }
    }

    // _advance moves a topic's position past a message and returns what the
    // handlers get about it, or null for a message they had already.
    _advance(f) {
      var s = this._streams.get(f.topic);
      if (!s || !isOffset(f.offset)) return {offset: isOffset(f.offset) ? f.offset : undefined, epoch: undefined, recovered: false};
      if (f.offset <= s.offset) return null;
      s.offset = f.offset;
      var recovered = s.recoverTo !== undefined && f.offset <= s.recoverTo;
      if (s.recoverTo !== undefined && f.offset >= s.recoverTo) delete s.recoverTo;
      return {offset: f.offset, epoch: s.epoch, recovered: recovered};
    }

    _recoveryFailed(topic, stream) {
      var self = this;
      Array.from(this._recoveryFns).forEach(function (fn) { self._call(fn, [topic, stream]); });
    }

    _write(frame) {
      var ws = this._ws;
      if (!ws || ws.readyState !== 1) return false;
      try {
        ws.send(JSON.stringify(frame));
        return true;
      } catch (e) {
        this._emitError(new FiretowerError('send', String(e && e.message || e)));
        return false;
      }
    }

    // _waiter wraps a promise's settle functions so that the first of reply,
    // disconnect, close and timeout wins and the others do nothing.
    _waiter(resolve, reject, topics) {
      var self = this;
      var w = {topics: topics, done: false, timer: null};
      w.resolve = function (v) {
        if (w.done) return;
        w.done = true;
        self._clearTimeout(w.timer);
        resolve(v);
      };
      w.reject = function (e) {
        if (w.done) return;
        w.done = true;
        self._clearTimeout(w.timer);
        reject(e);
      };
      if (this._o.requestTimeout > 0) {
        w.timer = this._setTimeout(function () {
          w.reject(w.lastError || new FiretowerError('timeout', 'no reply within ' + self._o.requestTimeout + ' ms'));
        }, this._o.requestTimeout);
      }
      return w;
    }

    // --- events ---

    _setState(state, detail) {
      if (this.state === state && state !== 'reconnecting') return;
      this.state = state;
      var self = this;
      Array.from(this._stateFns).forEach(function (fn) { self._call(fn, [state, detail]); });
    }

    _emitError(err) {
      var self = this;
      Array.from(this._errorFns).forEach(function (fn) { self._call(fn, [err]); });
    }

    // _call runs an application callback; one that throws must not break the
    // client or the other callbacks, so its error is reported, not raised.
    _call(fn, args) {
      try {
        fn.apply(null, args);
      } catch (e) {
        if (this._errorFns.has(fn) || this._errorFns.size === 0) {
          if (root.console) root.console.error(e);
          return;
        }
        this._emitError(e);
      }
    }

    _clearTimer(name) {
      if (this[name] !== null) {
        this._clearTimeout(this[name]);
        this[name] = null;
      }
    }
  }

  function connect(url, options) {
    return new Client(url, options);
  }

  return {connect: connect, Client: Client, FiretowerError: FiretowerError, version: VERSION};
});
