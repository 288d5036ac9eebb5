package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// The client's presence (broker.Presencer). The service's Core keeps the
// cluster's entries and decides the joins and leaves; adds, removes and
// queries are requests on the session, each answered once.
//
// The client keeps its own entries (per connection: the topics, each
// with its user, info and options) as the truth, and adds them again at
// the start of every new session: the service removed them with the old
// session's node, or lost them in a restart. What that means for the
// join and leave events:
//
//   - A session re-established within the grace (a broken connection, a
//     new session to the same service): the old node's removal scheduled
//     the leaves, the new session's adds cancel them: no event.
//   - Re-established later than the grace, or after the service noticed
//     the node dead by its silence: the leaves were sent, and the adds
//     send the joins again.
//   - After a service restart: the Core lost every entry without a
//     leave; the adds send a join for every user of the node, whom the
//     other nodes' clients may already know.

var _ broker.Presencer = (*Client)(nil)

// errNoPresence is the answer of a service that keeps no presence (one
// from before presence): it would ignore the requests, not answer them.
var errNoPresence = fmt.Errorf("topicsvc: the topic service keeps no presence (it predates it); upgrade it: %w", errors.ErrUnsupported)

// presenceItem is one of the client's entries in one topic: what the
// session re-sends.
type presenceItem struct {
	user string
	info []byte // the client's own copy; nil for none
	opts broker.PresenceOptions
}

// presenceSession returns the current session if its service keeps
// presence.
func (c *Client) presenceSession() (*session, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	if !s.presence {
		return nil, errNoPresence
	}
	return s, nil
}

// chunkTopics splits topics into runs that one operation carries: at most
// wire.MaxPresenceTopics of them and wire.PresenceTopicBytes of topic
// bytes (a longer run could exceed the service's frame).
func chunkTopics(topics []string) [][]string {
	var out [][]string
	start, bytes := 0, 0
	for i, t := range topics {
		if i > start && (i-start == wire.MaxPresenceTopics || bytes+len(t) > wire.PresenceTopicBytes) {
			out = append(out, topics[start:i])
			start, bytes = i, 0
		}
		bytes += len(t)
	}
	if start < len(topics) {
		out = append(out, topics[start:])
	}
	return out
}

func topicBytes(topics []string) int {
	n := 0
	for _, t := range topics {
		n += len(t) + 2
	}
	return n
}

func checkPresenceTopics(topics []string) error {
	for _, t := range topics {
		if err := topicsvc.ValidPresenceTopic(t); err != nil {
			return err
		}
	}
	return nil
}

// AddPresence implements broker.Presencer: it returns once the service
// recorded the entries (and routed the joins they cause). The entries are
// kept by the client too, and added again by every new session. While the
// service is unreachable it fails at once with an error wrapping
// broker.ErrUnavailable and records nothing; a session lost before the
// answer is the same error, and the entries are then kept, to be added by
// the next session unless the caller removes them.
func (c *Client) AddPresence(ctx context.Context, pc broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if err := topicsvc.ValidPresenceClient(pc); err != nil {
		return err
	}
	if err := checkPresenceTopics(topics); err != nil {
		return err
	}
	grace, err := wire.PresenceGraceMs(opts.Grace)
	if err != nil {
		return err
	}
	if len(topics) == 0 {
		return nil
	}
	if _, err := c.presenceSession(); err != nil {
		return err
	}
	item := presenceItem{user: pc.User, info: bytes.Clone([]byte(pc.Info)), opts: opts}
	c.mu.Lock()
	s := c.sess
	if s == nil || !s.presence {
		c.mu.Unlock()
		return errUnavailable
	}
	// Recorded with the session read under one lock: a session that
	// starts afterwards re-sends them, one that started before gets the
	// request below.
	e := c.presence[pc.Conn]
	if e == nil {
		e = map[string]presenceItem{}
		c.presence[pc.Conn] = e
	}
	for _, t := range topics {
		e[t] = item
	}
	c.mu.Unlock()
	return c.sendPresenceAdds(ctx, s, pc.Conn, item, grace, topics)
}

// sendPresenceAdds sends the PresenceAdd ops of conn in topics, as few as
// the limits allow, and waits for their answers.
func (c *Client) sendPresenceAdds(ctx context.Context, s *session, conn string, it presenceItem, grace uint64, topics []string) error {
	chunks := chunkTopics(topics)
	pcl := &pb.PresenceClient{Conn: conn, User: it.user, Info: string(it.info)}
	return c.requestAllSized(ctx, s, len(chunks),
		func(i int) int { return topicBytes(chunks[i]) + len(conn) + len(it.user) + len(it.info) },
		func(i int, seq uint64) *pb.NodeOp {
			return &pb.NodeOp{Op: &pb.NodeOp_PresenceAdd{PresenceAdd: &pb.PresenceAdd{
				Seq: seq, Client: pcl, Topics: chunks[i], JoinLeave: it.opts.JoinLeave, GraceMs: grace,
			}}}
		})
}

