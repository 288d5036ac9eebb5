package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// The client's streams (broker.Streamer): the service's Core keeps them,
// in its memory, so a service restart starts every stream in a new epoch.
// A stream publish and a history query are requests on the session, each
// answered once, so that the offsets come from the one place that
// assigns them.

var _ broker.Streamer = (*Client)(nil)

// errNoStreams is the answer of a service that keeps no streams (one
// from before streams): it would ignore the requests, not answer them.
var errNoStreams = fmt.Errorf("topicsvc: the topic service keeps no streams (it predates history); upgrade it: %w", errors.ErrUnsupported)

// streamSession returns the current session if its service keeps streams.
func (c *Client) streamSession() (*session, error) {
	s, err := c.current()
	if err != nil {
		return nil, err
	}
	if !s.streams {
		return nil, errNoStreams
	}
	return s, nil
}

// PublishStream implements broker.Streamer: it returns once the service
// appended the message to its topic's stream, with the offset it got.
// While the service is unreachable it fails at once with an error
// wrapping broker.ErrUnavailable, as Publish does; a session lost before
// the answer came is the same error, and the message may or may not have
// been appended.
func (c *Client) PublishStream(ctx context.Context, m broker.Message, opts broker.StreamOptions) (broker.StreamPosition, error) {
	pos, err := c.publishStream(ctx, m, opts)
	if err != nil {
		c.stats.publishErrors.Add(1)
	} else {
		c.stats.published.Add(1)
	}
	return pos, err
}

func (c *Client) publishStream(ctx context.Context, m broker.Message, opts broker.StreamOptions) (broker.StreamPosition, error) {
	if err := wire.ValidMessage(m.Topic, m.ID, len(m.Data), int(c.maxMsg.Load())); err != nil {
		return broker.StreamPosition{}, err
	}
	size, ttl, err := wire.StreamWireOptions(opts)
	if err != nil {
		return broker.StreamPosition{}, err
	}
	s, err := c.streamSession()
	if err != nil {
		return broker.StreamPosition{}, err
	}
	// Copy: the op is marshalled later, on the sender goroutine.
	data := bytes.Clone(m.Data)
	a, err := c.requestSized(ctx, s, len(m.Topic)+len(m.ID)+len(data), func(seq uint64) *pb.NodeOp {
		return &pb.NodeOp{Op: &pb.NodeOp_StreamPublish{StreamPublish: &pb.StreamPublish{
			Seq: seq, Topic: m.Topic, Id: m.ID, Data: data, Size: size, TtlMs: ttl,
		}}}
	})
	if err != nil {
		return broker.StreamPosition{}, err
	}
	if a.GetOffset() == 0 || a.GetEpoch() == "" {
		return broker.StreamPosition{}, fmt.Errorf("topicsvc: the service answered a stream publish to %q without a position", m.Topic)
	}
	return broker.StreamPosition{Epoch: a.GetEpoch(), Offset: a.GetOffset()}, nil
}

// historyRestarts bounds how often History reads a stream whole: it starts
// over when the stream moved on (a new epoch, or its window passed what
// was read) between the pages of one answer.
const historyRestarts = 3

// History implements broker.Streamer. The service answers in pages of
// about 1 MiB (wire.HistoryPageBytes); History asks for the next page
// until it has what q asked for, up to the top the first page gave, so
// that the result is one consistent read: consecutive offsets of one
// epoch, everything after the position up to the top, as the embedded
// broker answers. Should the stream move on between pages, it starts
// over, trying historyRestarts times in all. While the service is unreachable
// it fails at once with an error wrapping broker.ErrUnavailable.
func (c *Client) History(ctx context.Context, topic string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	if err := wire.ValidTopic(topic); err != nil {
		return broker.HistoryResult{}, err
	}
	size, ttl, err := wire.StreamWireOptions(q.Options)
	if err != nil {
		return broker.HistoryResult{}, err
	}
	for range historyRestarts {
		s, err := c.streamSession()
		if err != nil {
			return broker.HistoryResult{}, err
		}
		r, moved, err := c.historyPages(ctx, s, topic, q, size, ttl)
		if err != nil || !moved {
			return r, err
		}
	}
	return broker.HistoryResult{}, fmt.Errorf("topicsvc: the stream of %q moved on faster than its history could be read, %d times", topic, historyRestarts)
}

