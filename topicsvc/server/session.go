package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// session is one node's stream. Its receive goroutine applies the node's
// operations to the Core; its send goroutine drains the bounded queue that
// the Core's deliveries fill, several operations per stream message.
type session struct {
	srv    *Server
	stream pb.TopicService_SessionServer
	id     string
	peer   string
	node   *topicsvc.Node

	queue    *wire.Queue[outOp]
	queued   atomic.Int64 // data bytes queued or being sent
	lastSeen atomic.Int64 // Unix nanoseconds of the last frame received

	ctx    context.Context
	cancel context.CancelCauseFunc
	reason atomic.Pointer[string] // why the session ended; set once, by end
}

// errNodeLeft is the cause of a session the node closed itself.
var errNodeLeft = errors.New("node closed its session")

// Session implements the node stream.
func (s *Server) Session(stream pb.TopicService_SessionServer) error {
	first, err := s.hello(stream)
	if err != nil {
		return err
	}
	ops := first.GetOps()
	if len(ops) == 0 || ops[0].GetHello() == nil {
		s.stats.refusedInvalid.Add(1)
		err := invalid(errors.New("topicsvc: the first frame of a session must start with a hello"))
		s.refusals.note(refusedInvalid, peerAddr(stream.Context()), err)
		return err
	}
	id := ops[0].GetHello().GetNodeId()
	if id == "" || len(id) > wire.MaxNodeIDLen {
		s.stats.refusedInvalid.Add(1)
		err := invalid(fmt.Errorf("topicsvc: node id must be 1..%d bytes", wire.MaxNodeIDLen))
		s.refusals.note(refusedInvalid, peerAddr(stream.Context()), err)
		return err
	}
	ss := &session{
		srv:    s,
		stream: stream,
		id:     id,
		peer:   peerAddr(stream.Context()),
		queue:  wire.NewQueue[outOp](s.cfg.QueueSize),
	}
	ss.ctx, ss.cancel = context.WithCancelCause(stream.Context())
	ss.lastSeen.Store(time.Now().UnixNano())
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Welcome{Welcome: &pb.Welcome{MaxMessageSize: uint64(s.cfg.MaxMessageSize), Streams: true, Presence: true}}}}, 0)

	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "topic service stopping")
	}
	old := s.sessions[id]
	if old != nil && old.live() {
		s.mu.Unlock()
		silent := time.Since(time.Unix(0, old.lastSeen.Load())).Round(time.Millisecond)
		err := status.Errorf(codes.AlreadyExists, "topicsvc: node %q has a live session (its last frame %v ago, from %s); a node id connects once", id, silent, old.peer)
		s.stats.refusedInvalid.Add(1)
		s.refusals.note(refusedLive, ss.peer, err)
		return err
	}
	s.sessions[id] = ss
	ss.node = s.core.AddNode(id, ss.deliver) // removes old's node
	s.mu.Unlock()
	if old != nil {
		old.end(reasonReplaced, errors.New("replaced by a new session of the same node"))
	}
	s.stats.sessions.Add(1)
	s.stats.framesIn.Add(1)
	s.log.Info("node connected", "node", id, "peer", ss.peer)

	sent, recvd := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sent)
		ss.sendLoop()
	}()
	go func() {
		defer close(recvd)
		ss.recvLoop(first, 1)
	}()

	<-ss.ctx.Done()
	if ss.reason.Load() == nil {
		// The stream itself ended (the node cancelled it or the
		// connection broke): the receive loop is about to say which.
		select {
		case <-recvd:
		case <-time.After(100 * time.Millisecond):
		}
		ss.end(reasonStream, context.Cause(ss.ctx))
	}
	reason := *ss.reason.Load()
	s.stats.disconnected(reason)
	if reason == reasonHeartbeat {
		// Noticed dead by its silence, the heartbeat timeout after its
		// last frame: the leaves of its presence go at once, within the
		// node-death bound, rather than another grace later.
		ss.node.RemoveSilent()
	} else {
		// Its connection closed (or it left, or was replaced): the leaves
		// wait for their grace, within which a node that reconnects adds
		// its entries again.
		ss.node.Remove()
	}
	s.mu.Lock()
	if s.sessions[id] == ss {
		delete(s.sessions, id)
	}
	s.mu.Unlock()

	cause := context.Cause(ss.ctx)
	if reason == reasonLeft {
		s.log.Info("node left", "node", id, "peer", ss.peer)
	} else {
		s.log.Warn("node disconnected", "node", id, "peer", ss.peer, "reason", reason, "cause", cause)
	}
	// The sender stops at once unless it is blocked in Send on a node that
	// does not read; that Send only returns once this handler has returned.
	select {
	case <-sent:
	case <-time.After(100 * time.Millisecond):
	}
	if _, ok := status.FromError(cause); ok {
		return cause
	}
	if reason == reasonLeft {
		return nil
	}
	return status.Error(codes.Aborted, cause.Error())
}

