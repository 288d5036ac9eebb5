package broker

import (
	"context"
	"time"
)

// Streams: the optional capability of keeping a topic's recent messages
// (its stream), so that a client that reconnects can recover what it
// missed and a newcomer can read what was said before (DESIGN §5).
//
// A message published to a stream gets an offset: 1, 2, 3, … per topic,
// assigned by the broker, so one order for the whole cluster, with no gap
// and no reuse. The stream has an epoch, an opaque string that changes
// whenever continuity is lost: the store restarted or lost the stream, or
// the stream expired. Offsets count from 1 again in a new epoch. A
// position (epoch and offset) is thus a place in one stream that no other
// stream, and no later life of the same topic, can be confused with.

// StreamOptions say how a topic's stream is kept. Every publish to the
// stream passes them: the stream is kept as the latest publish says.
type StreamOptions struct {
	// Size is how many messages the stream keeps, the newest; at least 1.
	Size int
	// TTL is how long a message is kept after it was published; at least
	// a millisecond. A stream with no publish for TTL is forgotten
	// altogether: its next message starts a new epoch.
	TTL time.Duration
}

// StreamPosition is a place in a stream: the offset of a message (or the
// stream's top, the offset of its newest message; 0 before the first) in
// one epoch.
type StreamPosition struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// HistoryQuery asks for part of a stream.
type HistoryQuery struct {
	// Since, if not nil, asks for the messages after this position, the
	// oldest first: at most Limit of them, starting at Since.Offset+1. An
	// empty Since.Epoch stands for the stream's current epoch; any other
	// epoch than the current one is ignored, as if Since were nil. Without
	// Since, the result holds the newest Limit messages, oldest first.
	Since *StreamPosition
	// Limit bounds the messages returned; 0 asks for the position only.
	Limit int
	// Options are the stream's, should the query find no stream: it then
	// starts one, empty, in a new epoch, so that the position it answers
	// stays valid for the messages published afterwards.
	Options StreamOptions
}

// HistoryResult is a stream's position and the messages a HistoryQuery
// asked for.
type HistoryResult struct {
	// StreamPosition is the stream's epoch and top offset at the moment
	// of the query.
	StreamPosition
	// Messages are in offset order, oldest first, each with its Offset
	// and Epoch set; consecutive messages have consecutive offsets.
	Messages []Message
}

// Streamer is implemented by brokers that keep streams.
//
// Delivery and history agree: a message appended to a stream reaches every
// node that subscribed to the topic before the append (Subscribe returned),
// and a History made after the append holds it (while the stream keeps
// it). So a node that subscribes, then reads the stream's top, misses
// nothing between the two: what was appended before the read is in the
// history, what was appended after reaches it live. Messages of a stream
// reach each node in offset order.
type Streamer interface {
	// PublishStream appends m to the stream of m.Topic, kept as opts
	// say, assigning its offset, and delivers it as Publish does with
	// Offset and Epoch set. It returns once the offset is assigned, with
	// the stream's epoch and the message's offset.
	PublishStream(ctx context.Context, m Message, opts StreamOptions) (StreamPosition, error)
	// History reads the stream of topic.
	History(ctx context.Context, topic string, q HistoryQuery) (HistoryResult, error)
}
