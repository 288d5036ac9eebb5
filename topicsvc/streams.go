package topicsvc

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// The Core's streams (broker.Streamer): each topic published with
// PublishStream keeps its newest messages in memory, bounded three ways:
//
//   - by count: a stream keeps its Size newest messages;
//   - by age: a message is kept for TTL after its publish, and a stream
//     with no publish for TTL is forgotten (its next message starts a new
//     epoch at offset 1);
//   - by memory: all streams together hold at most MaxStreamBytes (data,
//     id and a fixed per-message overhead). Over it, the stream published
//     to least recently is forgotten first, whole; a stream that alone
//     holds more than the cap loses its oldest messages instead.
//
// A Core's epochs are random: a restarted service starts every stream in a
// new epoch, so no node mistakes the new offsets for the old.

// DefaultMaxStreamBytes is a Core's memory cap for streams.
const DefaultMaxStreamBytes = 256 << 20

// entryOverhead is what a kept message costs besides its data and id: the
// ring slot and the slice and string headers, rounded up.
const entryOverhead = 64

// sweepEvery is how often a Core forgets the streams whose TTL passed.
const sweepEvery = time.Second

// streamShard maps topics to streams. Lock order: streamShard.mu, then a
// stream's mu, then (while a stream publish delivers) a coreShard's read
// lock; the LRU lock is taken alone.
type streamShard struct {
	mu sync.Mutex
	m  map[string]*stream
}

// stream is one topic's kept messages: a ring of at most opts.Size.
type stream struct {
	topic string

	mu    sync.Mutex
	dead  bool // forgotten (expired or evicted): look the topic up again
	epoch string
	top   uint64
	opts  broker.StreamOptions
	last  int64 // Unix nanoseconds of the last publish (or the creation)
	ring  []entry
	head  int // index of the oldest entry in ring
	n     int // entries held
	bytes int64

	// The LRU list of the Core, guarded by Core.lruMu. gone is set when
	// the stream is forgotten, so that a late touch does not list it again.
	prev, next *stream
	listed     bool
	gone       bool
}

type entry struct {
	id     string
	data   []byte
	offset uint64
	at     int64 // Unix nanoseconds
}

func newEpoch() string { return strconv.FormatUint(rand.Uint64(), 36) }

func entrySize(id string, data []byte) int64 {
	return int64(len(id) + len(data) + entryOverhead)
}

// streamsState is the part of a Core that holds streams.
type streamsState struct {
	sshards  [coreShards]streamShard
	maxBytes atomic.Int64
	bytes    atomic.Int64
	messages atomic.Int64
	count    atomic.Int64 // streams
	evicted  atomic.Int64 // streams forgotten for the memory cap
	trimmed  atomic.Int64 // messages dropped for the memory cap
	expired  atomic.Int64 // streams forgotten for their TTL

	lruMu      sync.Mutex
	lruHead    *stream // most recently published
	lruTail    *stream // least recently published
	lastSweep  atomic.Int64
	sweeping   atomic.Bool
	nowForTest func() time.Time
}

func (c *Core) now() time.Time {
	if c.streams.nowForTest != nil {
		return c.streams.nowForTest()
	}
	return time.Now()
}

// SetMaxStreamBytes sets the memory cap of the Core's streams
// (DefaultMaxStreamBytes until set); n must be positive. Lowering it
// evicts at the next stream publish.
func (c *Core) SetMaxStreamBytes(n int64) {
	if n > 0 {
		c.streams.maxBytes.Store(n)
	}
}

func (c *Core) sshard(topic string) *streamShard {
	return &c.streams.sshards[c.slot(topic)%coreShards]
}

// lockStream returns topic's stream, locked, creating it with opts if
// there is none or the one there has expired at now.
func (c *Core) lockStream(topic string, opts broker.StreamOptions, now int64) *stream {
	return c.findStream(topic, &opts, now)
}

// findStream returns topic's stream, locked. If there is none, or the one
// there has expired at now, it creates one with *opts, or returns nil if
// opts is nil.
func (c *Core) findStream(topic string, opts *broker.StreamOptions, now int64) *stream {
	ss := c.sshard(topic)
	ss.mu.Lock()
	st := ss.m[topic]
	if st != nil {
		st.mu.Lock()
		if !st.dead && !st.idle(now) {
			ss.mu.Unlock()
			return st
		}
		if !st.dead {
			c.forget(st, &c.streams.expired)
		}
		st.mu.Unlock()
		if ss.m[topic] == st {
			delete(ss.m, topic)
		}
	}
	if opts == nil {
		ss.mu.Unlock()
		return nil
	}
	st = &stream{topic: topic, epoch: newEpoch(), opts: *opts, last: now}
	st.mu.Lock()
	ss.m[topic] = st
	ss.mu.Unlock()
	c.streams.count.Add(1)
	c.touchLRU(st)
	return st
}

