package firetower

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// The client commands: what the node does with each frame a connection
// sends (DESIGN §3), on that connection's read path.

// onMessage handles one client text frame.
func (t *Tower) onMessage(s *melody.Session, raw []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	now := time.Now()
	if !t.admit(c, now, len(raw)) {
		t.rateLimited(c, raw, "frame dropped: more than the allowed frames or bytes per second", nil, nil)
		return
	}
	f, perr := parseFrame(raw)
	if perr != nil {
		c.reply(errorFrame(perr, f.ID))
		return
	}
	switch f.Type {
	case TypeSubscribe, TypeUnsubscribe:
		// A frame's topics are its cost at the broker: they count against
		// SubscribeRate, so the frame rate alone cannot buy more.
		if !c.topicsIn.AllowN(now, float64(len(f.Topics))) {
			t.rateLimited(c, raw, "frame dropped: more than the allowed topic subscriptions per second", f.Topics, f.ID)
			return
		}
		if f.Type == TypeSubscribe {
			t.subscribe(c, f)
		} else {
			t.unsubscribe(c, f)
		}
	case TypeHistory:
		// A broker read, charged as one topic of SubscribeRate.
		if !c.topicsIn.AllowN(now, 1) {
			t.rateLimited(c, raw, "frame dropped: more than the allowed topic subscriptions or history reads per second", f.Topics, f.ID)
			return
		}
		t.historyFrame(c, f)
	case TypePresence:
		// A broker read too, charged the same.
		if !c.topicsIn.AllowN(now, 1) {
			t.rateLimited(c, raw, "frame dropped: more than the allowed topic subscriptions or broker reads per second", f.Topics, f.ID)
			return
		}
		t.presenceFrame(c, f)
	case TypePublish:
		t.clientPublish(c, f)
	case TypePing:
		c.reply(encodeReply(replyFrame{Type: TypePong, ID: f.ID}))
	default:
		if t.cfg.ReadHandler == nil {
			c.reply(errorFrame(badRequest("unknown type %q", f.Type), f.ID))
			return
		}
		t.cfg.ReadHandler(c, f)
	}
}

func (t *Tower) onBinary(s *melody.Session, raw []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	if !t.admit(c, time.Now(), len(raw)) {
		t.rateLimited(c, nil, "frame dropped: more than the allowed frames or bytes per second", nil, nil)
		return
	}
	c.reply(errorFrame(badRequest("binary frames are not supported: send JSON text frames"), nil))
}

// admit takes a frame of size payload bytes, of any kind, from c's inbound
// budget: one of InboundRate and size of InboundBytesRate. It runs on the
// read path, which owns the buckets.
func (t *Tower) admit(c *Conn, now time.Time, size int) bool {
	return c.limiter.Allow(now) && c.bytesIn.AllowN(now, float64(size))
}

// minStrikes is the fewest frames over budget a connection may send at
// once before it is closed, whatever its InboundBurst: a small burst
// should not turn a client's few extra frames into a disconnect.
const minStrikes = 64

// overBudget counts a frame dropped over c's budget, and closes c (1008,
// rate_limited) once it has dropped more than max(InboundBurst, 64) frames
// beyond InboundRate a second: a client that keeps sending more than twice
// what it may costs the node its reads for nothing.
func (t *Tower) overBudget(c *Conn, now time.Time) (closed bool) {
	t.stats.rateLimited.Add(1)
	if c.strikes.Allow(now) {
		return false
	}
	c.shutdown(DisconnectRateLimited, websocket.ClosePolicyViolation, "firetower: over the inbound rate: the client sends too much", true)
	return true
}

// rateLimited answers a data frame dropped over budget.
func (t *Tower) rateLimited(c *Conn, frame []byte, message string, topics []string, id []byte) {
	if t.overBudget(c, time.Now()) {
		return
	}
	if t.cfg.ReadTimeoutHandler != nil {
		t.cfg.ReadTimeoutHandler(c, frame)
	}
	c.reply(errorFrame(&protocolError{code: CodeRateLimited, message: message, topic: topics}, id))
}

func (t *Tower) brokerContext(c *Conn) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, t.cfg.BrokerTimeout)
}

func (t *Tower) tooManyTopics(topics []string, id []byte) []byte {
	return errorFrame(&protocolError{code: CodeTooManyTopics, message: "a connection holds at most " + itoa(t.cfg.MaxTopicsPerConn) + " topics", topic: topics}, id)
}

