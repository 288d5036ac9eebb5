// The chat page. Everything a user typed reaches the DOM through textContent,
// never as markup: a message like <img src=x onerror=...> shows as typed.
// Nothing a message holds can stop the page: a message of another shape is
// skipped, each field is checked before it is used, and one message that
// fails to render is shown as plain text without the others failing. That
// holds for a room's history as for live messages: both take one path.
//
// A room keeps its last 100 messages on the server. Joining shows them, then
// the live ones; a message shows once however it came (live, recovered after
// a reconnect, or in the history), by its id, in the order of its offset.
//
// A room also keeps who is in it (firetower's presence). The member list is
// read with ft.presence once the room's subscription is confirmed (again
// after each reconnect) and kept current with the room's join and leave
// frames, which also show as lines ("alice joined"). A reconnect does not
// clear the list: the new answer is reconciled with it, entry by entry. The
// server waits a grace (3 s) before a leave, so a reload makes no line.
//
// Who the page is: a user id and a display name, kept in localStorage and
// sent in the WebSocket URL (/ws?user=alice&name=Alice). The server takes
// them as given: a stand-in for real authentication, so anyone can claim
// any name. Messages a backend sends to the user (POST /publish with
// "users") show as notifications in every tab the user has open.
import {connect} from '/firetower.mjs';

const ROOMS = ['world', '2'];
const ROOM_NAME = /^[A-Za-z0-9_-]{1,32}$/;
const USER_ID = /^[A-Za-z0-9_.-]{1,32}$/;
const MAX_NAME = 32; // characters, as the server counts them
const MAX_KEPT = 200; // messages kept per room
const HISTORY = 100; // messages of a room's history shown on joining

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const topicOf = (room) => '/chat/' + room;

// --- who the page is ---

// cleanName makes a display name the server takes: no control characters,
// at most MAX_NAME characters (code points, not UTF-16 units), trimmed.
const cleanName = (n) => Array.from(String(n || '').replace(/\p{Cc}/gu, '').trim()).slice(0, MAX_NAME).join('').trim();

function identity() {
  let user = localStorage.getItem('firetower.user');
  if (!user || !USER_ID.test(user)) user = 'guest-' + Math.random().toString(36).slice(2, 6);
  const name = cleanName(localStorage.getItem('firetower.nick')) || user;
  localStorage.setItem('firetower.user', user);
  localStorage.setItem('firetower.nick', name);
  return {user, name};
}
const me = identity();

const userInput = $('user');
const nickInput = $('nick');
userInput.value = me.user;
nickInput.value = me.name;
userInput.addEventListener('input', () => userInput.setCustomValidity(''));
// Signing in as someone else takes a new connection: the server reads who
// the page is when it connects. The page reloads with the new identity.
$('who').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const user = userInput.value.trim();
  if (!USER_ID.test(user)) {
    userInput.setCustomValidity("1 to 32 letters, digits, '.', '-' and '_'");
    userInput.reportValidity();
    return;
  }
  const name = cleanName(nickInput.value) || user;
  nickInput.value = name;
  if (user === me.user && name === me.name) return;
  localStorage.setItem('firetower.user', user);
  localStorage.setItem('firetower.nick', name);
  location.reload();
});
const nick = () => me.name;

// A message that cannot be sent within 5 s is marked as not sent, with a
// retry button, rather than left spinning.
const ft = connect('/ws?' + new URLSearchParams({user: me.user, name: me.name}), {requestTimeout: 5000});
// For a console session and for the browser tests.
window.chat = {ft, me};

// --- connection state ---

const stateBox = $('state');
const stateText = $('state-text');
let wasOpen = false;
ft.onState((state, d) => {
  stateBox.dataset.state = state;
  // The member list stays through a reconnect (no flicker), marked as
  // possibly out of date until the new answer is in (readMembers).
  if (state !== 'open') $('members').classList.add('stale');
  if (state === 'open') {
    stateText.textContent = 'connected';
    if (wasOpen) system('reconnected');
    wasOpen = true;
    // A history that could not be read while the connection was down.
    if (room && rooms.get(room).wantHistory) loadHistory(room);
  } else if (state === 'reconnecting') {
    const secs = Math.max(1, Math.round((d.delay || 0) / 1000));
    stateText.textContent = `reconnecting in ${secs}s (attempt ${d.attempt})`;
    if (d.attempt === 1) system('connection lost, reconnecting…');
  } else if (state === 'closed') {
    stateText.textContent = 'closed';
  } else {
    stateText.textContent = 'connecting…';
  }
});
ft.onError((err) => console.warn('firetower:', err.message));