// idle reports whether the stream had no publish for its TTL; st.mu held.
func (st *stream) idle(now int64) bool { return now-st.last > int64(st.opts.TTL) }

// forget marks st dead and releases what it holds; st.mu must be held.
// The caller removes it from its shard's map.
func (c *Core) forget(st *stream, why *atomic.Int64) {
	st.dead = true
	c.streams.bytes.Add(-st.bytes)
	c.streams.messages.Add(-int64(st.n))
	c.streams.count.Add(-1)
	st.ring, st.n, st.bytes = nil, 0, 0
	why.Add(1)
	c.unlistLRU(st)
}

// PublishStream appends m to the stream of m.Topic, kept as opts say
// (broker.Streamer), and delivers it to the listening nodes with its
// offset and epoch, in offset order. The Core keeps m.Data: the caller
// must not modify it afterwards, and should copy it out of a larger
// buffer it does not want kept.
func (c *Core) PublishStream(m broker.Message, opts broker.StreamOptions) broker.StreamPosition {
	pos, _ := c.PublishStreamCount(m, opts)
	return pos
}

// PublishStreamCount is PublishStream that also returns how many nodes
// the message reached, as Publish does.
func (c *Core) PublishStreamCount(m broker.Message, opts broker.StreamOptions) (broker.StreamPosition, int) {
	opts = normalOptions(opts)
	nowT := c.now()
	st := c.lockStream(m.Topic, opts, nowT.UnixNano())
	st.setOptions(c, opts)
	return c.appendLocked(st, m, nowT)
}

// PublishKept appends m to the stream of m.Topic, as PublishStreamCount
// does with the options the stream has, if the Core keeps a stream of
// that topic; otherwise it publishes nothing and reports false. The push
// API publishes with it, so that a backend's message to a topic with
// history goes into the history, as a node's does, without the backend
// knowing the topic's options.
func (c *Core) PublishKept(m broker.Message) (pos broker.StreamPosition, nodes int, ok bool) {
	nowT := c.now()
	st := c.findStream(m.Topic, nil, nowT.UnixNano())
	if st == nil {
		return broker.StreamPosition{}, 0, false
	}
	pos, nodes = c.appendLocked(st, m, nowT)
	return pos, nodes, true
}

// appendLocked appends m to st, whose mu is held, delivers it, and
// releases st.mu. It returns the message's position and how many nodes
// it reached.
func (c *Core) appendLocked(st *stream, m broker.Message, nowT time.Time) (broker.StreamPosition, int) {
	now := nowT.UnixNano()
	st.expire(c, now)
	st.top++
	m.Offset, m.Epoch = st.top, st.epoch
	size := entrySize(m.ID, m.Data)
	st.push(c, entry{id: m.ID, data: m.Data, offset: m.Offset, at: now}, size)
	st.last = now
	nodes := c.Publish(m) // under st.mu: deliveries in offset order
	pos := broker.StreamPosition{Epoch: st.epoch, Offset: st.top}
	st.mu.Unlock()
	c.touchLRU(st)
	c.enforceCap(st)
	c.maybeSweep(nowT)
	return pos, nodes
}

func normalOptions(o broker.StreamOptions) broker.StreamOptions {
	if o.Size < 1 {
		o.Size = 1
	}
	if o.TTL < time.Millisecond {
		o.TTL = time.Millisecond
	}
	return o
}

// setOptions applies a publish's options; st.mu held.
func (st *stream) setOptions(c *Core, o broker.StreamOptions) {
	st.opts.TTL = o.TTL
	if o.Size == st.opts.Size {
		return
	}
	for st.n > o.Size {
		st.dropOldest(c)
	}
	ring := make([]entry, min(max(st.n, 8), o.Size))
	for i := range st.n {
		ring[i] = st.ring[(st.head+i)%len(st.ring)]
	}
	st.ring, st.head, st.opts.Size = ring, 0, o.Size
}

