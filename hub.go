package firetower

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
)

const (
	hubShards  = 64
	topicLocks = 256
)

// hub is the node's topic index: topic -> connections, sharded by topic
// so that publishes to different topics do not contend. (Conn.topics holds
// the other direction.) A publish visits only its topic's subscribers.
type hub struct {
	seed   maphash.Seed
	broker broker.Broker
	shards [hubShards]hubShard
	// locks serialise subscribe and unsubscribe of one topic together with
	// their broker calls, so that "first local subscriber" and "last one
	// left" are decided once, and a second subscriber never gets its reply
	// before the broker has the topic.
	locks [topicLocks]sync.Mutex
	// bare makes publish frames the bare data (firetower v0.x compatibility).
	bare  bool
	stats *stats
	// checkData makes deliver drop a message whose data is not valid JSON
	// in valid UTF-8, or whose id is not valid UTF-8: set for a broker
	// that is not in-process, which carries what other nodes, backends or
	// anyone with access to Redis sent.
	checkData bool
	log       *slog.Logger
	invalid   dropLog
	// options gives a topic's options (Tower.streamOptions): deliver asks
	// it, once per message and only for stream messages, whether the
	// topic is a latest-value one.
	options func(topic string) (TopicOptions, bool)
}

// Lock order, for the locks a delivery holds at once: the topic service
// core's shard lock (the embedded broker calls deliver under its read
// lock), then hubShard.mu (read), then each subscriber's send queue lock
// (sendQueue.qmu, writer.go). No code takes them in another order. The
// per-topic locks of hub.locks are taken before any of them and held
// across broker calls.
type hubShard struct {
	mu     sync.RWMutex
	topics map[string]*subscribers
}

// subscribers of one topic: a slice to iterate fast and positions for O(1)
// removal.
type subscribers struct {
	conns []*Conn
	pos   map[*Conn]int
}

func newHub(b broker.Broker, bare bool, st *stats) *hub {
	h := &hub{seed: maphash.MakeSeed(), broker: b, bare: bare, stats: st}
	for i := range h.shards {
		h.shards[i].topics = map[string]*subscribers{}
	}
	return h
}

func (h *hub) slot(topic string) uint64 { return maphash.String(h.seed, topic) }

func (h *hub) shard(topic string) *hubShard { return &h.shards[h.slot(topic)%hubShards] }

// lockTopics takes the per-topic locks of topics, each once and in
// ascending order, so that two frames with overlapping topics cannot
// deadlock; unlockTopics releases what it returns.
func (h *hub) lockTopics(topics []string) []uint16 {
	held := make([]uint16, len(topics))
	for i, topic := range topics {
		held[i] = uint16(h.slot(topic) % topicLocks)
	}
	slices.Sort(held)
	held = slices.Compact(held)
	for _, i := range held {
		h.locks[i].Lock()
	}
	return held
}

func (h *hub) unlockTopics(held []uint16) {
	for _, i := range held {
		h.locks[i].Unlock()
	}
}

// subscribe adds c to every one of topics (distinct), declaring the node's
// interest at the broker, in one call, in the topics of which c is the
// first local subscriber. It is all or nothing: on a broker error nothing
// changed.
func (h *hub) subscribe(ctx context.Context, c *Conn, topics []string) error {
	held := h.lockTopics(topics)
	defer h.unlockTopics(held)
	var need []string
	for _, topic := range topics {
		s := h.shard(topic)
		s.mu.RLock()
		_, known := s.topics[topic]
		s.mu.RUnlock()
		if !known {
			need = append(need, topic)
		}
	}
	if err := broker.SubscribeTopics(ctx, h.broker, need); err != nil {
		return err
	}
	for _, topic := range topics {
		s := h.shard(topic)
		s.mu.Lock()
		subs := s.topics[topic]
		// Internal topics (a connection's user topic) are not counted
		// in Stats.Topics and Stats.Subscriptions.
		counted := !isInternalTopic(topic)
		if subs == nil {
			subs = &subscribers{pos: map[*Conn]int{}}
			s.topics[topic] = subs
			if counted {
				h.stats.topics.Add(1)
			}
		}
		if _, dup := subs.pos[c]; !dup {
			subs.pos[c] = len(subs.conns)
			subs.conns = append(subs.conns, c)
			if counted {
				h.stats.subscriptions.Add(1)
			}
		}
		n := len(subs.conns)
		s.mu.Unlock()
		h.broker.SetCount(topic, n)
	}
	return nil
}

