// Command chat is firetower's chat room demo: a gin app with firetower's
// middleware, a web page at / and rooms as topics (/chat/world, /chat/2).
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
	"encoding/json"
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
	"unicode/utf8"

	"github.com/OSMeteor/firetower"
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

	// Whenever someone joins or leaves a room, tell the room how many are
	// in it now. c.Context() is still live in UnSubscribeHandler, on a
	// disconnect too (it ends once the disconnect hooks returned). With
	// bare data the frames take the v0.x chat's shape, so its pages show
	// the count.
	announce := func(kind string) func(*firetower.Conn, []string) {
		return func(c *firetower.Conn, rooms []string) {
			ctx, cancel := context.WithTimeout(c.Context(), 5*time.Second)
			defer cancel()
			for _, room := range rooms {
				n, err := c.Tower().GetConnectNum(ctx, room)
				if err != nil {
					log.Warn("counting a room", "room", room, "err", err)
					continue
				}
				msg := map[string]any{"type": "online", "count": n}
				if *bare {
					msg = map[string]any{"type": kind, "data": n}
				}
				if _, err := c.Tower().Publish(ctx, room, msg); err != nil {
					log.Warn("announcing a room's count", "room", room, "err", err)
				}
			}
		}
	}
	tower, err := firetower.New(firetower.Config{
		Dashboard:   true,
		APIToken:    *apiToken,
		BrokerURL:   *brokerURL,
		BrokerToken: *svcToken,
		BareData:    *bare,
		Logger:      log,
		BeforeSubscribeHandler: func(_ *firetower.Conn, topics []string) bool {
			for _, t := range topics {
				if !strings.HasPrefix(t, "/chat/") {
					return false
				}
			}
			return true
		},
		SubscribeHandler:   announce("onSubscribe"),
		UnSubscribeHandler: announce("onUnsubscribe"),
		ReadHandler:        allowChatMessage,
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
	tower.Shutdown(ctx)
	srv.Shutdown(ctx)
}

// allowChatMessage lets a page publish chat lines to a room: a JSON object
// with a short text, {"text":"hi",...}, or the v0.x chat's
// {"from":"1234","data":"hi","type":"publish"}.
func allowChatMessage(_ *firetower.Conn, f *firetower.Frame) bool {
	if f.Type != firetower.TypePublish || len(f.Topics) != 1 || !strings.HasPrefix(f.Topics[0], "/chat/") {
		return false
	}
	var msg struct {
		Text string `json:"text"`
		Data any    `json:"data"`
	}
	if json.Unmarshal(f.Data, &msg) != nil {
		return false
	}
	text := msg.Text
	if v0, ok := msg.Data.(string); ok && text == "" {
		text = v0
	}
	return text != "" && utf8.RuneCountInString(text) <= 2000
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
