package firetower

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/internal/wsframe"
	"github.com/gorilla/websocket"
)

// sendQueue is a connection's outgoing side: its bounded queue of encoded
// frames and the state of its writer goroutine. Every field is guarded by
// qmu except where noted; only this file's methods touch them.
//
// A publish appends under qmu and never waits for the network. A writer
// goroutine runs only while there is something to write: the first frame
// queued starts one, and it ends when the queue is empty, so an idle
// connection holds no writer and no buffer.
//
// Lock order: a hub shard's lock may be held while qmu is taken (a
// delivery queues under the shard's read lock), never the other way round.
type sendQueue struct {
	qmu      sync.Mutex
	queue    [][]byte
	spare    [][]byte      // the writer's last batch, reused as the next queue
	held     bool          // a subscribe is in progress: the writer waits
	holdAt   int           // where the subscribed reply goes when the hold ends
	queuedAt time.Time     // when the oldest frame in queue was queued
	writing  bool          // a writer goroutine is running
	parked   bool          // the running writer waits on wake for more
	idle     bool          // parked since the last housekeeping tick
	retire   bool          // housekeeping asks the parked writer to end
	wake     chan struct{} // wakes the parked writer; made by it, dropped when it ends
	pingDue  bool          // the writer sends a ping first
	pongDue  bool          // the writer answers the client's last ping with pong
	pong     []byte        // that ping's payload
	ws       *websocket.Conn
	// deadline is the socket's write deadline as the writer last set it;
	// only the writer uses it. Zero after a control frame, whose write sets
	// a deadline of its own.
	deadline time.Time
	closing  bool
	reason   DisconnectReason
	closeMsg []byte // close frame the writer sends, nil if the peer left
	writers  sync.WaitGroup
	// streams holds the connection's state for topics with history that
	// it subscribed to lately: a recovery in progress, or the position
	// below which live frames are duplicates (streamqueue.go). nil until
	// the first such subscribe.
	streams map[string]*streamFilter
	// latestAt holds, for each latest-value topic with a frame in queue,
	// that frame's index; cleared whenever queue's indices change other
	// than by an append.
	latestAt map[string]int
	// extra is room in queue beyond SendQueueSize for the recovered
	// frames a subscribe queued at once (bounded by the topics' history
	// sizes), until the writer takes them.
	extra int
	// eventRoom is how much of extra the join and leave frames took
	// (enqueueEvent), until the writer takes them.
	eventRoom int
	// sink writes a batch to the client and returns how many WebSocket
	// frames that took (Conn.write; benchmarks replace it). Set once at
	// construction.
	sink func(batch [][]byte) (int, error)
}

// reply queues a reply frame; a closed connection drops it.
func (c *Conn) reply(frame []byte) { c.enqueue(frame, time.Now()) }

// enqueue queues one encoded frame, made at now, and reports whether it
// was queued. A full queue closes the connection: the policy of DESIGN §3
// (a publish never waits for a slow client; that client loses the
// connection, not messages in the middle of a stream it goes on reading).
func (c *Conn) enqueue(frame []byte, now time.Time) bool {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return false
	}
	return c.push(frame, now)
}

// eventRoomFactor sizes the room of join and leave frames beyond
// SendQueueSize: they are small (about 80 bytes), and a room with many
// comings and goings makes many of them, so a subscriber may hold that
// many times SendQueueSize of them (8,192 by default, under 1 MiB) before
// it is closed as too slow, where message frames alone would close it at
// SendQueueSize.
const eventRoomFactor = 8

// enqueueEvent queues a join or leave frame: as enqueue, with room of its
// own when the queue is full (eventRoomFactor).
func (c *Conn) enqueueEvent(frame []byte, now time.Time) bool {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return false
	}
	if len(c.queue) >= c.tower.cfg.SendQueueSize+c.extra && c.eventRoom < eventRoomFactor*c.tower.cfg.SendQueueSize {
		c.extra++
		c.eventRoom++
	}
	return c.push(frame, now)
}

// push appends frame, made at now, to the queue and starts a writer if
// none runs, or closes the connection if the queue is full. qmu must be
// held; push releases it.
func (c *Conn) push(frame []byte, now time.Time) bool {
	if len(c.queue) >= c.tower.cfg.SendQueueSize+c.extra {
		c.overflow(len(c.queue) + 1)
		return false
	}
	if len(c.queue) == 0 {
		c.queuedAt = now
	}
	c.queue = append(c.queue, frame)
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
	return true
}

