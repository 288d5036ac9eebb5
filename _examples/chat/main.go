// Command chat is firetower's chat room demo: a gin app with firetower's
// middleware, a web page at / and rooms as topics (/chat/world, /chat/2).
// A room keeps its last 100 messages for 24 hours: a page that joins shows
// them, and a page whose connection dropped gets what it missed. A room
// also keeps who is in it (firetower's presence): the page lists its
// members and says who joins and who leaves.
//
// Who a page is comes from the query of its WebSocket URL,
// /ws?user=alice&name=Alice (authenticate). That is a stand-in for real
// authentication: anyone can claim any user id and any name. A real app
// takes the user id from its session in Config.Authenticate.
//
// A backend can notify a user in every tab they have open:
//
//	curl -X POST http://localhost:9999/publish \
//	  -H "Authorization: Bearer $FIRETOWER_API_TOKEN" \
//	  -H 'Content-Type: application/json' \
//	  -d '{"users":["alice"],"data":{"text":"hi"}}'
//
// (POST /publish needs the API token: FIRETOWER_API_TOKEN, or the one the
// log prints when none is set. The page shows data.text as a notification.)
//
//	go run ./_examples/chat
//
// It is configured by environment variables or the flags of the same
// names (DESIGN.md §6): FIRETOWER_ADDR (-addr), FIRETOWER_API_TOKEN
// (-api-token), FIRETOWER_BROKER (-broker), FIRETOWER_TOPICSVC_TOKEN
// (-topicsvc-token), FIRETOWER_BARE_DATA=1 (-bare-data) for pages
// written for firetower v0.x, and FIRETOWER_METRICS=1 (-metrics) to serve
// Prometheus metrics at /metrics. The operations dashboard is at
// /dashboard; the log prints a link to it that carries the API token.
package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/metrics"
	_ "github.com/OSMeteor/firetower/topicsvc/client" // FIRETOWER_BROKER=topicsvc://host:port
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web
var web embed.FS

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func main() {
	addr := flag.String("addr", env("FIRETOWER_ADDR", ":9999"), "listen address")
	apiToken := flag.String("api-token", env("FIRETOWER_API_TOKEN", ""), "bearer token for POST /publish (generated if empty)")
	brokerURL := flag.String("broker", env("FIRETOWER_BROKER", ""), "broker URL: empty for the embedded topic service, topicsvc://host:port, redis://host:port/db")
	svcToken := flag.String("topicsvc-token", env("FIRETOWER_TOPICSVC_TOKEN", ""), "shared secret with the topic service")
	bare := flag.Bool("bare-data", env("FIRETOWER_BARE_DATA", "") == "1", "send bare data frames, as firetower v0.x did")
	serveMetrics := flag.Bool("metrics", env("FIRETOWER_METRICS", "") == "1", "serve Prometheus metrics at /metrics")
	graceFlag := flag.String("presence-grace", env("FIRETOWER_PRESENCE_GRACE", ""), "how long a leave waits for the user to come back, as 5s (empty: firetower's default, 3s)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var grace time.Duration
	if *graceFlag != "" {
		var err error
		if grace, err = time.ParseDuration(*graceFlag); err != nil || grace <= 0 {
			log.Error("the presence grace must be a positive duration, as 5s", "value", *graceFlag)
			os.Exit(2)
		}
	}
	dashboardURL := "http://" + localAddr(*addr) + "/dashboard"
	if *apiToken == "" {
		b := make([]byte, 16)
		rand.Read(b)
		*apiToken = hex.EncodeToString(b)
		// Printed anyway, so the link may carry it (a chosen token is
		// not written to the log). The fragment never leaves the
		// browser: the page moves it to the tab's sessionStorage.
		dashboardURL += "#token=" + *apiToken
		log.Info("generated an API token for POST /publish; set FIRETOWER_API_TOKEN to choose one", "token", *apiToken)
	}

	tower, counts, err := newTower(chatConfig{
		APIToken:      *apiToken,
		BrokerURL:     *brokerURL,
		BrokerToken:   *svcToken,
		BareData:      *bare,
		PresenceGrace: grace,
		Logger:        log,
	})
	if err != nil {
		log.Error("starting firetower", "err", err)
		os.Exit(1)
	}
	// A registry of the demo's own, not the global one: the app decides
	// what it exposes.
	var reg *prometheus.Registry
	if *serveMetrics {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if err := metrics.Register(tower, reg); err != nil {
			log.Error("registering metrics", "err", err)
			os.Exit(1)
		}
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery(), tower.Middleware())
	page, _ := fs.Sub(web, "web")
	r.GET("/", func(c *gin.Context) { c.FileFromFS("/", http.FS(page)) })
	for _, name := range []string{"chat.js", "chat.css"} {
		r.GET("/"+name, func(c *gin.Context) { c.FileFromFS(name, http.FS(page)) })
	}
	if reg != nil {
		// Unauthenticated, as Prometheus scrapes usually are: in production
		// serve it on an internal listener instead.
		r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	}

	srv := &http.Server{Addr: *addr, Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		log.Info("chat demo listening", "addr", *addr, "broker", brokerName(*brokerURL))
		log.Info("operations dashboard", "url", dashboardURL)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("listening", "err", err)
			os.Exit(1)
		}
	}()

	stop, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	<-stop.Done()
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	counts.Close() // first: the connections' leaves need no announcement
	tower.Shutdown(ctx)
	srv.Shutdown(ctx)
}