// --- rooms ---

// Per room, what the page shows of it, so switching back shows it again:
//   list: the entries, in order: chat lines (those the server has carry
//     their offset), system notes, and this page's messages not yet back;
//   ids: the ids of the chat lines in list, so that a line shows once;
//   epoch: the epoch of the room's stream the offsets belong to;
//   floor: the highest offset trimmed off the list (MAX_KEPT);
//   loads: counts history reads, so that only the latest one is used;
//   wantHistory: a history read failed for want of a connection;
//   members: user id -> display name of who is in the room, and
//     membersKnown whether a presence answer came since the page joined it;
//   reads: counts presence reads, so that only the latest one is used.
const rooms = new Map();

function roomState(name) {
  let r = rooms.get(name);
  if (!r) {
    r = {list: [], ids: new Set(), epoch: undefined, floor: 0, loads: 0, wantHistory: false, members: new Map(), membersKnown: false, reads: 0};
    rooms.set(name, r);
  }
  return r;
}
let room = null;
let offRoom = [];

function renderRooms() {
  const ul = $('rooms');
  ul.replaceChildren();
  const names = [...new Set([...ROOMS, ...rooms.keys()])];
  for (const name of names) {
    const a = el('a', name === room ? 'current' : '', '#' + name);
    a.href = '#' + encodeURIComponent(name);
    if (name === room) a.setAttribute('aria-current', 'page');
    const li = el('li');
    li.append(a);
    ul.append(li);
  }
}

// --- members ---

// nameOf is the display name a join or a presence entry carries, or the
// user id when it carries none that can be shown.
function nameOf(info, user) {
  const n = info && typeof info.name === 'string' ? cleanName(info.name) : '';
  return n || user;
}

// readMembers asks who is in the room and makes the answer the room's
// member list. It runs whenever the room's subscription is confirmed: on
// joining the room and after each reconnect.
async function readMembers(name) {
  const r = rooms.get(name);
  const read = ++r.reads;
  let p;
  try {
    p = await ft.presence(topicOf(name));
  } catch (err) {
    // A reconnect asks again by itself; the next subscription confirmed
    // reads again anyway.
    if (r.reads === read && name === room && err.code !== 'closed' && err.code !== 'timeout' && err.code !== 'disconnected') {
      system(`could not read who is in #${name}: ${err.message}`);
    }
    return;
  }
  if (r.reads !== read || name !== room) return;
  const members = new Map();
  for (const c of p.clients) {
    // Anonymous connections (user "") are in no list.
    if (c.user && !members.has(c.user)) members.set(c.user, nameOf(c.info, c.user));
  }
  // This page is subscribed, so its user is in the room whatever the
  // answer raced with.
  if (!members.has(me.user)) members.set(me.user, me.name);
  r.members = members;
  r.membersKnown = true;
  if (ft.state === 'open') $('members').classList.remove('stale');
  renderMembers();
}

function joined(name, user, info) {
  const r = rooms.get(name);
  const had = r.members.has(user);
  r.members.set(user, nameOf(info, user));
  if (name !== room) return;
  renderMembers();
  if (user !== me.user && !had) system(`${nameOf(info, user)} joined`, 'join');
}

function left(name, user) {
  const r = rooms.get(name);
  // This page is in the room: its user has not left it.
  if (user === me.user) return;
  const shown = r.members.get(user) || user;
  const had = r.members.delete(user);
  if (name !== room) return;
  renderMembers();
  if (had) system(`${shown} left`, 'leave');
}

const byName = (a, b) => a.name.localeCompare(b.name) || (a.user < b.user ? -1 : a.user > b.user ? 1 : 0);

