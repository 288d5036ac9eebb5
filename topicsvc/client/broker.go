package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Start implements broker.Broker.
func (c *Client) Start(h broker.Handler) error {
	if h == nil {
		return errors.New("topicsvc: nil handler")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return broker.ErrClosed
	}
	if !c.handler.CompareAndSwap(nil, &h) {
		return errors.New("topicsvc: client started twice")
	}
	return nil
}

// Publish implements broker.Broker. It returns once the message is queued
// for the service, in order behind the caller's earlier publishes; it waits
// only while the queue is full.
func (c *Client) Publish(ctx context.Context, m broker.Message) error {
	err := c.publish(ctx, m)
	if err != nil {
		c.stats.publishErrors.Add(1)
	}
	return err
}

func (c *Client) publish(ctx context.Context, m broker.Message) error {
	if err := wire.ValidMessage(m.Topic, m.ID, len(m.Data), int(c.maxMsg.Load())); err != nil {
		return err
	}
	s, err := c.current()
	if err != nil {
		return err
	}
	// Copy: the message is marshalled later, on the sender goroutine, and
	// the caller may reuse its buffer once Publish returns.
	m.Data = bytes.Clone(m.Data)
	return c.enqueue(ctx, s, nodeOut{Msg: m})
}

// Subscribe implements broker.Broker: it returns once the service routes
// the topic to this node. It is SubscribeTopics of one topic.
func (c *Client) Subscribe(ctx context.Context, topic string) error {
	return c.SubscribeTopics(ctx, []string{topic})
}

// Unsubscribe implements broker.Broker: it returns once the service no
// longer routes the topic to this node, so no message of it is delivered
// afterwards. While the service is unreachable it only forgets the
// interest, which the next session then lacks. It is UnsubscribeTopics of
// one topic.
func (c *Client) Unsubscribe(ctx context.Context, topic string) error {
	return c.UnsubscribeTopics(ctx, []string{topic})
}

// SubscribeTopics implements broker.BatchSubscriber: the subscriptions go
// to the service in one frame and it returns once the service routes every
// one of topics to this node. On an error the topics this call added are
// withdrawn again (all or nothing).
func (c *Client) SubscribeTopics(ctx context.Context, topics []string) error {
	for _, topic := range topics {
		if err := wire.ValidTopic(topic); err != nil {
			return err
		}
	}
	if _, err := c.current(); err != nil {
		return err
	}
	added := make([]string, 0, len(topics))
	c.mu.Lock()
	for _, topic := range topics {
		if _, had := c.interests[topic]; !had {
			c.interests[topic] = struct{}{}
			added = append(added, topic)
		}
	}
	s := c.sess
	c.mu.Unlock()
	err := errUnavailable
	if s != nil {
		err = c.requestAll(ctx, s, len(topics), func(i int, seq uint64) *pb.NodeOp {
			return &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: seq, Topic: topics[i]}}}
		})
	}
	if err != nil && len(added) > 0 {
		// Roll back, so that a later session does not re-send an interest
		// the node was told it does not have.
		c.mu.Lock()
		for _, topic := range added {
			delete(c.interests, topic)
		}
		s := c.sess
		c.mu.Unlock()
		if s != nil {
			os := make([]nodeOut, len(added))
			for i, topic := range added {
				os[i] = nodeOut{Op: &pb.NodeOp{Op: &pb.NodeOp_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Topic: topic}}}}
			}
			s.queue.PushSome(os) // what does not fit goes with the session
		}
	}
	return err
}

// UnsubscribeTopics implements broker.BatchUnsubscriber: one frame to the
// service, and it returns once the service no longer routes any of topics
// to this node. While the service is unreachable it only forgets the
// interests, as Unsubscribe does.
func (c *Client) UnsubscribeTopics(ctx context.Context, topics []string) error {
	for _, topic := range topics {
		if err := wire.ValidTopic(topic); err != nil {
			return err
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return broker.ErrClosed
	}
	held := make([]string, 0, len(topics))
	for _, topic := range topics {
		if _, had := c.interests[topic]; had {
			delete(c.interests, topic)
			held = append(held, topic)
		}
	}
	s := c.sess
	c.mu.Unlock()
	if len(held) == 0 || s == nil {
		return nil
	}
	err := c.requestAll(ctx, s, len(held), func(i int, seq uint64) *pb.NodeOp {
		return &pb.NodeOp{Op: &pb.NodeOp_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Seq: seq, Topic: held[i]}}}
	})
	if errors.Is(err, broker.ErrUnavailable) {
		return nil // the next session does not have the interests
	}
	return err
}

// SetCount implements broker.Broker. It never blocks: changed counts are
// sent together every CountFlushInterval.
func (c *Client) SetCount(topic string, n int) {
	if wire.ValidTopic(topic) != nil {
		return
	}
	n = max(n, 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.counts[topic] == n {
		return
	}
	if n == 0 {
		delete(c.counts, topic)
	} else {
		c.counts[topic] = n
	}
	c.dirty[topic] = struct{}{}
}

// Count implements broker.Broker: the count of the other nodes, as the
// service knows it, plus this node's own.
func (c *Client) Count(ctx context.Context, topic string) (int, error) {
	if err := wire.ValidTopic(topic); err != nil {
		return 0, err
	}
	s, err := c.current()
	if err != nil {
		return 0, err
	}
	a, err := c.request(ctx, s, func(seq uint64) *pb.NodeOp {
		return &pb.NodeOp{Op: &pb.NodeOp_CountQuery{CountQuery: &pb.CountQuery{Seq: seq, Topic: topic}}}
	})
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	own := c.counts[topic]
	c.mu.Unlock()
	return int(a.GetCount()) + own, nil
}

// rpcErr maps a push API error to the broker's sentinels.
func (c *Client) rpcErr(err error) error {
	if status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("%w: %v", broker.ErrUnavailable, err)
	}
	return fmt.Errorf("topicsvc: %w", err)
}

// Topics implements broker.TopicLister, as the service knows the counts
// (this node's at most one flush interval old). The service streams the
// listing in chunks; Topics assembles them.
func (c *Client) Topics(ctx context.Context) ([]broker.TopicCount, error) {
	if _, err := c.current(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream on an early return
	stream, err := c.rpc.Topics(ctx, &pb.TopicsRequest{})
	if err != nil {
		return nil, c.rpcErr(err)
	}
	var out []broker.TopicCount
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, c.rpcErr(err)
		}
		if out == nil {
			out = make([]broker.TopicCount, 0, len(r.GetTopics()))
		}
		for _, tc := range r.GetTopics() {
			out = append(out, broker.TopicCount{Topic: tc.GetTopic(), Count: int(tc.GetCount())})
		}
	}
}

// Nodes implements broker.NodeLister, assembling the service's chunks.
func (c *Client) Nodes(ctx context.Context) ([]broker.NodeInfo, error) {
	if _, err := c.current(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Nodes(ctx, &pb.NodesRequest{})
	if err != nil {
		return nil, c.rpcErr(err)
	}
	out := []broker.NodeInfo{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, c.rpcErr(err)
		}
		for _, n := range r.GetNodes() {
			out = append(out, broker.NodeInfo{ID: n.GetId(), Connections: int(n.GetConnections()), Topics: int(n.GetTopics()), LastHeartbeat: n.GetLastHeartbeat()})
		}
	}
}
