package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/centrifugal/centrifuge"
	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
)

// benchToken is the bearer token every target's publish route accepts. The
// harness runs on loopback only, so a fixed token is fine.
const benchToken = "bench-token"

// publishReq is the body every target's POST /publish accepts.
type publishReq struct {
	Topic string          `json:"topic"`
	Data  json.RawMessage `json:"data"`
}

// clientFrame is the subscribe frame the melody and wire targets read; it is
// firetower's wire protocol, so the load generator speaks one dialect to all
// of them.
type clientFrame struct {
	Type  string `json:"type"`
	Topic string `json:"topic"`
}

// serverMain runs one target until SIGINT or SIGTERM. It prints
// "LISTEN <addr>" once the listener is bound so the driver knows where to
// point the load generator.
func serverMain(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	target := fs.String("target", "", "naive | melodytopic | centrifuge | wire | firetower")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	broker := fs.String("broker", "", "firetower broker URL (cluster rows)")
	memprofile := fs.String("memprofile", "", "write an allocation profile of the whole run to this file")
	traceFile := fs.String("trace", "", "GET /bench/trace?ms=N writes an execution trace of the next N ms to this file")
	var hist historyOpts
	fs.IntVar(&hist.Size, "history", 0, "keep this many messages of every topic and let clients recover from them (firetower, centrifuge)")
	fs.DurationVar(&hist.TTL, "history-ttl", time.Minute, "how long -history keeps a message")
	usersMode := fs.String("users-mode", "", "users | presence | joinleave: user ids from ?user=, and presence (firetower, centrifuge; presence_servers.go)")
	_ = fs.Parse(args)
	if strings.Contains(os.Getenv("GODEBUG"), "gctrace=1") {
		// gctrace stamps cycles with the time since start: this lines them
		// up with the load generator's -slowlog.
		fmt.Fprintf(os.Stderr, "SERVERSTART %d\n", time.Now().UnixNano())
	}

	raiseNoFile()
	var h http.Handler
	var stop func()
	var err error
	switch {
	case *usersMode != "" && *target == "centrifuge":
		h, stop, err = centrifugeUsersServer(*usersMode)
	case *usersMode != "" && *target == "firetower":
		h, stop, err = firetowerUsersServer(*broker, *usersMode)
	case *usersMode != "":
		err = fmt.Errorf("target %s has no users or presence", *target)
	}
	switch {
	case h != nil || err != nil:
	case *target == "naive":
		h = naiveMelody()
	case *target == "melodytopic":
		h = topicMelody()
	case *target == "centrifuge":
		h, stop, err = centrifugeServer(hist)
	case *target == "wire":
		h = newWireServer()
	case *target == "firetower":
		h, stop, err = firetowerServer(*broker, hist)
	default:
		err = fmt.Errorf("unknown target %q", *target)
	}
	if err == nil && hist.Size > 0 && *target != "centrifuge" && *target != "firetower" {
		err = fmt.Errorf("target %s has no history", *target)
	}
	if err != nil {
		log.Fatalf("server %s: %v", *target, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	// /bench/gc lets the driver read RSS after a collection, the same way for
	// every target, instead of at a random point of the GC cycle.
	mux.HandleFunc("/bench/gc", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		w.WriteHeader(http.StatusNoContent)
	})

	if *traceFile != "" {
		mux.HandleFunc("/bench/trace", func(w http.ResponseWriter, r *http.Request) {
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			f, err := os.Create(*traceFile)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			defer f.Close()
			if err := trace.Start(f); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			time.Sleep(time.Duration(max(ms, 1)) * time.Millisecond)
			trace.Stop()
			w.WriteHeader(http.StatusNoContent)
		})
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if *memprofile != "" {
		runtime.MemProfileRate = 64 << 10
		defer func() {
			f, err := os.Create(*memprofile)
			if err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("LISTEN %s\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if stop != nil {
		stop()
	}
}

// raiseNoFile lifts the soft open-file limit to the hard one: connmax needs
// every descriptor the machine allows.
func raiseNoFile() {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}

// readPublish decodes a publish body and checks the token, shared by the
// hand-written targets.
func readPublish(w http.ResponseWriter, r *http.Request) (publishReq, bool) {
	var p publishReq
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return p, false
	}
	if r.Header.Get("Authorization") != "Bearer "+benchToken {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return p, false
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, &p) != nil || p.Topic == "" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return p, false
	}
	return p, true
}

// publishFrame encodes the server frame once per publish, as firetower does.
func publishFrame(p publishReq) []byte {
	t, _ := json.Marshal(p.Topic)
	b := make([]byte, 0, 40+len(t)+len(p.Data))
	b = append(b, `{"type":"publish","topic":`...)
	b = append(b, t...)
	b = append(b, `,"data":`...)
	b = append(b, p.Data...)
	return append(b, '}')
}

func subscribedFrame(topic string) []byte {
	t, _ := json.Marshal(topic)
	return []byte(`{"type":"subscribed","topic":[` + string(t) + `]}`)
}

func newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = 65536
	m.Upgrader.CheckOrigin = func(*http.Request) bool { return true }
	return m
}

// naiveMelody is what the melody README suggests: remember the topic on the
// session and BroadcastFilter over every session on each publish.
func naiveMelody() http.Handler {
	m := newMelody()
	m.HandleMessage(func(s *melody.Session, msg []byte) {
		var f clientFrame
		if json.Unmarshal(msg, &f) != nil || f.Type != "subscribe" {
			return
		}
		s.Set("topic", f.Topic)
		_ = s.Write(subscribedFrame(f.Topic))
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { _ = m.HandleRequest(w, r) })
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		p, ok := readPublish(w, r)
		if !ok {
			return
		}
		frame := publishFrame(p)
		_ = m.BroadcastFilter(frame, func(s *melody.Session) bool {
			t, ok := s.Get("topic")
			return ok && t == p.Topic
		})
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

// topicMelody is what a careful melody user writes: a topic map under a
// read-write lock, one Write per subscriber.
func topicMelody() http.Handler {
	m := newMelody()
	var mu sync.RWMutex
	topics := map[string]map[*melody.Session]struct{}{}
	m.HandleMessage(func(s *melody.Session, msg []byte) {
		var f clientFrame
		if json.Unmarshal(msg, &f) != nil || f.Type != "subscribe" {
			return
		}
		mu.Lock()
		set := topics[f.Topic]
		if set == nil {
			set = map[*melody.Session]struct{}{}
			topics[f.Topic] = set
		}
		set[s] = struct{}{}
		mu.Unlock()
		s.Set("topic", f.Topic)
		_ = s.Write(subscribedFrame(f.Topic))
	})
	m.HandleDisconnect(func(s *melody.Session) {
		t, ok := s.Get("topic")
		if !ok {
			return
		}
		mu.Lock()
		delete(topics[t.(string)], s)
		mu.Unlock()
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { _ = m.HandleRequest(w, r) })
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		p, ok := readPublish(w, r)
		if !ok {
			return
		}
		frame := publishFrame(p)
		mu.RLock()
		for s := range topics[p.Topic] {
			_ = s.Write(frame)
		}
		mu.RUnlock()
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

// historyOpts is the history every topic of a target keeps; Size 0 is none.
type historyOpts struct {
	Size int
	TTL  time.Duration
}

// centrifugeServer is a Centrifuge node with its defaults (memory broker, its
// own writer with frame coalescing); clients speak its JSON protocol. With
// history, every publish is kept in the memory broker's stream of its
// channel (WithHistory) and every subscription has recovery on, in
// Centrifuge's default stream mode: the subscribe reply gives the stream's
// epoch and offset, and a client subscribing with recover, epoch and offset
// gets the publications it missed in that reply.
func centrifugeServer(hist historyOpts) (http.Handler, func(), error) {
	node, err := centrifuge.New(centrifuge.Config{})
	if err != nil {
		return nil, nil, err
	}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{UserID: "bench"}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(_ centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			var reply centrifuge.SubscribeReply
			if hist.Size > 0 {
				reply.Options.EnableRecovery = true
			}
			cb(reply, nil)
		})
	})
	if err := node.Run(); err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{
		CheckOrigin: func(*http.Request) bool { return true },
	}))
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		p, ok := readPublish(w, r)
		if !ok {
			return
		}
		var opts []centrifuge.PublishOption
		if hist.Size > 0 {
			opts = append(opts, centrifuge.WithHistory(hist.Size, hist.TTL))
		}
		res, err := node.Publish(p.Topic, p.Data, opts...)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if hist.Size > 0 {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"offsets":{%q:%d}}`, p.Topic, res.Offset)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
	}
	return mux, stop, nil
}

// wireServer is the ceiling: bare gorilla/websocket, frames encoded once per
// publish, each connection's queued frames written as one JSON array frame
// when the client asked for ?batch=1. It keeps only the topic map a publish
// needs to find its subscribers.
type wireServer struct {
	up     websocket.Upgrader
	mu     sync.RWMutex
	topics map[string]map[*wireConn]struct{}
}

type wireConn struct {
	ws    *websocket.Conn
	batch bool
	mu    sync.Mutex
	q     [][]byte
	wake  chan struct{}
	done  chan struct{}
}

// wireQueueMax bounds a connection's queue; a full queue drops the frame,
// which the load generator then counts as lost.
const wireQueueMax = 1024

func newWireServer() http.Handler {
	s := &wireServer{
		up:     websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }},
		topics: map[string]map[*wireConn]struct{}{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	mux.HandleFunc("/publish", func(w http.ResponseWriter, r *http.Request) {
		p, ok := readPublish(w, r)
		if !ok {
			return
		}
		frame := publishFrame(p)
		s.mu.RLock()
		for c := range s.topics[p.Topic] {
			c.send(frame)
		}
		s.mu.RUnlock()
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

func (c *wireConn) send(frame []byte) {
	c.mu.Lock()
	if len(c.q) < wireQueueMax {
		c.q = append(c.q, frame)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (s *wireServer) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &wireConn{ws: ws, batch: r.URL.Query().Get("batch") == "1", wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.writeLoop()
	var topic string
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			break
		}
		var f clientFrame
		if json.Unmarshal(msg, &f) != nil || f.Type != "subscribe" || topic != "" {
			continue
		}
		topic = f.Topic
		s.mu.Lock()
		set := s.topics[topic]
		if set == nil {
			set = map[*wireConn]struct{}{}
			s.topics[topic] = set
		}
		set[c] = struct{}{}
		s.mu.Unlock()
		c.send(subscribedFrame(topic))
	}
	if topic != "" {
		s.mu.Lock()
		delete(s.topics[topic], c)
		s.mu.Unlock()
	}
	close(c.done)
	ws.Close()
}

func (c *wireConn) writeLoop() {
	var spare [][]byte
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		q := c.q
		c.q = spare[:0]
		c.mu.Unlock()
		if err := c.write(q); err != nil {
			c.ws.Close()
			return
		}
		clear(q)
		spare = q
	}
}

func (c *wireConn) write(q [][]byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if !c.batch {
		for _, f := range q {
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				return err
			}
		}
		return nil
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	_, _ = w.Write([]byte{'['})
	for i, f := range q {
		if i > 0 {
			_, _ = w.Write([]byte{','})
		}
		_, _ = w.Write(f)
	}
	_, _ = w.Write([]byte{']'})
	return w.Close()
}