// hello receives the session's first frame, within HelloTimeout.
func (s *Server) hello(stream pb.TopicService_SessionServer) (*pb.NodeFrame, error) {
	type recv struct {
		f   *pb.NodeFrame
		err error
	}
	ch := make(chan recv, 1)
	go func() {
		f, err := stream.Recv()
		ch <- recv{f, err}
	}()
	t := time.NewTimer(s.cfg.HelloTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-t.C:
		// Returning ends the stream, which ends the Recv above.
		err := status.Errorf(codes.DeadlineExceeded, "topicsvc: no hello within %v", s.cfg.HelloTimeout)
		s.stats.refusedInvalid.Add(1)
		s.refusals.note(refusedHello, peerAddr(stream.Context()), err)
		return nil, err
	}
}

// live reports whether the session is healthy: not ended, and a frame
// from its node within half the heartbeat timeout (2.5 s by default; nodes
// send one at least every second). A second session for the same node id
// is refused while the first is live, and replaces it otherwise: a node
// that reconnects after its connection broke, before the service noticed,
// is accepted once the old session has been silent that long.
func (ss *session) live() bool {
	return ss.ctx.Err() == nil && time.Since(time.Unix(0, ss.lastSeen.Load())) < ss.srv.cfg.HeartbeatTimeout/2
}

// end ends the session for reason (one of the reason constants); the first
// call decides both the reason and the cause.
func (ss *session) end(reason string, cause error) {
	if ss.reason.CompareAndSwap(nil, &reason) {
		ss.cancel(cause)
	}
}

// queueLen is how many operations wait to be sent to the node.
func (ss *session) queueLen() int { return ss.queue.Len() }

// outOp is one operation waiting to be sent to a node: a delivery of msg
// when op is nil.
type outOp = wire.Outgoing[pb.ServiceOp]

// deliver is called by the Core with a shard lock held: it never blocks.
func (ss *session) deliver(m broker.Message) {
	ss.push(outOp{Msg: m}, len(m.Data))
}

// push queues o for the node, or disconnects the node if its queue is
// full: a node that does not keep up must not stall the others.
func (ss *session) push(o outOp, size int) {
	if ss.queued.Add(int64(size)) > int64(ss.srv.cfg.QueueBytes) {
		ss.queued.Add(-int64(size))
		ss.slow()
		return
	}
	if !ss.queue.Push(o) {
		ss.queued.Add(-int64(size))
		ss.slow()
	}
}

func (ss *session) slow() {
	if ss.ctx.Err() == nil {
		ss.end(reasonSlow, status.Error(codes.ResourceExhausted, "topicsvc: node too slow, its outgoing queue is full"))
	}
}

// recvLoop applies the node's frames, starting with the operations of
// frame after the first skip ones.
func (ss *session) recvLoop(frame *pb.NodeFrame, skip int) {
	st := &ss.srv.stats
	for {
		var t tally
		for _, op := range frame.GetOps()[skip:] {
			ss.apply(op, &t)
		}
		if b := frame.GetPublishes(); b != nil {
			if err := wire.ReadBatch(b, func(m broker.Message) { ss.publish(m, &t) }); err != nil {
				ss.notice(err)
			}
		}
		skip = 0
		if t.invalid > 0 {
			ss.srv.stats.refusedInvalid.Add(t.invalid - 1) // noticeKind adds the last
			ss.noticeKind(refusedData, fmt.Errorf("%d messages dropped: %w", t.invalid, t.invalidErr))
		}
		if t.published > 0 {
			st.publishedNode.Add(t.published)
			st.publishedBytes.Add(t.bytes)
			st.routed.Add(t.routed)
		}
		var err error
		frame, err = ss.stream.Recv()
		if err != nil {
			// A node that closes its broker cancels its stream.
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				ss.end(reasonLeft, errNodeLeft)
			} else {
				ss.end(reasonStream, err)
			}
			return
		}
		if ss.ctx.Err() != nil {
			return
		}
		st.framesIn.Add(1)
		// Any frame is a sign of life: a busy node sends data rather than
		// heartbeats, and its lastHeartbeat (Nodes) must not go stale.
		now := time.Now()
		ss.lastSeen.Store(now.UnixNano())
		ss.node.TouchAt(now)
	}
}