// chatConfig is what newTower needs; Broker, if set, replaces BrokerURL
// (the tests wrap a broker), a zero Interval means countInterval and a
// zero PresenceGrace firetower's default (3 s).
type chatConfig struct {
	APIToken, BrokerURL, BrokerToken string
	Broker                           broker.Broker
	BareData                         bool
	Logger                           *slog.Logger
	Interval                         time.Duration
	PresenceGrace                    time.Duration
}

// countInterval is how often, at most, a node with bare data announces one
// room's count: a burst of joins and leaves shows as one update.
const countInterval = 500 * time.Millisecond

// newTower builds the demo's Tower. Who is in a room is firetower's
// presence (topicOptions): the page asks for it and the room's subscribers
// get join and leave frames. With bare data the v0.x pages get the count
// the v0.x chat announced instead (v0Counts, nil without bare data); close
// it before shutting the Tower down.
func newTower(cc chatConfig) (*firetower.Tower, *v0Counts, error) {
	var tower *firetower.Tower
	var counts *v0Counts
	var onSub, onUnsub func(*firetower.Conn, []string)
	if cc.BareData {
		interval := cc.Interval
		if interval == 0 {
			interval = countInterval
		}
		// Whenever someone joins or leaves a room, tell the room how
		// many are in it now, in the v0.x shape {"type":"onSubscribe",
		// "data":N} — not from the callbacks: they run on the
		// connection's read path, and a count is a broker round trip.
		// The callbacks mark the room; v0Counts counts and publishes.
		// allowChatMessage refuses any "type" but "publish" from a
		// client, so a client cannot forge that shape.
		counts = newV0Counts(interval, 5*time.Second, cc.Logger,
			func(ctx context.Context, room string) (int, error) { return tower.GetConnectNum(ctx, room) },
			func(ctx context.Context, room, kind string, n int) error {
				_, err := tower.Publish(ctx, room, map[string]any{"type": kind, "data": n})
				return err
			})
		onSub = func(_ *firetower.Conn, topics []string) { counts.changed("onSubscribe", topics) }
		onUnsub = func(_ *firetower.Conn, topics []string) { counts.changed("onUnsubscribe", topics) }
	}
	tower, err := firetower.New(firetower.Config{
		Dashboard:              true,
		APIToken:               cc.APIToken,
		Broker:                 cc.Broker,
		BrokerURL:              cc.BrokerURL,
		BrokerToken:            cc.BrokerToken,
		BareData:               cc.BareData,
		Logger:                 cc.Logger,
		Authenticate:           authenticate,
		PresenceGrace:          cc.PresenceGrace,
		BeforeSubscribeHandler: allowSubscribe,
		SubscribeHandler:       onSub,
		UnSubscribeHandler:     onUnsub,
		ReadHandler:            allowChatMessage,
		TopicOptions:           topicOptions(cc.BareData),
	})
	if err != nil {
		counts.Close()
		return nil, nil, err
	}
	if counts != nil {
		tower.RegisterOnShutdown(counts.Close)
	}
	return tower, counts, nil
}

// The identity a page claims: a user id of userIDChars (1 to maxUserID of
// them) and a display name of 1 to maxNick characters, no control
// characters.
const maxUserID = 32

var userIDChars = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// authenticate takes the connection's user from the query of the
// WebSocket URL: /ws?user=alice&name=Alice. A connection without a user
// is anonymous: it may read and write the rooms, and is in no member
// list. A user id or a name that is not valid refuses the connection
// (401, with the reason).
//
// This is a stand-in for authentication, for the demo only: anyone can
// claim any user id and name, and so be notified as that user and shown
// under that name. A real app takes the user id from its session (a
// cookie, a token) here, and the name from its own records.
func authenticate(c *gin.Context) (string, error) {
	user := c.Query("user")
	if user == "" {
		return "", nil
	}
	if len(user) > maxUserID || !userIDChars.MatchString(user) {
		return "", fmt.Errorf("user %q: a user id is 1 to %d letters, digits, '.', '-' and '_'", user, maxUserID)
	}
	name, err := displayName(c.Query("name"), user)
	if err != nil {
		return "", err
	}
	if err := firetower.SetConnInfo(c, map[string]string{"name": name}); err != nil {
		return "", err
	}
	return user, nil
}

// displayName checks the name a page gave, and gives the user id for none.
func displayName(name, user string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return user, nil
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNick {
		return "", fmt.Errorf("name: at most %d characters", maxNick)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return "", errors.New("name: no control characters")
		}
	}
	return name, nil
}

// A room keeps its last roomHistory messages for roomHistoryTTL: a page
// that joins shows them, and one whose socket dropped gets what it missed
// when it reconnects.
const (
	roomHistory    = 100
	roomHistoryTTL = 24 * time.Hour
)

// topicOptions gives the rooms their history and their presence: who is
// in the room (a presence frame, GET /topics/:topic/presence), and a join
// and a leave frame to the room's pages when a user comes and goes. A
// leave waits out Config.PresenceGrace (3 s), so a page reloaded or
// reconnected within it makes neither. With bare data no topic keeps
// either: a v0.x page can neither read nor recover history, nor knows
// presence frames, and there the count is published in the room itself
// (v0Counts).
func topicOptions(bare bool) func(topic string) firetower.TopicOptions {
	if bare {
		return nil
	}
	return func(topic string) firetower.TopicOptions {
		if strings.HasPrefix(topic, roomPrefix) {
			return firetower.TopicOptions{HistorySize: roomHistory, HistoryTTL: roomHistoryTTL, Presence: true, JoinLeave: true}
		}
		return firetower.TopicOptions{}
	}
}

// localAddr turns a listen address into one a browser on this machine
// can open.
func localAddr(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	return addr
}

func brokerName(u string) string {
	if u == "" {
		return "embedded topic service"
	}
	return u
}