// historyPages reads q's answer page by page; moved reports that the
// stream moved on between two pages (start over).
func (c *Client) historyPages(ctx context.Context, s *session, topic string, q broker.HistoryQuery, size uint32, ttl uint64) (r broker.HistoryResult, moved bool, err error) {
	r, more, err := c.historyQuery(ctx, s, topic, q.Limit, q.Since, size, ttl)
	if err != nil {
		return broker.HistoryResult{}, false, err
	}
	for more && len(r.Messages) < q.Limit {
		last := r.Messages[len(r.Messages)-1].Offset
		if last >= r.Offset {
			break
		}
		since := &broker.StreamPosition{Epoch: r.Epoch, Offset: last}
		page, pmore, err := c.historyQuery(ctx, s, topic, q.Limit-len(r.Messages), since, size, ttl)
		if err != nil {
			return broker.HistoryResult{}, false, err
		}
		if page.Epoch != r.Epoch || len(page.Messages) == 0 || page.Messages[0].Offset != last+1 {
			return broker.HistoryResult{}, true, nil
		}
		more = pmore
		for _, m := range page.Messages {
			if m.Offset > r.Offset {
				// Published after the first page's read: the caller
				// gets it live, or reads on from the top.
				more = false
				break
			}
			r.Messages = append(r.Messages, m)
		}
	}
	return r, false, nil
}

// historyQuery sends one HistoryQuery and waits for its page; more
// reports that the service left messages out of it.
func (c *Client) historyQuery(ctx context.Context, s *session, topic string, limit int, since *broker.StreamPosition, size uint32, ttl uint64) (broker.HistoryResult, bool, error) {
	hq := &pb.HistoryQuery{Topic: topic, Limit: wire.HistoryLimit(limit), Size: size, TtlMs: ttl}
	if since != nil {
		hq.Since = &pb.StreamPosition{Epoch: since.Epoch, Offset: since.Offset}
	}
	seq := s.seq.Add(1)
	hq.Seq = seq
	ch := make(chan *pb.HistoryResult, 1)
	s.pmu.Lock()
	s.histories[seq] = ch
	s.pmu.Unlock()
	forget := func() {
		s.pmu.Lock()
		delete(s.histories, seq)
		s.pmu.Unlock()
	}
	if err := c.enqueue(ctx, s, nodeOut{Op: &pb.NodeOp{Op: &pb.NodeOp_HistoryQuery{HistoryQuery: hq}}}); err != nil {
		forget()
		return broker.HistoryResult{}, false, err
	}
	var res *pb.HistoryResult
	select {
	case res = <-ch:
	case <-s.ctx.Done():
		forget()
		return broker.HistoryResult{}, false, c.lost(s)
	case <-ctx.Done():
		forget()
		return broker.HistoryResult{}, false, ctx.Err()
	}
	if res.GetError() != "" {
		return broker.HistoryResult{}, false, fmt.Errorf("topicsvc: refused by the service: %s", res.GetError())
	}
	r := broker.HistoryResult{StreamPosition: broker.StreamPosition{Epoch: res.GetEpoch(), Offset: res.GetOffset()}}
	if b := res.GetMessages(); b != nil {
		r.Messages = make([]broker.Message, 0, len(b.GetTopicLens()))
		if err := wire.ReadBatch(b, func(m broker.Message) { r.Messages = append(r.Messages, m) }); err != nil {
			return broker.HistoryResult{}, false, err
		}
	}
	// What the rest of History relies on: one topic, one epoch,
	// consecutive offsets up to the top at most.
	for i, m := range r.Messages {
		if m.Topic != topic || m.Epoch != r.Epoch || m.Offset == 0 || m.Offset > r.Offset || (i > 0 && m.Offset != r.Messages[i-1].Offset+1) {
			return broker.HistoryResult{}, false, fmt.Errorf("topicsvc: the service answered a malformed history of %q (message %d at offset %d of %q, top %d of %q)", topic, i, m.Offset, m.Epoch, r.Offset, r.Epoch)
		}
	}
	more := res.GetTruncated() && len(r.Messages) > 0
	return r, more, nil
}