// renderMembers brings the list on the page to the room's members, sorted
// by name, moving and changing entries in place rather than rebuilding it.
function renderMembers() {
  const ul = $('member-list');
  const r = room ? rooms.get(room) : null;
  const list = r && r.membersKnown ? Array.from(r.members, ([user, name]) => ({user, name})).sort(byName) : [];
  const old = new Map();
  for (const li of ul.children) old.set(li.dataset.user, li);
  list.forEach((m, i) => {
    let li = old.get(m.user);
    if (li) {
      old.delete(m.user);
    } else {
      li = el('li', 'member');
      li.dataset.user = m.user;
      li.append(el('span', 'name'), el('span', 'uid'));
    }
    li.classList.toggle('me', m.user === me.user);
    li.title = m.user;
    const nameEl = li.querySelector('.name');
    const label = m.user === me.user ? m.name + ' (you)' : m.name;
    if (nameEl.textContent !== label) nameEl.textContent = label;
    const uid = '@' + m.user;
    if (li.querySelector('.uid').textContent !== uid) li.querySelector('.uid').textContent = uid;
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
  });
  for (const li of old.values()) li.remove();
  $('online').textContent = r && r.membersKnown ? `${list.length} online` : '';
  $('online').dataset.count = r && r.membersKnown ? String(list.length) : '';
}

// Each confirmed subscription of the room, the first and those after a
// reconnect, reads its members again.
ft.onFrame((f) => {
  if (!room || !f || f.type !== 'subscribed') return;
  const topics = Array.isArray(f.topic) ? f.topic : [f.topic];
  if (topics.includes(topicOf(room))) readMembers(room);
});

// --- notifications ---

// A message a backend sent to this user (POST /publish with "users"): its
// text shows for a while in every tab the user has open.
const MAX_NOTICES = 5;
ft.onMessage((data) => guard(() => {
  if (!data || typeof data !== 'object' || typeof data.text !== 'string' || data.text === '') return;
  const box = $('notices');
  const n = el('div', 'notice');
  const close = el('button', 'close', '×');
  close.type = 'button';
  close.title = 'dismiss';
  close.addEventListener('click', () => n.remove());
  n.append(el('span', 'text', data.text.slice(0, 500)), close);
  box.append(n);
  while (box.children.length > MAX_NOTICES) box.firstElementChild.remove();
  setTimeout(() => n.remove(), 20000);
}));

async function join(name) {
  if (!ROOM_NAME.test(name)) name = ROOMS[0];
  if (name === room) return;
  const prev = room;
  room = name;
  roomState(name);
  offRoom.forEach((off) => off());
  offRoom = [
    ft.on(topicOf(name), (data, frame, meta) => guard(() => receive(name, data, frame, meta))),
    ft.onJoin(topicOf(name), (user, info) => guard(() => joined(name, user, info))),
    ft.onLeave(topicOf(name), (user) => guard(() => left(name, user))),
  ];
  if (prev) {
    // Who is in a room the page left is not followed any more.
    const p = rooms.get(prev);
    p.membersKnown = false;
    p.reads++;
  }
  $('room-title').textContent = '#' + name;
  $('topic').textContent = topicOf(name);
  renderRooms();
  renderMessages();
  renderMembers();
  if (decodeURIComponent(location.hash.slice(1)) !== name) history.replaceState(null, '', '#' + name);
  if (prev) ft.unsubscribe(topicOf(prev)).catch(() => {});
  try {
    await ft.subscribe(topicOf(name));
  } catch (err) {
    // While the connection is down the room stays wanted and is joined as
    // soon as it is back; only a refusal is worth telling.
    if (room === name && err.code !== 'timeout' && err.code !== 'closed') system(`could not join #${name}: ${err.message}`);
    return;
  }
  if (room !== name) return;
  // What was said before: read once subscribed, so nothing falls between
  // the history and the live messages (those that come in both show once).
  loadHistory(name);
}

addEventListener('hashchange', () => join(decodeURIComponent(location.hash.slice(1))));
$('room-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('room-input').value.trim();
  if (!ROOM_NAME.test(name)) {
    $('room-input').setCustomValidity('letters, digits, - and _');
    $('room-input').reportValidity();
    return;
  }
  $('room-input').value = '';
  location.hash = '#' + name;
});
$('room-input').addEventListener('input', () => $('room-input').setCustomValidity(''));

// --- messages ---

// Sent by this page and not yet seen coming back, by client id.
const mine = new Map();
// The client ids of every message this page sent, to show them as its own
// when they come back in a room's history.
const sentCids = new Set();

// guard runs f and keeps what it throws from the caller: one message's
// failure stays with that message.
function guard(f) {
  try {
    f();
  } catch (err) {
    console.warn('chat: a message was skipped:', err);
  }
}

