package firetower

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// Conn is one WebSocket connection of this node. Its methods are safe for
// concurrent use. Callbacks receive it; an application may keep it until
// the disconnect hook runs.
type Conn struct {
	id     string
	userID string
	tower  *Tower
	req    *http.Request
	batch  bool // the client asked for batched frames (?batch=1)

	ctx    context.Context
	cancel context.CancelFunc

	sess *melody.Session
	ws   *websocket.Conn

	// mu guards topics and keys. The read path changes topics; any
	// goroutine may read them.
	mu     sync.Mutex
	topics map[string]struct{}
	keys   map[string]any

	limiter tokenBucket // read path only

	// The send queue. A publish appends under qmu and never waits for the
	// network; the writer goroutine takes everything queued at once.
	qmu      sync.Mutex
	queue    [][]byte
	spare    [][]byte  // the writer's last batch, reused as the next queue
	held     bool      // a subscribe is in progress: the writer waits
	holdAt   int       // where the subscribed reply goes when the hold ends
	queuedAt time.Time // when the oldest frame in queue was queued
	closing  bool
	reason   DisconnectReason
	closeMsg []byte // close frame the writer sends, nil if the peer left
	wake     chan struct{}
	done     chan struct{}
	writerWG sync.WaitGroup
	cleaned  sync.Once
}

func newConn(t *Tower, r *http.Request, userID string) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		id:      newID(),
		userID:  userID,
		tower:   t,
		req:     r,
		batch:   r.URL.Query().Get("batch") == "1",
		ctx:     ctx,
		cancel:  cancel,
		topics:  map[string]struct{}{},
		limiter: tokenBucket{rate: t.cfg.InboundRate, burst: float64(t.cfg.InboundBurst), tokens: float64(t.cfg.InboundBurst), last: time.Now()},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	return c
}

// ID returns the connection's id, unique in the cluster.
func (c *Conn) ID() string { return c.id }

// UserID returns what Config.Authenticate returned for the connection ("" without it).
func (c *Conn) UserID() string { return c.userID }

// Tower returns the node the connection belongs to.
func (c *Conn) Tower() *Tower { return c.tower }

// Request returns the HTTP request that opened the connection. It must not
// be modified.
func (c *Conn) Request() *http.Request { return c.req }

// Context returns a context that is cancelled when the connection closes.
func (c *Conn) Context() context.Context { return c.ctx }

// Topics returns the topics the connection is subscribed to, sorted.
func (c *Conn) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.topics))
	for t := range c.topics {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Set stores a value on the connection for the application.
func (c *Conn) Set(key string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]any{}
	}
	c.keys[key] = v
}

// Get returns a value stored with Set.
func (c *Conn) Get(key string) (v any, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok = c.keys[key]
	return v, ok
}

// Send queues v, encoded as JSON, as one server frame to this connection
// only, for example an answer to a custom frame. It never blocks on the
// network; like a publish, it closes a connection whose queue is full.
func (c *Conn) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if !c.enqueue(b, time.Now()) {
		return ErrConnClosed
	}
	return nil
}

// Close closes the connection with a normal closure. The disconnect hooks
// run once it is gone.
func (c *Conn) Close() error {
	c.shutdown(DisconnectServer, websocket.CloseNormalClosure, "", true)
	return nil
}

// enqueue queues one encoded frame, made at now, and reports whether it
// was queued. A
// full queue closes the connection: the policy of DESIGN §3 (a publish
// never waits for a slow client; that client loses the connection, not
// messages in the middle of a stream it goes on reading).
func (c *Conn) enqueue(frame []byte, now time.Time) bool {
	c.qmu.Lock()
	if c.closing {
		c.qmu.Unlock()
		return false
	}
	if len(c.queue) >= c.tower.cfg.SendQueueSize {
		dropped := len(c.queue) + 1
		c.qmu.Unlock()
		c.tower.stats.slowClosed.Add(1)
		c.tower.stats.droppedQueueFull.Add(int64(dropped))
		c.tower.log.Warn("firetower: closing a connection that reads too slowly", "conn", c.id, "user", c.userID, "dropped", dropped)
		c.shutdown(DisconnectSlow, websocket.ClosePolicyViolation, "firetower: send queue full: the client reads too slowly", false)
		return false
	}
	if len(c.queue) == 0 {
		c.queuedAt = now
	}
	c.queue = append(c.queue, frame)
	signal := len(c.queue) == 1 && !c.held
	c.qmu.Unlock()
	if signal {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
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
	}
	signal := len(c.queue) > 0
	c.qmu.Unlock()
	if signal {
		select {
		case c.wake <- struct{}{}:
		default:
		}
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
	}
	ws := c.ws
	c.qmu.Unlock()
	close(c.done)
	if !flush && code != 0 && ws != nil {
		// The writer may be stuck in a write to a client that reads
		// nothing: fail that write now instead of after WriteTimeout
		// (net.Conn deadlines are safe to set from any goroutine).
		ws.NetConn().SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	}
}

// start runs the writer once the WebSocket is open.
func (c *Conn) start(s *melody.Session) {
	c.qmu.Lock()
	c.sess = s
	c.ws = s.WebsocketConnection()
	c.qmu.Unlock()
	c.writerWG.Add(1)
	go c.writeLoop()
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

func (c *Conn) writeLoop() {
	defer c.writerWG.Done()
	cfg := &c.tower.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.wake:
			if err := c.flush(); err != nil {
				c.ws.Close()
				c.shutdown(DisconnectError, 0, "", false)
				return
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
				c.ws.Close()
				c.shutdown(DisconnectError, 0, "", false)
				return
			}
		case <-c.done:
			c.qmu.Lock()
			msg := c.closeMsg
			c.qmu.Unlock()
			if msg != nil {
				c.flush()
				c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
				c.ws.Close()
			}
			return
		}
	}
}

// flush writes everything queued. It returns on the first write error.
func (c *Conn) flush() error {
	for {
		c.qmu.Lock()
		if c.held || len(c.queue) == 0 {
			c.qmu.Unlock()
			return nil
		}
		batch, queuedAt := c.queue, c.queuedAt
		c.queue, c.spare = c.spare[:0], nil
		c.qmu.Unlock()

		n, err := c.write(batch)
		if err == nil {
			st := &c.tower.stats
			st.writes.Add(int64(n))
			st.framesOut.Add(int64(len(batch)))
			st.latency.observe(time.Since(queuedAt))
		}
		clear(batch) // let the frames go
		c.qmu.Lock()
		c.spare = batch[:0]
		c.qmu.Unlock()
		if err != nil {
			return err
		}
	}
}

var (
	batchOpen  = []byte{'['}
	batchComma = []byte{','}
	batchClose = []byte{']'}
)

// write writes a batch and returns how many WebSocket frames that took.
func (c *Conn) write(batch [][]byte) (int, error) {
	st := &c.tower.stats
	c.ws.SetWriteDeadline(time.Now().Add(c.tower.cfg.WriteTimeout))
	if !c.batch {
		for _, f := range batch {
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				return 0, err
			}
			st.bytesOut.Add(int64(len(f)))
		}
		return len(batch), nil
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return 0, err
	}
	size := len(batch) + 1 // brackets and commas
	w.Write(batchOpen)
	for i, f := range batch {
		if i > 0 {
			w.Write(batchComma)
		}
		w.Write(f)
		size += len(f)
	}
	w.Write(batchClose)
	if err := w.Close(); err != nil {
		return 0, err
	}
	st.bytesOut.Add(int64(size))
	return 1, nil
}

// tokenBucket limits inbound frames: rate per second, up to burst at once.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func (b *tokenBucket) allow(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
