package topicsvc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func init() {
	broker.Register("topicsvc", openURL)
	broker.Register("topicsvcs", openURL)
}

// openURL opens topicsvc://host:port (plaintext) or topicsvcs://host:port
// (TLS, verified against the system roots, or against the PEM file named by
// the query parameter ca: topicsvcs://host:port?ca=/etc/firetower/ca.pem).
func openURL(u *url.URL, o broker.Options) (broker.Broker, error) {
	opts := ClientOptions{Token: o.Token, Logger: o.Logger}
	if u.Scheme == "topicsvcs" {
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			host = u.Host
		}
		opts.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if ca := u.Query().Get("ca"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("topicsvc: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("topicsvc: CA file %s holds no PEM certificate", ca)
			}
			opts.TLS.RootCAs = pool
		}
	}
	return Dial(u.Host, opts)
}

// ClientOptions configure a Client. Zero values mean the documented
// defaults.
type ClientOptions struct {
	// Token is the service's shared secret. Required.
	Token string
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger
	// TLS, when set, makes the client speak TLS. Default: plaintext.
	TLS *tls.Config
	// NodeID names the node at the service; it stays the same across
	// reconnects. Default: a random UUID.
	NodeID string
	// QueueSize bounds the operations waiting to be sent; Publish waits
	// (within its context) while the queue is full. Default 16384.
	QueueSize int
	// ConnectTimeout bounds how long Dial waits for the first session, and
	// each later attempt. Dial returns a working, reconnecting client even
	// if the service is unreachable. Default 5s.
	ConnectTimeout time.Duration
	// HeartbeatInterval is how often an idle client tells the service it is
	// alive. Default 1s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long the service may stay silent before the
	// client drops the session and reconnects. Default 5s.
	HeartbeatTimeout time.Duration
	// CountFlushInterval is how often changed counts are sent, coalesced.
	// Default 100ms.
	CountFlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnect attempts,
	// which doubles from MinBackoff, with jitter. Defaults 50ms and 1s.
	MinBackoff, MaxBackoff time.Duration
}

func (o ClientOptions) withDefaults() (ClientOptions, error) {
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
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.HeartbeatInterval, time.Second)
	def(&o.HeartbeatTimeout, 5*time.Second)
	def(&o.CountFlushInterval, 100*time.Millisecond)
	def(&o.MinBackoff, 50*time.Millisecond)
	def(&o.MaxBackoff, time.Second)
	if o.QueueSize <= 0 {
		o.QueueSize = 16384
	}
	return o, nil
}

// Client is a broker.Broker that connects a node to a topic service over
// one gRPC stream. It reconnects by itself, with exponential backoff and
// jitter, and re-sends its whole state (subscriptions and counts) after
// every reconnect.
//
// While the service is unreachable, Publish, Subscribe and Count fail at
// once with an error wrapping broker.ErrUnavailable; Unsubscribe and
// SetCount only change the state to re-send. Messages queued when a
// session breaks are lost (delivery is at most once); nothing is sent
// twice.
type Client struct {
	opts ClientOptions
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
	sess      *clientSession // nil while disconnected
	interests map[string]struct{}
	counts    map[string]int
	dirty     map[string]struct{}

	stats clientStats
}

var (
	_ broker.Broker        = (*Client)(nil)
	_ broker.TopicLister   = (*Client)(nil)
	_ broker.NodeLister    = (*Client)(nil)
	_ broker.StatsReporter = (*Client)(nil)
)

// ClientStats describes a Client's link to the topic service.
type ClientStats struct {
	// Connected is true while a session with the service is up.
	Connected bool
	// Sessions counts the sessions established, the first one included;
	// Reconnects those established after a session was lost.
	Sessions, Reconnects int64
	// ConnectFailures counts failed attempts to establish a session.
	ConnectFailures int64
	// SessionsLost counts sessions that ended other than by Close.
	SessionsLost int64
	// Published counts the messages sent to the service; PublishErrors
	// the Publish calls that failed (the service unreachable, the client
	// closed, an invalid message, the caller's context done).
	Published, PublishErrors int64
	// Received counts the messages delivered to the handler.
	Received int64
	// Refused counts the operations the service refused.
	Refused int64
	// LastConnect and LastDisconnect are when the last session was
	// established and lost; zero for never.
	LastConnect, LastDisconnect time.Time
	// LastError says why the last session was lost or the last attempt
	// failed; empty if none was.
	LastError string
}

