package firetower

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/internal/jsonstr"
)

// The node's side of streams (DESIGN §3, "Streams"): what a subscribe to
// a topic with history reads from the broker, history on demand (a
// history frame, GET .../history, Tower.History). The queue's side, which
// merges recovered and live frames, is streamqueue.go.

// ErrNoHistory reports a history read of a topic that keeps none
// (TopicOptions.HistorySize is 0).
var ErrNoHistory = errors.New("firetower: the topic keeps no history")

// HistoryQuery asks for part of a topic's history.
type HistoryQuery struct {
	// Limit bounds the messages returned; 0 returns the position only,
	// and a negative Limit all that the topic keeps.
	Limit int
	// Since, if not nil, asks for the messages after this position,
	// oldest first. An empty Epoch stands for the stream's current
	// epoch; a position of another epoch is ignored (the answer's Epoch
	// tells the caller so). Without Since, the newest Limit messages.
	Since *StreamPosition
}

// TopicHistory is part of a topic's history.
type TopicHistory struct {
	Topic string
	// StreamPosition is the stream's epoch and top offset (that of its
	// newest message) when it was read.
	StreamPosition
	// Messages are oldest first, with consecutive offsets.
	Messages []HistoryMessage
}

// HistoryMessage is one message of a topic's history.
type HistoryMessage struct {
	ID     string
	Offset uint64
	Data   []byte // raw JSON, as published; must not be modified
}

// History reads topic's history (ErrNoHistory for a topic without).
func (t *Tower) History(ctx context.Context, topic string, q HistoryQuery) (TopicHistory, error) {
	if err := ValidateTopic(topic); err != nil {
		return TopicHistory{}, err
	}
	opts, ok := t.streamOptions(topic)
	if !ok {
		return TopicHistory{}, fmt.Errorf("%w: %q", ErrNoHistory, topic)
	}
	limit := q.Limit
	if limit < 0 || limit > opts.HistorySize {
		limit = opts.HistorySize
	}
	r, err := t.streamer.History(ctx, topic, broker.HistoryQuery{Since: q.Since, Limit: limit, Options: opts.broker()})
	if err != nil {
		t.stats.brokerErrors.Add(1)
		return TopicHistory{}, fmt.Errorf("firetower: reading the history of %q: %w", topic, err)
	}
	h := TopicHistory{Topic: topic, StreamPosition: r.StreamPosition, Messages: make([]HistoryMessage, 0, len(r.Messages))}
	for _, m := range r.Messages {
		if !t.validFromBroker(m) {
			continue
		}
		h.Messages = append(h.Messages, HistoryMessage{ID: m.ID, Offset: m.Offset, Data: m.Data})
	}
	return h, nil
}

// validFromBroker checks a message read from a broker that is not
// in-process, as hub.deliver checks live ones.
func (t *Tower) validFromBroker(m broker.Message) bool {
	if t.brokerInProcess || (validData(m.Data) && utf8.ValidString(m.ID) && utf8.ValidString(m.Epoch)) {
		return true
	}
	t.stats.droppedInvalid.Add(1)
	t.hub.invalid.note(t.log, m.Topic)
	return false
}

// appendHistory appends the members of a history answer after the
// opening brace and what precedes them:
// "epoch":"E","offset":25,"messages":[{"id":…,"offset":24,"data":…},…]}.
func appendHistory(b []byte, h TopicHistory) []byte {
	b = append(b, `"epoch":`...)
	b = jsonstr.Append(b, h.Epoch)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, h.Offset, 10)
	b = append(b, `,"messages":[`...)
	for i, m := range h.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":`...)
		b = jsonstr.Append(b, m.ID)
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, m.Offset, 10)
		b = append(b, `,"data":`...)
		b = append(b, m.Data...)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// streamReply is a topic's entry in a subscribed reply's "streams".
type streamReply struct {
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset"`
	Recovered *bool  `json:"recovered,omitempty"`
}

