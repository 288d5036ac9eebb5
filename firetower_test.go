package firetower

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
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
	brokertest.Eventually(t, 5*time.Second, func() error {
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

// TestRegisterOnShutdown: hooks run once, after the connections and the
// broker are closed and before Shutdown returns; a hook registered after
// Shutdown runs at once.
func TestRegisterOnShutdown(t *testing.T) {
	tower, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	tower.RegisterOnShutdown(func() {
		if _, err := tower.broker.Count(context.Background(), "a"); err == nil {
			t.Error("a hook ran before the broker was closed")
		}
		ran = append(ran, "first")
	})
	tower.RegisterOnShutdown(func() { ran = append(ran, "second") })
	for range 2 {
		if err := tower.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(ran, []string{"first", "second"}) {
		t.Fatalf("hooks ran %v, want first and second once each", ran)
	}
	tower.RegisterOnShutdown(func() { ran = append(ran, "late") })
	if !slices.Equal(ran, []string{"first", "second", "late"}) {
		t.Fatalf("a hook registered after Shutdown: ran %v", ran)
	}
}