// clientStats are a Client's counters: atomics on the message path, added
// once per stream frame.
type clientStats struct {
	sessions, reconnects, connectFailures, sessionsLost atomic.Int64
	published, publishErrors, received, refused         atomic.Int64
	lastConnect, lastDisconnect                         atomic.Int64 // Unix nanoseconds, 0 for never

	mu      sync.Mutex
	lastErr string
}

func (st *clientStats) failed(err error) {
	st.mu.Lock()
	st.lastErr = err.Error()
	st.mu.Unlock()
}

// Stats returns the client's figures now. It is cheap and safe to call
// from any goroutine, also after Close.
func (c *Client) Stats() ClientStats {
	st := &c.stats
	at := func(ns int64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, ns)
	}
	st.mu.Lock()
	lastErr := st.lastErr
	st.mu.Unlock()
	return ClientStats{
		Connected:       c.Connected(),
		Sessions:        st.sessions.Load(),
		Reconnects:      st.reconnects.Load(),
		ConnectFailures: st.connectFailures.Load(),
		SessionsLost:    st.sessionsLost.Load(),
		Published:       st.published.Load(),
		PublishErrors:   st.publishErrors.Load(),
		Received:        st.received.Load(),
		Refused:         st.refused.Load(),
		LastConnect:     at(st.lastConnect.Load()),
		LastDisconnect:  at(st.lastDisconnect.Load()),
		LastError:       lastErr,
	}
}

// Reconnects returns how many times a lost session was re-established.
func (c *Client) Reconnects() int64 { return c.stats.reconnects.Load() }

// BrokerStats implements broker.StatsReporter with the figures of Stats:
// connected, sessions_total, reconnects_total, connect_failures_total,
// sessions_lost_total, messages_published_total, publish_errors_total,
// messages_received_total, refused_total, last_connect_timestamp_seconds
// and last_disconnect_timestamp_seconds.
func (c *Client) BrokerStats() map[string]int64 {
	s := c.Stats()
	up := int64(0)
	if s.Connected {
		up = 1
	}
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	return map[string]int64{
		"connected":                         up,
		"sessions_total":                    s.Sessions,
		"reconnects_total":                  s.Reconnects,
		"connect_failures_total":            s.ConnectFailures,
		"sessions_lost_total":               s.SessionsLost,
		"messages_published_total":          s.Published,
		"publish_errors_total":              s.PublishErrors,
		"messages_received_total":           s.Received,
		"refused_total":                     s.Refused,
		"last_connect_timestamp_seconds":    unix(s.LastConnect),
		"last_disconnect_timestamp_seconds": unix(s.LastDisconnect),
	}
}

