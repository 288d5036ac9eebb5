// Package client connects a firetower node to a standalone topic service
// (cmd/firetower-topicsvc) over gRPC: a Client is a broker.Broker.
//
// Importing the package registers the broker URL schemes topicsvc:// and
// topicsvcs:// (TLS) with broker.Open, so that firetower.Config.BrokerURL
// can name a service:
//
//	import _ "github.com/OSMeteor/firetower/topicsvc/client"
//
// A Client's methods are safe for concurrent use.
package client

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Client is a broker.Broker that connects a node to a topic service over
// one gRPC stream. It reconnects by itself, with exponential backoff and
// jitter, and re-sends its whole state after every reconnect:
// subscriptions, counts and presence entries (presence.go says what that
// means for joins and leaves).
//
// While the service is unreachable, Publish, Subscribe, Count,
// PublishStream, History, AddPresence, RemovePresence and Presence fail at
// once with an error wrapping broker.ErrUnavailable; Unsubscribe and
// SetCount only change the state to re-send (RemovePresence too, besides
// its error). Streams (broker.Streamer) and presence live in the service's
// memory: a service restart starts every stream in a new epoch, and the
// nodes add their presence entries again. Messages queued when a session
// breaks are lost (delivery is at most once); nothing is sent twice.
type Client struct {
	opts Options
	log  *slog.Logger
	conn *grpc.ClientConn
	rpc  pb.TopicServiceClient

	ctx    context.Context // the client's lifetime
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	handler   atomic.Pointer[broker.Handler]
	maxMsg    atomic.Int64
	firstDone chan struct{}
	firstErr  error // of the first attempt; read after firstDone

	mu        sync.Mutex
	closed    bool
	sess      *session // nil while disconnected
	interests map[string]struct{}
	counts    map[string]int
	dirty     map[string]struct{}
	// presence holds the node's presence entries, by connection and
	// topic: what every new session adds again (presence.go).
	presence map[string]map[string]presenceItem

	stats counters
}

var (
	_ broker.Broker        = (*Client)(nil)
	_ broker.TopicLister   = (*Client)(nil)
	_ broker.NodeLister    = (*Client)(nil)
	_ broker.StatsReporter = (*Client)(nil)

	_ broker.Presencer         = (*Client)(nil)
	_ broker.BatchSubscriber   = (*Client)(nil)
	_ broker.BatchUnsubscriber = (*Client)(nil)
)

// Dial connects to the topic service at addr (host:port). It waits for the
// first session up to opts.ConnectTimeout; if the service is unreachable it
// still returns the client, which keeps trying in the background. A
// refused token is an error.
func Dial(addr string, opts Options) (*Client, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(tokenCreds{"Bearer " + opts.Token, opts.TLS != nil}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: opts.MinBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: opts.MaxBackoff},
			MinConnectTimeout: opts.ConnectTimeout,
		}),
		// The service may allow larger messages than the default; its
		// Welcome says how large, and nothing larger is ever sent.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)),
	)
	if err != nil {
		return nil, fmt.Errorf("topicsvc: %w", err)
	}
	c := &Client{
		opts:      opts,
		log:       opts.Logger.With("topicsvc", addr, "node", opts.NodeID),
		conn:      conn,
		rpc:       pb.NewTopicServiceClient(conn),
		done:      make(chan struct{}),
		firstDone: make(chan struct{}),
		interests: map[string]struct{}{},
		counts:    map[string]int{},
		dirty:     map[string]struct{}{},
		presence:  map[string]map[string]presenceItem{},
	}
	c.maxMsg.Store(topicsvc.DefaultMaxMessageSize)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	t := time.NewTimer(opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-c.firstDone:
		if code := status.Code(c.firstErr); code == codes.Unauthenticated || code == codes.PermissionDenied {
			c.Close()
			return nil, fmt.Errorf("topicsvc: %s refused the token: %w", addr, c.firstErr)
		}
	case <-t.C:
	}
	return c, nil
}

// tokenCreds puts the bearer token in every call's metadata.
type tokenCreds struct {
	value  string
	secure bool
}

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": t.value}, nil
}

func (t tokenCreds) RequireTransportSecurity() bool { return t.secure }

// NodeID returns the id the node has at the service.
func (c *Client) NodeID() string { return c.opts.NodeID }

// Connected reports whether a session with the service is up.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil
}

// run keeps one session up until Close.
func (c *Client) run() {
	defer close(c.done)
	wait := c.opts.MinBackoff
	first := true
	var downSince time.Time
	failures := 0
	for {
		sess, err := c.connect()
		if first {
			c.firstErr = err
			close(c.firstDone)
			first = false
		}
		if c.ctx.Err() != nil {
			if sess != nil {
				sess.cancel(broker.ErrClosed)
			}
			return
		}
		if err != nil {
			failures++
			c.stats.connectFailures.Add(1)
			c.stats.failed(err)
			if failures == 1 || failures%20 == 0 {
				c.log.Warn("topic service unreachable, retrying", "err", err, "attempts", failures)
			}
			// Full jitter in the upper half: nodes that lost the service
			// together do not come back in lockstep.
			d := wait/2 + rand.N(wait/2+1)
			wait = min(wait*2, c.opts.MaxBackoff)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(d):
			}
			continue
		}
		if !downSince.IsZero() {
			c.log.Info("topic service reconnected", "after", time.Since(downSince).Round(time.Millisecond), "attempts", failures+1)
		} else {
			c.log.Info("topic service connected")
		}
		wait, failures = c.opts.MinBackoff, 0
		cause := sess.serve(c)
		c.mu.Lock()
		c.sess = nil
		c.mu.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		downSince = time.Now()
		c.stats.sessionsLost.Add(1)
		c.stats.lastDisconnect.Store(downSince.UnixNano())
		c.stats.failed(cause)
		c.log.Warn("topic service session lost", "err", cause)
	}
}

// Close implements broker.Broker: the session ends, so the service forgets
// the node at once, and every goroutine of the client exits before Close
// returns.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	// The service removes the entries with the session's node, and their
	// leaves follow after their grace.
	clear(c.presence)
	c.mu.Unlock()
	c.cancel()
	<-c.done
	return c.conn.Close()
}
