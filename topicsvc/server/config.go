package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/OSMeteor/firetower/topicsvc"
)

// Config configures a Server. Zero values mean the documented defaults;
// New refuses negative sizes and durations. New fills the defaults in on a
// copy and never changes the caller's Config.
type Config struct {
	// Token is the shared secret every node and backend presents in the
	// gRPC metadata as "authorization: Bearer <token>".
	// Default: "" (New refuses it: a token is required).
	Token string
	// Logger receives the service's logs. Default: nil (discarded).
	Logger *slog.Logger
	// Core is the routing and counting core to serve. Default: nil (a new
	// one).
	Core *topicsvc.Core
	// TLS, when set, makes the service speak TLS only. Default: nil
	// (plaintext).
	TLS *tls.Config
	// HeartbeatTimeout is how long a node may stay silent before the
	// service forgets it (its interests and counts vanish). Nodes send a
	// heartbeat every second. Default: 5s.
	HeartbeatTimeout time.Duration
	// HeartbeatInterval is how often the service tells each node that it is
	// alive. Default: 1s.
	HeartbeatInterval time.Duration
	// QueueSize bounds the operations waiting to be sent to one node. A
	// node whose queue is full when a delivery arrives is disconnected,
	// rather than stalling the others; it reconnects and re-sends its state.
	// Default: 16384.
	QueueSize int
	// QueueBytes bounds the message data waiting to be sent to one node,
	// with the same policy. Default: 64 MiB.
	QueueBytes int
	// MaxMessageSize is the largest message data accepted, in bytes; the
	// gRPC receive limit is set a little above it. Default: 4 MiB
	// (topicsvc.DefaultMaxMessageSize).
	MaxMessageSize int
	// MaxPublishTopics bounds the topics of one push API Publish.
	// Default: 1024.
	MaxPublishTopics int
}

func (c Config) withDefaults() (Config, error) {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"HeartbeatTimeout", int64(c.HeartbeatTimeout)},
		{"HeartbeatInterval", int64(c.HeartbeatInterval)},
		{"QueueSize", int64(c.QueueSize)},
		{"QueueBytes", int64(c.QueueBytes)},
		{"MaxMessageSize", int64(c.MaxMessageSize)},
		{"MaxPublishTopics", int64(c.MaxPublishTopics)},
	} {
		if f.v < 0 {
			return c, fmt.Errorf("topicsvc: Config.%s must not be negative (zero means the default)", f.name)
		}
	}
	if c.Token == "" {
		return c, errors.New("topicsvc: Config.Token is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Core == nil {
		c.Core = topicsvc.NewCore()
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 5 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.QueueSize == 0 {
		c.QueueSize = 16384
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 64 << 20
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = topicsvc.DefaultMaxMessageSize
	}
	if c.MaxPublishTopics == 0 {
		c.MaxPublishTopics = 1024
	}
	return c, nil
}