// A time a Date can show; the server takes 2000 to 2100, a backend may send
// anything.
const isTime = (t) => Number.isFinite(t) && Math.abs(t) <= 8.64e15;
const isOffset = (n) => Number.isSafeInteger(n) && n > 0;

// chatLine makes the entry of a chat line from what the room carried: an
// object with a string text. Who is in the room never comes from here (see
// readMembers), and anything else is skipped (null).
function chatLine(data, id, offset) {
  if (!data || typeof data !== 'object' || Array.isArray(data) || typeof data.text !== 'string') return null;
  const cid = typeof data.cid === 'string' ? data.cid : '';
  return {
    nick: typeof data.nick === 'string' && data.nick ? Array.from(data.nick).slice(0, MAX_NAME).join('') : 'anonymous',
    text: data.text.slice(0, 2000),
    at: isTime(data.at) ? data.at : Date.now(),
    cid,
    id,
    offset,
    own: cid !== '' && sentCids.has(cid),
    status: 'delivered',
  };
}

// take returns the entry to add for a chat line, or null: for a line the
// room shows already, for one that is not a chat line, and for this page's
// own message coming back, which marks the entry it has as delivered.
function take(r, data, id, offset) {
  if (id && r.ids.has(id)) return null;
  const msg = chatLine(data, id, offset);
  if (!msg) return null;
  if (id) r.ids.add(id);
  const own = msg.cid ? mine.get(msg.cid) : undefined;
  if (own && r.list.includes(own)) {
    // Our own message came back through the server: it reached the room.
    mine.delete(msg.cid);
    own.status = 'delivered';
    own.id = id;
    own.offset = offset;
    return null;
  }
  return msg;
}

// useEpoch makes epoch the room's. Offsets of another epoch belong to a
// stream the server no longer has: a room that shows such lines is cleared
// (cleanRoom) and its history read again. It reports whether it cleared.
function useEpoch(name, r, epoch) {
  if (typeof epoch !== 'string' || epoch === r.epoch) return false;
  const had = r.epoch !== undefined;
  if (had) cleanRoom(r);
  r.epoch = epoch;
  return had;
}

// cleanRoom drops the room's chat lines, keeping the notes and this page's
// messages that have not come back (they may yet, or wait for a retry).
function cleanRoom(r) {
  r.list = r.list.filter((m) => m.system || (m.own && m.status !== 'delivered'));
  r.ids = new Set();
  r.floor = 0;
  r.epoch = undefined;
}

// receive takes a live (or recovered) message of the room.
function receive(name, data, frame, meta) {
  const r = rooms.get(name);
  const offset = meta && isOffset(meta.offset) ? meta.offset : undefined;
  if (offset !== undefined && useEpoch(name, r, meta.epoch)) loadHistory(name);
  const msg = take(r, data, frame && typeof frame.id === 'string' ? frame.id : '', offset);
  if (msg) keep(name, msg);
  else if (name === room) renderMessages();
}

// loadHistory reads the room's history and adds what the page lacks, each
// line in its place by offset.
async function loadHistory(name) {
  const r = rooms.get(name);
  const load = ++r.loads;
  r.wantHistory = false;
  let h;
  try {
    h = await ft.history(topicOf(name), {limit: HISTORY});
  } catch (err) {
    if (r.loads !== load) return;
    if (err.code === 'timeout' || err.code === 'disconnected') {
      r.wantHistory = true; // read again once connected
    } else if (err.code !== 'bad_request' && err.code !== 'closed' && name === room) {
      // bad_request: the server keeps no history for the room.
      system(`could not load the history of #${name}: ${err.message}`);
    }
    return;
  }
  // A later read (a reload) has taken over.
  if (r.loads !== load || !h || !Array.isArray(h.messages)) return;
  useEpoch(name, r, h.epoch);
  const lines = h.messages.filter((m) => m && isOffset(m.offset) && m.offset > r.floor && typeof m.id === 'string');
  lines.sort((a, b) => a.offset - b.offset);
  for (const m of lines) {
    guard(() => {
      const msg = take(r, m.data, m.id, m.offset);
      if (msg) place(r.list, msg);
    });
  }
  trim(r);
  if (name === room) renderMessages();
}