// tally counts what one frame of a node published, so that the shared
// counters are updated once per frame.
type tally struct {
	published, bytes, routed int64
	invalid                  int64 // messages dropped for their data
	invalidErr               error // the first of them
}

// publish routes a message the node published.
func (ss *session) publish(m broker.Message, t *tally) {
	if err := wire.ValidMessage(m.Topic, m.ID, len(m.Data), ss.srv.cfg.MaxMessageSize); err != nil {
		ss.notice(err)
		return
	}
	// Every node embeds the data in its clients' frames as raw JSON: what
	// is not JSON in UTF-8 is dropped here, counted and summarised in the
	// log; the node hears once per frame.
	if err := wire.ValidData(m.Data); err != nil {
		if t.invalid == 0 {
			t.invalidErr = fmt.Errorf("%w (message %q on %q)", err, m.ID, m.Topic)
		}
		t.invalid++
		return
	}
	t.routed += int64(ss.srv.core.Publish(m))
	t.published++
	t.bytes += int64(len(m.Data))
}

func (ss *session) ack(seq uint64, count int, err error) {
	a := &pb.Ack{Seq: seq, Count: int64(count)}
	if err != nil {
		ss.srv.stats.refusedInvalid.Add(1)
		a.Error = err.Error()
	}
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Ack{Ack: a}}}, 0)
}

func (ss *session) notice(err error) { ss.noticeKind(refusedInvalid, err) }

func (ss *session) noticeKind(kind string, err error) {
	ss.srv.stats.refusedInvalid.Add(1)
	ss.srv.refusals.note(kind, ss.peer+" node "+ss.id, err)
	ss.push(outOp{Op: &pb.ServiceOp{Op: &pb.ServiceOp_Notice{Notice: &pb.Notice{Error: err.Error()}}}}, 0)
}