// Dial connects to the topic service at addr (host:port). It waits for the
// first session up to opts.ConnectTimeout; if the service is unreachable it
// still returns the client, which keeps trying in the background. A
// refused token is an error.
func Dial(addr string, opts ClientOptions) (*Client, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	limit := DefaultMaxMessageSize + wire.FrameOverhead
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
	}
	c.maxMsg.Store(int64(limit - wire.FrameOverhead))
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	t := time.NewTimer(opts.ConnectTimeout)
	defer t.Stop()
	select {
	case <-c.firstDone:
		if status.Code(c.firstErr) == codes.Unauthenticated {
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

// clientSession is one stream to the service.
type clientSession struct {
	stream  pb.TopicService_SessionClient
	queue   *wire.Queue[nodeOut]
	initial []*pb.NodeOp // the state re-sent first

	ctx      context.Context
	cancel   context.CancelCauseFunc
	seq      atomic.Uint64
	lastRecv atomic.Int64 // Unix nanoseconds

	pmu     sync.Mutex
	pending map[uint64]chan *pb.Ack
}

// connect opens a session: hello, welcome, then the node's whole state.
func (c *Client) connect() (*clientSession, error) {
	ctx, cancel := context.WithCancelCause(c.ctx)
	timer := time.AfterFunc(c.opts.ConnectTimeout, func() {
		cancel(fmt.Errorf("no welcome within %v", c.opts.ConnectTimeout))
	})
	stream, err := c.rpc.Session(ctx)
	if err == nil {
		err = stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: c.opts.NodeID}}}}})
		if errors.Is(err, io.EOF) {
			// The service ended the stream (a refused token, say); Recv
			// tells why.
			err = nil
		}
	}
	var welcome *pb.Welcome
	if err == nil {
		var f *pb.ServiceFrame
		f, err = stream.Recv()
		if err == nil {
			if ops := f.GetOps(); len(ops) > 0 {
				welcome = ops[0].GetWelcome()
			}
			if welcome == nil {
				err = errors.New("the service did not answer hello with welcome")
			}
		}
	}
	if !timer.Stop() && err != nil {
		err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	if err != nil {
		cancel(err)
		return nil, err
	}
	if n := welcome.GetMaxMessageSize(); n > 0 {
		c.maxMsg.Store(int64(n))
	}
	s := &clientSession{
		stream:  stream,
		queue:   wire.NewQueue[nodeOut](c.opts.QueueSize),
		ctx:     ctx,
		cancel:  cancel,
		pending: map[uint64]chan *pb.Ack{},
	}
	s.lastRecv.Store(time.Now().UnixNano())

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cancel(broker.ErrClosed)
		return nil, broker.ErrClosed
	}
	// The state and the session are swapped under one lock, so every
	// change after this point goes to the new session's queue, behind
	// the state.
	for t := range c.interests {
		s.initial = append(s.initial, &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Topic: t}}})
	}
	if len(c.counts) > 0 {
		cu := &pb.CountUpdate{Counts: make([]*pb.TopicCount, 0, len(c.counts))}
		for t, n := range c.counts {
			cu.Counts = append(cu.Counts, &pb.TopicCount{Topic: t, Count: int64(n)})
		}
		s.initial = append(s.initial, &pb.NodeOp{Op: &pb.NodeOp_Count{Count: cu}})
	}
	clear(c.dirty)
	c.sess = s
	// Counted with the session under c.mu, so that Stats never shows a
	// session up that it has not counted.
	if c.stats.sessions.Add(1) > 1 {
		c.stats.reconnects.Add(1)
	}
	c.stats.lastConnect.Store(time.Now().UnixNano())
	return s, nil
}

// serve runs the session until it breaks: the receive loop here, so that
// the handler is called from one goroutine, in order; the sender in
// another goroutine.
func (s *clientSession) serve(c *Client) error {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.sendLoop(c)
	}()
	for {
		f, err := s.stream.Recv()
		if err != nil {
			s.cancel(err)
			break
		}
		s.lastRecv.Store(time.Now().UnixNano())
		received := 0
		for _, op := range f.GetOps() {
			switch o := op.GetOp().(type) {
			case *pb.ServiceOp_Ack:
				s.pmu.Lock()
				ch := s.pending[o.Ack.GetSeq()]
				delete(s.pending, o.Ack.GetSeq())
				s.pmu.Unlock()
				if ch != nil {
					ch <- o.Ack
				}
				if o.Ack.GetError() != "" {
					c.stats.refused.Add(1)
				}
			case *pb.ServiceOp_Notice:
				c.stats.refused.Add(1)
				c.log.Warn("topic service refused an operation", "err", o.Notice.GetError())
			}
		}
		if b := f.GetDeliveries(); b != nil {
			if h := c.handler.Load(); h != nil {
				if err := wire.ReadBatch(b, *h); err != nil {
					c.log.Warn("topic service sent a malformed batch", "err", err)
				} else {
					received += len(b.GetTopicLens())
				}
			}
		}
		if received > 0 {
			c.stats.received.Add(int64(received))
		}
	}
	<-sent
	return context.Cause(s.ctx)
}

