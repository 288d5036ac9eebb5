// Command firetower-topicsvc is the firetower topic service: the routing and
// counting core that the nodes of a firetower cluster share, served over
// gRPC, and the push API for backends in any language.
//
//	FIRETOWER_TOPICSVC_TOKEN=secret firetower-topicsvc -listen 0.0.0.0:6666
//
// Flags override the environment:
//
//	-listen     FIRETOWER_TOPICSVC_LISTEN    listen address (default 127.0.0.1:6666; port 0 picks one)
//	-token      FIRETOWER_TOPICSVC_TOKEN     node token: node sessions and the push API (required)
//	-api-token  FIRETOWER_TOPICSVC_API_TOKEN backends' token: the push API only, never a node session (default empty: none)
//	-tls-cert   FIRETOWER_TOPICSVC_TLS_CERT  PEM certificate; with -tls-key the service speaks TLS only
//	-tls-key    FIRETOWER_TOPICSVC_TLS_KEY   PEM private key
//	-metrics-listen FIRETOWER_TOPICSVC_METRICS_LISTEN  address of the Prometheus /metrics endpoint (default empty: off)
//	-max-stream-bytes                            memory cap of the topics' kept messages, for history and recovery (default 256 MiB)
//
// It logs with slog to stderr; the line "topic service listening" carries the
// bound address, and "metrics listening" the metrics address. SIGTERM or
// SIGINT stops it gracefully.
//
// It runs package topicsvc/server. Nodes reach it through package
// topicsvc/client, which a program links with
//
//	import _ "github.com/OSMeteor/firetower/topicsvc/client"
//
// to open FIRETOWER_BROKER=topicsvc://host:port.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "firetower-topicsvc:", err)
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func run(args []string) error {
	fs := flag.NewFlagSet("firetower-topicsvc", flag.ContinueOnError)
	listen := fs.String("listen", env("FIRETOWER_TOPICSVC_LISTEN", "127.0.0.1:6666"), "listen address (env FIRETOWER_TOPICSVC_LISTEN)")
	token := fs.String("token", env("FIRETOWER_TOPICSVC_TOKEN", ""), "node token: node sessions and the push API, required (env FIRETOWER_TOPICSVC_TOKEN)")
	apiToken := fs.String("api-token", env("FIRETOWER_TOPICSVC_API_TOKEN", ""), "backends' token: the push API only, never a node session (env FIRETOWER_TOPICSVC_API_TOKEN)")
	maxNodeTopics := fs.Int("max-node-topics", 100_000, "topics one node may listen to")
	helloTimeout := fs.Duration("hello-timeout", 5*time.Second, "deadline of a connection's handshake and of a session's hello")
	idleTimeout := fs.Duration("idle-timeout", time.Minute, "close a connection with no call in flight for this long")
	logInterval := fs.Duration("log-interval", 10*time.Second, "at most one summary line of refused calls per interval")
	certFile := fs.String("tls-cert", env("FIRETOWER_TOPICSVC_TLS_CERT", ""), "TLS certificate PEM file (env FIRETOWER_TOPICSVC_TLS_CERT)")
	keyFile := fs.String("tls-key", env("FIRETOWER_TOPICSVC_TLS_KEY", ""), "TLS private key PEM file (env FIRETOWER_TOPICSVC_TLS_KEY)")
	metricsListen := fs.String("metrics-listen", env("FIRETOWER_TOPICSVC_METRICS_LISTEN", ""), "address of the Prometheus /metrics endpoint, empty: off (env FIRETOWER_TOPICSVC_METRICS_LISTEN)")
	heartbeat := fs.Duration("heartbeat-timeout", 5*time.Second, "forget a node silent for this long")
	queue := fs.Int("queue-size", 16384, "operations queued per node before a slow node is disconnected")
	maxMsg := fs.Int("max-message-size", topicsvc.DefaultMaxMessageSize, "largest message data in bytes")
	maxStream := fs.Int64("max-stream-bytes", topicsvc.DefaultMaxStreamBytes, "memory cap of the streams (topics' kept messages, for history and recovery), in bytes; over it the least recently published stream is forgotten")
	logJSON := fs.Bool("log-json", false, "log JSON instead of text")
	debug := fs.Bool("debug", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, hopts)
	if *logJSON {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	}
	log := slog.New(h)

	if *token == "" {
		return errors.New("a token is required: set -token or FIRETOWER_TOPICSVC_TOKEN")
	}
	if *maxStream <= 0 {
		return fmt.Errorf("-max-stream-bytes must be positive, got %d", *maxStream)
	}
	var tlsConf *tls.Config
	if *certFile != "" || *keyFile != "" {
		if *certFile == "" || *keyFile == "" {
			return errors.New("-tls-cert and -tls-key go together")
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv, err := server.New(server.Config{
		Token:            *token,
		APIToken:         *apiToken,
		MaxNodeTopics:    *maxNodeTopics,
		HelloTimeout:     *helloTimeout,
		IdleTimeout:      *idleTimeout,
		LogInterval:      *logInterval,
		Logger:           log,
		TLS:              tlsConf,
		HeartbeatTimeout: *heartbeat,
		QueueSize:        *queue,
		MaxMessageSize:   *maxMsg,
		MaxStreamBytes:   *maxStream,
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("topic service listening", "addr", l.Addr().String(), "tls", tlsConf != nil)
	if *metricsListen != "" {
		stopMetrics, err := serveMetrics(*metricsListen, srv, log)
		if err != nil {
			l.Close()
			return err
		}
		defer stopMetrics()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("topic service stopping")
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	log.Info("topic service stopped")
	return nil
}

// serveMetrics serves the service's figures, and the Go runtime's and the
// process's, at /metrics on addr, from a registry of its own.
func serveMetrics(addr string, srv *server.Server, log *slog.Logger) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	log.Info("metrics listening", "addr", l.Addr().String(), "path", "/metrics")
	return func() { hs.Close() }, nil
}
