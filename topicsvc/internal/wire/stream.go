package wire

import (
	"fmt"
	"math"
	"time"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// Limits of streams (a topic's kept messages) as they travel.
const (
	// MaxStreamSize is the most messages a stream may be asked to keep.
	MaxStreamSize = 1 << 20
	// MaxStreamTTL is the longest a stream may be asked to keep a message.
	MaxStreamTTL = 10 * 365 * 24 * time.Hour
	// HistoryPageBytes bounds the messages of one history answer (their
	// topics, ids and data; at least one message is answered), unless the
	// service's largest message is smaller, which then bounds it: well
	// under the 4 MiB a gRPC client receives by default, and small enough
	// that an answer does not hold up a session's deliveries for long. A
	// reader that wants more asks again from the answer's last message.
	HistoryPageBytes = 1 << 20
)

// StreamOptions returns the options a StreamPublish or HistoryQuery
// carries as size and ttl_ms, or why they cannot be used.
func StreamOptions(size uint32, ttlMs uint64) (broker.StreamOptions, error) {
	switch {
	case size == 0:
		return broker.StreamOptions{}, fmt.Errorf("topicsvc: history size must be at least 1")
	case size > MaxStreamSize:
		return broker.StreamOptions{}, fmt.Errorf("topicsvc: history size %d, the limit is %d", size, MaxStreamSize)
	case ttlMs == 0:
		return broker.StreamOptions{}, fmt.Errorf("topicsvc: history TTL must be at least 1 ms")
	case ttlMs > uint64(MaxStreamTTL/time.Millisecond):
		return broker.StreamOptions{}, fmt.Errorf("topicsvc: history TTL of %d ms, the limit is %d ms (%v)", ttlMs, MaxStreamTTL/time.Millisecond, MaxStreamTTL)
	}
	return broker.StreamOptions{Size: int(size), TTL: time.Duration(ttlMs) * time.Millisecond}, nil
}

// StreamWireOptions is the other way: opts as size and ttl_ms, read as
// the Core reads them (a size below 1 is 1, a TTL below a millisecond is
// a millisecond; a TTL is rounded up to whole milliseconds), or why they
// cannot travel.
func StreamWireOptions(opts broker.StreamOptions) (size uint32, ttlMs uint64, err error) {
	if opts.Size > MaxStreamSize {
		return 0, 0, fmt.Errorf("topicsvc: history size %d, the limit is %d", opts.Size, MaxStreamSize)
	}
	if opts.TTL > MaxStreamTTL {
		return 0, 0, fmt.Errorf("topicsvc: history TTL %v, the limit is %v", opts.TTL, MaxStreamTTL)
	}
	size = uint32(max(opts.Size, 1))
	ttlMs = uint64(max((opts.TTL+time.Millisecond-1)/time.Millisecond, 1))
	return size, ttlMs, nil
}

// HistoryLimit is the limit of a HistoryQuery for a broker.HistoryQuery's
// Limit: 0 for none, at most the largest uint32.
func HistoryLimit(limit int) uint32 {
	return uint32(min(max(limit, 0), math.MaxUint32))
}

// QueryLimit is a HistoryQuery's or HistoryRequest's limit as an int: no
// stream holds more than MaxStreamSize messages, so a larger limit asks
// for nothing more (and stays positive where an int has 32 bits).
func QueryLimit(limit uint32) int { return int(min(uint64(limit), MaxStreamSize)) }

// HistoryBatch lays out the messages of a history answer as one batch,
// offsets and epochs included, and returns it with its size in bytes
// (what it takes in a frame, about).
func HistoryBatch(msgs []broker.Message) (*pb.Batch, int) {
	if len(msgs) == 0 {
		return nil, 0
	}
	var w batchWriter
	var nt, ni, nd, size int
	for i := range msgs {
		m := &msgs[i]
		nt, ni, nd = nt+len(m.Topic), ni+len(m.ID), nd+len(m.Data)
		size += messageSize(*m)
	}
	w.reset(len(msgs), nt, ni, nd)
	for _, m := range msgs {
		w.add(m)
	}
	return w.cut(), size
}
