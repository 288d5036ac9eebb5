package server

import (
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// The session's presence operations: a node's PresenceAdd and
// PresenceRemove, answered by an Ack once the Core applied them (the
// entries belong to the session's node, and vanish with it), and its
// PresenceQuery, answered by a PresenceResult. Invalid ones are refused
// one by one, with the reason in the answer; the session goes on.

// presenceTopics checks an operation's topics.
func presenceTopics(topics []string) (kind string, err error) {
	switch {
	case len(topics) == 0:
		return refusedInvalid, fmt.Errorf("topicsvc: presence: no topic")
	case len(topics) > wire.MaxPresenceTopics:
		return refusedLimit, fmt.Errorf("topicsvc: presence: %d topics in one operation, the limit is %d", len(topics), wire.MaxPresenceTopics)
	}
	for _, t := range topics {
		if err := topicsvc.ValidPresenceTopic(t); err != nil {
			return refusedInvalid, err
		}
	}
	return "", nil
}

// presenceOp checks the topics and grace of an add or remove operation
// and returns its options, or the refusal's kind and reason.
func presenceOp(topics []string, graceMs uint64, joinLeave bool) (broker.PresenceOptions, string, error) {
	if kind, err := presenceTopics(topics); err != nil {
		return broker.PresenceOptions{}, kind, err
	}
	grace, err := wire.PresenceGrace(graceMs)
	if err != nil {
		return broker.PresenceOptions{}, refusedLimit, err
	}
	return broker.PresenceOptions{JoinLeave: joinLeave, Grace: grace}, "", nil
}

// presenceAdd records a node's connection in the presence of its topics.
func (ss *session) presenceAdd(p *pb.PresenceAdd) {
	seq := p.GetSeq()
	opts, kind, err := presenceOp(p.GetTopics(), p.GetGraceMs(), p.GetJoinLeave())
	if err != nil {
		ss.refuse(kind, seq, err)
		return
	}
	c := wire.FromPresenceClient(p.GetClient())
	if err := topicsvc.ValidPresenceClient(c); err != nil {
		ss.refuse(refusedInvalid, seq, err)
		return
	}
	if err := ss.node.AddPresence(c, p.GetTopics(), opts); err != nil {
		ss.refuse(refusedInvalid, seq, err)
		return
	}
	ss.srv.stats.presenceOps.Add(1)
	ss.ack(seq, 0, nil)
}

// presenceRemove removes a node's connection from the presence of its
// topics.
func (ss *session) presenceRemove(p *pb.PresenceRemove) {
	seq := p.GetSeq()
	opts, kind, err := presenceOp(p.GetTopics(), p.GetGraceMs(), p.GetJoinLeave())
	if err != nil {
		ss.refuse(kind, seq, err)
		return
	}
	c := broker.PresenceClient{Conn: p.GetConn(), User: p.GetUser()}
	if err := ss.node.RemovePresence(c, p.GetTopics(), opts); err != nil {
		ss.refuse(refusedInvalid, seq, err)
		return
	}
	ss.srv.stats.presenceOps.Add(1)
	if seq != 0 {
		ss.ack(seq, 0, nil)
	}
}

// presenceQuery answers a node's PresenceQuery.
func (ss *session) presenceQuery(q *pb.PresenceQuery) {
	seq := q.GetSeq()
	fail := func(kind string, err error) {
		ss.srv.stats.refusedInvalid.Add(1)
		ss.srv.refusals.note(kind, ss.peer+" node "+ss.id, err)
		ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Presence{Presence: &pb.PresenceResult{Seq: seq, Error: err.Error()}}}}, 0)
	}
	r, size, kind, err := ss.srv.presence(q.GetTopic(), q.GetLimit())
	if err != nil {
		fail(kind, err)
		return
	}
	ss.srv.stats.presenceNode.Add(1)
	res := &pb.PresenceResult{Seq: seq, Users: r.users, Connections: r.connections, Clients: r.clients, Truncated: r.truncated}
	// Counted against the node's queue like deliveries, as a history
	// answer is.
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Presence{Presence: res}}, Size: size}, size)
}

// presenceAnswer is a topic's presence as both the session and the push
// API answer it.
type presenceAnswer struct {
	users, connections int64
	clients            []*pb.PresenceClient
	truncated          bool
}

// presence reads topic's presence with at most limit clients, bounded to
// about the service's presence page; kind says how to count a refusal.
func (s *Server) presence(topic string, limit uint32) (a presenceAnswer, size int, kind string, err error) {
	if err := topicsvc.ValidPresenceTopic(topic); err != nil {
		return a, 0, refusedInvalid, err
	}
	if limit > wire.MaxPresenceLimit {
		return a, 0, refusedLimit, fmt.Errorf("topicsvc: presence limit %d, the most one answer lists is %d", limit, wire.MaxPresenceLimit)
	}
	r, err := s.core.Presence(topic, int(limit))
	if err != nil {
		return a, 0, refusedInvalid, err
	}
	a.users, a.connections = int64(r.Users), int64(r.Connections)
	if len(r.Clients) > 0 {
		a.clients, size, a.truncated = wire.PresenceClients(r.Clients, s.presencePageBytes)
	}
	return a, size, "", nil
}