func (s *clientSession) sendLoop(c *Client) {
	tick := time.NewTicker(min(c.opts.CountFlushInterval, c.opts.HeartbeatInterval))
	defer tick.Stop()
	lastSend := time.Now()
	for len(s.initial) > 0 {
		n := min(len(s.initial), wire.BatchOps)
		if err := s.stream.Send(&pb.NodeFrame{Ops: s.initial[:n]}); err != nil {
			s.cancel(err)
			return
		}
		s.initial = s.initial[n:]
	}
	for {
		var first *pb.NodeOp
		select {
		case <-s.ctx.Done():
			return
		case <-s.queue.Ready():
		case <-tick.C:
			if silent := time.Since(time.Unix(0, s.lastRecv.Load())); silent > c.opts.HeartbeatTimeout {
				s.cancel(fmt.Errorf("%w: no heartbeat from the topic service for %v", broker.ErrUnavailable, silent.Round(time.Millisecond)))
				return
			}
			if cu := c.takeDirty(); cu != nil {
				first = cu
			} else if time.Since(lastSend) >= c.opts.HeartbeatInterval {
				first = &pb.NodeOp{Op: &pb.NodeOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
			} else {
				continue
			}
		}
		items := s.queue.Take()
		if !s.sendBatch(c, first, items) {
			return
		}
		s.queue.Recycle(items)
		lastSend = time.Now()
	}
}

// nodeOut is one operation waiting to be sent to the service: a publish
// of msg when op is nil.
type nodeOut = wire.Outgoing[pb.NodeOp]

// sendBatch sends first (if not nil) and items in as few frames as
// wire.CutFrames allows.
func (s *clientSession) sendBatch(c *Client, first *pb.NodeOp, items []nodeOut) bool {
	return wire.CutFrames(first, items, func(ops []*pb.NodeOp, b *pb.Batch, count, _ int) bool {
		if err := s.stream.Send(&pb.NodeFrame{Ops: ops, Publishes: b}); err != nil {
			s.cancel(err)
			return false
		}
		if count > 0 {
			c.stats.published.Add(int64(count))
		}
		return true
	})
}

// takeDirty returns the counts changed since the last flush, or nil.
func (c *Client) takeDirty() *pb.NodeOp {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirty) == 0 {
		return nil
	}
	cu := &pb.CountUpdate{Counts: make([]*pb.TopicCount, 0, len(c.dirty))}
	for t := range c.dirty {
		cu.Counts = append(cu.Counts, &pb.TopicCount{Topic: t, Count: int64(c.counts[t])})
	}
	clear(c.dirty)
	return &pb.NodeOp{Op: &pb.NodeOp_Count{Count: cu}}
}

var errUnavailable = fmt.Errorf("%w: not connected to the topic service", broker.ErrUnavailable)

// session returns the current session, or why there is none.
func (c *Client) session() (*clientSession, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, broker.ErrClosed
	case c.handler.Load() == nil:
		return nil, errors.New("topicsvc: client not started")
	case c.sess == nil:
		return nil, errUnavailable
	}
	return c.sess, nil
}

// lost explains why an operation on s could not complete.
func (c *Client) lost(s *clientSession) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return broker.ErrClosed
	}
	return fmt.Errorf("%w: session lost: %v", broker.ErrUnavailable, context.Cause(s.ctx))
}

