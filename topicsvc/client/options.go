package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	"github.com/google/uuid"
)

// Options configure a Client. Zero values mean the documented defaults;
// Dial refuses negative sizes and durations. Dial fills the defaults in on
// a copy and never changes the caller's Options.
type Options struct {
	// Token is the service's shared secret, sent on every call.
	// Default: "" (Dial refuses it: a token is required).
	Token string
	// Logger receives the client's logs. Default: nil (discarded).
	Logger *slog.Logger
	// TLS, when set, makes the client speak TLS. Default: nil (plaintext).
	TLS *tls.Config
	// NodeID names the node at the service, in at most 128 bytes; it stays
	// the same across reconnects. Default: "" (a random UUID).
	NodeID string
	// QueueSize bounds the operations waiting to be sent; Publish waits
	// (within its context) while the queue is full. Default: 16384.
	QueueSize int
	// ConnectTimeout bounds how long Dial waits for the first session, and
	// each later attempt. Dial returns a working, reconnecting client even
	// if the service is unreachable. Default: 5s.
	ConnectTimeout time.Duration
	// HeartbeatInterval is how often an idle client tells the service it is
	// alive. Default: 1s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the service may stay silent before the
	// client drops the session and reconnects. Default: 5s.
	HeartbeatTimeout time.Duration
	// CountFlushInterval is how often changed counts are sent, coalesced.
	// Default: 100ms.
	CountFlushInterval time.Duration
	// MinBackoff is the first wait between reconnect attempts, which
	// doubles up to MaxBackoff, with jitter. Default: 50ms.
	MinBackoff time.Duration
	// MaxBackoff is the longest wait between reconnect attempts.
	// Default: 1s.
	MaxBackoff time.Duration
}

func (o Options) withDefaults() (Options, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"QueueSize", int64(o.QueueSize)},
		{"ConnectTimeout", int64(o.ConnectTimeout)},
		{"HeartbeatInterval", int64(o.HeartbeatInterval)},
		{"HeartbeatTimeout", int64(o.HeartbeatTimeout)},
		{"CountFlushInterval", int64(o.CountFlushInterval)},
		{"MinBackoff", int64(o.MinBackoff)},
		{"MaxBackoff", int64(o.MaxBackoff)},
	} {
		if f.v < 0 {
			return o, fmt.Errorf("topicsvc: Options.%s must not be negative (zero means the default)", f.name)
		}
	}
	if o.Token == "" {
		return o, errors.New("topicsvc: a token is required to reach the topic service (FIRETOWER_TOPICSVC_TOKEN)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NodeID == "" {
		o.NodeID = uuid.NewString()
	}
	if len(o.NodeID) > wire.MaxNodeIDLen {
		return o, fmt.Errorf("topicsvc: node id longer than %d bytes", wire.MaxNodeIDLen)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.HeartbeatInterval, time.Second)
	def(&o.HeartbeatTimeout, 5*time.Second)
	def(&o.CountFlushInterval, 100*time.Millisecond)
	def(&o.MinBackoff, 50*time.Millisecond)
	def(&o.MaxBackoff, time.Second)
	if o.QueueSize == 0 {
		o.QueueSize = 16384
	}
	return o, nil
}
