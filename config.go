package firetower

import (
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/gin-gonic/gin"
)

// Config configures a Tower. Zero values mean the documented defaults;
// New fills them in on a copy and never changes the caller's Config.
type Config struct {
	// Prefix is prepended to every route firetower mounts (/ws, /publish,
	// /topics/:topic/count, /firetower.js): "/rt" mounts /rt/ws. It starts
	// with "/" and does not end with one. Default: "" (routes at the root).
	// A route the app registers itself with the same method and path wins
	// over firetower's (logged once); a Prefix serves both.
	Prefix string

	// Broker connects the node to its cluster. Default: nil, meaning
	// BrokerURL if set, else an embedded topic service (one node, no
	// network). The Tower closes it on Shutdown.
	Broker broker.Broker
	// BrokerURL names the broker when Broker is nil. The package that
	// implements its scheme must be linked in:
	//
	//   - topicsvc://host:port, a standalone topic service (cmd/firetower-topicsvc);
	//     topicsvcs://host:port?ca=/path/ca.pem over TLS (ca: a private CA).
	//     Needs import _ "github.com/OSMeteor/firetower/topicsvc/client".
	//   - redis://[user:pass@]host:port/db, rediss://... over TLS;
	//     redis+cluster://h1:p1?addr=h2:p2&addr=h3:p3 for Redis Cluster;
	//     redis+sentinel://h1:p1?addr=h2:p2&master_name=NAME for Sentinel;
	//     rediss+cluster://, rediss+sentinel:// over TLS. The query takes
	//     go-redis's options and prefix=NAME (default firetower). Needs
	//     import _ "github.com/OSMeteor/firetower/broker/redis", built with
	//     -tags redis.
	//
	// Default: "" (embedded topic service).
	BrokerURL string
	// BrokerToken is the shared secret between nodes and a topic service.
	// Default: "" (required for topicsvc://).
	BrokerToken string

	// APIToken is the bearer token that authorizes REST publishes
	// (Authorization: Bearer <token>). Default: "" — without it and without
	// AuthorizeREST, POST /publish answers 403.
	APIToken string
	// AuthorizeREST, if set, authorizes REST publishes instead of APIToken:
	// a non-nil error answers 401 with its text. It may check a cookie:
	// a browser's publish from another site is refused before it runs
	// (DESIGN §4). Default: nil.
	AuthorizeREST func(c *gin.Context) error

	// Authenticate runs before the WebSocket upgrade. A non-nil error
	// answers 401 with its text and no upgrade happens; otherwise the
	// returned user id is Conn.UserID. It may also give the connection a
	// public info object, a display name or an avatar URL that presence
	// shows, with SetConnInfo. Default: nil (anyone connects).
	Authenticate func(c *gin.Context) (userID string, err error)

	// AllowedOrigins lists the origins, besides the page's own host, that
	// may open WebSockets and POST /publish from a browser: host patterns
	// in path.Match syntax, matched against the Origin's host
	// ("example.com", "*.example.com", "localhost:*"; "*" is any host).
	// Default: none (same origin only).
	AllowedOrigins []string
	// InsecureSkipOriginCheck lets any web page open WebSockets to this
	// node with its visitors' cookies. Only for development or when
	// Authenticate does not rely on cookies. It does not open POST
	// /publish to other sites: AllowedOrigins does. Default: false.
	InsecureSkipOriginCheck bool

	// OnConnect runs once a connection is open, before its first frame is
	// read. Default: nil.
	OnConnect func(c *Conn)
	// OnDisconnect runs once a connection is gone, after UnSubscribeHandler.
	// Default: nil.
	OnDisconnect func(c *Conn)
	// BeforeSubscribeHandler decides whether c may subscribe to topics (the
	// ones of a subscribe frame it does not hold yet); false refuses the
	// whole frame with a forbidden error frame. Default: nil (allowed).
	BeforeSubscribeHandler func(c *Conn, topics []string) bool
	// SubscribeHandler runs after a subscription is in place and its
	// subscribed reply is queued: GetConnectNum inside it counts c.
	// Default: nil.
	SubscribeHandler func(c *Conn, topics []string)
	// UnSubscribeHandler runs after c left topics: on unsubscribe, and on
	// disconnect for every topic it still held, each topic exactly once.
	// Default: nil.
	UnSubscribeHandler func(c *Conn, topics []string)
	// ReadHandler receives client publishes and frames of custom types. A
	// publish goes out only if it returns true; for custom frames the
	// result is ignored. Default: nil — client publishes are refused with a
	// forbidden error frame and custom frames with bad_request; backends
	// publish over REST or Tower.Publish.
	ReadHandler func(c *Conn, f *Frame) bool
	// ReadTimeoutHandler is told of each data frame dropped because c sends
	// faster than InboundRate, InboundBytesRate or SubscribeRate allows (c
	// also gets a rate_limited error frame); frame is nil for a binary
	// frame. Pings over budget are dropped unanswered, without it. frame
	// must not be kept after it returns. Default: nil.
	ReadTimeoutHandler func(c *Conn, frame []byte)

	// BareData makes publish frames carry only the published data, as
	// firetower v0.x servers did, for pages written against them; such
	// connections also get no subscribed/unsubscribed replies. Default:
	// false.
	BareData bool

	// MaxConnsPerUser bounds the connections one user id (Authenticate's)
	// may hold open across the cluster; the connection over it is refused
	// at the upgrade with 429 and a JSON error. It is counted with the
	// broker's count of the user's topic, which on a remote broker lags up
	// to a second: a burst of connections can overshoot it briefly.
	// Anonymous connections are not counted. Default: 0 (no limit).
	MaxConnsPerUser int

	// MaxFrameSize is the largest client frame in bytes; a larger one
	// closes the connection with status 1009. Default: 65536.
	MaxFrameSize int64
	// MaxTopicsPerConn bounds one connection's subscriptions. Default: 128.
	MaxTopicsPerConn int
	// InboundRate is how many frames per second one connection may send on
	// average. Default: 100.
	InboundRate float64
	// InboundBurst is how many frames one connection may send at once.
	// Default: 200.
	InboundBurst int
	// InboundBytesRate is how many bytes per second one connection may send
	// on average, counting the payload of every frame it sends, pings
	// included. Default: 65536 (one frame of the default MaxFrameSize a
	// second).
	InboundBytesRate float64
	// InboundBytesBurst is how many bytes one connection may send at once;
	// at least MaxFrameSize, so that every accepted frame can pass.
	// Default: 4 × MaxFrameSize (262144).
	InboundBytesBurst int64
	// SubscribeRate is how many topics per second one connection may
	// subscribe or unsubscribe on average: each topic of a subscribe or
	// unsubscribe frame counts one, besides the frame itself counting
	// against InboundRate. Default: 128 (a connection's default topics a
	// second).
	SubscribeRate float64
	// SubscribeBurst is how many topics one connection may subscribe or
	// unsubscribe at once; at least MaxTopicsPerConn, so that a frame of
	// a connection's whole topic set can pass. Default: 4 ×
	// MaxTopicsPerConn (512).
	SubscribeBurst int
	// MaxBodySize bounds a REST request body in bytes; larger answers 413.
	// Default: 1 MiB.
	MaxBodySize int64
	// SendQueueSize bounds the frames waiting to be written to one
	// connection; a connection whose queue is full is closed (status 1008)
	// rather than slowing publishes. Default: 1024.
	SendQueueSize int
	// WriteTimeout bounds one write to a connection: a write that blocks
	// for between half of it and all of it fails, and the connection is
	// closed. Default: 10s.
	WriteTimeout time.Duration
	// PingInterval is how often the node pings each connection. Default: 25s.
	PingInterval time.Duration
	// PongTimeout closes a connection that has not answered a ping for
	// this long. It must exceed PingInterval. Default: 60s.
	PongTimeout time.Duration
	// BrokerTimeout bounds the broker calls a connection's frame or a REST
	// request makes. Default: 5s.
	BrokerTimeout time.Duration

	// TopicOptions, if set, gives each topic its options: whether the
	// broker keeps its recent messages (history, recovery after a
	// reconnect) and whether it is a latest-value topic (DESIGN §3,
	// "Streams"). It is called on every publish and subscribe with the
	// topic, from many goroutines at once, so it must be fast and must
	// return the same options for a topic on every node of a cluster (a
	// prefix test, a map lookup). It needs a broker that keeps streams
	// (broker.Streamer; every firetower broker does). Default: nil (no
	// topic keeps history).
	TopicOptions func(topic string) TopicOptions
	// PresenceGrace is how long the leave of a user from a JoinLeave
	// topic waits after their last connection left it; a connection of
	// theirs that subscribes within it cancels the leave (and makes no
	// join), so that a page reload or a reconnect to another node is not
	// seen. At most a minute. Default: DefaultPresenceGrace (3 s).
	PresenceGrace time.Duration

	// Dashboard serves the live operations page at {prefix}/dashboard.
	// The page itself holds no data; its figures come from
	// {prefix}/dashboard/events, authorized like REST publish (see
	// (*Tower).Middleware). GET {prefix}/topics and {prefix}/stats are
	// served either way. Default: false.
	Dashboard bool
	// Logger receives firetower's logs. Default: nil (discarded).
	Logger *slog.Logger
}

