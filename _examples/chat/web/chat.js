// The chat page. Everything a user typed reaches the DOM through textContent,
// never as markup: a message like <img src=x onerror=...> shows as typed.
// Nothing a message holds can stop the page: a message of another shape is
// skipped, each field is checked before it is used, and one message that
// fails to render is shown as plain text without the others failing.
import {connect} from '/firetower.mjs';

const ROOMS = ['world', '2'];
const ROOM_NAME = /^[A-Za-z0-9_-]{1,32}$/;
const MAX_KEPT = 200; // messages kept per room

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const topicOf = (room) => '/chat/' + room;
// The room's count: only the server publishes to /online/... (its
// ReadHandler refuses client publishes outside /chat/), so a user's
// message in the room cannot pass for it.
const onlineOf = (room) => '/online/chat/' + room;

// A message that cannot be sent within 5 s is marked as not sent, with a
// retry button, rather than left spinning.
const ft = connect('/ws', {requestTimeout: 5000});
// For a console session and for the browser tests.
window.chat = {ft};

// --- nickname ---

const nickInput = $('nick');
nickInput.value = localStorage.getItem('firetower.nick') || 'guest-' + Math.random().toString(36).slice(2, 6);
nickInput.addEventListener('change', () => {
  nickInput.value = nickInput.value.trim().slice(0, 24) || 'guest';
  localStorage.setItem('firetower.nick', nickInput.value);
});
const nick = () => nickInput.value.trim() || 'guest';

// --- connection state ---

const stateBox = $('state');
const stateText = $('state-text');
let wasOpen = false;
ft.onState((state, d) => {
  stateBox.dataset.state = state;
  if (state === 'open') {
    stateText.textContent = 'connected';
    if (wasOpen) system('reconnected');
    wasOpen = true;
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

// Per room: the messages received while in it, so switching back shows them.
const rooms = new Map();
let room = null;
let offMessages = null;
let offOnline = null;
let online = {room: null, count: null};

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

// A count is a non-negative safe integer; anything else is not one.
const isCount = (n) => Number.isSafeInteger(n) && n >= 0;

function setOnline(r, count) {
  online = {room: r, count};
  $('online').textContent = count === null ? '' : `${count} online`;
  $('online').dataset.count = count === null ? '' : String(count);
}

async function join(name) {
  if (!ROOM_NAME.test(name)) name = ROOMS[0];
  if (name === room) return;
  const prev = room;
  room = name;
  if (!rooms.has(name)) rooms.set(name, []);
  if (offMessages) offMessages();
  if (offOnline) offOnline();
  offMessages = ft.on(topicOf(name), (data, frame) => guard(() => receive(name, data, frame)));
  offOnline = ft.on(onlineOf(name), (data) => guard(() => {
    if (name === room && data && data.type === 'online' && isCount(data.count)) setOnline(name, data.count);
  }));
  $('room-title').textContent = '#' + name;
  $('topic').textContent = topicOf(name);
  setOnline(name, null);
  renderRooms();
  renderMessages();
  if (decodeURIComponent(location.hash.slice(1)) !== name) history.replaceState(null, '', '#' + name);
  if (prev) ft.unsubscribe([topicOf(prev), onlineOf(prev)]).catch(() => {});
  try {
    await ft.subscribe([topicOf(name), onlineOf(name)]);
  } catch (err) {
    // While the connection is down the room stays wanted and is joined as
    // soon as it is back; only a refusal is worth telling.
    if (room === name && err.code !== 'timeout' && err.code !== 'closed') system(`could not join #${name}: ${err.message}`);
    return;
  }
  if (room !== name) return;
  // The server publishes the count whenever someone joins or leaves; ask
  // once too, in case that update raced the subscription.
  try {
    const res = await fetch('/topics/' + encodeURIComponent(topicOf(name)) + '/count');
    const body = await res.json();
    if (room === name && online.count === null && isCount(body.count)) setOnline(name, body.count);
  } catch { /* the pushed count will do */ }
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

// receive takes a chat line from the room: an object with a string text.
// Counts never come from here (see onlineOf), and anything else is skipped.
function receive(name, data, frame) {
  if (!data || typeof data !== 'object' || Array.isArray(data) || typeof data.text !== 'string') return;
  const msg = {
    nick: typeof data.nick === 'string' && data.nick ? data.nick.slice(0, 24) : 'anonymous',
    text: data.text.slice(0, 2000),
    at: isTime(data.at) ? data.at : Date.now(),
    cid: typeof data.cid === 'string' ? data.cid : '',
    id: frame && typeof frame.id === 'string' ? frame.id : '',
    status: 'delivered',
  };
  const own = msg.cid ? mine.get(msg.cid) : undefined;
  if (own) {
    // Our own message came back through the server: it reached the room.
    mine.delete(msg.cid);
    own.status = 'delivered';
    own.id = msg.id;
    if (name === room) renderMessages();
    return;
  }
  keep(name, msg);
}

function keep(name, msg) {
  const list = rooms.get(name);
  list.push(msg);
  if (list.length > MAX_KEPT) list.splice(0, list.length - MAX_KEPT);
  if (name === room) renderMessages();
}

function system(text) {
  if (room) keep(room, {system: true, text, at: Date.now()});
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
  for (const m of rooms.get(room) || []) {
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
  if (m.system) return el('li', 'system', m.text);
  const li = el('li', 'msg ' + m.status + (m.own ? ' own' : ''));
  li.dataset.status = m.status;
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
