//go:build redis

// Package redis is a firetower broker on Redis, for clusters of nodes that
// share a Redis they already operate (one server, Sentinel, or Redis
// Cluster). It is compiled only with -tags redis.
//
// # Choosing it
//
// Pick Redis over the firetower topic service when you already run a highly
// available Redis (Sentinel or Cluster) and want no extra service to deploy,
// or when the message rate outgrows one topic service process: on Redis
// Cluster the channels are spread over the masters with sharded pub/sub.
// Stay with the topic service (the default) for a single node (it runs
// in-process, with no network hop), when you have no Redis, or when nodes
// must learn of a dead peer within 5 s instead of 10 s.
//
// # URLs
//
// The package registers these schemes with broker.Open (and so with
// FIRETOWER_BROKER):
//
//	redis://[user:password@]host:port/db         one server
//	rediss://...                                 the same over TLS
//	redis+cluster://host1:port1?addr=host2:port2&addr=host3:port3
//	                                             Redis Cluster (sharded pub/sub)
//	rediss+cluster://...                         the same over TLS
//	redis+sentinel://host1:26379?addr=host2:26379&master_name=mymaster
//	                                             Sentinel (rediss+sentinel too)
//
// Besides go-redis's own query parameters (dial_timeout, read_timeout,
// pool_size, ...), the query may carry prefix=NAME (Options.Prefix). Unless
// the URL says otherwise, clients opened from a URL dial once with a 1 s
// timeout, read and write with 2 s timeouts and never retry a command, so
// that a Redis outage is reported quickly and a publish is never sent twice.
//
// # Layout in Redis
//
// With the default prefix "firetower":
//
//	firetower:t:TOPIC            pub/sub channel of TOPIC (one server, Sentinel)
//	firetower:t:{N}:TOPIC        sharded channel of TOPIC on Redis Cluster; N is a
//	                             hash of TOPIC modulo Options.Shards, so each node
//	                             needs at most Shards pub/sub connections
//	{firetower}:n:NODE           hash TOPIC -> count of NODE's subscribers, expires
//	                             NodeTTL after NODE's last heartbeat
//	{firetower}:hb:NODE          NODE's last heartbeat (Unix ms), same expiry
//	{firetower}:nodes            sorted set of node ids, scored by heartbeat time
//	firetower:e:TOPIC            hash of TOPIC's stream (broker.Streamer): e epoch,
//	                             top offset of the newest message, size and ttl
//	                             (ms) of the latest publish, exp when the oldest
//	                             message expires (Unix ms)
//	firetower:s:TOPIC            Redis Stream of TOPIC's kept messages: entry id
//	                             OFFSET-0, fields t (publish time, Unix ms) and m
//	                             (uvarint id length, id, data)
//	firetower:pc:TOPIC           hash of TOPIC's presence (broker.Presencer): conn ->
//	                             entry (JoinLeave flag, node, user, info)
//	firetower:pu:TOPIC           hash of TOPIC's users: user -> number of their
//	                             connections in TOPIC (users other than "")
//	firetower:pn:NODE            set of NODE's presence entries, each the topic's
//	                             length, ':', the topic and the conn
//	firetower:pl                 sorted set of pending leaves (the topic's length,
//	                             ':', the topic, the user), scored by when they
//	                             are due (Unix ms, Redis's clock)
//	firetower:pr                 sorted set of the nodes holding presence entries,
//	                             scored by when they are dead unless they beat again
//
// On Redis Cluster the stream keys are firetower:e:{N}:TOPIC and
// firetower:s:{N}:TOPIC: the hash tag of the topic's channel, so both keys
// and the channel are in one slot. Both keys expire TTL after the stream's
// latest publish. The presence keys are per slot group the same way:
// firetower:pc:{N}:TOPIC, firetower:pu:{N}:TOPIC, firetower:pn:{N}:NODE,
// firetower:pl:{N} and firetower:pr:{N}, so that a topic's presence, the
// group's pending leaves and registry and the topic's channel are in one
// slot. The presence keys have no expiry: their nodes remove them, or the
// sweeps do when a node dies.
//
// The count keys share the hash tag {PREFIX}, so on Redis Cluster they live
// on one master and a count is one pipeline; the pub/sub traffic, which is
// the load, is spread over all masters.
//
// A message is published as one binary-safe string: a version byte (1), the
// length of the message id as a uvarint, the id, then the data bytes as
// published. A stream message is version 2: the version byte (2), its
// offset as a uvarint, the epoch's length as a uvarint, the epoch, then the
// rest as in version 1. Nodes read both.
//
// # Streams
//
// PublishStream runs one Lua script (EVALSHA, EVAL when Redis lost its
// script cache) in the slot of the topic: it reads the epoch and top, or
// starts a new epoch when the hash is missing, drops the messages older
// than the TTL when some may be, appends the message at offset top+1 with
// XADD MAXLEN ~ size, renews both keys' expiry and (S)PUBLISHes the
// version 2 message. Redis runs a script alone, so offsets have no gap or
// reuse whichever node publishes, a node subscribed before the script ran
// gets the message, a History after it holds it, and each node gets a
// stream's messages in offset order. XADD trims whole nodes of the Redis
// Stream, so it may keep up to one node (100 entries or about 4 KB) more
// than the size; History returns the newest size of them. History is a
// script too: it starts a missing stream (the hash, expiring after the
// query's TTL) so that the position it answers stays valid for the next
// publish. A stream whose hash or messages Redis lost, or that had no
// publish for its TTL, starts again in a new epoch at offset 1. Streams
// live as long as Redis keeps them: they survive node restarts, and a
// Sentinel or Cluster failover for what the replica had received (Redis
// replicates asynchronously). Changing Prefix or Shards moves the keys:
// every stream starts again.
//
// # Presence
//
// Every change of a topic's presence is one Lua script in the topic's
// slot (AddPresence and RemovePresence pipeline one per topic): it
// changes the entry and the user's count and decides the event, so that
// nodes racing on a topic make exactly one join and one leave per user.
// A user's first connection publishes the join (with JoinLeave, and
// unless a leave of the user was pending, which it cancels instead); the
// last one's removal publishes the leave at once with no Grace, or adds
// it to the pending leaves. The events are (S)PUBLISHed by the script in
// the encoding of a plain message, so that they reach the topic's
// subscribers in the order the scripts ran. An entry added again replaces
// the one of the same conn, whichever node had it, and counts the user
// change.
//
// Every node sweeps every slot group every 500 ms with one script per
// group: it publishes the pending leaves that came due, of users still
// without a connection, and removes the entries of dead nodes. A node
// holding entries in a group keeps a deadline in the group's registry
// (firetower:pr), moved by each of its heartbeats (every NodeTTL/5) and
// each AddPresence to NodeTTL less a sweep interval ahead; once the
// deadline passed, the first sweep removes the node's entries, at most
// 1000 per script call, and publishes at once the leaves of the users
// left with no connection (the node was silent long enough). A killed
// node's presence is thus gone, and its leaves sent, within NodeTTL of its
// last heartbeat (10 s by default, at most 15 s), plus the time to remove
// many entries (a sweep goes on for 300 ms, and at the next sweep).
// Deadlines are in Redis's clock, so the nodes' clocks do not matter. Close removes the node's entries as
// RemovePresence does (their leaves come after their grace, from any
// node's sweep) and leaves the registries; what it could not remove is
// left to the sweeps.
//
// The node keeps its entries in memory, which is the truth Redis mirrors.
// It adds them again (with the same script, which changes nothing for an
// entry Redis holds) for a slot group after the group's pub/sub
// connection was lost, and when its heartbeat or an AddPresence finds it
// not alive in the group's registry: Redis restarted without its data, or the node, silent
// for NodeTTL (a partition, a long pause), was declared dead and its
// entries removed with their leaves. A user whose count was gone is then
// announced by a new join: after a declared death that follows the
// leave; after Redis lost its data the subscribers may get a join of a
// user they knew present (and the leaves pending in Redis are lost).
// Removals that failed are retried by the node until Redis confirms them.
//
// Presence answers in one MULTI the sizes of the topic's two hashes and,
// with a limit, that many distinct entries by HRANDFIELD, which costs
// O(limit) rather than O(entries).
//
// # Guarantees
//
// Subscribe returns once Redis confirmed the subscription. Publishes queued
// while a pipeline is in flight go out together in the next one, in order,
// so one publisher's messages to one topic arrive in order. Counts set on a
// node are written within FlushInterval (250 ms by default) and read back at
// once on that node; a node that dies without Close stops counting within
// NodeTTL (10 s by default) and leaves the node list then. When Redis
// restarts, the node reconnects, subscribes again to every topic it still
// wants and writes its counts and presence entries again, by itself. While
// Redis is down, Publish, PublishStream, History, Subscribe, Count and the
// presence calls fail within Timeout with errors wrapping
// broker.ErrUnavailable (a PublishStream that timed out may have been
// appended). Messages published while a node was
// disconnected are lost for it (delivery is at most once); a stream's stay
// in its history, which is what a node recovers from. The pub/sub connections are
// read by their own goroutines into a bounded queue in front of the node's
// handler: a handler that falls behind by more than Options.DeliveryQueue
// loses the newest messages (logged), and never delays subscriptions,
// publishes or counts. The queue keeps the order of one connection, so the
// stream messages a node is handed are in offset order, with a gap where
// one was dropped.
package redis

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
)

