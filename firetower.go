package firetower

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/google/uuid"
	"github.com/olahol/melody"
)

// Tower is one firetower node: its WebSocket connections, their topic
// index, and its broker. Its methods are safe for concurrent use.
type Tower struct {
	cfg    Config
	log    *slog.Logger
	broker broker.Broker
	// brokerInProcess: the broker's calls never wait (broker.InProcess),
	// so a REST publish needs no BrokerTimeout timer around them.
	brokerInProcess bool
	// streamer is the broker's broker.Streamer, when Config.TopicOptions
	// is set (New checks it implements it).
	streamer broker.Streamer
	// presencer is the broker's broker.Presencer, if it is one: presence
	// topics (TopicOptions.Presence) need it.
	presencer broker.Presencer
	hub       *hub
	melody    *melody.Melody
	routes    *routes

	mu       sync.Mutex
	closing  bool
	conns    map[*Conn]struct{}
	handlers sync.WaitGroup // live WebSocket handlers

	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error

	stats  stats
	ops    *ops       // the operations routes (ops.go)
	counts countCache // of GET {prefix}/topics/:topic/count (countcache.go)
	users  countCache // its "users", on presence topics

	onShutdown []func() // guarded by mu; run by Shutdown
	hooksRun   bool     // guarded by mu; Shutdown ran the hooks

	pinger    sync.Once     // starts housekeeping with the first connection
	stopPings chan struct{} // closed by Shutdown
}

