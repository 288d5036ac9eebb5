// Type declarations for firetower.js (plain script, globalThis.firetower) and
// firetower.mjs (ES module). Wire protocol v1; see DESIGN.md section 3.

/** Connection state. `connecting` only before the first connection opens;
 * `reconnecting` covers both waiting out the backoff and dialling again. */
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface StateDetail {
  /** Consecutive failed attempts; 0 once a connection is open. */
  attempt: number;
  /** Milliseconds until the next attempt (state `reconnecting`). */
  delay?: number;
  /** WebSocket close code of the lost connection; 4000 means no pong came
   * in time; 4001 means the server disconnected this user (state `closed`:
   * the client does not reconnect). */
  code?: number;
  reason?: string;
}

/** A message on a subscribed topic, as the node sent it. */
export interface MessageFrame<T = unknown> {
  type: 'publish';
  topic: string;
  data: T;
  /** The message id the publisher got back. */
  id?: string;
  /** Its place in the topic's stream (1, 2, 3, ...), on topics that keep
   * history only. */
  offset?: number;
}

/** A message the server sent to this connection's user, on no topic
 * (Tower.PublishToUser, POST /publish with "users"). */
export interface UserMessageFrame<T = unknown> {
  type: 'message';
  data: T;
  /** The message id the publisher got back. */
  id: string;
}

/** A place in a topic's stream. The epoch changes whenever the node lost
 * the stream's continuity (its store restarted, or the stream expired);
 * offsets compare only within one epoch. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** What the handlers of `on` learn about a message besides its data. */
export interface MessageMeta {
  /** The message's offset; undefined on a topic without history. */
  offset?: number;
  /** The epoch of the stream the offset belongs to; undefined on a topic
   * without history. */
  epoch?: string;
  /** True for a message missed while disconnected and recovered when the
   * client subscribed again; such messages come in order, before any live
   * message of the topic. */
  recovered: boolean;
}

/** Argument of onRecoveryFailed: the client asked to recover a topic from
 * `since` and the node could not, so messages after `since` are lost to the
 * handlers. `epoch` and `offset` are where the stream stands now (live
 * messages go on from there); both are absent when the topic keeps no
 * history any more. */
export interface RecoveryFailure {
  epoch?: string;
  offset?: number;
  recovered: false;
  /** The position the client asked to recover from. */
  since: StreamPosition;
}

export interface HistoryOptions {
  /** At most this many messages, the newest (the node has a default and a
   * maximum). A positive integer. */
  limit?: number;
  /** Only the messages after this position. */
  since?: StreamPosition;
}

/** One message of a history reply. */
export interface HistoryMessage<T = unknown> {
  /** The message id the publisher got back. */
  id: string;
  offset: number;
  data: T;
}

/** The answer to `history`: the messages oldest first, and the stream's
 * position (its top) when the node read them. */
export interface History<T = unknown> {
  topic: string;
  epoch: string;
  offset: number;
  messages: HistoryMessage<T>[];
}

/** A connection's public info (Config.Authenticate's SetConnInfo), as
 * presence and joins show it: a JSON object, `{}` when it has none. */
export type ConnInfo = Record<string, unknown>;

/** One connection subscribed to a topic that keeps presence. */
export interface PresenceClient {
  /** The connection's id. */
  conn: string;
  /** Its user id; "" for an anonymous connection. */
  user: string;
  info: ConnInfo;
}

/** The answer to `presence`: who is subscribed to the topic, cluster-wide. */
export interface Presence {
  topic: string;
  /** Distinct user ids among the connections (anonymous ones not counted). */
  users: number;
  connections: number;
  /** The connections, at most 1,000 of them. */
  clients: PresenceClient[];
}

/** A user's first connection subscribed to a topic with joins and leaves. */
export interface JoinFrame {
  type: 'join';
  topic: string;
  user: string;
  info: ConnInfo;
}

/** A user's last connection to a topic with joins and leaves has gone (the
 * node waited out Config.PresenceGrace first). */
export interface LeaveFrame {
  type: 'leave';
  topic: string;
  user: string;
}

/** Any frame from the node: a message, a reply, or a custom frame. */
export interface ServerFrame {
  type: string;
  topic?: string | string[];
  data?: unknown;
  id?: string | number;
  code?: string;
  message?: string;
  messageId?: string;
  [key: string]: unknown;
}

/** What a client may send with `send`. */
export interface ClientFrame {
  type: string;
  topic?: string | string[];
  data?: unknown;
  id?: string | number;
  [key: string]: unknown;
}

export interface PublishAck {
  /** The id every subscriber sees on the message. */
  messageId: string;
  topic: string[];
}

export interface Options {
  /** Ask the node to batch frames (`?batch=1`). Default true. */
  batch?: boolean;
  /** Milliseconds between app-level pings while open. Default 25000. */
  pingInterval?: number;
  /** Milliseconds without any frame after a ping before the connection is
   * declared dead and replaced. Default 10000. */
  pingTimeout?: number;
  /** Milliseconds before subscribe/publish/unsubscribe/history/presence reject with
   * code `timeout`; 0 disables. Default 10000. */
  requestTimeout?: number;
  /** First reconnect delay in milliseconds; doubles per failed attempt. Default 500. */
  reconnectDelay?: number;
  /** Upper bound of the reconnect delay in milliseconds. Default 30000. */
  reconnectDelayMax?: number;
  /** Fraction of the delay taken off at random (0..1). Default 0.5. */
  jitter?: number;
  /** WebSocket constructor. Default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Timer functions, injectable for tests. Default the global ones. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  /** Source of randomness in [0, 1) for the jitter. Default Math.random. */
  random?: () => number;
  /** Object whose `online` event cuts a reconnect wait short; null to
   * disable. Default globalThis. */
  window?: { addEventListener(type: string, fn: () => void): void; removeEventListener(type: string, fn: () => void): void } | null;
}

