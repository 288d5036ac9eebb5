package firetower

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/internal/ratelimit"
	"github.com/gorilla/websocket"
)

// Conn is one WebSocket connection of this node. Its methods are safe for
// concurrent use. Callbacks receive it; an application may keep it until
// the disconnect hook runs.
type Conn struct {
	id     string
	userID string
	info   json.RawMessage // SetConnInfo's, nil without
	tower  *Tower
	req    *http.Request
	batch  bool // the client asked for batched frames (?batch=1)

	ctx    context.Context
	cancel context.CancelFunc

	upgraded     chan struct{} // closed once the upgrade succeeded or failed
	upgradedOnce sync.Once

	// mu guards topics and keys. The read path changes topics; any
	// goroutine may read them.
	mu     sync.Mutex
	topics map[string]struct{}
	keys   map[string]any

	// The inbound budget (commands.go admit), read path only: frames,
	// bytes, topics subscribed or unsubscribed, and the frames dropped
	// over budget that the connection may still send before it is closed.
	limiter, bytesIn, topicsIn, strikes ratelimit.Bucket

	// subMu orders the changes of the connection's subscriptions: its
	// subscribe and unsubscribe frames, a server-side Subscribe or
	// Unsubscribe, and the disconnect's cleanup take it in turn (as does a
	// client publish's hold of the writer, which a subscribe holds too).
	// It is held across broker calls, never inside a callback.
	subMu sync.Mutex
	// userSubscribed: the node subscribed the connection to its user
	// topic (users.go); guarded by subMu.
	userSubscribed bool

	sendQueue // the outgoing side (writer.go)

	finished sync.Once // the disconnect cleanup runs once
}

func newConn(t *Tower, r *http.Request, userID string, info json.RawMessage) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	c := &Conn{
		id:       newID(),
		userID:   userID,
		info:     info,
		tower:    t,
		req:      r,
		batch:    r.URL.Query().Get("batch") == "1",
		ctx:      ctx,
		cancel:   cancel,
		topics:   map[string]struct{}{},
		limiter:  ratelimit.New(t.cfg.InboundRate, t.cfg.InboundBurst, now),
		bytesIn:  ratelimit.New(t.cfg.InboundBytesRate, int(t.cfg.InboundBytesBurst), now),
		topicsIn: ratelimit.New(t.cfg.SubscribeRate, t.cfg.SubscribeBurst, now),
		strikes:  ratelimit.New(t.cfg.InboundRate, max(t.cfg.InboundBurst, minStrikes), now),
		upgraded: make(chan struct{}),
	}
	c.sink = c.write
	return c
}

// upgradeDone releases the HTTP handler that opened the connection.
func (c *Conn) upgradeDone() { c.upgradedOnce.Do(func() { close(c.upgraded) }) }

// ID returns the connection's id, unique in the cluster.
func (c *Conn) ID() string { return c.id }

// UserID returns what Config.Authenticate returned for the connection ("" without it).
func (c *Conn) UserID() string { return c.userID }

// userTopic returns the connection's internal user topic.
func (c *Conn) userTopic() string { return UserTopic(c.userID) }

// Tower returns the node the connection belongs to.
func (c *Conn) Tower() *Tower { return c.tower }

// Request returns the HTTP request that opened the connection. It must not
// be modified.
func (c *Conn) Request() *http.Request { return c.req }

// Context returns a context that is cancelled once the connection closed
// and its disconnect hooks (UnSubscribeHandler, OnDisconnect) returned:
// it is still live inside those hooks. Hooks must not block for long:
// work that waits on the broker belongs off the read path (the package
// doc's Concurrency section says how).
func (c *Conn) Context() context.Context { return c.ctx }

// DisconnectReason returns why the connection ended, or DisconnectNone
// while it is open. It is final by the time UnSubscribeHandler and
// OnDisconnect run for the disconnect.
func (c *Conn) DisconnectReason() DisconnectReason { return c.closedReason() }

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

// holds reports whether the connection is subscribed to topic.
func (c *Conn) holds(topic string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.topics[topic]
	return ok
}

// newTopics returns those of topics the connection does not hold, and
// whether holding them too stays within limit.
func (c *Conn) newTopics(topics []string, limit int) (fresh []string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, topic := range topics {
		if _, held := c.topics[topic]; !held {
			fresh = append(fresh, topic)
		}
	}
	return fresh, len(c.topics)+len(fresh) <= limit
}

// addTopics records topics as held, unless that would take the
// connection over limit; it reports whether it did.
func (c *Conn) addTopics(topics []string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.topics)
	for _, topic := range topics {
		if _, held := c.topics[topic]; !held {
			n++
		}
	}
	if n > limit {
		return false
	}
	for _, topic := range topics {
		c.topics[topic] = struct{}{}
	}
	return true
}

// removeTopics forgets those of topics the connection holds and returns
// them.
func (c *Conn) removeTopics(topics []string) (held []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, topic := range topics {
		if _, ok := c.topics[topic]; ok {
			held = append(held, topic)
			delete(c.topics, topic)
		}
	}
	return held
}

// takeTopics forgets every topic the connection holds and returns them,
// sorted: the end of its subscriptions, on disconnect.
func (c *Conn) takeTopics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.topics))
	for t := range c.topics {
		out = append(out, t)
	}
	clear(c.topics)
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

// DisconnectReason says why a connection ended.
type DisconnectReason int

const (
	// DisconnectNone: the connection is still open.
	DisconnectNone DisconnectReason = iota
	// DisconnectClient: the client closed the connection or went away.
	DisconnectClient
	// DisconnectPingTimeout: the client answered no ping for PongTimeout.
	DisconnectPingTimeout
	// DisconnectTooLarge: the client sent a frame over MaxFrameSize
	// (closed with status 1009).
	DisconnectTooLarge
	// DisconnectProtocol: the client broke the WebSocket protocol (closed
	// with status 1002).
	DisconnectProtocol
	// DisconnectSlow: its send queue was full (closed with status 1008).
	DisconnectSlow
	// DisconnectShutdown: the Tower shut down (status 1001).
	DisconnectShutdown
	// DisconnectServer: the application closed it (Conn.Close), or one of
	// its callbacks panicked (status 1011).
	DisconnectServer
	// DisconnectError: a write to the client failed or timed out.
	DisconnectError
	// DisconnectRateLimited: it kept sending over its inbound budget
	// (closed with status 1008).
	DisconnectRateLimited
	// DisconnectKicked: Tower.DisconnectUser or POST {prefix}/disconnect
	// closed every connection of its user (status CloseUserDisconnected,
	// 4001).
	DisconnectKicked
	numDisconnectReasons
)

var disconnectNames = [...]string{"", "client", "ping_timeout", "too_large", "protocol_error", "slow", "shutdown", "server", "write_error", "rate_limited", "kicked"}

// String returns the reason's name as Stats.Disconnects and the metrics
// label it: "client", "ping_timeout", "too_large", "protocol_error",
// "slow", "shutdown", "server", "write_error", "rate_limited", "kicked"; "" for
// DisconnectNone.
func (r DisconnectReason) String() string {
	if r < 0 || r >= numDisconnectReasons {
		return "unknown"
	}
	return disconnectNames[r]
}