// Options configure a Broker. Zero values mean the documented defaults.
type Options struct {
	// Prefix namespaces every key and channel the broker uses, so that
	// several applications can share one Redis. It must not contain '{',
	// '}' or whitespace. Default "firetower".
	Prefix string
	// NodeID names this node in Redis; it must be unique in the cluster.
	// Default: a random UUID.
	NodeID string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// NodeTTL is how long the counts of a node that stopped heartbeating
	// keep counting. The node heartbeats every NodeTTL/5. At most 15 s.
	// Default 10 s.
	NodeTTL time.Duration
	// FlushInterval is how often changed counts are written to Redis. At
	// most 1 s. Default 250 ms.
	FlushInterval time.Duration
	// Timeout bounds each Redis round trip made for a caller (Publish,
	// PublishStream, History, Subscribe, Count, Topics, Nodes, the
	// presence calls; those adding or removing more than 512 entries make
	// one round trip per 512) and for the broker's own writes. Default 2 s.
	Timeout time.Duration
	// Shards is, on Redis Cluster, the number of groups the topics' sharded
	// channels are hashed into; each group lives on one master and costs
	// the node at most one pub/sub connection. All nodes of a cluster must
	// use the same value. Ignored elsewhere. Default 16.
	Shards int
	// QueueSize is how many publishes may wait for the sender before
	// Publish waits for room. Default 4096.
	QueueSize int
	// DeliveryQueue is how many received messages may wait for the node's
	// handler, and DeliveryQueueBytes how many bytes of data. A message
	// that finds the queue full is dropped and the drop is logged: a slow
	// handler loses messages rather than stalling the subscriptions.
	// Defaults 16384 messages and 64 MiB.
	DeliveryQueue      int
	DeliveryQueueBytes int64
}

