package server

import (
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// The session's stream operations: a node's StreamPublish, answered by an
// Ack with the message's offset, and its HistoryQuery, answered by a
// HistoryResult. Both are checked as a publish and a subscribe are, and
// refused one by one, with the reason in the answer; the session goes on.

// streamPublish appends a node's message to its topic's stream.
func (ss *session) streamPublish(p *pb.StreamPublish, t *tally) {
	seq := p.GetSeq()
	if err := wire.ValidMessage(p.GetTopic(), p.GetId(), len(p.GetData()), ss.srv.cfg.MaxMessageSize); err != nil {
		ss.refuse(refusedInvalid, seq, err)
		return
	}
	opts, err := wire.StreamOptions(p.GetSize(), p.GetTtlMs())
	if err != nil {
		ss.refuse(refusedLimit, seq, err)
		return
	}
	// As for every publish: what a node would embed in its clients'
	// frames must be JSON in UTF-8. A stream would also keep it and hand
	// it to every client that recovers.
	if err := wire.ValidData(p.GetData()); err != nil {
		ss.refuse(refusedData, seq, fmt.Errorf("%w (message %q on %q)", err, p.GetId(), p.GetTopic()))
		return
	}
	// The Core keeps Data. protobuf decodes a bytes field into a slice of
	// its own, not into gRPC's receive buffer (which gRPC recycles), so it
	// holds nothing else alive and nothing writes to it afterwards.
	m := broker.Message{Topic: p.GetTopic(), ID: p.GetId(), Data: p.GetData()}
	pos, nodes := ss.srv.core.PublishStreamCount(m, opts)
	t.routed += int64(nodes)
	t.published++
	t.bytes += int64(len(m.Data))
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Ack{Ack: &pb.Ack{Seq: seq, Offset: pos.Offset, Epoch: pos.Epoch}}}}, 0)
}

// refuse answers the request seq with err, counted and logged as kind.
func (ss *session) refuse(kind string, seq uint64, err error) {
	ss.srv.refusals.note(kind, ss.peer+" node "+ss.id, err)
	ss.ack(seq, 0, err)
}

// history answers a node's HistoryQuery with one page of the stream.
func (ss *session) history(q *pb.HistoryQuery) {
	seq := q.GetSeq()
	fail := func(kind string, err error) {
		ss.srv.stats.refusedInvalid.Add(1)
		ss.srv.refusals.note(kind, ss.peer+" node "+ss.id, err)
		ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_History{History: &pb.HistoryResult{Seq: seq, Error: err.Error()}}}}, 0)
	}
	if err := wire.ValidTopic(q.GetTopic()); err != nil {
		fail(refusedInvalid, err)
		return
	}
	opts, err := wire.StreamOptions(q.GetSize(), q.GetTtlMs())
	if err != nil {
		fail(refusedLimit, err)
		return
	}
	// The Core bounds a read by what the stream holds, its size at most;
	// the query's size only says how to start a stream there is none of.
	hq := broker.HistoryQuery{Limit: wire.QueryLimit(q.GetLimit()), Options: opts}
	if s := q.GetSince(); s != nil {
		hq.Since = &broker.StreamPosition{Epoch: s.GetEpoch(), Offset: s.GetOffset()}
	}
	r, more := ss.srv.core.HistoryPage(q.GetTopic(), hq, ss.srv.pageBytes)
	b, size := wire.HistoryBatch(r.Messages)
	ss.srv.stats.historyNode.Add(1)
	res := &pb.HistoryResult{Seq: seq, Epoch: r.Epoch, Offset: r.Offset, Messages: b, Truncated: more}
	// Counted against the node's queue like deliveries: a node that does
	// not read its answers is disconnected rather than piling them up.
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_History{History: res}}, Size: size}, size)
}
