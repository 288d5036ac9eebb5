package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/protobuf/proto"
)

// session is one stream to the service.
type session struct {
	stream  pb.TopicService_SessionClient
	queue   *wire.Queue[nodeOut]
	initial []*pb.NodeOp // the state re-sent first

	ctx      context.Context
	cancel   context.CancelCauseFunc
	seq      atomic.Uint64
	lastRecv atomic.Int64 // Unix nanoseconds

	// streams and presence say that the service keeps streams and
	// presence (its Welcome said so).
	streams, presence bool

	pmu       sync.Mutex
	pending   map[uint64]chan *pb.Ack
	histories map[uint64]chan *pb.HistoryResult  // history queries, by seq
	presences map[uint64]chan *pb.PresenceResult // presence queries, by seq
}

// nodeOut is one operation waiting to be sent to the service: a publish
// of Msg when Op is nil.
type nodeOut = wire.Outgoing[pb.NodeOp]

// connect opens a session: hello, welcome, then the node's whole state.
func (c *Client) connect() (*session, error) {
	ctx, cancel := context.WithCancelCause(c.ctx)
	timer := time.AfterFunc(c.opts.ConnectTimeout, func() {
		cancel(fmt.Errorf("no welcome within %v", c.opts.ConnectTimeout))
	})
	stream, err := c.rpc.Session(ctx)
	if err == nil {
		err = stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: c.opts.NodeID}}}}})
		if errors.Is(err, io.EOF) {
			// The service ended the stream (a refused token, say); Recv
			// tells why.
			err = nil
		}
	}
	var welcome *pb.Welcome
	if err == nil {
		var f *pb.ServiceFrame
		f, err = stream.Recv()
		if err == nil {
			if ops := f.GetOps(); len(ops) > 0 {
				welcome = ops[0].GetWelcome()
			}
			if welcome == nil {
				err = errors.New("the service did not answer hello with welcome")
			}
		}
	}
	if !timer.Stop() && err != nil {
		err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	if err != nil {
		cancel(err)
		return nil, err
	}
	if n := welcome.GetMaxMessageSize(); n > 0 {
		c.maxMsg.Store(int64(n))
	}
	s := &session{
		stream:    stream,
		queue:     wire.NewQueue[nodeOut](c.opts.QueueSize),
		ctx:       ctx,
		cancel:    cancel,
		streams:   welcome.GetStreams(),
		presence:  welcome.GetPresence(),
		pending:   map[uint64]chan *pb.Ack{},
		histories: map[uint64]chan *pb.HistoryResult{},
		presences: map[uint64]chan *pb.PresenceResult{},
	}
	s.lastRecv.Store(time.Now().UnixNano())

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cancel(broker.ErrClosed)
		return nil, broker.ErrClosed
	}
	// The state and the session are swapped under one lock, so every
	// change after this point goes to the new session's queue, behind
	// the state.
	for t := range c.interests {
		s.initial = append(s.initial, &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Topic: t}}})
	}
	if len(c.counts) > 0 {
		cu := &pb.CountUpdate{Counts: make([]*pb.TopicCount, 0, len(c.counts))}
		for t, n := range c.counts {
			cu.Counts = append(cu.Counts, &pb.TopicCount{Topic: t, Count: int64(n)})
		}
		s.initial = append(s.initial, &pb.NodeOp{Op: &pb.NodeOp_Count{Count: cu}})
	}
	// The presence entries last, behind the subscriptions, so that the
	// joins they cause reach this node too (presence.go).
	if s.presence {
		s.initial = append(s.initial, c.presenceState()...)
	}
	clear(c.dirty)
	c.sess = s
	// Counted with the session under c.mu, so that Stats never shows a
	// session up that it has not counted.
	if c.stats.sessions.Add(1) > 1 {
		c.stats.reconnects.Add(1)
	}
	c.stats.lastConnect.Store(time.Now().UnixNano())
	return s, nil
}

// serve runs the session until it breaks: the receive loop here, so that
// the handler is called from one goroutine, in order; the sender in
// another goroutine.
func (s *session) serve(c *Client) error {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.sendLoop(c)
	}()
	for {
		f, err := s.stream.Recv()
		if err != nil {
			s.cancel(err)
			break
		}
		s.lastRecv.Store(time.Now().UnixNano())
		received := 0
		for _, op := range f.GetOps() {
			switch o := op.GetOp().(type) {
			case *pb.ServiceOp_Ack:
				s.pmu.Lock()
				ch := s.pending[o.Ack.GetSeq()]
				delete(s.pending, o.Ack.GetSeq())
				s.pmu.Unlock()
				if ch != nil {
					ch <- o.Ack
				}
				if o.Ack.GetError() != "" {
					c.stats.refused.Add(1)
				}
			case *pb.ServiceOp_History:
				s.pmu.Lock()
				ch := s.histories[o.History.GetSeq()]
				delete(s.histories, o.History.GetSeq())
				s.pmu.Unlock()
				if ch != nil {
					ch <- o.History
				}
				if o.History.GetError() != "" {
					c.stats.refused.Add(1)
				}
			case *pb.ServiceOp_Presence:
				s.pmu.Lock()
				ch := s.presences[o.Presence.GetSeq()]
				delete(s.presences, o.Presence.GetSeq())
				s.pmu.Unlock()
				if ch != nil {
					ch <- o.Presence
				}
				if o.Presence.GetError() != "" {
					c.stats.refused.Add(1)
				}
			case *pb.ServiceOp_Notice:
				c.stats.refused.Add(1)
				c.log.Warn("topic service refused an operation", "err", o.Notice.GetError())
			}
		}
		if b := f.GetDeliveries(); b != nil {
			if h := c.handler.Load(); h != nil {
				if err := wire.ReadBatch(b, *h); err != nil {
					c.log.Warn("topic service sent a malformed batch", "err", err)
				} else {
					received += len(b.GetTopicLens())
				}
			}
		}
		if received > 0 {
			c.stats.received.Add(int64(received))
		}
	}
	<-sent
	return context.Cause(s.ctx)
}

