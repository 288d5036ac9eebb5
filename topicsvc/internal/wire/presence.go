package wire

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// Limits of the presence operations, the same on both sides.
const (
	// MaxPresenceTopics bounds the topics of one PresenceAdd or
	// PresenceRemove; a client splits a longer list into several.
	MaxPresenceTopics = 1024
	// PresenceTopicBytes bounds the topic bytes of one PresenceAdd or
	// PresenceRemove a client sends, so that the op, with its connection,
	// user and info, fits in FrameOverhead whatever the service's largest
	// message.
	PresenceTopicBytes = 32 << 10
	// MaxPresenceLimit bounds the clients one presence answer lists.
	MaxPresenceLimit = 10_000
	// MaxPresenceGrace bounds a leave's grace: a node's death is bounded
	// by the heartbeat timeout plus the grace of its users' leaves.
	MaxPresenceGrace = time.Minute
	// PresencePageBytes bounds the clients of one presence answer (their
	// ids and info), unless the service's largest message is smaller.
	PresencePageBytes = 1 << 20
	// InitialFrameBytes bounds the frames of the state a client sends at
	// the start of a session (one larger operation travels alone): under
	// FrameOverhead, which the service receives whatever its largest
	// message.
	InitialFrameBytes = 48 << 10
)

// PresenceGrace returns the grace_ms of a presence operation as a
// duration, or why it cannot be used.
func PresenceGrace(ms uint64) (time.Duration, error) {
	if ms > uint64(MaxPresenceGrace/time.Millisecond) {
		return 0, fmt.Errorf("topicsvc: presence grace of %d ms, the limit is %d", ms, MaxPresenceGrace/time.Millisecond)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// PresenceGraceMs is a grace as a presence operation carries it, or why
// it cannot travel.
func PresenceGraceMs(d time.Duration) (uint64, error) {
	if d < 0 {
		d = 0
	}
	if d > MaxPresenceGrace {
		return 0, fmt.Errorf("topicsvc: presence grace of %v, the limit is %v", d, MaxPresenceGrace)
	}
	// Rounded up: a grace of 1.5 ms waits 2, never less than asked.
	return uint64((d + time.Millisecond - 1) / time.Millisecond), nil
}

// PresenceClients converts the clients of an answer, keeping them until
// about maxBytes of ids and info (0: no bound; at least one); truncated
// reports that some were left out.
func PresenceClients(cs []broker.PresenceClient, maxBytes int) (out []*pb.PresenceClient, size int, truncated bool) {
	out = make([]*pb.PresenceClient, 0, len(cs))
	for _, c := range cs {
		n := len(c.Conn) + len(c.User) + len(c.Info) + 8
		if maxBytes > 0 && size+n > maxBytes && len(out) > 0 {
			return out, size, true
		}
		size += n
		out = append(out, &pb.PresenceClient{Conn: c.Conn, User: c.User, Info: string(c.Info)})
	}
	return out, size, false
}

// FromPresenceClient is the broker's form of a client of an answer or an
// operation ("" info: none).
func FromPresenceClient(c *pb.PresenceClient) broker.PresenceClient {
	out := broker.PresenceClient{Conn: c.GetConn(), User: c.GetUser()}
	if c.GetInfo() != "" {
		out.Info = json.RawMessage(c.GetInfo())
	}
	return out
}