func (t *Tower) subscribe(c *Conn, f *Frame) {
	fresh, ok := c.newTopics(f.Topics, t.cfg.MaxTopicsPerConn)
	if !ok {
		c.reply(t.tooManyTopics(f.Topics, f.ID))
		return
	}
	if len(fresh) > 0 && t.cfg.BeforeSubscribeHandler != nil && !t.cfg.BeforeSubscribeHandler(c, fresh) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "subscription refused", topic: fresh}, f.ID))
		return
	}
	fresh, perr, _ := t.subscribeTopics(c, f, false)
	if perr != nil {
		c.reply(errorFrame(perr, f.ID))
		return
	}
	if len(fresh) > 0 && t.cfg.SubscribeHandler != nil {
		t.cfg.SubscribeHandler(c, fresh)
	}
}

// subscribeTopics subscribes c to the topics of f that it does not hold
// (returned), and queues the subscribed reply; on a failure nothing
// changed and perr is the error frame's content, err the Go error of a
// server-side call. It holds c's subscription lock (Conn.subMu), so that
// a server-side Conn.Subscribe and the connection's own frames take
// turns; server also refuses a connection that is closing, whose
// subscriptions the disconnect may already have taken.
func (t *Tower) subscribeTopics(c *Conn, f *Frame, server bool) (fresh []string, perr *protocolError, err error) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if server && c.closedReason() != DisconnectNone {
		return nil, &protocolError{code: CodeUnavailable, message: "connection closed"}, ErrConnClosed
	}
	fresh, ok := c.newTopics(f.Topics, t.cfg.MaxTopicsPerConn)
	if !ok {
		perr = &protocolError{code: CodeTooManyTopics, message: "a connection holds at most " + itoa(t.cfg.MaxTopicsPerConn) + " topics", topic: f.Topics}
		return nil, perr, serverSubscribeError(perr, nil)
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	streams := t.streamTopics(fresh)
	c.hold()
	c.beginRecovery(streams)
	// undo takes back what the steps below did, so that a failed
	// subscribe changes nothing; brokerFailed also reports the failure.
	undo := func(subscribed bool) {
		if subscribed {
			t.hub.unsubscribe(ctx, c, fresh)
		}
		c.abortRecovery(streams)
		c.release(nil)
	}
	brokerFailed := func(call string, topics int, err error) ([]string, *protocolError, error) {
		t.stats.brokerErrors.Add(1)
		t.log.Warn("firetower: broker "+call+" failed", "conn", c.id, "user", c.userID, "topics", topics, "err", err)
		return nil, brokerError(err, fresh), err
	}
	if err := t.hub.subscribe(ctx, c, fresh); err != nil { // all or nothing
		undo(false)
		return brokerFailed("subscribe", len(fresh), err)
	}
	// The connection is a subscriber now: what the streams' reads miss
	// reaches it live, held until the reads are merged in (streamqueue.go).
	var recs []recovered
	var positions map[string]streamReply
	if len(streams) > 0 {
		var err error
		if recs, positions, err = t.readStreams(ctx, f, streams); err != nil {
			undo(true)
			return brokerFailed("history", len(streams), err)
		}
	}
	if err := t.addPresence(ctx, c, fresh); err != nil {
		undo(true)
		return brokerFailed("presence", len(fresh), err)
	}
	if !c.addTopics(fresh, t.cfg.MaxTopicsPerConn) {
		// Topics are added under subMu only, so the limit checked above
		// still holds; should that change, the frame is refused whole.
		t.removePresence(c, fresh)
		undo(true)
		perr = &protocolError{code: CodeTooManyTopics, message: "a connection holds at most " + itoa(t.cfg.MaxTopicsPerConn) + " topics", topic: f.Topics}
		return nil, perr, serverSubscribeError(perr, nil)
	}
	if again := t.streamTopics(heldSince(f, fresh)); len(again) > 0 {
		// Topics the connection already held, asked with since (a client
		// that retries a frame): it had their messages live all along.
		if positions == nil {
			positions = make(map[string]streamReply, len(again))
		}
		for _, topic := range again {
			opts, _ := t.streamOptions(topic)
			r, err := t.streamer.History(ctx, topic, broker.HistoryQuery{Options: opts.broker()})
			if err != nil {
				continue // no entry: the client reads the history itself
			}
			since := f.Since[topic]
			ok := since.Epoch == r.Epoch && since.Offset <= r.Offset
			positions[topic] = streamReply{Epoch: r.Epoch, Offset: r.Offset, Recovered: &ok}
		}
	}
	var reply []byte
	if !t.cfg.BareData {
		reply = encodeReply(replyFrame{Type: TypeSubscribed, Topic: f.Topics, ID: f.ID, Streams: positions})
	}
	if len(streams) > 0 {
		c.endRecovery(reply, recs)
	} else {
		c.release(reply)
	}
	return fresh, nil, nil
}