func (s *session) sendLoop(c *Client) {
	period := min(c.opts.CountFlushInterval, c.opts.HeartbeatInterval)
	tick := time.NewTicker(period)
	defer tick.Stop()
	lastSend := time.Now()
	// lastTick is when this loop last ran its tick. A tick far later than
	// period means this node was the silent side (its process stopped,
	// starved or paused): the service's frames wait unread meanwhile, so
	// the silence is measured from the end of the stall, not blamed on
	// the service.
	lastTick, stallEnd := time.Now(), time.Time{}
	// stalled reports whether the loop ran late at now, and if so logs
	// and counts the stall. The session may end at once when the node runs
	// again (the service gave up on it): that end is checked too.
	stalled := func(now time.Time) bool {
		gap := now.Sub(lastTick)
		lastTick = now
		if gap <= period+c.opts.HeartbeatTimeout/2 {
			return false
		}
		c.stats.stalls.Add(1)
		c.log.Warn("this node was stalled: its session loop ran late, so the topic service may have taken it for dead; the service is not blamed for the silence",
			"stalled", gap.Round(time.Millisecond))
		return true
	}
	for len(s.initial) > 0 {
		// At most BatchOps operations and about InitialFrameBytes a
		// frame (presence adds carry many topics each), at least one.
		n, size := 0, 0
		for n < len(s.initial) && n < wire.BatchOps {
			sz := proto.Size(s.initial[n])
			if n > 0 && size+sz > wire.InitialFrameBytes {
				break
			}
			size += sz
			n++
		}
		if err := s.stream.Send(&pb.NodeFrame{Ops: s.initial[:n]}); err != nil {
			s.cancel(err)
			return
		}
		s.initial = s.initial[n:]
	}
	for {
		var first *pb.NodeOp
		select {
		case <-s.ctx.Done():
			stalled(time.Now())
			return
		case <-s.queue.Ready():
		case <-tick.C:
			now := time.Now()
			if stalled(now) {
				stallEnd = now
			}
			heard := time.Unix(0, s.lastRecv.Load())
			if stallEnd.After(heard) {
				heard = stallEnd
			}
			if silent := now.Sub(heard); silent > c.opts.HeartbeatTimeout {
				s.cancel(fmt.Errorf("%w: no heartbeat from the topic service for %v, while this node ran on time", broker.ErrUnavailable, silent.Round(time.Millisecond)))
				return
			}
			if cu := c.takeDirty(); cu != nil {
				first = cu
			} else if time.Since(lastSend) >= c.opts.HeartbeatInterval {
				first = &pb.NodeOp{Op: &pb.NodeOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
			} else {
				continue
			}
		}
		items := s.queue.Take()
		if !s.sendBatch(c, first, items) {
			return
		}
		s.queue.Recycle(items)
		lastSend = time.Now()
	}
}

// sendBatch sends first (if not nil) and items in as few frames as
// wire.CutFrames allows.
func (s *session) sendBatch(c *Client, first *pb.NodeOp, items []nodeOut) bool {
	return wire.CutFrames(first, items, func(ops []*pb.NodeOp, b *pb.Batch, count, _, _ int) bool {
		if err := s.stream.Send(&pb.NodeFrame{Ops: ops, Publishes: b}); err != nil {
			s.cancel(err)
			return false
		}
		if count > 0 {
			c.stats.published.Add(int64(count))
		}
		return true
	})
}

// takeDirty returns the counts changed since the last flush, or nil.
func (c *Client) takeDirty() *pb.NodeOp {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirty) == 0 {
		return nil
	}
	cu := &pb.CountUpdate{Counts: make([]*pb.TopicCount, 0, len(c.dirty))}
	for t := range c.dirty {
		cu.Counts = append(cu.Counts, &pb.TopicCount{Topic: t, Count: int64(c.counts[t])})
	}
	clear(c.dirty)
	return &pb.NodeOp{Op: &pb.NodeOp_Count{Count: cu}}
}
