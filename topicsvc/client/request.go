package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

var errUnavailable = fmt.Errorf("%w: not connected to the topic service", broker.ErrUnavailable)

// current returns the current session, or why there is none.
func (c *Client) current() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, broker.ErrClosed
	case c.handler.Load() == nil:
		return nil, errors.New("topicsvc: client not started")
	case c.sess == nil:
		return nil, errUnavailable
	}
	return c.sess, nil
}

// lost explains why an operation on s could not complete.
func (c *Client) lost(s *session) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return broker.ErrClosed
	}
	return fmt.Errorf("%w: session lost: %v", broker.ErrUnavailable, context.Cause(s.ctx))
}

// enqueue queues o for the service, waiting while the queue is full.
func (c *Client) enqueue(ctx context.Context, s *session, o nodeOut) error {
	for !s.queue.Push(o) {
		select {
		case <-s.queue.RoomSignal():
		case <-s.ctx.Done():
			return c.lost(s)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// request sends the op mk builds and waits for its Ack.
func (c *Client) request(ctx context.Context, s *session, mk func(seq uint64) *pb.NodeOp) (*pb.Ack, error) {
	return c.requestSized(ctx, s, 0, mk)
}

// requestSized is request of an op that carries a message of its own,
// about size bytes in a frame (wire.Outgoing.Size), so that it never
// shares a frame beyond what the service receives.
func (c *Client) requestSized(ctx context.Context, s *session, size int, mk func(seq uint64) *pb.NodeOp) (*pb.Ack, error) {
	seq := s.seq.Add(1)
	ch := make(chan *pb.Ack, 1)
	s.pmu.Lock()
	s.pending[seq] = ch
	s.pmu.Unlock()
	forget := func() {
		s.pmu.Lock()
		delete(s.pending, seq)
		s.pmu.Unlock()
	}
	if err := c.enqueue(ctx, s, nodeOut{Op: mk(seq), Size: size}); err != nil {
		forget()
		return nil, err
	}
	select {
	case a := <-ch:
		if a.GetError() != "" {
			return nil, fmt.Errorf("topicsvc: refused by the service: %s", a.GetError())
		}
		return a, nil
	case <-s.ctx.Done():
		forget()
		return nil, c.lost(s)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

// enqueueAll queues os for the service, as few Takes of the sender apart
// as the queue's room allows, waiting while it is full.
func (c *Client) enqueueAll(ctx context.Context, s *session, os []nodeOut) error {
	for {
		os = os[s.queue.PushSome(os):]
		if len(os) == 0 {
			return nil
		}
		select {
		case <-s.queue.RoomSignal():
		case <-s.ctx.Done():
			return c.lost(s)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// requestAll sends the n ops mk builds, queued together so that the
// sender puts them in one frame, and waits for all their Acks: one round
// trip for the lot. It returns the first refusal.
func (c *Client) requestAll(ctx context.Context, s *session, n int, mk func(i int, seq uint64) *pb.NodeOp) error {
	return c.requestAllSized(ctx, s, n, nil, mk)
}

// requestAllSized is requestAll of ops that carry more than a topic: size,
// if not nil, gives the i-th op's bytes in a frame (wire.Outgoing.Size).
func (c *Client) requestAllSized(ctx context.Context, s *session, n int, size func(i int) int, mk func(i int, seq uint64) *pb.NodeOp) error {
	ch := make(chan *pb.Ack, n) // the receive loop never blocks on it
	first := s.seq.Add(uint64(n)) - uint64(n) + 1
	os := make([]nodeOut, n)
	s.pmu.Lock()
	for i := range n {
		s.pending[first+uint64(i)] = ch
	}
	s.pmu.Unlock()
	for i := range n {
		os[i] = nodeOut{Op: mk(i, first+uint64(i))}
		if size != nil {
			os[i].Size = size(i)
		}
	}
	forget := func() {
		s.pmu.Lock()
		for i := range n {
			delete(s.pending, first+uint64(i))
		}
		s.pmu.Unlock()
	}
	if err := c.enqueueAll(ctx, s, os); err != nil {
		forget()
		return err
	}
	var refused error
	for range n {
		select {
		case a := <-ch:
			if a.GetError() != "" && refused == nil {
				refused = fmt.Errorf("topicsvc: refused by the service: %s", a.GetError())
			}
		case <-s.ctx.Done():
			forget()
			return c.lost(s)
		case <-ctx.Done():
			forget()
			return ctx.Err()
		}
	}
	return refused
}