// New returns a Tower for cfg, or an error wrapping ErrInvalidConfig, or
// the broker's error if it cannot be opened.
func New(cfg Config) (*Tower, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := cfg.Broker
	switch {
	case b != nil:
	case cfg.BrokerURL != "":
		if b, err = broker.Open(cfg.BrokerURL, broker.Options{Token: cfg.BrokerToken, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	default:
		b = topicsvc.NewEmbedded()
	}
	t := &Tower{
		cfg:          cfg,
		log:          cfg.Logger,
		broker:       b,
		conns:        map[*Conn]struct{}{},
		shutdownDone: make(chan struct{}),
		stopPings:    make(chan struct{}),
	}
	if ip, ok := b.(broker.InProcess); ok {
		t.brokerInProcess = ip.InProcess()
	}
	if cfg.TopicOptions != nil {
		st, ok := b.(broker.Streamer)
		if !ok {
			if cfg.Broker == nil {
				b.Close()
			}
			return nil, fmt.Errorf("%w: TopicOptions needs a broker that keeps streams (broker.Streamer); %T does not", ErrInvalidConfig, b)
		}
		t.streamer = st
	}
	t.presencer, _ = b.(broker.Presencer)
	t.hub = newHub(b, cfg.BareData, &t.stats)
	t.hub.options = t.streamOptions
	// What an in-process broker delivers was published through this node,
	// which checked it; any other broker carries what others sent.
	t.hub.checkData = !t.brokerInProcess
	t.hub.log = cfg.Logger
	if r, ok := b.(broker.StatsReporter); ok && !t.brokerInProcess {
		t.counts.connected = func() bool {
			up, ok := r.BrokerStats()["connected"]
			return !ok || up != 0
		}
		t.users.connected = t.counts.connected
	}
	t.ops = newOps(t)
	t.routes = t.newRoutes()
	if err := b.Start(t.hub.deliver); err != nil {
		t.ops.stop()
		b.Close()
		return nil, fmt.Errorf("firetower: starting the broker: %w", err)
	}
	t.melody = t.newMelody()
	return t, nil
}

// Publish publishes data, encoded as JSON, to topic and returns the
// message id. A json.RawMessage is sent as it is: it must be valid JSON in
// valid UTF-8, or the error wraps ErrInvalidData.
func (t *Tower) Publish(ctx context.Context, topic string, data any) (string, error) {
	r, err := t.publishData(ctx, []string{topic}, data, false)
	return r.ID, err
}

// PublishTopics publishes one message, with one id, to several topics:
// at most MaxPublishTopics, a topic named twice is published once.
// Topics are published in order; on an error the ones before it are
// already sent.
func (t *Tower) PublishTopics(ctx context.Context, topics []string, data any) (string, error) {
	r, err := t.publishData(ctx, topics, data, false)
	return r.ID, err
}

// Published is what a publish did: the message's id and, for each topic
// with history, the position the broker gave it.
type Published struct {
	ID string
	// Offsets holds the epoch and offset of the message in the stream of
	// each topic with history (TopicOptions.HistorySize); nil if none.
	Offsets map[string]StreamPosition
}

// PublishResult is PublishTopics that also returns the offsets of the
// message in the topics with history. It returns once the broker has
// assigned them, so publishes made one after another, through any nodes,
// have offsets in that order.
func (t *Tower) PublishResult(ctx context.Context, topics []string, data any) (Published, error) {
	return t.publishData(ctx, topics, data, true)
}

func (t *Tower) publishData(ctx context.Context, topics []string, data any, offsets bool) (Published, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Published{}, fmt.Errorf("%w: encoding it as JSON: %v", ErrInvalidData, err)
	}
	// encoding/json checks a json.RawMessage (or a Marshaler's output)
	// is JSON, but passes invalid UTF-8 in it through.
	if !utf8.Valid(raw) {
		return Published{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidData)
	}
	if len(topics) > MaxPublishTopics {
		return Published{}, fmt.Errorf("%w: %d topics in one publish, at most %d allowed", ErrInvalidTopic, len(topics), MaxPublishTopics)
	}
	for _, topic := range topics {
		if err := ValidateTopic(topic); err != nil {
			return Published{}, err
		}
	}
	if len(topics) > 1 {
		topics = dedupeTopics(slices.Clone(topics)) // the caller's slice is theirs
	}
	return t.publish(ctx, topics, raw, offsets)
}

// publish sends validated topics and raw JSON; with offsets, the result
// holds the positions of the topics with history.
func (t *Tower) publish(ctx context.Context, topics []string, raw []byte, offsets bool) (Published, error) {
	if t.isClosing() {
		return Published{}, ErrShutdown
	}
	if len(topics) == 0 {
		return Published{}, fmt.Errorf("%w: no topic", ErrInvalidTopic)
	}
	p := Published{ID: newID()}
	for _, topic := range topics {
		m := broker.Message{Topic: topic, ID: p.ID, Data: raw}
		var err error
		if opts, ok := t.streamOptions(topic); ok {
			var pos StreamPosition
			if pos, err = t.streamer.PublishStream(ctx, m, opts.broker()); err == nil && offsets {
				if p.Offsets == nil {
					p.Offsets = make(map[string]StreamPosition, len(topics))
				}
				p.Offsets[topic] = pos
			}
		} else {
			err = t.broker.Publish(ctx, m)
		}
		if err != nil {
			t.stats.brokerErrors.Add(1)
			if brokerErrorStatus(err) == http.StatusServiceUnavailable {
				t.counts.reset() // counts from before the outage are stale
				t.users.reset()
			}
			return p, fmt.Errorf("firetower: publishing to %q: %w", topic, err)
		}
		t.stats.published.Add(1)
	}
	return p, nil
}

// GetConnectNum returns how many connections are subscribed to topic
// across the cluster. On this node it already counts a subscriber whose
// SubscribeHandler is running.
func (t *Tower) GetConnectNum(ctx context.Context, topic string) (int, error) {
	if err := ValidateTopic(topic); err != nil {
		return 0, err
	}
	return t.broker.Count(ctx, topic)
}

// LocalConnectNum returns how many connections of this node are subscribed
// to topic, without asking the broker.
func (t *Tower) LocalConnectNum(topic string) int { return t.hub.count(topic) }

// Broker returns the node's broker, for what the Tower does not wrap: its
// optional capabilities (broker.StatsReporter, broker.NodeLister, ...) and
// its own methods. Messages published through it directly skip the
// Tower's validation and figures (Stats, metrics), and subscriptions made
// through it are not the Tower's: publish with Publish and PublishTopics.
func (t *Tower) Broker() broker.Broker { return t.broker }

// RegisterOnShutdown registers f to run once Shutdown has closed the
// connections and the broker, as net/http's Server.RegisterOnShutdown
// does; packages that attach to a Tower (its metrics, say) detach with it.
// Shutdown runs f before it returns (unless its context ends first). If
// the Tower is already shut down, f runs now.
func (t *Tower) RegisterOnShutdown(f func()) {
	t.mu.Lock()
	if !t.hooksRun {
		t.onShutdown = append(t.onShutdown, f)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	f()
}

func (t *Tower) isClosing() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closing
}

// Shutdown stops accepting connections, closes the open ones (status 1001;
// their unsubscribe and disconnect hooks run once each), waits for them
// to finish and closes the broker. If ctx ends first, the remaining
// connections are cut without a close handshake and ctx's error is
// returned; their cleanup finishes in the background. Shutdown is
// idempotent: later calls wait for the first one's result.
func (t *Tower) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		t.mu.Lock()
		t.closing = true
		close(t.stopPings)
		conns := make([]*Conn, 0, len(t.conns))
		for c := range t.conns {
			conns = append(conns, c)
		}
		t.mu.Unlock()
		for _, c := range conns {
			c.shutdown(DisconnectShutdown, 1001, "firetower: server shutting down", true)
		}
		go func() {
			t.handlers.Wait()
			t.ops.stop()
			t.shutdownErr = t.broker.Close()
			for {
				t.mu.Lock()
				hooks := t.onShutdown
				t.onShutdown, t.hooksRun = nil, len(hooks) == 0
				t.mu.Unlock()
				if len(hooks) == 0 {
					break
				}
				for _, f := range hooks {
					f()
				}
			}
			close(t.shutdownDone)
		}()
	})
	select {
	case <-t.shutdownDone:
		return t.shutdownErr
	case <-ctx.Done():
		t.mu.Lock()
		for c := range t.conns {
			c.abort()
		}
		t.mu.Unlock()
		return ctx.Err()
	}
}

func newID() string { return uuid.NewString() }
