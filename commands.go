package firetower

import (
	"context"
	"errors"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/olahol/melody"
)

// The client commands: what the node does with each frame a connection
// sends (DESIGN §3), on that connection's read path.

// onMessage handles one client text frame.
func (t *Tower) onMessage(s *melody.Session, raw []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	if !c.limiter.Allow(time.Now()) {
		t.rateLimited(c, raw)
		return
	}
	f, perr := parseFrame(raw)
	if perr != nil {
		c.reply(errorFrame(perr, f.ID))
		return
	}
	switch f.Type {
	case TypeSubscribe:
		t.subscribe(c, f)
	case TypeUnsubscribe:
		t.unsubscribe(c, f)
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

func (t *Tower) onBinary(s *melody.Session, _ []byte) {
	c := sessionConn(s)
	defer t.recoverCallback(c)
	t.stats.framesIn.Add(1)
	if !c.limiter.Allow(time.Now()) {
		t.rateLimited(c, nil)
		return
	}
	c.reply(errorFrame(badRequest("binary frames are not supported: send JSON text frames"), nil))
}

func (t *Tower) rateLimited(c *Conn, frame []byte) {
	t.stats.rateLimited.Add(1)
	if t.cfg.ReadTimeoutHandler != nil {
		t.cfg.ReadTimeoutHandler(c, frame)
	}
	c.reply(errorFrame(&protocolError{code: CodeRateLimited, message: "frame dropped: more than the allowed frames per second"}, nil))
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
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	c.hold()
	for i, topic := range fresh {
		if err := t.hub.subscribe(ctx, c, topic); err != nil {
			for _, done := range fresh[:i] { // all or nothing
				t.hub.unsubscribe(ctx, c, done)
			}
			c.release(nil)
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker subscribe failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
			c.reply(errorFrame(brokerError(err, fresh), f.ID))
			return
		}
	}
	if !c.addTopics(fresh, t.cfg.MaxTopicsPerConn) {
		// Only the read path adds topics, so the limit checked above
		// still holds; should that change, the frame is refused whole.
		for _, done := range fresh {
			t.hub.unsubscribe(ctx, c, done)
		}
		c.release(nil)
		c.reply(t.tooManyTopics(f.Topics, f.ID))
		return
	}
	var reply []byte
	if !t.cfg.BareData {
		reply = encodeReply(replyFrame{Type: TypeSubscribed, Topic: f.Topics, ID: f.ID})
	}
	c.release(reply)
	if len(fresh) > 0 && t.cfg.SubscribeHandler != nil {
		t.cfg.SubscribeHandler(c, fresh)
	}
}

func (t *Tower) unsubscribe(c *Conn, f *Frame) {
	held := c.removeTopics(f.Topics)
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	for _, topic := range held {
		if err := t.hub.unsubscribe(ctx, c, topic); err != nil {
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker unsubscribe failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
		}
	}
	if !t.cfg.BareData {
		c.reply(encodeReply(replyFrame{Type: TypeUnsubscribed, Topic: f.Topics, ID: f.ID}))
	}
	if len(held) > 0 && t.cfg.UnSubscribeHandler != nil {
		t.cfg.UnSubscribeHandler(c, held)
	}
}

func (t *Tower) clientPublish(c *Conn, f *Frame) {
	if t.cfg.ReadHandler == nil {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "client publishes are disabled: the server sets Config.ReadHandler to allow them", topic: f.Topics}, f.ID))
		return
	}
	if !t.cfg.ReadHandler(c, f) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "publish refused", topic: f.Topics}, f.ID))
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	if f.ID == nil {
		if _, err := t.publish(ctx, f.Topics, f.Data); err != nil {
			c.reply(errorFrame(brokerError(err, f.Topics), f.ID))
		}
		return
	}
	// The ack goes before the message itself, should the publisher be a
	// subscriber too: an in-process broker delivers before Publish returns.
	c.hold()
	id, err := t.publish(ctx, f.Topics, f.Data)
	if err != nil {
		c.release(errorFrame(brokerError(err, f.Topics), f.ID))
		return
	}
	c.release(encodeReply(replyFrame{Type: TypePublished, Topic: f.Topics, ID: f.ID, MessageID: id}))
}

// brokerError turns a broker failure into an error frame.
func brokerError(err error, topics []string) *protocolError {
	if errors.Is(err, ErrShutdown) || errors.Is(err, broker.ErrClosed) {
		return &protocolError{code: CodeUnavailable, message: "the server is shutting down", topic: topics}
	}
	return &protocolError{code: CodeUnavailable, message: "the broker is unavailable, retry later", topic: topics}
}