// place puts a line of the history before the first entry with a later
// offset, or else after the last entry with an offset: notes and messages
// still on their way stay after it.
function place(list, msg) {
  let after = -1;
  for (let i = 0; i < list.length; i++) {
    const o = list[i].offset;
    if (o === undefined) continue;
    if (o > msg.offset) {
      list.splice(i, 0, msg);
      return;
    }
    after = i;
  }
  list.splice(after + 1, 0, msg);
}

// When the messages missed while disconnected are gone (the server lost the
// room's stream, or more than it keeps were said meanwhile), the room is
// shown again from its history: cleared first, so nothing shows twice.
ft.onRecoveryFailed((topic) => {
  if (!room || topic !== topicOf(room)) return;
  const r = rooms.get(room);
  cleanRoom(r);
  system('some messages were missed: showing the room\'s history again');
  loadHistory(room);
});

function trim(r) {
  if (r.list.length <= MAX_KEPT) return;
  for (const m of r.list.splice(0, r.list.length - MAX_KEPT)) {
    if (m.id) r.ids.delete(m.id);
    if (m.offset !== undefined && m.offset > r.floor) r.floor = m.offset;
  }
}

function keep(name, msg) {
  const r = rooms.get(name);
  r.list.push(msg);
  trim(r);
  if (name === room) renderMessages();
}

// system adds a note to the room: kind 'join' or 'leave' for who comes
// and goes, none for the page's own notes.
function system(text, kind = '') {
  if (room) keep(room, {system: true, kind, text, at: Date.now()});
}

const timeFmt = new Intl.DateTimeFormat(undefined, {hour: '2-digit', minute: '2-digit'});
const timeText = (t) => {
  try {
    return timeFmt.format(t);
  } catch {
    return '';
  }
};

function renderMessages() {
  const ol = $('messages');
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
  ol.replaceChildren();
  for (const m of room ? rooms.get(room).list : []) {
    try {
      ol.append(renderMessage(m));
    } catch (err) {
      console.warn('chat: a message could not be shown:', err);
      ol.append(el('li', 'plain', String(m && m.text)));
    }
  }
  if (atBottom) ol.scrollTop = ol.scrollHeight;
}

// renderMessage makes the list item of one kept message.
function renderMessage(m) {
  if (m.system) {
    const li = el('li', 'system' + (m.kind ? ' ' + m.kind : ''), m.text);
    if (m.kind) li.dataset.kind = m.kind;
    return li;
  }
  const li = el('li', 'msg ' + m.status + (m.own ? ' own' : ''));
  li.dataset.status = m.status;
  if (m.offset !== undefined) li.dataset.offset = String(m.offset);
  const head = el('div', 'head');
  head.append(el('span', 'who', m.nick), el('time', 'when', timeText(m.at)));
  li.append(head, el('div', 'text', m.text));
  if (m.status === 'sending') li.append(el('div', 'note', 'sending…'));
  if (m.status === 'failed') {
    const note = el('div', 'note', 'not sent: ' + m.error + ' ');
    const retry = el('button', 'retry', 'retry');
    retry.type = 'button';
    retry.addEventListener('click', () => send(m));
    note.append(retry);
    li.append(note);
  }
  return li;
}

// newId names a message so the page recognises it when it comes back.
// crypto.randomUUID needs a secure context; a demo reached over plain http
// on a LAN address is not one.
function newId() {
  if (crypto.randomUUID && isSecureContext) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function send(msg) {
  msg.status = 'sending';
  msg.error = '';
  mine.set(msg.cid, msg);
  sentCids.add(msg.cid);
  renderMessages();
  ft.publish(topicOf(msg.room), {nick: msg.nick, text: msg.text, at: msg.at, cid: msg.cid}).then(
    () => {
      // Accepted by the node; "delivered" once it comes back to us.
      if (msg.status === 'sending') msg.status = 'sent';
      renderMessages();
    },
    (err) => {
      // The connection can drop after the message came back but before
      // the ack did: it was delivered all the same.
      if (msg.status === 'delivered') return;
      mine.delete(msg.cid);
      msg.status = 'failed';
      msg.error = err.code === 'disconnected' || err.code === 'timeout' ? 'connection lost' : err.message;
      renderMessages();
    },
  );
}

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('text').value.trim();
  if (!text || !room) return;
  $('text').value = '';
  const msg = {nick: nick(), text, at: Date.now(), cid: newId(), own: true, room};
  keep(room, msg);
  send(msg);
});

join(decodeURIComponent(location.hash.slice(1)) || ROOMS[0]);
