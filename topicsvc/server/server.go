// Package server is the standalone firetower topic service: it serves a
// topicsvc.Core over gRPC to the nodes of a cluster (package
// topicsvc/client), and to backends in any language through the push API
// (Publish, Count, History, Presence, Topics, Nodes), behind a node token and an API token. The
// service's figures are a Prometheus collector (Server.Collector).
// cmd/firetower-topicsvc runs it.
//
//	srv, err := server.New(server.Config{Token: token})
//	...
//	err = srv.Serve(listener)
//
// A Server's methods are safe for concurrent use.
package server

import (
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/internal/wire"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Server serves a Core over gRPC: node sessions and the push API.
type Server struct {
	pb.UnimplementedTopicServiceServer

	cfg  Config
	core *topicsvc.Core
	log  *slog.Logger
	grpc *grpc.Server

	nodeAuth, apiAuth []byte // "Bearer <token>"; apiAuth nil without Config.APIToken
	refusals          *refusalLog
	// pageBytes bounds a history answer's messages: wire.HistoryPageBytes,
	// or the largest message if smaller, since the gRPC send limit is
	// that plus wire.FrameOverhead (which one message's topic, id and
	// framing fit in).
	pageBytes int
	// presencePageBytes bounds a presence answer's clients the same way
	// (wire.PresencePageBytes).
	presencePageBytes int

	mu       sync.Mutex
	stopping bool
	sessions map[string]*session // by node id

	sweepOnce sync.Once     // starts the sweeper at the first Serve
	stopOnce  sync.Once     // closes stopped
	stopped   chan struct{} // closed by Stop and GracefulStop
	sweeping  sync.WaitGroup

	stats counters
}

// sweepInterval is how often a serving Server forgets the streams that had
// no publish for their TTL. The Core also sweeps as streams are published
// to; the timer frees the memory of topics nobody publishes to any more.
const sweepInterval = time.Second

// New returns a Server; Serve starts it.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		core:      cfg.Core,
		log:       cfg.Logger,
		nodeAuth:  []byte("Bearer " + cfg.Token),
		refusals:  newRefusalLog(cfg.Logger, cfg.LogInterval),
		sessions:  map[string]*session{},
		stopped:   make(chan struct{}),
		pageBytes: min(wire.HistoryPageBytes, cfg.MaxMessageSize),

		presencePageBytes: min(wire.PresencePageBytes, cfg.MaxMessageSize),
	}
	if cfg.MaxStreamBytes > 0 {
		s.core.SetMaxStreamBytes(cfg.MaxStreamBytes)
	}
	if cfg.APIToken != "" {
		s.apiAuth = []byte("Bearer " + cfg.APIToken)
	}
	limit := cfg.MaxMessageSize + wire.FrameOverhead
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(limit),
		grpc.MaxSendMsgSize(limit),
		grpc.UnaryInterceptor(s.unaryAuth),
		grpc.StreamInterceptor(s.streamAuth),
		// Nodes heartbeat on their stream; transport pings only help to
		// notice dead connections sooner, so allow them but not floods.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// A connection that has not called anything for IdleTimeout (one
		// that never authenticated, say) is told to go away; one that is
		// silent that long is pinged and closed unless it answers within
		// HelloTimeout, which is what ends a peer that ignores the
		// GOAWAY. gRPC clients answer pings by themselves. The handshake
		// and the HTTP/2 preface must come within HelloTimeout.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.IdleTimeout, Time: cfg.IdleTimeout, Timeout: cfg.HelloTimeout}),
		grpc.ConnectionTimeout(cfg.HelloTimeout),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterTopicServiceServer(s.grpc, s)
	// Server reflection lets grpcurl and other tools list and call the
	// service without the .proto file. It passes the same token check as
	// every other call.
	reflection.Register(s.grpc)
	return s, nil
}

// Core returns the core the server serves.
func (s *Server) Core() *topicsvc.Core { return s.core }

// Serve accepts connections on l until Stop or GracefulStop.
func (s *Server) Serve(l net.Listener) error {
	s.sweepOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopping {
			return
		}
		s.sweeping.Add(1)
		go s.sweep()
	})
	return s.grpc.Serve(l)
}

// sweep calls Core.SweepStreams every sweepInterval until the server stops.
func (s *Server) sweep() {
	defer s.sweeping.Done()
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopped:
			return
		case <-t.C:
			s.core.SweepStreams()
		}
	}
}

// Stop closes every connection at once.
func (s *Server) Stop() {
	s.endSessions()
	s.grpc.Stop()
	s.stopSweeping()
	s.refusals.close()
}

// GracefulStop ends the node sessions (nodes reconnect elsewhere or later),
// lets the push API calls in flight finish, then stops.
func (s *Server) GracefulStop() {
	s.endSessions()
	s.grpc.GracefulStop()
	s.stopSweeping()
	s.refusals.close()
}

func (s *Server) stopSweeping() {
	s.stopOnce.Do(func() { close(s.stopped) })
	s.sweeping.Wait()
}

func (s *Server) endSessions() {
	s.mu.Lock()
	s.stopping = true
	ss := make([]*session, 0, len(s.sessions))
	for _, ss1 := range s.sessions {
		ss = append(ss, ss1)
	}
	s.mu.Unlock()
	for _, ss1 := range ss {
		ss1.end(reasonShutdown, status.Error(codes.Unavailable, "topic service stopping"))
	}
}