// overflow closes a connection whose queue is full, dropping what it
// holds: the policy of DESIGN §3. qmu must be held; overflow releases it.
func (c *Conn) overflow(dropped int) {
	c.qmu.Unlock()
	c.tower.stats.slowClosed.Add(1)
	c.tower.stats.droppedQueueFull.Add(int64(dropped))
	c.tower.log.Warn("firetower: closing a connection that reads too slowly", "conn", c.id, "user", c.userID, "dropped", dropped)
	c.shutdown(DisconnectSlow, websocket.ClosePolicyViolation, "firetower: send queue full: the client reads too slowly", false)
}

// A writer that emptied its queue parks rather than ending: under steady
// traffic a wake costs less than a new goroutine. The node's housekeeping
// loop retires a writer parked for a whole tick (0.5 to 1 s), so an idle
// connection holds none, and no timer is armed per park.

// needWriter reports whether a writer must be started for what is queued,
// and if so counts it as running; qmu must be held.
func (c *Conn) needWriter() bool {
	if c.held || (len(c.queue) == 0 && !c.pingDue && !c.pongDue) {
		return false
	}
	if c.writing {
		if c.parked {
			c.parked = false
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		return false
	}
	c.writing = true
	c.writers.Add(1)
	return true
}

// hold pauses the writer until release; frames queued meanwhile stay
// behind the reply release inserts.
func (c *Conn) hold() {
	c.qmu.Lock()
	c.held = true
	c.holdAt = len(c.queue)
	c.qmu.Unlock()
}

// release ends a hold, inserting reply (if not nil) where the hold began,
// so that it precedes every message that arrived during the hold.
func (c *Conn) release(reply []byte) {
	c.qmu.Lock()
	c.held = false
	if reply != nil && !c.closing {
		at := min(c.holdAt, len(c.queue))
		if len(c.queue) == 0 {
			c.queuedAt = time.Now()
		}
		c.queue = slices.Insert(c.queue, at, reply)
		clear(c.latestAt)
	}
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
}

// shutdown closes the connection once. With code != 0 the writer sends a
// close frame (after what is queued, if flush) and closes the socket; the
// read side then ends and the disconnect hooks run.
func (c *Conn) shutdown(why DisconnectReason, code int, reason string, flush bool) {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return
	}
	c.closing = true
	c.reason = why
	if code != 0 {
		c.closeMsg = websocket.FormatCloseMessage(code, reason)
	}
	if !flush {
		c.queue = nil
		c.streams, c.latestAt = nil, nil
	}
	ws := c.ws
	// A close frame needs a writer even if nothing is queued.
	start := c.closeMsg != nil && ws != nil && !c.writing
	if start {
		c.writing = true
		c.writers.Add(1)
	}
	if c.parked { // let the writer see the close now
		c.parked = false
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
	if !flush && code != 0 && ws != nil {
		// The writer may be stuck in a write to a client that reads
		// nothing: fail that write now instead of after WriteTimeout
		// (net.Conn deadlines are safe to set from any goroutine).
		ws.NetConn().SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	}
}

// attach attaches the open WebSocket.
func (c *Conn) attach(ws *websocket.Conn) {
	c.qmu.Lock()
	c.ws = ws
	// The read side runs only after this (melody calls its connect
	// handler first), so the handler is in place before any ping.
	c.ws.SetPingHandler(c.onPing)
	c.qmu.Unlock()
}

// closedReason returns why the connection ended, or DisconnectNone while
// it is open.
func (c *Conn) closedReason() DisconnectReason {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.reason
}

// onPing answers a client's ping through the writer, the only goroutine
// that writes to the socket besides gorilla's close reply: gorilla's own
// handler would write the pong beside the writer's Write and re-arm the
// socket's write deadline under it. Only the last ping is answered, as
// RFC 6455 §5.5.3 allows. A ping counts against the inbound budget like
// any frame (gorilla calls this on the read path, which owns the
// budget): over it, no pong.
func (c *Conn) onPing(data string) error {
	if t := c.tower; !t.admit(c, time.Now(), len(data)) {
		t.overBudget(c, time.Now())
		return nil
	}
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return nil
	}
	c.pong = append(c.pong[:0], data...)
	c.pongDue = true
	start := c.needWriter()
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
	return nil
}

// abort cuts the connection without a close handshake.
func (c *Conn) abort() {
	c.qmu.Lock()
	ws := c.ws
	c.qmu.Unlock()
	if ws != nil {
		ws.Close()
	}
	c.shutdown(DisconnectShutdown, 0, "", false)
}