// RemovePresence implements broker.Presencer: the client forgets the
// entries at once (no later session adds them), and it returns once the
// service removed them. While the service is unreachable it fails at once
// with an error wrapping broker.ErrUnavailable; the service removed them
// with the lost session's node anyway, so there is nothing to retry.
func (c *Client) RemovePresence(ctx context.Context, pc broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if pc.Conn == "" {
		return errors.New("topicsvc: presence: empty connection id")
	}
	if err := checkPresenceTopics(topics); err != nil {
		return err
	}
	grace, err := wire.PresenceGraceMs(opts.Grace)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return broker.ErrClosed
	}
	if e := c.presence[pc.Conn]; e != nil {
		for _, t := range topics {
			delete(e, t)
		}
		if len(e) == 0 {
			delete(c.presence, pc.Conn)
		}
	}
	s := c.sess
	c.mu.Unlock()
	if len(topics) == 0 {
		return nil
	}
	if s == nil {
		return errUnavailable
	}
	if !s.presence {
		return errNoPresence
	}
	chunks := chunkTopics(topics)
	return c.requestAllSized(ctx, s, len(chunks),
		func(i int) int { return topicBytes(chunks[i]) + len(pc.Conn) + len(pc.User) },
		func(i int, seq uint64) *pb.NodeOp {
			return &pb.NodeOp{Op: &pb.NodeOp_PresenceRemove{PresenceRemove: &pb.PresenceRemove{
				Seq: seq, Conn: pc.Conn, User: pc.User, Topics: chunks[i], JoinLeave: opts.JoinLeave, GraceMs: grace,
			}}}
		})
}

// Presence implements broker.Presencer: the service's answer, with at
// most limit clients, and at most wire.MaxPresenceLimit (10,000) and
// about 1 MiB of them (a larger limit asks for that many). While the
// service is unreachable it fails at once with an error wrapping
// broker.ErrUnavailable.
func (c *Client) Presence(ctx context.Context, topic string, limit int) (broker.PresenceResult, error) {
	if err := topicsvc.ValidPresenceTopic(topic); err != nil {
		return broker.PresenceResult{}, err
	}
	limit = min(max(limit, 0), wire.MaxPresenceLimit)
	s, err := c.presenceSession()
	if err != nil {
		return broker.PresenceResult{}, err
	}
	seq := s.seq.Add(1)
	ch := make(chan *pb.PresenceResult, 1)
	s.pmu.Lock()
	s.presences[seq] = ch
	s.pmu.Unlock()
	forget := func() {
		s.pmu.Lock()
		delete(s.presences, seq)
		s.pmu.Unlock()
	}
	q := &pb.PresenceQuery{Seq: seq, Topic: topic, Limit: uint32(limit)}
	if err := c.enqueue(ctx, s, nodeOut{Op: &pb.NodeOp{Op: &pb.NodeOp_PresenceQuery{PresenceQuery: q}}}); err != nil {
		forget()
		return broker.PresenceResult{}, err
	}
	var res *pb.PresenceResult
	select {
	case res = <-ch:
	case <-s.ctx.Done():
		forget()
		return broker.PresenceResult{}, c.lost(s)
	case <-ctx.Done():
		forget()
		return broker.PresenceResult{}, ctx.Err()
	}
	if res.GetError() != "" {
		return broker.PresenceResult{}, fmt.Errorf("topicsvc: refused by the service: %s", res.GetError())
	}
	r := broker.PresenceResult{Users: int(res.GetUsers()), Connections: int(res.GetConnections())}
	if cs := res.GetClients(); len(cs) > 0 {
		r.Clients = make([]broker.PresenceClient, len(cs))
		for i, pc := range cs {
			r.Clients[i] = wire.FromPresenceClient(pc)
		}
	}
	return r, nil
}

// presenceState returns the ops that add the client's entries again, for
// the start of a new session; c.mu held. Each connection's topics are
// grouped by what they carry (user, info, options), so that a connection
// in many topics costs a few operations.
func (c *Client) presenceState() []*pb.NodeOp {
	var ops []*pb.NodeOp
	type group struct {
		it     presenceItem
		topics []string
	}
	for conn, e := range c.presence {
		groups := map[string]*group{}
		var order []string
		for t, it := range e {
			key := fmt.Sprintf("%q %q %t %d", it.user, it.info, it.opts.JoinLeave, it.opts.Grace)
			g := groups[key]
			if g == nil {
				g = &group{it: it}
				groups[key] = g
				order = append(order, key)
			}
			g.topics = append(g.topics, t)
		}
		for _, key := range order {
			g := groups[key]
			grace, err := wire.PresenceGraceMs(g.it.opts.Grace)
			if err != nil {
				continue // checked when it was added: not reached
			}
			pcl := &pb.PresenceClient{Conn: conn, User: g.it.user, Info: string(g.it.info)}
			for _, ch := range chunkTopics(g.topics) {
				ops = append(ops, &pb.NodeOp{Op: &pb.NodeOp_PresenceAdd{PresenceAdd: &pb.PresenceAdd{
					Client: pcl, Topics: ch, JoinLeave: g.it.opts.JoinLeave, GraceMs: grace,
				}}})
			}
		}
	}
	return ops
}

// PresenceEntries returns how many (connection, topic) entries the client
// keeps, to add again at its next session.
func (c *Client) PresenceEntries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.presence {
		n += len(e)
	}
	return n
}
