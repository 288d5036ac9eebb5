package topicsvc

import (
	"context"
	"fmt"
	"sync"

	"github.com/OSMeteor/firetower/broker"
	"github.com/google/uuid"
)

// Embedded is a broker.Broker that attaches a node to a Core in the same
// process: no network and no serialisation. NewEmbedded gives a single node
// its own Core (firetower's default broker); Core.Embedded attaches several
// nodes of one process to a shared Core.
type Embedded struct {
	core *Core

	mu      sync.RWMutex
	node    *Node
	handler broker.Handler
	closed  bool
}

var (
	_ broker.Broker      = (*Embedded)(nil)
	_ broker.TopicLister = (*Embedded)(nil)
	_ broker.NodeLister  = (*Embedded)(nil)
	_ broker.InProcess   = (*Embedded)(nil)

	_ broker.BatchSubscriber   = (*Embedded)(nil)
	_ broker.BatchUnsubscriber = (*Embedded)(nil)
	_ broker.Streamer          = (*Embedded)(nil)
	_ broker.StatsReporter     = (*Embedded)(nil)
	_ broker.Presencer         = (*Embedded)(nil)
)

// NewEmbedded returns a broker for a node that is its own cluster.
func NewEmbedded() *Embedded { return NewCore().Embedded() }

// Embedded returns a broker that attaches one more node to c.
func (c *Core) Embedded() *Embedded { return &Embedded{core: c} }

// Start implements broker.Broker.
func (e *Embedded) Start(h broker.Handler) error {
	if h == nil {
		return fmt.Errorf("firetower: embedded broker: nil handler")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return broker.ErrClosed
	}
	if e.node != nil {
		return fmt.Errorf("firetower: embedded broker: started twice")
	}
	e.handler = h
	e.node = e.core.AddNode(uuid.NewString(), h)
	return nil
}

// attached returns the node, or an error if the broker is not started or
// already closed.
func (e *Embedded) attached() (*Node, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	switch {
	case e.closed:
		return nil, broker.ErrClosed
	case e.node == nil:
		return nil, fmt.Errorf("firetower: embedded broker: not started")
	}
	return e.node, nil
}

// Publish implements broker.Broker. The handlers of the subscribed nodes
// run before it returns.
func (e *Embedded) Publish(ctx context.Context, m broker.Message) error {
	if _, err := e.attached(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.core.Publish(m)
	return nil
}

// PublishStream implements broker.Streamer: the message is appended to
// the Core's stream of its topic and delivered before it returns.
func (e *Embedded) PublishStream(ctx context.Context, m broker.Message, opts broker.StreamOptions) (broker.StreamPosition, error) {
	if _, err := e.attached(); err != nil {
		return broker.StreamPosition{}, err
	}
	if err := ctx.Err(); err != nil {
		return broker.StreamPosition{}, err
	}
	return e.core.PublishStream(m, opts), nil
}

// History implements broker.Streamer.
func (e *Embedded) History(ctx context.Context, topic string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	if _, err := e.attached(); err != nil {
		return broker.HistoryResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return broker.HistoryResult{}, err
	}
	return e.core.History(topic, q), nil
}

// AddPresence implements broker.Presencer: the Core records the entries
// and publishes the joins, to the handlers of the nodes listening, before
// it returns. It must not be called while the caller holds a lock its
// handler takes (presence.go).
func (e *Embedded) AddPresence(ctx context.Context, c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.AddPresence(c, topics, opts)
}

// RemovePresence implements broker.Presencer.
func (e *Embedded) RemovePresence(ctx context.Context, c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return n.RemovePresence(c, topics, opts)
}

// Presence implements broker.Presencer.
func (e *Embedded) Presence(ctx context.Context, topic string, limit int) (broker.PresenceResult, error) {
	if _, err := e.attached(); err != nil {
		return broker.PresenceResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return broker.PresenceResult{}, err
	}
	return e.core.Presence(topic, limit)
}

// BrokerStats implements broker.StatsReporter: the figures of the Core's
// streams (streams.go). The presence figures are Core.PresenceStats.
func (e *Embedded) BrokerStats() map[string]int64 {
	s := e.core.StreamStats()
	return map[string]int64{
		"streams":                       s.Streams,
		"stream_messages":               s.Messages,
		"stream_bytes":                  s.Bytes,
		"stream_max_bytes":              s.MaxBytes,
		"streams_evicted_total":         s.Evicted,
		"stream_messages_trimmed_total": s.Trimmed,
		"streams_expired_total":         s.Expired,
	}
}

// Subscribe implements broker.Broker.
func (e *Embedded) Subscribe(_ context.Context, topic string) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	n.Listen(topic)
	return nil
}

// Unsubscribe implements broker.Broker.
func (e *Embedded) Unsubscribe(_ context.Context, topic string) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	n.Unlisten(topic)
	return nil
}

// SubscribeTopics implements broker.BatchSubscriber: in process, it
// cannot fail half way.
func (e *Embedded) SubscribeTopics(_ context.Context, topics []string) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	for _, topic := range topics {
		n.Listen(topic)
	}
	return nil
}

// UnsubscribeTopics implements broker.BatchUnsubscriber.
func (e *Embedded) UnsubscribeTopics(_ context.Context, topics []string) error {
	n, err := e.attached()
	if err != nil {
		return err
	}
	for _, topic := range topics {
		n.Unlisten(topic)
	}
	return nil
}

// SetCount implements broker.Broker.
func (e *Embedded) SetCount(topic string, count int) {
	if n, err := e.attached(); err == nil {
		n.SetCount(topic, count)
	}
}

// Count implements broker.Broker.
func (e *Embedded) Count(_ context.Context, topic string) (int, error) {
	if _, err := e.attached(); err != nil {
		return 0, err
	}
	return e.core.Count(topic), nil
}

// Topics implements broker.TopicLister.
func (e *Embedded) Topics(context.Context) ([]broker.TopicCount, error) {
	if _, err := e.attached(); err != nil {
		return nil, err
	}
	return e.core.Topics(), nil
}

// Nodes implements broker.NodeLister.
func (e *Embedded) Nodes(context.Context) ([]broker.NodeInfo, error) {
	n, err := e.attached()
	if err != nil {
		return nil, err
	}
	n.Touch() // an in-process node is alive while it can ask
	return e.core.Nodes(), nil
}

// InProcess implements broker.InProcess: every call of an Embedded broker
// runs to completion in the caller's goroutine (Publish runs the
// subscribed nodes' handlers, which must not block).
func (e *Embedded) InProcess() bool { return true }

// Close implements broker.Broker: the node leaves the Core, with its
// presence entries (their leaves after their grace).
func (e *Embedded) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.node != nil {
		e.node.Remove()
	}
	return nil
}
