package firetower

import (
	"slices"
	"time"
)

// The send queue's part in streams (DESIGN §3, "Streams"): the frames of
// topics with history carry offsets, and a connection that subscribes to
// such a topic gets, right after its subscribed reply, what it asked to
// recover, then the live frames, none lost and none twice.
//
// While a subscribe reads the stream from the broker, the connection is
// already in the topic's subscribers (it subscribed first, so that nothing
// published after the read is missed), and live frames of the topic keep
// coming. They wait in the topic's filter (held) instead of the queue.
// When the read is done, endRecovery puts the reply, then the recovered
// frames (offsets up to the stream's top at the read), then the held
// frames above that top, in place, at once. A live frame at or below the
// top that arrives later still (a remote broker may deliver a message
// after a read that already holds it) is dropped by the filter, which
// stays until the first live frame above the top passes it.
//
// A latest-value topic's frame replaces the frame of that topic still
// waiting in the queue, if there is one: a slow reader skips values
// instead of filling its queue, and ends with the newest. That costs a
// map lookup per frame and connection of such a topic, and nothing for
// any other topic.

// streamFrame is a delivered stream message's frame and what the queue
// needs to know of it.
type streamFrame struct {
	frame  []byte
	topic  string
	epoch  string
	offset uint64
	latest bool
}

// streamFilter is a connection's state for one topic with history.
type streamFilter struct {
	recovering bool          // a subscribe is reading the stream
	held       []streamFrame // live frames that arrived meanwhile
	epoch      string
	top        uint64 // live frames of epoch at or below it are duplicates
}

// recovered is what a subscribe read of one topic's stream: its position
// and the frames that go right after the reply.
type recovered struct {
	topic  string
	epoch  string
	top    uint64
	frames [][]byte
}

// beginRecovery starts holding the live frames of topics; it is called
// under hold, before the connection is added to the topics' subscribers.
func (c *Conn) beginRecovery(topics []string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing {
		return
	}
	if c.streams == nil {
		c.streams = make(map[string]*streamFilter, len(topics))
	}
	for _, topic := range topics {
		c.streams[topic] = &streamFilter{recovering: true}
	}
}

// abortRecovery forgets the recovery of topics (the subscribe failed).
func (c *Conn) abortRecovery(topics []string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	for _, topic := range topics {
		delete(c.streams, topic)
	}
}

// dropStreams forgets the stream state of topics the connection left.
func (c *Conn) dropStreams(topics []string) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.streams == nil {
		return
	}
	for _, topic := range topics {
		delete(c.streams, topic)
	}
}

// endRecovery ends a hold (as release does) for a subscribe that read
// streams: reply and then each topic's recovered frames go where the hold
// began, and each topic's held live frames above its top after what is
// queued; from then on the filters drop live duplicates. A queue that
// would grow beyond SendQueueSize closes the connection, as enqueue does.
func (c *Conn) endRecovery(reply []byte, recs []recovered) {
	c.qmu.Lock()
	c.held = false
	if c.closing {
		c.qmu.Unlock()
		return
	}
	insert := make([][]byte, 0, 1+len(recs))
	if reply != nil {
		insert = append(insert, reply)
	}
	var live [][]byte
	recoveredFrames := 0
	for _, r := range recs {
		insert = append(insert, r.frames...)
		recoveredFrames += len(r.frames)
		f := c.streams[r.topic]
		if f == nil { // the connection left the topic meanwhile
			continue
		}
		for _, h := range f.held {
			if h.epoch != r.epoch || h.offset > r.top {
				live = append(live, h.frame)
			}
		}
		*f = streamFilter{epoch: r.epoch, top: r.top}
	}
	// The recovered frames are bounded by the topics' history sizes, not
	// by SendQueueSize: they get room of their own until the writer takes
	// them; what arrives live must fit the queue as usual.
	c.extra += recoveredFrames
	if n := len(c.queue) + len(insert) + len(live); n > c.tower.cfg.SendQueueSize+c.extra {
		c.overflow(n)
		return
	}
	if len(c.queue) == 0 && len(insert)+len(live) > 0 {
		c.queuedAt = time.Now()
	}
	at := min(c.holdAt, len(c.queue))
	c.queue = slices.Insert(c.queue, at, insert...)
	c.queue = append(c.queue, live...)
	clear(c.latestAt)
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
}

// enqueueStream queues the frame of a stream message, made at now: held
// while its topic is being recovered, dropped if the connection already
// has it, in place of the topic's queued frame for a latest-value topic,
// else as enqueue does.
func (c *Conn) enqueueStream(sf *streamFrame, now time.Time) bool {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return false
	}
	if f := c.streams[sf.topic]; f != nil {
		if f.recovering {
			if n := len(c.queue) + len(f.held) + 1; n > c.tower.cfg.SendQueueSize+c.extra {
				c.overflow(n)
				return false
			}
			f.held = append(f.held, *sf)
			c.qmu.Unlock()
			return true
		}
		if sf.epoch == f.epoch && sf.offset <= f.top {
			c.qmu.Unlock()
			c.tower.stats.duplicates.Add(1)
			return false
		}
		delete(c.streams, sf.topic) // past the top: nothing more to filter
	}
	if sf.latest {
		if i, ok := c.latestAt[sf.topic]; ok {
			c.queue[i] = sf.frame
			c.qmu.Unlock()
			c.tower.stats.replacedLatest.Add(1)
			return true
		}
	}
	if sf.latest {
		// Where push puts it; a full queue closes the connection, which
		// forgets latestAt.
		if c.latestAt == nil {
			c.latestAt = map[string]int{}
		}
		c.latestAt[sf.topic] = len(c.queue)
	}
	return c.push(sf.frame, now)
}