// writer writes until the queue is empty, then ends. At most one runs
// per connection (c.writing), so frames go out in queue order.
func (c *Conn) writer() {
	defer c.writers.Done()
	var done [][]byte // the last batch written, handed back as spare
	for {
		c.qmu.Lock()
		if done != nil {
			c.spare = done[:0]
			done = nil
		}
		ping, pong := c.pingDue, c.pongDue
		c.pingDue, c.pongDue = false, false
		var pongData []byte
		if pong {
			pongData, c.pong = c.pong, nil // the handler fills a new one
		}
		idle := !ping && !pong && (c.held || len(c.queue) == 0)
		if idle && !c.closing && !c.retire {
			if c.wake == nil {
				c.wake = make(chan struct{}, 1)
			}
			wake := c.wake
			c.parked, c.idle = true, false
			c.qmu.Unlock()
			<-wake // from needWriter, shutdown or housekeeping
			continue
		}
		c.retire = false
		if idle {
			c.writing = false
			c.wake = nil // an idle connection keeps no channel
			closeMsg := c.closeMsg
			if c.closing {
				c.closeMsg = nil // sent once
			}
			c.qmu.Unlock()
			if closeMsg != nil {
				// The closing handshake of RFC 6455 §7.1.1: the read side
				// goes on until the client's close frame answers ours
				// (melody then closes the socket), for at most
				// closeHandshake. Closing the socket at once would make a
				// client that is still sending see a reset (1006) instead
				// of our status.
				if c.ws.WriteControl(websocket.CloseMessage, closeMsg, time.Now().Add(time.Second)) != nil {
					c.ws.Close()
				} else {
					c.ws.NetConn().SetReadDeadline(time.Now().Add(closeHandshake))
				}
			}
			return
		}
		var batch [][]byte
		var queuedAt time.Time
		if !c.held && len(c.queue) > 0 {
			batch, queuedAt = c.queue, c.queuedAt
			c.queue, c.spare = c.spare[:0], nil
			clear(c.latestAt)
			c.extra, c.eventRoom = 0, 0
		}
		c.qmu.Unlock()

		if pong || ping {
			c.deadline = time.Time{}
		}
		if pong {
			if err := c.ws.WriteControl(websocket.PongMessage, pongData, time.Now().Add(c.tower.cfg.WriteTimeout)); err != nil {
				c.fail(err)
				return
			}
		}
		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.tower.cfg.WriteTimeout)); err != nil {
				c.fail(err)
				return
			}
		}
		if len(batch) == 0 {
			continue
		}
		n, err := c.sink(batch)
		if err != nil {
			c.fail(err)
			return
		}
		st := &c.tower.stats
		st.writes.Add(int64(n))
		st.framesOut.Add(int64(len(batch)))
		st.latency.observe(time.Since(queuedAt))
		clear(batch) // let the frames go
		done = batch
	}
}

// housekeep is the node's once-a-tick visit: it retires a writer parked
// since the previous visit and, if ping, has the connection pinged.
func (c *Conn) housekeep(ping bool) {
	c.qmu.Lock()
	if c.closing || c.ws == nil {
		c.qmu.Unlock()
		return
	}
	if c.parked {
		if c.idle {
			c.retire, c.parked = true, false
			select {
			case c.wake <- struct{}{}:
			default:
			}
		} else {
			c.idle = true
		}
	}
	start := false
	if ping {
		c.pingDue = true
		start = c.needWriter()
	}
	c.qmu.Unlock()
	if start {
		go c.writer()
	}
}

// fail ends the connection after a failed write; the read side then ends
// and the disconnect hooks run.
func (c *Conn) fail(err error) {
	c.qmu.Lock()
	c.writing = false
	c.qmu.Unlock()
	if errors.Is(err, websocket.ErrCloseSent) {
		// gorilla answered the client's close frame from the read side,
		// which records the disconnect as the client's.
		return
	}
	// The reason first: closing the socket ends the read side, which would
	// record the client as the one who left.
	c.shutdown(DisconnectError, 0, "", false)
	c.ws.Close()
}

