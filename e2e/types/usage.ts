// Compiled (never run) by types.test.mjs: the declarations in
// js/firetower.d.ts must accept real use and refuse misuse.
import fire, {connect, FiretowerError, type Client, type State, type PublishAck, type MessageMeta, type RecoveryFailure, type StreamPosition, type History, type Presence, type ConnInfo, type JoinFrame, type LeaveFrame} from 'firetower';

interface ChatMessage { nick: string; text: string }

const ft: Client = connect('/ws', {batch: true, pingInterval: 25000, requestTimeout: 5000});
const off: () => void = ft.on<ChatMessage>('/chat/world', (m, frame) => {
  const who: string = m.nick;
  const topic: string = frame.topic;
  void who; void topic;
});
off();
// History topics: the handler learns the offset and whether it was recovered.
ft.on<ChatMessage>('/chat/world', (m, frame, meta: MessageMeta) => {
  const at: number | undefined = meta.offset ?? frame.offset;
  const epoch: string | undefined = meta.epoch;
  const late: boolean = meta.recovered;
  void m; void at; void epoch; void late;
});
const offRecovery: () => void = ft.onRecoveryFailed((topic: string, f: RecoveryFailure) => {
  const from: StreamPosition = f.since;
  const now: number | undefined = f.offset;
  void topic; void from; void now;
});
offRecovery();
const offJoin: () => void = ft.onJoin('/chat/world', (user: string, info: ConnInfo, frame: JoinFrame) => {
  const name = info.name;
  const t: 'join' = frame.type;
  void user; void name; void t;
});
const offLeave: () => void = ft.onLeave('/chat/world', (user: string, frame: LeaveFrame) => {
  const t: string = frame.topic;
  void user; void t;
});
offJoin(); offLeave();
const offUser: () => void = ft.onMessage<{text: string}>((d) => { const t: string = d.text; void t; });
offUser();
const pos: StreamPosition | undefined = ft.position('/chat/world');
if (pos) { const e: string = pos.epoch; const o: number = pos.offset; void e; void o; }
ft.onState((s: State, d) => { const n: number = d.attempt; void s; void n; });
ft.onError((e) => { if (e instanceof FiretowerError) { const c: string = e.code; void c; } });
ft.onFrame((f) => { const t: string = f.type; void t; });
async function use(): Promise<void> {
  const topics: string[] = await ft.subscribe(['/chat/world', '/chat/2']);
  await ft.subscribe('/a');
  const ack: PublishAck = await ft.publish<ChatMessage>('/chat/world', {nick: 'a', text: 'b'});
  const id: string = ack.messageId;
  await ft.unsubscribe('/chat/2');
  const h: History<ChatMessage> = await ft.history<ChatMessage>('/chat/world', {limit: 50});
  for (const m of h.messages) { const t: string = m.data.text; const o: number = m.offset; const mid: string = m.id; void t; void o; void mid; }
  const top: number = h.offset;
  const more = await ft.history('/chat/world', {since: {epoch: h.epoch, offset: top}});
  await ft.history('/chat/world');
  void more;
  const who: Presence = await ft.presence('/chat/world');
  for (const c of who.clients) { const u: string = c.user; const conn: string = c.conn; const info: ConnInfo = c.info; void u; void conn; void info; }
  const counts: number = who.users + who.connections;
  void counts;
  const sent: boolean = ft.send({type: 'typing', topic: '/chat/world'});
  void topics; void id; void sent;
  ft.close();
}
void use;

// The plain-script form.
const viaGlobal: Client = globalThis.firetower.connect();
const viaDefault: Client = fire.connect('ws://h/ws');
void viaGlobal; void viaDefault;

// Misuse the declarations must reject.
// @ts-expect-error topics are strings
ft.subscribe(42);
// @ts-expect-error the state is read-only
ft.state = 'open';
// @ts-expect-error no such state
const bad: State = 'gone';
// @ts-expect-error publish needs a topic
ft.publish();
// @ts-expect-error options are checked
connect('/ws', {pingIntervall: 1});
// @ts-expect-error a position may be missing
const sure: StreamPosition = ft.position('/a');
// @ts-expect-error a failure is never recovered
const fine: RecoveryFailure = {recovered: true, since: {epoch: 'E', offset: 1}};
ft.on('/a', (d, f, meta) => {
  // @ts-expect-error the offset is a number, when there is one
  const s: string = meta.offset;
  void d; void f; void s;
});
// @ts-expect-error since is a position, not an offset
ft.history('/a', {since: 17});
// @ts-expect-error history options are checked
ft.history('/a', {limt: 5});
// @ts-expect-error presence needs a topic
ft.presence();
// @ts-expect-error a leave carries no info
ft.onLeave('/a', (user: string, info: ConnInfo) => { void user; void info; });
// @ts-expect-error onJoin is per topic
ft.onJoin((user: string) => { void user; });
void bad; void sure; void fine;
