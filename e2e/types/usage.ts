// Compiled (never run) by types.test.mjs: the declarations in
// js/firetower.d.ts must accept real use and refuse misuse.
import fire, {connect, FiretowerError, type Client, type State, type PublishAck} from 'firetower';

interface ChatMessage { nick: string; text: string }

const ft: Client = connect('/ws', {batch: true, pingInterval: 25000, requestTimeout: 5000});
const off: () => void = ft.on<ChatMessage>('/chat/world', (m, frame) => {
  const who: string = m.nick;
  const topic: string = frame.topic;
  void who; void topic;
});
off();
ft.onState((s: State, d) => { const n: number = d.attempt; void s; void n; });
ft.onError((e) => { if (e instanceof FiretowerError) { const c: string = e.code; void c; } });
ft.onFrame((f) => { const t: string = f.type; void t; });
async function use(): Promise<void> {
  const topics: string[] = await ft.subscribe(['/chat/world', '/chat/2']);
  await ft.subscribe('/a');
  const ack: PublishAck = await ft.publish<ChatMessage>('/chat/world', {nick: 'a', text: 'b'});
  const id: string = ack.messageId;
  await ft.unsubscribe('/chat/2');
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
void bad;