// push appends e; st.mu held. The ring grows by doubling up to the size.
func (st *stream) push(c *Core, e entry, size int64) {
	if st.n == st.opts.Size {
		// The steady state of a full stream: the newest message takes
		// the oldest one's slot, and the figures change once, by the
		// difference, rather than twice each.
		old := &st.ring[st.head]
		delta := size - entrySize(old.id, old.data)
		*old = e
		st.head = (st.head + 1) % len(st.ring)
		st.bytes += delta
		c.streams.bytes.Add(delta)
		return
	}
	if st.n == len(st.ring) {
		ring := make([]entry, min(max(2*len(st.ring), 8), st.opts.Size))
		for i := range st.n {
			ring[i] = st.ring[(st.head+i)%len(st.ring)]
		}
		st.ring, st.head = ring, 0
	}
	st.ring[(st.head+st.n)%len(st.ring)] = e
	st.n++
	st.bytes += size
	c.streams.bytes.Add(size)
	c.streams.messages.Add(1)
}

// dropOldest drops the oldest entry; st.mu held, st.n > 0.
func (st *stream) dropOldest(c *Core) {
	e := &st.ring[st.head]
	size := entrySize(e.id, e.data)
	*e = entry{}
	st.head = (st.head + 1) % len(st.ring)
	st.n--
	st.bytes -= size
	c.streams.bytes.Add(-size)
	c.streams.messages.Add(-1)
}

// expire drops the messages older than the TTL; st.mu held.
func (st *stream) expire(c *Core, now int64) {
	limit := now - int64(st.opts.TTL)
	for st.n > 0 && st.ring[st.head].at < limit {
		st.dropOldest(c)
	}
}

// History reads the stream of topic (broker.Streamer), starting one if
// there is none.
func (c *Core) History(topic string, q broker.HistoryQuery) broker.HistoryResult {
	r, _ := c.HistoryPage(topic, q, 0)
	return r
}

// HistoryPage is History with the answer bounded to about maxBytes of
// messages (their topics, ids and data, and entryOverhead each), but at
// least one: it holds the first of the messages History would answer,
// oldest first, and more reports that the others were left out (ask
// again since the last one). maxBytes 0 means no bound. A service answers
// over the network in pages with it, so that a read of a large stream
// neither exceeds a message limit nor copies what it cannot send.
func (c *Core) HistoryPage(topic string, q broker.HistoryQuery, maxBytes int) (r broker.HistoryResult, more bool) {
	now := c.now().UnixNano()
	st := c.lockStream(topic, normalOptions(q.Options), now)
	return st.read(c, q, now, maxBytes)
}

// HistoryKept is HistoryPage of a stream the Core keeps: without one it
// reports false and starts none (q.Options are not used), so that a
// backend that reads a topic's history through the push API leaves
// nothing behind.
func (c *Core) HistoryKept(topic string, q broker.HistoryQuery, maxBytes int) (r broker.HistoryResult, more, ok bool) {
	now := c.now().UnixNano()
	st := c.findStream(topic, nil, now)
	if st == nil {
		return broker.HistoryResult{}, false, false
	}
	r, more = st.read(c, q, now, maxBytes)
	return r, more, true
}

// read answers q at now, with at most about maxBytes of messages (0: no
// bound); st.mu is held, and released.
func (st *stream) read(c *Core, q broker.HistoryQuery, now int64, maxBytes int) (broker.HistoryResult, bool) {
	defer st.mu.Unlock()
	st.expire(c, now)
	r := broker.HistoryResult{StreamPosition: broker.StreamPosition{Epoch: st.epoch, Offset: st.top}}
	if q.Limit <= 0 || st.n == 0 {
		return r, false
	}
	from := max(0, st.n-q.Limit) // index of the first entry returned, from the oldest
	if q.Since != nil && (q.Since.Epoch == "" || q.Since.Epoch == st.epoch) {
		oldest := st.ring[st.head].offset
		if q.Since.Offset >= st.top {
			return r, false
		}
		from = 0
		if q.Since.Offset >= oldest {
			from = int(q.Since.Offset - oldest + 1)
		}
	}
	// from+q.Limit could overflow an int: bound the count instead.
	to := from + min(st.n-from, q.Limit)
	more := false
	if maxBytes > 0 {
		size := 0
		for i := from; i < to; i++ {
			e := &st.ring[(st.head+i)%len(st.ring)]
			size += len(st.topic) + int(entrySize(e.id, e.data))
			if size > maxBytes && i > from {
				to, more = i, true
				break
			}
		}
	}
	r.Messages = st.collect(from, to)
	return r, more
}

// collect returns the entries [from, to) counted from the oldest as
// messages; st.mu held.
func (st *stream) collect(from, to int) []broker.Message {
	out := make([]broker.Message, 0, to-from)
	for i := from; i < to; i++ {
		e := &st.ring[(st.head+i)%len(st.ring)]
		out = append(out, broker.Message{Topic: st.topic, ID: e.id, Data: e.data, Offset: e.offset, Epoch: st.epoch})
	}
	return out
}