/** The part of WebSocket the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: string }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** Rejection reason of the client's promises and argument of onError.
 * (Misuse, such as an empty topic, rejects with a TypeError instead.)
 * `code` is a node error code (`bad_request`, `forbidden`,
 * `too_many_topics`, `rate_limited`, `unavailable`) or one of the client's:
 * `disconnected`, `closed`, `timeout`, `bad_frame`, `connect`, `send`. */
export class FiretowerError extends Error {
  constructor(code: string, message: string, frame?: ServerFrame);
  code: string;
  /** The error frame from the node, when there was one. */
  frame?: ServerFrame;
  /** The topics the node named in the error. */
  topic?: string[];
}

export class Client {
  /** The ws(s) URL in use, with `batch=1` when batching. */
  readonly url: string;
  readonly state: State;

  /** Subscribe; resolves with the topics once the node confirmed. Survives
   * reconnects (the client subscribes again); rejects on an error reply (the
   * refused topics are dropped, the others stay subscribed), close() or the
   * request timeout. Topics stay wanted across reconnects until unsubscribed.
   * On topics that keep history the client remembers the position its
   * handlers reached, and each new connection asks the node for what came
   * after it: those messages reach the handlers in order, before the live
   * ones, never twice; when they are gone, onRecoveryFailed says so.
   * Unsubscribing forgets the position. */
  subscribe(topics: string | string[]): Promise<string[]>;
  unsubscribe(topics: string | string[]): Promise<string[]>;
  /** Publish; resolves when the node accepted the message. Rejects with code
   * `disconnected` when the connection dropped before the ack: delivery is at
   * most once, so the caller decides whether to send again. Made while not
   * connected, it is sent when the connection opens (within the timeout). */
  publish<T = unknown>(topic: string, data: T): Promise<PublishAck>;
  /** The messages a topic keeps, oldest first: the newest `limit`, or those
   * after `since`. Made while not connected, or cut off by a reconnect, it is
   * asked on the next connection (within the request timeout). Rejects with
   * the node's code: `forbidden` where a subscribe to the topic would be
   * refused, `bad_request` for a topic that keeps no history. Rejects with a
   * TypeError for an empty topic, a limit that is not a positive integer or
   * a `since` that is not a position. */
  history<T = unknown>(topic: string, options?: HistoryOptions): Promise<History<T>>;
  /** Who is subscribed to a topic that keeps presence. Made while not
   * connected, or cut off by a reconnect, it is asked on the next connection
   * (within the request timeout). Rejects with the node's code: `forbidden`
   * where a subscribe to the topic would be refused, `bad_request` for a
   * topic that keeps no presence, `unavailable` when the broker cannot tell;
   * with a TypeError for an empty topic. */
  presence(topic: string): Promise<Presence>;
  /** Calls fn for each join frame of the topic (a user's first connection
   * subscribed; this connection's own user included); returns a function
   * that removes it. Joins and leaves never reach the topic's `on`
   * handlers. */
  onJoin(topic: string, fn: (user: string, info: ConnInfo, frame: JoinFrame) => void): () => void;
  /** Calls fn for each leave frame of the topic (a user's last connection
   * has gone); returns a function that removes it. */
  onLeave(topic: string, fn: (user: string, frame: LeaveFrame) => void): () => void;
  /** Where the handlers of a topic that keeps history got to (the last
   * offset they were given, or the top the node reported when the
   * subscription took effect); undefined for a topic without history or not
   * subscribed. */
  position(topic: string): StreamPosition | undefined;
  /** Write a raw frame (e.g. a custom type for the node's ReadHandler);
   * false if not connected. */
  send(frame: ClientFrame): boolean;
  /** Handle messages of a topic, live and recovered alike; returns a function
   * that removes the handler. */
  on<T = unknown>(topic: string, fn: (data: T, frame: MessageFrame<T>, meta: MessageMeta) => void): () => void;
  /** Called at once with the current state, then on each change. */
  onState(fn: (state: State, detail: StateDetail) => void): () => void;
  /** Errors that belong to no request: refused resubscriptions, frames that
   * are not JSON, exceptions thrown by handlers. */
  onError(fn: (err: FiretowerError | Error) => void): () => void;
  /** Every frame from the node, batches unpacked (duplicates the handlers
   * never see included). */
  onFrame(fn: (frame: ServerFrame) => void): () => void;
  /** Calls fn for each message sent to this connection's user, with no
   * subscription needed; returns a function that removes it. */
  onMessage<T = unknown>(fn: (data: T, frame: UserMessageFrame<T>) => void): () => void;
  /** Called for each topic whose missed messages the node could not hand
   * over on a reconnect (its stream's epoch changed, the messages were
   * trimmed or expired, or the topic keeps no history any more): reload the
   * topic, e.g. with `history`. */
  onRecoveryFailed(fn: (topic: string, failure: RecoveryFailure) => void): () => void;
  /** The topics the client wants, re-subscribed on every reconnect. */
  topics(): string[];
  /** Close for good: no reconnect; pending promises reject with `closed`. */
  close(): void;
}

/** Connect to a node. `url` may be relative to the page (default `/ws`) or an
 * http(s)/ws(s) URL. */
export function connect(url?: string, options?: Options): Client;

export const version: string;

declare const firetower: {
  connect: typeof connect;
  Client: typeof Client;
  FiretowerError: typeof FiretowerError;
  version: string;
};
export default firetower;

declare global {
  /** Defined by loading firetower.js as a plain script. */
  var firetower: {
    connect: typeof connect;
    Client: typeof Client;
    FiretowerError: typeof FiretowerError;
    version: string;
  };
}
