// Command chat is firetower's chat room demo: a gin app with firetower's
// middleware, a web page at / and rooms as topics (/chat/world, /chat/2).
// A room keeps its last 100 messages for 24 hours: a page that joins shows
// them, and a page whose connection dropped gets what it missed.
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
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
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

	tower, rooms, err := newTower(chatConfig{
		APIToken:    *apiToken,
		BrokerURL:   *brokerURL,
		BrokerToken: *svcToken,
		BareData:    *bare,
		Logger:      log,
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
	rooms.Close() // first: the connections' leaves need no announcement
	tower.Shutdown(ctx)
	srv.Shutdown(ctx)
}

// chatConfig is what newTower needs; Broker, if set, replaces BrokerURL
// (the tests wrap a broker), and a zero Interval means presenceInterval.
type chatConfig struct {
	APIToken, BrokerURL, BrokerToken string
	Broker                           broker.Broker
	BareData                         bool
	Logger                           *slog.Logger
	Interval                         time.Duration
}

// presenceInterval is how often, at most, a node announces one room's
// count: a burst of joins and leaves shows as one update.
const presenceInterval = 500 * time.Millisecond

// newTower builds the demo's Tower, and the presence goroutine that
// announces the rooms' counts; close it before shutting the Tower down.
func newTower(cc chatConfig) (*firetower.Tower, *presence, error) {
	interval := cc.Interval
	if interval == 0 {
		interval = presenceInterval
	}
	var tower *firetower.Tower
	// Whenever someone joins or leaves a room, tell the room how many are
	// in it now — not from the callbacks: they run on the connection's
	// read path, and a count is a broker round trip. The callbacks mark
	// the room; the presence goroutine counts and publishes.
	//
	// The count goes to the room's online topic (onlineTopic), never to
	// the room itself: allowChatMessage refuses every client publish
	// outside /chat/, so whatever arrives on /online/... comes from a
	// node or a backend holding the API token, and a page takes counts
	// from there only. A client cannot forge it, whatever fields its
	// message carries. With bare data the frames carry no topic, so the
	// count takes the v0.x chat's shape in the room itself; there
	// allowChatMessage refuses any "type" but "publish", so a client
	// cannot forge that shape either.
	rooms := newPresence(interval, 5*time.Second, cc.Logger,
		func(ctx context.Context, room string) (int, error) { return tower.GetConnectNum(ctx, room) },
		func(ctx context.Context, room, kind string, n int) error {
			var err error
			if cc.BareData {
				_, err = tower.Publish(ctx, room, map[string]any{"type": kind, "data": n})
			} else {
				_, err = tower.Publish(ctx, onlineTopic(room), map[string]any{"type": "online", "count": n})
			}
			return err
		})
	tower, err := firetower.New(firetower.Config{
		Dashboard:              true,
		APIToken:               cc.APIToken,
		Broker:                 cc.Broker,
		BrokerURL:              cc.BrokerURL,
		BrokerToken:            cc.BrokerToken,
		BareData:               cc.BareData,
		Logger:                 cc.Logger,
		BeforeSubscribeHandler: allowSubscribe,
		SubscribeHandler:       func(_ *firetower.Conn, topics []string) { rooms.changed("onSubscribe", chatRooms(topics)) },
		UnSubscribeHandler:     func(_ *firetower.Conn, topics []string) { rooms.changed("onUnsubscribe", chatRooms(topics)) },
		ReadHandler:            allowChatMessage,
		TopicOptions:           topicOptions(cc.BareData),
	})
	if err != nil {
		rooms.Close()
		return nil, nil, err
	}
	tower.RegisterOnShutdown(rooms.Close)
	return tower, rooms, nil
}

// A room keeps its last roomHistory messages for roomHistoryTTL: a page
// that joins shows them, and one whose socket dropped gets what it missed
// when it reconnects.
const (
	roomHistory    = 100
	roomHistoryTTL = 24 * time.Hour
)

// topicOptions gives the rooms their history. Only rooms keep one: the
// online topics carry what the room announces (its count), which is not
// chat and would crowd the messages out of the history. With bare data
// nothing keeps history: the v0.x page can neither read nor recover it,
// and there the count is published in the room itself.
func topicOptions(bare bool) func(topic string) firetower.TopicOptions {
	if bare {
		return nil
	}
	return func(topic string) firetower.TopicOptions {
		if strings.HasPrefix(topic, roomPrefix) {
			return firetower.TopicOptions{HistorySize: roomHistory, HistoryTTL: roomHistoryTTL}
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