// apply carries out one operation of the node. Invalid operations are
// refused one by one; the session goes on.
func (ss *session) apply(op *pb.NodeOp, t *tally) {
	switch o := op.GetOp().(type) {
	case *pb.NodeOp_Subscribe:
		if err := wire.ValidTopic(o.Subscribe.GetTopic()); err != nil {
			ss.ack(o.Subscribe.GetSeq(), 0, err)
			return
		}
		topic := o.Subscribe.GetTopic()
		if max := ss.srv.cfg.MaxNodeTopics; ss.node.Listens() >= max && !ss.node.Listening(topic) {
			err := fmt.Errorf("topicsvc: node listens to %d topics, the limit is %d", max, max)
			ss.srv.refusals.note(refusedLimit, ss.peer+" node "+ss.id, err)
			ss.ack(o.Subscribe.GetSeq(), 0, err)
			return
		}
		ss.node.Listen(topic)
		ss.ack(o.Subscribe.GetSeq(), 0, nil)
	case *pb.NodeOp_Unsubscribe:
		ss.node.Unlisten(o.Unsubscribe.GetTopic())
		ss.node.SetCount(o.Unsubscribe.GetTopic(), 0) // counts only what it routes
		if seq := o.Unsubscribe.GetSeq(); seq != 0 {
			ss.ack(seq, 0, nil)
		}
	case *pb.NodeOp_Count:
		for _, tc := range o.Count.GetCounts() {
			if err := wire.ValidTopic(tc.GetTopic()); err != nil {
				ss.notice(err)
				continue
			}
			n := tc.GetCount()
			switch {
			case n < 0 || n > wire.MaxCount:
				ss.noticeKind(refusedLimit, fmt.Errorf("topicsvc: count %d for %q, counts are 0..%d", n, tc.GetTopic(), wire.MaxCount))
				continue
			case n > 0 && !ss.node.Listening(tc.GetTopic()):
				// A node counts the subscribers of what it subscribed to,
				// nothing else: no count for a topic it does not route.
				ss.noticeKind(refusedInvalid, fmt.Errorf("topicsvc: count %d for %q, which the node does not subscribe to", n, tc.GetTopic()))
				continue
			case n > 0 && ss.node.Counted() >= ss.srv.cfg.MaxNodeTopics && !ss.node.Counts(tc.GetTopic()):
				ss.noticeKind(refusedLimit, fmt.Errorf("topicsvc: node counts %d topics, the limit is %d", ss.srv.cfg.MaxNodeTopics, ss.srv.cfg.MaxNodeTopics))
				continue
			}
			ss.node.SetCount(tc.GetTopic(), int(n))
		}
	case *pb.NodeOp_CountQuery:
		q := o.CountQuery
		if err := wire.ValidTopic(q.GetTopic()); err != nil {
			ss.ack(q.GetSeq(), 0, err)
			return
		}
		ss.ack(q.GetSeq(), ss.srv.core.CountExcept(q.GetTopic(), ss.node), nil)
	case *pb.NodeOp_StreamPublish:
		ss.streamPublish(o.StreamPublish, t)
	case *pb.NodeOp_HistoryQuery:
		ss.history(o.HistoryQuery)
	case *pb.NodeOp_PresenceAdd:
		ss.presenceAdd(o.PresenceAdd)
	case *pb.NodeOp_PresenceRemove:
		ss.presenceRemove(o.PresenceRemove)
	case *pb.NodeOp_PresenceQuery:
		ss.presenceQuery(o.PresenceQuery)
	case *pb.NodeOp_Heartbeat:
		ss.node.Touch()
	case *pb.NodeOp_Hello:
		ss.notice(errors.New("topicsvc: hello is only valid as the first operation of a session"))
	default:
		ss.notice(fmt.Errorf("topicsvc: unknown operation %T", o))
	}
}

func (ss *session) sendLoop() {
	tick := time.NewTicker(ss.srv.cfg.HeartbeatInterval)
	defer tick.Stop()
	// Silence is checked once a tick: ending the session once it passes
	// the timeout less a tick forgets a silent node within the timeout of
	// its last frame, not up to a tick later. A live node sends a frame
	// every second.
	limit := max(ss.srv.cfg.HeartbeatTimeout-ss.srv.cfg.HeartbeatInterval, ss.srv.cfg.HeartbeatTimeout/2)
	for {
		var heartbeat *pb.ServiceOp
		select {
		case <-ss.ctx.Done():
			return
		case <-ss.queue.Ready():
		case <-tick.C:
			if silent := time.Since(time.Unix(0, ss.lastSeen.Load())); silent > limit {
				ss.end(reasonHeartbeat, status.Errorf(codes.DeadlineExceeded, "topicsvc: no heartbeat from the node for %v", silent.Round(time.Millisecond)))
				return
			}
			heartbeat = &pb.ServiceOp{Op: &pb.ServiceOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
		}
		items := ss.queue.Take()
		if !ss.sendBatch(heartbeat, items) {
			return
		}
		ss.queue.Recycle(items)
	}
}

// sendBatch sends first (if not nil) and items in as few frames as
// wire.CutFrames allows.
func (ss *session) sendBatch(first *pb.ServiceOp, items []outOp) bool {
	st := &ss.srv.stats
	return wire.CutFrames(first, items, func(ops []*pb.ServiceOp, b *pb.Batch, count, bytes, opBytes int) bool {
		if err := ss.stream.Send(&pb.ServiceFrame{Ops: ops, Deliveries: b}); err != nil {
			ss.end(reasonStream, err)
			return false
		}
		st.framesOut.Add(1)
		if opBytes > 0 {
			ss.queued.Add(-int64(opBytes)) // history answers
		}
		if count > 0 {
			ss.queued.Add(-int64(bytes))
			st.delivered.Add(int64(count))
			st.deliveredBytes.Add(int64(bytes))
		}
		return true
	})
}