// readStreams reads, for a subscribe of c, the stream of each of topics
// (the frame's fresh topics with history): its position, and the messages
// that go right after the reply. With a since position that the stream
// still holds, those are every message after it (recovered); on a
// latest-value topic that did not recover, the newest message.
func (t *Tower) readStreams(ctx context.Context, f *Frame, topics []string) ([]recovered, map[string]streamReply, error) {
	recs := make([]recovered, 0, len(topics))
	replies := make(map[string]streamReply, len(topics))
	for _, topic := range topics {
		opts, _ := t.streamOptions(topic)
		since, asked := f.Since[topic]
		q := broker.HistoryQuery{Options: opts.broker()}
		switch {
		case asked:
			q.Since, q.Limit = &since, opts.HistorySize
		case opts.Latest:
			q.Limit = 1
		}
		r, err := t.streamer.History(ctx, topic, q)
		if err != nil {
			return nil, nil, err
		}
		rec := recovered{topic: topic, epoch: r.Epoch, top: r.Offset}
		reply := streamReply{Epoch: r.Epoch, Offset: r.Offset}
		ms := r.Messages
		if asked {
			ok := since.Epoch == r.Epoch && since.Offset <= r.Offset &&
				(since.Offset == r.Offset || (len(ms) > 0 && ms[0].Offset == since.Offset+1 && ms[len(ms)-1].Offset == r.Offset))
			reply.Recovered = &ok
			if !ok {
				t.stats.recoveryFailed.Add(1)
				ms = nil
				if opts.Latest {
					if ms, err = t.newest(ctx, topic, opts, r); err != nil {
						return nil, nil, err
					}
				}
			}
		}
		for _, m := range ms {
			if !t.validFromBroker(m) {
				continue
			}
			rec.frames = append(rec.frames, appendPublishFrame(make([]byte, 0, len(m.Data)+len(m.Topic)+len(m.ID)+72), topic, m.ID, m.Data, m.Offset))
		}
		if asked && *reply.Recovered {
			t.stats.recovered.Add(int64(len(rec.frames)))
		}
		recs = append(recs, rec)
		replies[topic] = reply
	}
	return recs, replies, nil
}

// newest returns the newest message of the stream read as r, reading it
// when r does not end with it.
func (t *Tower) newest(ctx context.Context, topic string, opts TopicOptions, r broker.HistoryResult) ([]broker.Message, error) {
	if n := len(r.Messages); n > 0 && r.Messages[n-1].Offset == r.Offset && r.Messages[n-1].Epoch == r.Epoch {
		return r.Messages[n-1:], nil
	}
	if r.Offset == 0 {
		return nil, nil
	}
	l, err := t.streamer.History(ctx, topic, broker.HistoryQuery{Limit: 1, Options: opts.broker()})
	if err != nil || len(l.Messages) == 0 || l.Epoch != r.Epoch || l.Messages[0].Offset > r.Offset {
		// Not the stream read as r: the live frames bring what is newer.
		return nil, err
	}
	return l.Messages, nil
}

// historyFrame answers a client's history frame: allowed where a
// subscribe to the topic would be.
func (t *Tower) historyFrame(c *Conn, f *Frame) {
	topic := f.Topics[0]
	if _, ok := t.streamOptions(topic); !ok {
		c.reply(errorFrame(&protocolError{code: CodeBadRequest, message: "the topic keeps no history", topic: topic}, f.ID))
		return
	}
	if !t.mayRead(c, topic) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "history refused", topic: topic}, f.ID))
		return
	}
	q := HistoryQuery{Limit: f.Limit}
	if since, ok := f.Since[topic]; ok {
		q.Since = &since
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	h, err := t.History(ctx, topic, q)
	if err != nil {
		t.log.Warn("firetower: broker history failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
		c.reply(errorFrame(brokerError(err, f.Topics), f.ID))
		return
	}
	b := append(make([]byte, 0, 128), `{"type":"history","topic":`...)
	b = jsonstr.Append(b, topic)
	if f.ID != nil {
		b = append(b, `,"id":`...)
		b = append(b, f.ID...)
	}
	b = append(b, ',')
	c.reply(appendHistory(b, h))
}