// write writes a batch and returns how many WebSocket frames that took.
//
// It frames the messages itself, into one pooled buffer of at most
// maxCoalesce bytes, and hands each buffer to the socket in one Write: one
// syscall per batch of small messages, batched client or not. gorilla's own
// writer would do the same work but allocates on every message when its
// buffers are pooled (it boxes the buffer to put it back), and an
// allocation per write makes every writer goroutine pay a GC mark assist
// (at least 64 KB of scanning) in each GC cycle; with a writer per busy
// connection that turned each cycle into milliseconds during which no frame
// went out. A message of maxCoalesce bytes or more goes through gorilla,
// which streams it from the shared frame through its small buffer: copying
// it, once per subscriber, would cost more than the allocation.
//
// Writing to the net.Conn beside gorilla is safe: a Write on a TCP or TLS
// connection puts all its bytes on the stream before another Write's, and
// every frame gorilla writes is written whole by one Write, or, for a large
// message, under gorilla's lock from this writer. gorilla writes pings,
// pongs (onPing) and close frames from this writer; from the read side only
// a reply to a client's close frame, and the close of a connection whose
// input broke the protocol, after which nothing the writer sends is read.
func (c *Conn) write(batch [][]byte) (int, error) {
	frames := 0
	for len(batch) > 0 {
		if len(batch[0]) >= maxCoalesce {
			if err := c.writeLarge(batch[0]); err != nil {
				return frames, err
			}
			batch = batch[1:]
			frames++
			continue
		}
		n, f, err := c.writeSmall(batch)
		if err != nil {
			return frames, err
		}
		batch = batch[n:]
		frames += f
	}
	return frames, nil
}

// maxCoalesce bounds the bytes written by one Write, and so the buffer a
// writer holds while a client is slow to read.
const maxCoalesce = 64 << 10

// writeSmall writes, in one Write, the messages at the start of batch that
// fit in maxCoalesce bytes (at least one; none of maxCoalesce bytes or
// more) and returns how many it wrote and in how many WebSocket frames.
func (c *Conn) writeSmall(batch [][]byte) (n, frames int, err error) {
	bp := batchBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	fits := func(f []byte) bool {
		return len(f) < maxCoalesce && (n == 0 || len(buf)+len(f)+wsframe.MaxHeader+2 <= maxCoalesce)
	}
	at, payload := 0, 0
	if c.batch {
		// One WebSocket frame: a JSON array. The header goes in front once
		// the length is known.
		buf = append(buf, make([]byte, wsframe.MaxHeader)...)
		buf = append(buf, '[')
		for n < len(batch) && fits(batch[n]) {
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, batch[n]...)
			n++
		}
		buf = append(buf, ']')
		payload = len(buf) - wsframe.MaxHeader
		at = wsframe.MaxHeader - wsframe.HeaderLen(payload)
		wsframe.PutHeader(buf[at:], payload)
		frames = 1
	} else {
		for n < len(batch) && fits(batch[n]) {
			buf = wsframe.AppendHeader(buf, len(batch[n]))
			buf = append(buf, batch[n]...)
			payload += len(batch[n])
			n++
		}
		frames = n
	}
	nc := c.ws.NetConn()
	// Re-arming the deadline costs as much as a tenth of a small write, so
	// it is re-armed only once less than half of WriteTimeout is left: a
	// write still fails after blocking for half to all of WriteTimeout.
	if now := time.Now(); now.Add(c.tower.cfg.WriteTimeout / 2).After(c.deadline) {
		c.deadline = now.Add(c.tower.cfg.WriteTimeout)
		nc.SetWriteDeadline(c.deadline)
	}
	_, err = nc.Write(buf[at:])
	*bp = buf[:0] // the whole buffer, header room included
	batchBuffers.Put(bp)
	if err != nil {
		return 0, 0, err
	}
	c.tower.stats.bytesOut.Add(int64(payload))
	return n, frames, nil
}

// writeLarge writes one message of maxCoalesce bytes or more in a frame
// of its own (a one-element array for a batched client) through gorilla.
func (c *Conn) writeLarge(f []byte) error {
	c.deadline = time.Time{} // gorilla sets the socket's deadline itself
	c.ws.SetWriteDeadline(time.Now().Add(c.tower.cfg.WriteTimeout))
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	n := len(f)
	if c.batch {
		w.Write(arrayOpen)
		n += 2
	}
	w.Write(f)
	if c.batch {
		w.Write(arrayClose)
	}
	if err := w.Close(); err != nil { // the writes' error, if any
		return err
	}
	c.tower.stats.bytesOut.Add(int64(n))
	return nil
}

// closeHandshake bounds the wait for a client's answer to our close frame.
const closeHandshake = time.Second

var arrayOpen, arrayClose = []byte{'['}, []byte{']'}

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