const (
	maxNodeTTL       = 15 * time.Second
	maxFlushInterval = time.Second
	// A pipeline carries at most this many publishes or about this many
	// payload bytes, so one huge batch cannot hold up the next for long.
	maxBatch      = 512
	maxBatchBytes = 4 << 20
)

func (o Options) withDefaults() (Options, error) {
	if o.Prefix == "" {
		o.Prefix = "firetower"
	}
	if strings.ContainsAny(o.Prefix, "{} \t\r\n") {
		return o, fmt.Errorf("firetower: redis broker: prefix %q must not contain braces or whitespace", o.Prefix)
	}
	if o.NodeID == "" {
		o.NodeID = uuid.NewString()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NodeTTL == 0 {
		o.NodeTTL = 10 * time.Second
	}
	if o.NodeTTL < 500*time.Millisecond || o.NodeTTL > maxNodeTTL {
		return o, fmt.Errorf("firetower: redis broker: NodeTTL %v out of range [500ms, %v]", o.NodeTTL, maxNodeTTL)
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 250 * time.Millisecond
	}
	if o.FlushInterval < 0 || o.FlushInterval > maxFlushInterval {
		return o, fmt.Errorf("firetower: redis broker: FlushInterval %v out of range (0, %v]", o.FlushInterval, maxFlushInterval)
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Timeout < 0 {
		return o, fmt.Errorf("firetower: redis broker: negative Timeout %v", o.Timeout)
	}
	if o.Shards == 0 {
		o.Shards = 16
	}
	if o.Shards < 0 || o.Shards > 1024 {
		return o, fmt.Errorf("firetower: redis broker: Shards %d out of range [1, 1024]", o.Shards)
	}
	if o.QueueSize == 0 {
		o.QueueSize = 4096
	}
	if o.QueueSize < 0 {
		return o, fmt.Errorf("firetower: redis broker: negative QueueSize %d", o.QueueSize)
	}
	if o.DeliveryQueue == 0 {
		o.DeliveryQueue = 16384
	}
	if o.DeliveryQueueBytes == 0 {
		o.DeliveryQueueBytes = 64 << 20
	}
	if o.DeliveryQueue < 0 || o.DeliveryQueueBytes < 0 {
		return o, fmt.Errorf("firetower: redis broker: negative DeliveryQueue %d or DeliveryQueueBytes %d", o.DeliveryQueue, o.DeliveryQueueBytes)
	}
	return o, nil
}

// Broker is a broker.Broker on Redis. Create it with New or broker.Open.
type Broker struct {
	client     goredis.UniversalClient
	ownsClient bool
	opts       Options
	log        *slog.Logger
	// sharded selects SSUBSCRIBE/SPUBLISH, for Redis Cluster.
	sharded bool

	chanPrefix string // PREFIX + ":t:"
	nodesKey   string
	countsKey  string // this node's
	hbKey      string // this node's

	readers []*reader
	queue   chan *pubReq
	counts  counts

	pkeys    []presenceKeys // per slot group, as readers
	presence presence

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	// Messages read and not yet handled, over all readers, and the drops
	// since the last warning about them.
	pendingMsgs, pendingBytes atomic.Int64
	drops                     atomic.Int64
	lastDropWarn              atomic.Int64 // Unix ns

	mu      sync.Mutex
	handler broker.Handler
	closed  atomic.Bool
	lastHB  atomic.Int64 // Unix ms of the last successful heartbeat

	stats stats
}

var (
	_ broker.Broker = (*Broker)(nil)

	_ broker.BatchSubscriber   = (*Broker)(nil)
	_ broker.BatchUnsubscriber = (*Broker)(nil)
	_ broker.TopicLister       = (*Broker)(nil)
	_ broker.NodeLister        = (*Broker)(nil)
	_ broker.Presencer         = (*Broker)(nil)

	_ broker.StatsReporter = (*Broker)(nil)
)

// New returns a broker that uses client, which may be a *goredis.Client
// (one server or Sentinel, see goredis.NewFailoverClient) or a
// *goredis.ClusterClient (sharded pub/sub). The caller keeps ownership of
// client: Close leaves it open. The client's settings bound how quickly an
// outage is reported: set ContextTimeoutEnabled so that Options.Timeout
// applies to every command, and DialerRetries to 1, or a refused
// connection is retried with backoff for seconds. Set MaxRetries to -1: a
// retried pipeline of publishes may deliver a message twice. Clients
// opened from a URL get these settings.
func New(client goredis.UniversalClient, opts Options) (*Broker, error) {
	if client == nil {
		return nil, errors.New("firetower: redis broker: nil client")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	_, sharded := client.(*goredis.ClusterClient)
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		client:     client,
		opts:       o,
		log:        o.Logger.With("broker", "redis", "node", o.NodeID),
		sharded:    sharded,
		chanPrefix: o.Prefix + ":t:",
		nodesKey:   "{" + o.Prefix + "}:nodes",
		countsKey:  countsKey(o.Prefix, o.NodeID),
		hbKey:      hbKey(o.Prefix, o.NodeID),
		queue:      make(chan *pubReq, o.QueueSize),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	b.counts.init()
	n := 1
	if sharded {
		n = o.Shards
	}
	b.readers = make([]*reader, n)
	b.pkeys = make([]presenceKeys, n)
	for i := range b.readers {
		prefix, tag := b.chanPrefix, ""
		if sharded {
			// The hash tag puts every channel of the group in one slot,
			// so the group's channels share one connection to one master.
			tag = fmt.Sprintf("{%d}:", i)
			prefix = b.chanPrefix + tag
		}
		b.readers[i] = newReader(b, prefix)
		b.readers[i].group = i
		b.pkeys[i] = newPresenceKeys(o.Prefix, prefix, tag, o.NodeID)
	}
	b.presence.init(n)
	return b, nil
}

func countsKey(prefix, node string) string { return "{" + prefix + "}:n:" + node }
func hbKey(prefix, node string) string     { return "{" + prefix + "}:hb:" + node }

// sumKey holds the node's connections summed over its topics, written
// with each heartbeat, so that listing nodes needs no pass over the
// node's counts.
func sumKey(prefix, node string) string { return "{" + prefix + "}:sum:" + node }

// NodeID returns the id under which the node appears in Redis.
func (b *Broker) NodeID() string { return b.opts.NodeID }

// route returns the reader that carries topic and the topic's channel.
func (b *Broker) route(topic string) (*reader, string) {
	r := b.readers[b.groupOf(topic)]
	return r, r.prefix + topic
}

// fnv32a hashes a topic to its slot group: FNV rather than a seeded hash,
// since every node must pick the same group for a topic.
func fnv32a(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// Start implements broker.Broker.
func (b *Broker) Start(h broker.Handler) error {
	if h == nil {
		return errors.New("firetower: redis broker: nil handler")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if b.handler != nil {
		return errors.New("firetower: redis broker: started twice")
	}
	b.handler = h
	for _, r := range b.readers {
		b.wg.Add(2)
		go r.run()
		go r.deliverLoop()
	}
	b.wg.Add(4)
	go b.sender()
	go b.maintain()
	go b.watchReaders()
	go b.presenceLoop()
	return nil
}

// ready reports whether the broker can take calls.
func (b *Broker) ready() error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	b.mu.Lock()
	started := b.handler != nil
	b.mu.Unlock()
	if !started {
		return errors.New("firetower: redis broker: not started")
	}
	return nil
}

// opCtx bounds a caller's operation by Options.Timeout.
func (b *Broker) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.opts.Timeout)
}

// fail turns the error of a Redis operation made for a caller into the
// broker's errors: ErrClosed after Close, the caller's own context error if
// the caller gave up, and otherwise ErrUnavailable, except for a key that
// holds another type than the broker's (WRONGTYPE): that is no outage, and
// retrying does not help.
func (b *Broker) fail(caller context.Context, op string, err error) error {
	switch {
	case b.closed.Load():
		return fmt.Errorf("firetower: redis broker: %s: %w", op, broker.ErrClosed)
	case caller.Err() != nil:
		return fmt.Errorf("firetower: redis broker: %s: %w", op, caller.Err())
	case goredis.HasErrorPrefix(err, "WRONGTYPE"):
		return fmt.Errorf("firetower: redis broker: %s: a key of the broker's holds something else: %w", op, err)
	}
	return fmt.Errorf("%w: redis %s: %w", broker.ErrUnavailable, op, err)
}

// Close implements broker.Broker. It withdraws the node's counts from Redis
// at once, so other nodes stop counting them, removes the node's presence
// entries (their leaves follow after their grace), and closes the client if
// the broker opened it from a URL. It waits for a handler call in progress
// to return; no call starts after Close returns.
func (b *Broker) Close() error { return b.shutdown(true) }

// shutdown stops the broker; without goodbye it leaves Redis as it is, as
// a crashed node would.
func (b *Broker) shutdown(goodbye bool) error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(b.done)
	for _, r := range b.readers {
		r.close()
	}
	b.cancel()
	b.wg.Wait()
	if !goodbye {
		if b.ownsClient {
			return b.client.Close()
		}
		return nil
	}

	b.withdrawPresence()
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.Timeout)
	defer cancel()
	tx := b.client.TxPipeline()
	tx.Del(ctx, b.countsKey, b.hbKey, sumKey(b.opts.Prefix, b.opts.NodeID))
	tx.ZRem(ctx, b.nodesKey, b.opts.NodeID)
	_, err := tx.Exec(ctx)
	if err != nil {
		// Not an error of Close: the keys expire by themselves.
		b.log.Warn("could not withdraw the node's counts; they expire by themselves", "after", b.opts.NodeTTL, "err", err)
	}
	if b.ownsClient {
		return b.client.Close()
	}
	return nil
}

// dropped counts a message dropped for a slow handler, and warns at most
// once a second.
func (b *Broker) dropped() {
	b.drops.Add(1)
	b.stats.dropped.Add(1)
	now := time.Now().UnixNano()
	if last := b.lastDropWarn.Load(); now-last > int64(time.Second) && b.lastDropWarn.CompareAndSwap(last, now) {
		b.log.Warn("the message handler is too slow; dropped messages", "count", b.drops.Swap(0))
	}
}

// sleep waits d or until Close; it reports whether the broker is still open.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.done:
		return false
	}
}
