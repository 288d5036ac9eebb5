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
	// Token is the node token: the secret nodes present in the gRPC
	// metadata as "authorization: Bearer <token>". It opens node sessions
	// and calls the push API (nodes list topics and nodes through it).
	// Default: "" (New refuses it: a token is required).
	Token string
	// APIToken is the backends' token: it calls the push API (Publish,
	// Count, Topics, Nodes) and reflection, and cannot open a node
	// session, so a backend that holds it cannot act as a node. It must
	// differ from Token. Default: "" (the push API takes the node token
	// only).
	APIToken string
	// MaxNodeTopics bounds the topics one node may listen to; a subscribe
	// beyond it is refused. Default: 100000.
	MaxNodeTopics int
	// HelloTimeout bounds the connection's handshake (TLS and the HTTP/2
	// preface) and the wait for a session's hello. Default: 5s.
	HelloTimeout time.Duration
	// IdleTimeout closes a connection that has had no call in flight for
	// this long: a connection that never calls, or a backend's between
	// calls (gRPC clients reconnect by themselves). A node's session
	// keeps its connection busy. Default: 1m.
	IdleTimeout time.Duration
	// LogInterval is the most often the service writes its summary of
	// refused calls and operations (one line, with counts). Default: 10s.
	LogInterval time.Duration
	// Logger receives the service's logs. Default: nil (discarded).
	Logger *slog.Logger
	// Core is the routing and counting core to serve. Default: nil (a new
	// one).
	Core *topicsvc.Core
	// TLS, when set, makes the service speak TLS only. Default: nil
	// (plaintext).
	TLS *tls.Config
	// HeartbeatTimeout bounds how long a node may stay silent before the
	// service forgets it (its interests, counts and presence vanish): it
	// is forgotten within HeartbeatTimeout of its last frame (the silence
	// is checked every HeartbeatInterval). Nodes send a heartbeat every
	// second. Default: 5s.
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
	// MaxStreamBytes caps the memory of the Core's streams (the topics'
	// kept messages, for history and recovery): over it, the stream
	// published to least recently is forgotten first (package topicsvc,
	// streams.go). Default: 0, which leaves the Core's cap as it is
	// (topicsvc.DefaultMaxStreamBytes, 256 MiB, for a new Core).
	MaxStreamBytes int64
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
		{"MaxNodeTopics", int64(c.MaxNodeTopics)},
		{"HelloTimeout", int64(c.HelloTimeout)},
		{"IdleTimeout", int64(c.IdleTimeout)},
		{"LogInterval", int64(c.LogInterval)},
		{"MaxStreamBytes", c.MaxStreamBytes},
	} {
		if f.v < 0 {
			return c, fmt.Errorf("topicsvc: Config.%s must not be negative (zero means the default)", f.name)
		}
	}
	if c.Token == "" {
		return c, errors.New("topicsvc: Config.Token is required")
	}
	if c.APIToken == c.Token {
		return c, errors.New("topicsvc: Config.APIToken must differ from Config.Token (the node token)")
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
	if c.MaxNodeTopics == 0 {
		c.MaxNodeTopics = 100_000
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = 5 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = time.Minute
	}
	if c.LogInterval == 0 {
		c.LogInterval = 10 * time.Second
	}
	return c, nil
}