// touchLRU moves st to the head of the LRU list (listing it if new).
func (c *Core) touchLRU(st *stream) {
	s := &c.streams
	s.lruMu.Lock()
	defer s.lruMu.Unlock()
	if st.listed {
		if s.lruHead == st {
			return
		}
		s.unlink(st)
	} else if st.gone {
		return
	}
	st.listed = true
	st.prev, st.next = nil, s.lruHead
	if s.lruHead != nil {
		s.lruHead.prev = st
	}
	s.lruHead = st
	if s.lruTail == nil {
		s.lruTail = st
	}
}

func (c *Core) unlistLRU(st *stream) {
	s := &c.streams
	s.lruMu.Lock()
	defer s.lruMu.Unlock()
	st.gone = true
	if st.listed {
		s.unlink(st)
		st.listed = false
	}
}

// unlink takes st out of the list; lruMu held.
func (s *streamsState) unlink(st *stream) {
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		s.lruHead = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	} else {
		s.lruTail = st.prev
	}
	st.prev, st.next = nil, nil
}

// enforceCap forgets the least recently published streams until the
// streams fit the memory cap; current, which was just published to, loses
// its oldest messages instead when it is the last one left.
func (c *Core) enforceCap(current *stream) {
	s := &c.streams
	max := s.maxBytes.Load()
	if max <= 0 {
		max = DefaultMaxStreamBytes
	}
	for s.bytes.Load() > max {
		s.lruMu.Lock()
		victim := s.lruTail
		s.lruMu.Unlock()
		if victim == nil {
			return
		}
		if victim == current {
			current.mu.Lock()
			for current.n > 1 && s.bytes.Load() > max {
				current.dropOldest(c)
				s.trimmed.Add(1)
			}
			current.mu.Unlock()
			return
		}
		ss := c.sshard(victim.topic)
		ss.mu.Lock()
		victim.mu.Lock()
		if !victim.dead {
			c.forget(victim, &s.evicted)
		}
		victim.mu.Unlock()
		if ss.m[victim.topic] == victim {
			delete(ss.m, victim.topic)
		}
		ss.mu.Unlock()
	}
}

// maybeSweep forgets, at most once per sweepEvery and in the background,
// the streams with no publish for their TTL, so that topics nobody
// publishes to any more do not hold memory until the cap evicts them.
func (c *Core) maybeSweep(now time.Time) {
	s := &c.streams
	last := s.lastSweep.Load()
	if now.UnixNano()-last < int64(sweepEvery) || !s.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	if s.sweeping.CompareAndSwap(false, true) {
		go func() {
			defer s.sweeping.Store(false)
			c.SweepStreams()
		}()
	}
}

// SweepStreams forgets the streams that had no publish for their TTL. A
// Core sweeps by itself about once a second while streams are published
// to; a service calls it on its own schedule as well.
func (c *Core) SweepStreams() {
	now := c.now().UnixNano()
	for i := range c.streams.sshards {
		ss := &c.streams.sshards[i]
		ss.mu.Lock()
		for topic, st := range ss.m {
			st.mu.Lock()
			if !st.dead && st.idle(now) {
				c.forget(st, &c.streams.expired)
			}
			dead := st.dead
			st.mu.Unlock()
			if dead {
				delete(ss.m, topic)
			}
		}
		ss.mu.Unlock()
	}
}

// StreamStats are a Core's stream figures at one moment.
type StreamStats struct {
	Streams  int64 // streams held
	Messages int64 // messages held over all streams
	Bytes    int64 // their memory, as counted against MaxBytes
	MaxBytes int64 // the memory cap
	Evicted  int64 // streams forgotten for the memory cap, since the start
	Trimmed  int64 // messages dropped for the memory cap, since the start
	Expired  int64 // streams forgotten for their TTL, since the start
}

// StreamStats returns the Core's stream figures.
func (c *Core) StreamStats() StreamStats {
	s := &c.streams
	max := s.maxBytes.Load()
	if max <= 0 {
		max = DefaultMaxStreamBytes
	}
	return StreamStats{
		Streams: s.count.Load(), Messages: s.messages.Load(), Bytes: s.bytes.Load(), MaxBytes: max,
		Evicted: s.evicted.Load(), Trimmed: s.trimmed.Load(), Expired: s.expired.Load(),
	}
}