// unsubscribe removes c from every one of topics and withdraws the node's
// interest, in one call, in those c was the last local subscriber of.
// Broker errors are returned after the local state changed: the connection
// is unsubscribed either way.
func (h *hub) unsubscribe(ctx context.Context, c *Conn, topics []string) error {
	held := h.lockTopics(topics)
	defer h.unlockTopics(held)
	var gone []string
	for _, topic := range topics {
		s := h.shard(topic)
		s.mu.Lock()
		subs := s.topics[topic]
		if subs == nil {
			s.mu.Unlock()
			continue
		}
		i, ok := subs.pos[c]
		if !ok {
			s.mu.Unlock()
			continue
		}
		last := len(subs.conns) - 1
		moved := subs.conns[last]
		subs.conns[i] = moved
		subs.pos[moved] = i
		subs.conns[last] = nil
		subs.conns = subs.conns[:last]
		delete(subs.pos, c)
		counted := !isInternalTopic(topic)
		if counted {
			h.stats.subscriptions.Add(-1)
		}
		n := len(subs.conns)
		if n == 0 {
			delete(s.topics, topic)
			if counted {
				h.stats.topics.Add(-1)
			}
			gone = append(gone, topic)
		}
		s.mu.Unlock()
		h.broker.SetCount(topic, n)
	}
	return broker.UnsubscribeTopics(ctx, h.broker, gone)
}

// deliver is the broker.Handler: it encodes m once and queues the same
// bytes to every local subscriber of its topic.
func (h *hub) deliver(m broker.Message) {
	// Checked once per message, before any lock, never per subscriber.
	if h.checkData && !(validData(m.Data) && utf8.ValidString(m.ID)) {
		h.stats.droppedInvalid.Add(1)
		h.invalid.note(h.log, m.Topic)
		return
	}
	if m.ID == broker.JoinID || m.ID == broker.LeaveID {
		h.deliverPresence(m) // presence.go
		return
	}
	if isInternalTopic(m.Topic) {
		h.deliverUser(m) // users.go
		return
	}
	s := h.shard(m.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	subs := s.topics[m.Topic]
	if subs == nil {
		return
	}
	var frame []byte
	if h.bare {
		frame = m.Data
	} else {
		frame = appendPublishFrame(make([]byte, 0, len(m.Data)+len(m.Topic)+len(m.ID)+72), m.Topic, m.ID, m.Data, m.Offset)
	}
	now := time.Now()
	if m.Offset == 0 {
		for _, c := range subs.conns {
			c.enqueue(frame, now)
		}
	} else {
		// A stream message: each connection may be recovering the topic
		// or filtering what it recovered (streamqueue.go).
		opts, _ := h.options(m.Topic)
		sf := streamFrame{frame: frame, topic: m.Topic, epoch: m.Epoch, offset: m.Offset, latest: opts.Latest}
		for _, c := range subs.conns {
			c.enqueueStream(&sf, now)
		}
	}
	h.stats.delivered.Add(int64(len(subs.conns)))
}

// count returns the number of local subscribers of topic.
func (h *hub) count(topic string) int {
	s := h.shard(topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if subs := s.topics[topic]; subs != nil {
		return len(subs.conns)
	}
	return 0
}

// topics lists the topics with local subscribers and their counts,
// internal topics left out.
func (h *hub) topics() []broker.TopicCount {
	out := make([]broker.TopicCount, 0, h.stats.topics.Load())
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for name, subs := range s.topics {
			if isInternalTopic(name) {
				continue
			}
			out = append(out, broker.TopicCount{Topic: name, Count: len(subs.conns)})
		}
		s.mu.RUnlock()
	}
	return out
}

// dropLog logs dropped messages at a bounded rate: at most one line per
// dropLogEvery, with how many were dropped since the last line.
type dropLog struct {
	since atomic.Int64 // dropped since the last line
	last  atomic.Int64 // time of the last line, Unix nanoseconds
}

const dropLogEvery = time.Second

func (d *dropLog) note(log *slog.Logger, topic string) {
	d.since.Add(1)
	now := time.Now().UnixNano()
	last := d.last.Load()
	if now-last < int64(dropLogEvery) || !d.last.CompareAndSwap(last, now) {
		return
	}
	log.Warn("firetower: dropped messages from the broker whose data is not valid JSON in valid UTF-8", "dropped", d.since.Swap(0), "lastTopic", topic)
}