// enqueue queues o for the service, waiting while the queue is full.
func (c *Client) enqueue(ctx context.Context, s *clientSession, o nodeOut) error {
	for !s.queue.Push(o) {
		select {
		case <-s.queue.RoomSignal():
		case <-s.ctx.Done():
			return c.lost(s)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// request sends the op mk builds and waits for its Ack.
func (c *Client) request(ctx context.Context, s *clientSession, mk func(seq uint64) *pb.NodeOp) (*pb.Ack, error) {
	seq := s.seq.Add(1)
	ch := make(chan *pb.Ack, 1)
	s.pmu.Lock()
	s.pending[seq] = ch
	s.pmu.Unlock()
	forget := func() {
		s.pmu.Lock()
		delete(s.pending, seq)
		s.pmu.Unlock()
	}
	if err := c.enqueue(ctx, s, nodeOut{Op: mk(seq)}); err != nil {
		forget()
		return nil, err
	}
	select {
	case a := <-ch:
		if a.GetError() != "" {
			return nil, fmt.Errorf("topicsvc: refused by the service: %s", a.GetError())
		}
		return a, nil
	case <-s.ctx.Done():
		forget()
		return nil, c.lost(s)
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

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
	s, err := c.session()
	if err != nil {
		return err
	}
	// Copy: the message is marshalled later, on the sender goroutine, and
	// the caller may reuse its buffer once Publish returns.
	m.Data = bytes.Clone(m.Data)
	return c.enqueue(ctx, s, nodeOut{Msg: m})
}

// Subscribe implements broker.Broker: it returns once the service routes
// the topic to this node.
func (c *Client) Subscribe(ctx context.Context, topic string) error {
	if err := wire.ValidTopic(topic); err != nil {
		return err
	}
	if _, err := c.session(); err != nil {
		return err
	}
	c.mu.Lock()
	_, had := c.interests[topic]
	c.interests[topic] = struct{}{}
	s := c.sess
	c.mu.Unlock()
	err := errUnavailable
	if s != nil {
		_, err = c.request(ctx, s, func(seq uint64) *pb.NodeOp {
			return &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: seq, Topic: topic}}}
		})
	}
	if err != nil && !had {
		// Roll back, so that a later session does not re-send an interest
		// the node was told it does not have.
		c.mu.Lock()
		delete(c.interests, topic)
		s := c.sess
		c.mu.Unlock()
		if s != nil {
			s.queue.Push(nodeOut{Op: &pb.NodeOp{Op: &pb.NodeOp_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Topic: topic}}}})
		}
	}
	return err
}

// Unsubscribe implements broker.Broker: it returns once the service no
// longer routes the topic to this node, so no message of it is delivered
// afterwards. While the service is unreachable it only forgets the
// interest, which the next session then lacks.
func (c *Client) Unsubscribe(ctx context.Context, topic string) error {
	if err := wire.ValidTopic(topic); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return broker.ErrClosed
	}
	_, had := c.interests[topic]
	delete(c.interests, topic)
	s := c.sess
	c.mu.Unlock()
	if !had || s == nil {
		return nil
	}
	_, err := c.request(ctx, s, func(seq uint64) *pb.NodeOp {
		return &pb.NodeOp{Op: &pb.NodeOp_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Seq: seq, Topic: topic}}}
	})
	if errors.Is(err, broker.ErrUnavailable) {
		return nil // the next session does not have the interest
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
	s, err := c.session()
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
// (this node's at most one flush interval old).
func (c *Client) Topics(ctx context.Context) ([]broker.TopicCount, error) {
	if _, err := c.session(); err != nil {
		return nil, err
	}
	r, err := c.rpc.Topics(ctx, &pb.TopicsRequest{})
	if err != nil {
		return nil, c.rpcErr(err)
	}
	out := make([]broker.TopicCount, len(r.GetTopics()))
	for i, tc := range r.GetTopics() {
		out[i] = broker.TopicCount{Topic: tc.GetTopic(), Count: int(tc.GetCount())}
	}
	return out, nil
}

// Nodes implements broker.NodeLister.
func (c *Client) Nodes(ctx context.Context) ([]broker.NodeInfo, error) {
	if _, err := c.session(); err != nil {
		return nil, err
	}
	r, err := c.rpc.Nodes(ctx, &pb.NodesRequest{})
	if err != nil {
		return nil, c.rpcErr(err)
	}
	out := make([]broker.NodeInfo, len(r.GetNodes()))
	for i, n := range r.GetNodes() {
		out[i] = broker.NodeInfo{ID: n.GetId(), Connections: int(n.GetConnections()), Topics: int(n.GetTopics()), LastHeartbeat: n.GetLastHeartbeat()}
	}
	return out, nil
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
	c.mu.Unlock()
	c.cancel()
	<-c.done
	return c.conn.Close()
}