func (cfg Config) withDefaults() (Config, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def64(&cfg.MaxFrameSize, 64<<10)
	def(&cfg.MaxTopicsPerConn, 128)
	if cfg.InboundRate == 0 {
		cfg.InboundRate = 100
	}
	def(&cfg.InboundBurst, 200)
	if cfg.InboundBytesRate == 0 {
		cfg.InboundBytesRate = 64 << 10
	}
	def64(&cfg.InboundBytesBurst, 4*cfg.MaxFrameSize)
	if cfg.SubscribeRate == 0 {
		cfg.SubscribeRate = 128
	}
	def(&cfg.SubscribeBurst, 4*cfg.MaxTopicsPerConn)
	def64(&cfg.MaxBodySize, 1<<20)
	def(&cfg.SendQueueSize, 1024)
	defDur(&cfg.WriteTimeout, 10*time.Second)
	defDur(&cfg.PingInterval, 25*time.Second)
	defDur(&cfg.PongTimeout, 60*time.Second)
	defDur(&cfg.BrokerTimeout, 5*time.Second)
	defDur(&cfg.PresenceGrace, DefaultPresenceGrace)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.AllowedOrigins = append([]string(nil), cfg.AllowedOrigins...)

	bad := func(format string, args ...any) (Config, error) {
		return cfg, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case cfg.Prefix != "" && (!strings.HasPrefix(cfg.Prefix, "/") || strings.HasSuffix(cfg.Prefix, "/")):
		return bad("Prefix %q must start with / and not end with /", cfg.Prefix)
	case cfg.MaxFrameSize < 0, cfg.MaxTopicsPerConn < 0, cfg.InboundRate < 0, cfg.InboundBurst < 0,
		cfg.InboundBytesRate < 0, cfg.InboundBytesBurst < 0, cfg.SubscribeRate < 0, cfg.SubscribeBurst < 0,
		cfg.MaxBodySize < 0, cfg.SendQueueSize < 0, cfg.MaxConnsPerUser < 0, cfg.WriteTimeout < 0, cfg.PingInterval < 0, cfg.BrokerTimeout < 0,
		cfg.PresenceGrace < 0:
		return bad("limits and durations must not be negative")
	case cfg.InboundBytesBurst < cfg.MaxFrameSize:
		return bad("InboundBytesBurst (%d) must be at least MaxFrameSize (%d), or frames that size never pass", cfg.InboundBytesBurst, cfg.MaxFrameSize)
	case cfg.SubscribeBurst < cfg.MaxTopicsPerConn:
		return bad("SubscribeBurst (%d) must be at least MaxTopicsPerConn (%d), or a frame of that many topics never passes", cfg.SubscribeBurst, cfg.MaxTopicsPerConn)
	case cfg.PongTimeout <= cfg.PingInterval:
		return bad("PongTimeout (%v) must exceed PingInterval (%v)", cfg.PongTimeout, cfg.PingInterval)
	case cfg.PresenceGrace > maxPresenceGrace:
		return bad("PresenceGrace (%v) must be at most %v", cfg.PresenceGrace, maxPresenceGrace)
	case cfg.Broker != nil && cfg.BrokerURL != "":
		return bad("set Broker or BrokerURL, not both")
	}
	if cfg.Broker != nil && cfg.TopicOptions != nil {
		if _, ok := cfg.Broker.(broker.Streamer); !ok {
			return bad("TopicOptions needs a broker that keeps streams (broker.Streamer); %T does not", cfg.Broker)
		}
	}
	for _, p := range cfg.AllowedOrigins {
		if _, err := path.Match(p, ""); err != nil {
			return bad("AllowedOrigins pattern %q: %v", p, err)
		}
	}
	return cfg, nil
}
