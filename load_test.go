package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func TestOrderOfOnePublisher(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, ReadHandler: func(*Conn, *Frame) bool { return true }, InboundRate: 1e6, InboundBurst: 2000})
	subs := []*client{dial(t, s, "", nil), dial(t, s, "batch=1", nil)}
	for _, c := range subs {
		c.subscribe("order")
	}
	pub := dial(t, s, "", nil)
	const n = 1000
	for i := range n {
		pub.send(fmt.Sprintf(`{"type":"publish","topic":"order","data":%d}`, i))
	}
	for _, c := range subs {
		for i := range n {
			if f := c.expect(TypePublish); string(f.Data) != fmt.Sprint(i) {
				t.Fatalf("message %d arrived as %s", i, f.Data)
			}
		}
	}
}

// TestStalledClient: one client stops reading while messages flow; the
// others get every message, and the stalled one is cut off instead of
// holding anything up.
func TestStalledClient(t *testing.T) {
	s := newServer(t, Config{SendQueueSize: 256})
	// The stalled client's receive buffer is small, so that the server
	// notices it soon.
	dialer := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	stalled, _, err := dialer.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"feed"}`))
	stalled.ReadMessage() // subscribed; then it reads nothing more
	readers := make([]*client, 5)
	for i := range readers {
		readers[i] = dial(t, s, "", nil)
		readers[i].subscribe("feed")
	}
	const n, window = 2000, 32
	payload := strings.Repeat("x", 8<<10)
	ctx := context.Background()
	progress := make([]atomic.Int64, len(readers))
	var wg sync.WaitGroup
	for r, c := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				f := c.next()
				if !strings.HasPrefix(string(f.Data), fmt.Sprintf(`{"i":%d,`, i)) {
					t.Errorf("reader: message %d arrived as %.20s", i, f.Data)
					return
				}
				progress[r].Add(1)
			}
		}()
	}
	// The publisher keeps at most window messages ahead of the slowest
	// reader: readers that read keep up, whatever the stalled one does.
	for i := range n {
		for r := range progress {
			deadline := time.Now().Add(5 * time.Second)
			for progress[r].Load() < int64(i-window) {
				if time.Now().After(deadline) {
					t.Fatalf("reader %d stuck at %d of %d: held up by the stalled client", r, progress[r].Load(), i)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		if _, err := s.tower.Publish(ctx, "feed", map[string]any{"i": i, "p": payload}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	eventually(t, func() error {
		if got := s.tower.LocalConnectNum("feed"); got != len(readers) {
			return fmt.Errorf("feed has %d subscribers; the stalled one should be gone", got)
		}
		return nil
	})
	if got := s.tower.stats.slowClosed.Load(); got != 1 {
		t.Fatalf("slow closes: %d", got)
	}
	// Its handler ended: the server let go of the connection without
	// waiting for it (a client that reads nothing may never take a close
	// frame).
	eventually(t, func() error {
		s.tower.mu.Lock()
		defer s.tower.mu.Unlock()
		if len(s.tower.conns) != len(readers) {
			return fmt.Errorf("%d connections tracked, want %d", len(s.tower.conns), len(readers))
		}
		return nil
	})
}

// TestChurn: many clients subscribe, publish and leave at random; in the
// end no subscription, count or goroutine is left.
func TestChurn(t *testing.T) {
	var subs, unsubs atomic.Int64
	s := newServer(t, Config{
		ReadHandler:        func(*Conn, *Frame) bool { return true },
		SubscribeHandler:   func(_ *Conn, topics []string) { subs.Add(int64(len(topics))) },
		UnSubscribeHandler: func(_ *Conn, topics []string) { unsubs.Add(int64(len(topics))) },
	})
	topics := []string{"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"}
	const clients = 120
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			for time.Now().Before(deadline) {
				ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
				if err != nil {
					t.Error(err)
					return
				}
				go func() { // drain
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							return
						}
					}
				}()
				for range 1 + rnd.IntN(20) {
					topic := topics[rnd.IntN(len(topics))]
					var frame string
					switch rnd.IntN(3) {
					case 0:
						frame = `{"type":"subscribe","topic":"` + topic + `"}`
					case 1:
						frame = `{"type":"unSubscribe","topic":"` + topic + `"}`
					default:
						frame = `{"type":"publish","topic":"` + topic + `","data":1}`
					}
					if ws.WriteMessage(websocket.TextMessage, []byte(frame)) != nil {
						break
					}
				}
				ws.Close()
			}
		}()
	}
	wg.Wait()
	ctx := context.Background()
	eventually(t, func() error {
		for _, topic := range topics {
			if n, _ := s.tower.GetConnectNum(ctx, topic); n != 0 {
				return fmt.Errorf("count of %s is %d after everyone left", topic, n)
			}
		}
		if subs.Load() != unsubs.Load() {
			return fmt.Errorf("%d subscribes but %d unsubscribes", subs.Load(), unsubs.Load())
		}
		s.tower.mu.Lock()
		defer s.tower.mu.Unlock()
		if len(s.tower.conns) != 0 {
			return fmt.Errorf("%d connections still tracked", len(s.tower.conns))
		}
		return nil
	})
	if subs.Load() == 0 {
		t.Fatal("no subscription happened")
	}
	topicsLeft, _ := s.tower.broker.(*topicsvc.Embedded).Topics(ctx)
	if len(topicsLeft) != 0 {
		t.Fatalf("broker still counts %v", topicsLeft)
	}
}

func TestShutdown(t *testing.T) {
	var unsubs atomic.Int64
	s := newServer(t, Config{APIToken: testToken, UnSubscribeHandler: func(_ *Conn, topics []string) { unsubs.Add(int64(len(topics))) }})
	clients := make([]*client, 10)
	for i := range clients {
		clients[i] = dial(t, s, "", nil)
		clients[i].subscribe("x", "y")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.tower.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if err := c.waitClosed(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("closed with %v, want 1001", err)
		}
	}
	if got := unsubs.Load(); got != 20 {
		t.Fatalf("unsubscribe hooks saw %d topics, want 20", got)
	}
	if err := s.tower.Shutdown(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := s.tower.Publish(ctx, "x", 1); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Publish after Shutdown: %v", err)
	}
	if code, _ := post(t, s, "/publish", testToken, `{"topic":"x","data":1}`); code != 503 {
		t.Fatalf("REST publish after Shutdown: %d", code)
	}
	if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil); err == nil || resp.StatusCode != 503 {
		t.Fatalf("dial after Shutdown: %v", err)
	}
}

func TestShutdownHonoursContext(t *testing.T) {
	block := make(chan struct{})
	s := newServer(t, Config{OnDisconnect: func(*Conn) { <-block }})
	dial(t, s, "", nil).subscribe("x")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.tower.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a hook that blocks: %v", err)
	}
	close(block)
	if err := s.tower.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestNodesShareACore runs two nodes on one in-process topic service core:
// messages and counts cross between them.
func TestNodesShareACore(t *testing.T) {
	core := topicsvc.NewCore()
	a := newServer(t, Config{Broker: core.Embedded()})
	b := newServer(t, Config{Broker: core.Embedded(), APIToken: testToken})
	ca, cb := dial(t, a, "", nil), dial(t, b, "", nil)
	ca.subscribe("/room")
	cb.subscribe("/room")
	if code, body := get(t, a, "/topics/%2Froom/count"); body["count"] != float64(2) {
		t.Fatalf("count on a: %d %v", code, body)
	}
	post(t, b, "/publish", testToken, `{"topic":"/room","data":"hello"}`)
	for _, c := range []*client{ca, cb} {
		if f := c.expect(TypePublish); string(f.Data) != `"hello"` {
			t.Fatalf("got %s", f.raw)
		}
	}
}

// TestStats checks the node's figures after a known workload: 10
// publishes to 100 subscribers are 1,000 deliveries.
func TestStats(t *testing.T) {
	s := newServer(t, Config{})
	clients := make([]*client, 100)
	for i := range clients {
		clients[i] = dial(t, s, "", nil)
		clients[i].subscribe("/stats")
	}
	clients[0].subscribe("/other")
	ctx := context.Background()
	for i := range 10 {
		s.tower.Publish(ctx, "/stats", i)
	}
	for _, c := range clients {
		for range 10 {
			c.expect(TypePublish)
		}
	}
	st := s.tower.Stats()
	if st.Connections != 100 || st.Subscriptions != 101 || st.Topics != 2 || st.Published != 10 || st.Delivered != 1000 || st.FramesIn != 101 {
		t.Fatalf("stats %+v", st)
	}
	// Replies are frames too: 101 subscribed + 1,000 messages. A frame is
	// counted once its write returned, which may be just after the client
	// read it.
	eventually(t, func() error {
		st := s.tower.Stats()
		if st.FramesOut != 1101 || st.BytesOut < 1000*50 || st.LatencyCount == 0 || int64(st.LatencyCount) > st.Writes {
			return fmt.Errorf("output stats %+v", st)
		}
		return nil
	})
	for _, c := range clients[:10] {
		c.ws.Close()
	}
	eventually(t, func() error {
		st := s.tower.Stats()
		if st.Connections != 90 || st.Disconnects["client"] != 10 || st.Subscriptions != 90 || st.Topics != 1 {
			return fmt.Errorf("after 10 left: %+v", st)
		}
		return nil
	})
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogs: every log line about a connection names it and its user, and
// messages are not logged at the default level.
func TestLogs(t *testing.T) {
	var debug, info syncBuffer
	newLogger := func(w io.Writer, level slog.Level) *slog.Logger {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	for _, tc := range []struct {
		buf   *syncBuffer
		level slog.Level
	}{{&debug, slog.LevelDebug}, {&info, slog.LevelInfo}} {
		s := newServer(t, Config{Logger: newLogger(tc.buf, tc.level), Authenticate: func(*gin.Context) (string, error) { return "u-42", nil }})
		c := dial(t, s, "", nil)
		c.subscribe("/logs")
		for i := range 100 {
			s.tower.Publish(context.Background(), "/logs", i)
		}
		for range 100 {
			c.expect(TypePublish)
		}
		c.ws.Close()
		eventually(t, func() error {
			if s.tower.Stats().Connections != 0 {
				return errors.New("still connected")
			}
			return nil
		})
	}
	lines := strings.Split(strings.TrimSpace(debug.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("debug logs: %q", debug.String())
	}
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		if _, about := rec["conn"]; about && rec["user"] != "u-42" {
			t.Errorf("a line about a connection without its user: %s", line)
		}
	}
	if got := info.String(); got != "" {
		t.Fatalf("logged at info level during normal traffic: %s", got)
	}
}