// heldSince returns the topics of a subscribe frame asked with since
// that are not among fresh (the connection held them already).
func heldSince(f *Frame, fresh []string) []string {
	if len(f.Since) == 0 || len(fresh) == len(f.Topics) {
		return nil
	}
	var out []string
	for _, topic := range f.Topics {
		if _, asked := f.Since[topic]; asked && !slices.Contains(fresh, topic) {
			out = append(out, topic)
		}
	}
	return out
}

// streamTopics returns those of topics that have history, for a node
// that speaks the v1 protocol (a BareData node sends plain data only).
func (t *Tower) streamTopics(topics []string) []string {
	if t.streamer == nil || t.cfg.BareData {
		return nil
	}
	var out []string
	for _, topic := range topics {
		if _, ok := t.streamOptions(topic); ok {
			out = append(out, topic)
		}
	}
	return out
}

func (t *Tower) unsubscribe(c *Conn, f *Frame) {
	held, _ := t.unsubscribeTopics(c, f, false)
	if len(held) > 0 && t.cfg.UnSubscribeHandler != nil {
		t.cfg.UnSubscribeHandler(c, held)
	}
}

// unsubscribeTopics unsubscribes c from the topics of f it holds
// (returned) and queues the unsubscribed reply, under c's subscription
// lock; server refuses a closing connection (closed true).
func (t *Tower) unsubscribeTopics(c *Conn, f *Frame, server bool) (held []string, closed bool) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if server && c.closedReason() != DisconnectNone {
		return nil, true
	}
	held = c.removeTopics(f.Topics)
	c.dropStreams(held)
	t.removePresence(c, held)
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	if err := t.hub.unsubscribe(ctx, c, held); err != nil {
		t.stats.brokerErrors.Add(1)
		t.log.Warn("firetower: broker unsubscribe failed", "conn", c.id, "user", c.userID, "topics", len(held), "err", err)
	}
	if !t.cfg.BareData {
		c.reply(encodeReply(replyFrame{Type: TypeUnsubscribed, Topic: f.Topics, ID: f.ID}))
	}
	return held, false
}

func (t *Tower) clientPublish(c *Conn, f *Frame) {
	if t.cfg.ReadHandler == nil {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "client publishes are disabled: the server sets Config.ReadHandler to allow them", topic: f.Topics}, f.ID))
		return
	}
	parsed := f.Data
	if !t.cfg.ReadHandler(c, f) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "publish refused", topic: f.Topics}, f.ID))
		return
	}
	// ReadHandler may have rewritten the frame: what goes out is checked
	// as what came in was.
	if perr := checkRewritten(f, parsed); perr != nil {
		t.log.Warn("firetower: ReadHandler left a publish that cannot be sent", "conn", c.id, "user", c.userID, "err", perr.message)
		c.reply(errorFrame(perr, f.ID))
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	if f.ID == nil {
		if _, err := t.publish(ctx, f.Topics, f.Data, false); err != nil {
			c.reply(errorFrame(brokerError(err, f.Topics), f.ID))
		}
		return
	}
	// The ack goes before the message itself, should the publisher be a
	// subscriber too: an in-process broker delivers before Publish returns.
	// The hold is the connection's one at a time: a server-side Subscribe
	// holds the writer too.
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.hold()
	pub, err := t.publish(ctx, f.Topics, f.Data, false)
	if err != nil {
		c.release(errorFrame(brokerError(err, f.Topics), f.ID))
		return
	}
	c.release(encodeReply(replyFrame{Type: TypePublished, Topic: f.Topics, ID: f.ID, MessageID: pub.ID}))
}

// brokerError turns a broker failure into an error frame.
func brokerError(err error, topics []string) *protocolError {
	if errors.Is(err, ErrShutdown) || errors.Is(err, broker.ErrClosed) {
		return &protocolError{code: CodeUnavailable, message: "the server is shutting down", topic: topics}
	}
	return &protocolError{code: CodeUnavailable, message: "the broker is unavailable, retry later", topic: topics}
}

// checkRewritten checks a client publish after ReadHandler returned: its
// topics valid and its data JSON in valid UTF-8, as parseFrame checked
// them on arrival. Data that is still parsed, the slice parseFrame made,
// is not checked twice.
func checkRewritten(f *Frame, parsed []byte) *protocolError {
	if len(f.Topics) == 0 {
		return badRequest("publish without a topic")
	}
	for _, topic := range f.Topics {
		if err := ValidateTopic(topic); err != nil {
			return &protocolError{code: CodeBadRequest, message: err.Error(), topic: topic}
		}
	}
	if !sameSlice(f.Data, parsed) && !validData(f.Data) {
		return badRequest("publish data is not JSON in valid UTF-8")
	}
	return nil
}

// sameSlice reports whether a and b are the same bytes of memory.
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
