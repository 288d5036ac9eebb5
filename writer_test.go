package firetower

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gorilla/websocket"
)

// TestFrameLengths: the writer frames messages itself; payloads that take
// each of the three header lengths (7-bit, 16-bit and 64-bit) reach a
// plain client and a batched one intact and in order.
func TestFrameLengths(t *testing.T) {
	sizes := []int{0, 1, 100, 125, 126, 1000, 65535, 65536, 200000}
	for _, query := range []string{"", "batch=1"} {
		t.Run("query="+query, func(t *testing.T) {
			s := newServer(t, Config{})
			c := dial(t, s, query, nil)
			c.subscribe("sizes")
			ctx := context.Background()
			for _, n := range sizes {
				if _, err := s.tower.Publish(ctx, "sizes", strings.Repeat("x", n)); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range sizes {
				f := c.expect(TypePublish)
				var got string
				if err := json.Unmarshal(f.Data, &got); err != nil || got != strings.Repeat("x", n) {
					t.Fatalf("want %d bytes of data, got %d (%v)", n, len(got), err)
				}
			}
		})
	}
}

// TestClientPingsAnswered: a client's pings are answered with pongs that
// carry their payload, through the writer, while large messages stream to
// the same client; every message arrives intact and in order, so no pong
// landed inside a data frame.
func TestClientPingsAnswered(t *testing.T) {
	s := newServer(t, Config{})
	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pongs := make(chan string, 100)
	ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
	frames := make(chan []byte, 100)
	go func() {
		defer close(frames)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			frames <- b
		}
	}()
	if err := ws.WriteJSON(map[string]string{"type": "subscribe", "topic": "big", "id": "s"}); err != nil {
		t.Fatal(err)
	}
	if f := <-frames; !strings.Contains(string(f), `"subscribed"`) {
		t.Fatalf("got %s, want subscribed", f)
	}
	const n = 50
	data := strings.Repeat("y", 100000)
	go func() {
		for i := range n {
			s.tower.Publish(context.Background(), "big", data)
			ws.WriteControl(websocket.PingMessage, []byte(fmt.Sprint("p", i)), time.Now().Add(time.Second))
		}
	}()
	for i := range n {
		select {
		case f, ok := <-frames:
			var m struct{ Data string }
			if !ok || json.Unmarshal(f, &m) != nil || m.Data != data {
				t.Fatalf("message %d: not intact (%d bytes)", i, len(f))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d did not arrive", i)
		}
	}
	// Pongs answer the latest ping, so some may be skipped, but the last
	// one is answered and every answer echoes a ping.
	for {
		select {
		case p := <-pongs:
			if !strings.HasPrefix(p, "p") {
				t.Fatalf("pong carries %q, not a ping's payload", p)
			}
			if p == fmt.Sprint("p", n-1) {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the last ping was not answered")
		}
	}
}

// TestWriteChunks: a backlog of small messages with large ones among them
// reaches plain and batched clients intact and in order; the writer splits
// the backlog into writes of at most maxCoalesce bytes, and a large message
// goes in a frame of its own.
func TestWriteChunks(t *testing.T) {
	for _, query := range []string{"", "batch=1"} {
		t.Run("query="+query, func(t *testing.T) {
			s := newServer(t, Config{})
			ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(query), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			if err := ws.WriteJSON(map[string]string{"type": "subscribe", "topic": "mix"}); err != nil {
				t.Fatal(err)
			}
			if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), `"subscribed"`) {
				t.Fatalf("got %s, %v; want subscribed", b, err)
			}
			var want []string
			for i := range 400 {
				size := 1000
				if i%100 == 50 {
					size = 100000 // over maxCoalesce
				}
				d := fmt.Sprintf("%d:%s", i, strings.Repeat("z", size))
				want = append(want, d)
				if _, err := s.tower.Publish(context.Background(), "mix", d); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			for len(got) < len(want) {
				_, b, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("after %d messages: %v", len(got), err)
				}
				msgs := []json.RawMessage{b}
				if query != "" {
					msgs = nil
					if err := json.Unmarshal(b, &msgs); err != nil {
						t.Fatalf("batched frame is not an array: %.80s", b)
					}
					if len(b) > maxCoalesce && len(msgs) > 1 {
						t.Fatalf("a frame of %d bytes holds %d messages; over %d bytes only one large message goes alone", len(b), len(msgs), maxCoalesce)
					}
				}
				for _, m := range msgs {
					var f struct{ Data string }
					if err := json.Unmarshal(m, &f); err != nil {
						t.Fatal(err)
					}
					got = append(got, f.Data)
				}
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("message %d: got %.20s…, want %.20s…", i, got[i], want[i])
				}
			}
		})
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
	brokertest.Eventually(t, 5*time.Second, func() error {
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
	brokertest.Eventually(t, 5*time.Second, func() error {
		s.tower.mu.Lock()
		defer s.tower.mu.Unlock()
		if len(s.tower.conns) != len(readers) {
			return fmt.Errorf("%d connections tracked, want %d", len(s.tower.conns), len(readers))
		}
		return nil
	})
}

func TestBatchedFrames(t *testing.T) {
	s := newServer(t, Config{})
	c := dial(t, s, "batch=1", nil) // the client's reader decodes arrays
	c.subscribe("b")
	ctx := context.Background()
	for i := range 500 {
		s.tower.Publish(ctx, "b", i)
	}
	for i := range 500 {
		if f := c.expect(TypePublish); string(f.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d: %s", i, f.raw)
		}
	}
}
