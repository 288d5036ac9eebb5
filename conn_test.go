package firetower

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

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

func TestFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := appendFrameHeader(nil, tc.n); string(got) != string(tc.want) {
			t.Errorf("header for %d bytes: % x, want % x", tc.n, got, tc.want)
		}
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

// TestPingThenCloseIsTheClients: a client that pings and closes at once
// is recorded as leaving by itself, even when gorilla's reply to its close
// frame goes out before the writer's pong.
func TestPingThenCloseIsTheClients(t *testing.T) {
	s := newServer(t, Config{})
	const n = 100
	for range n {
		ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
		if err != nil {
			t.Fatal(err)
		}
		// Ping and close in one write, so that they arrive together: a
		// masked ping "p" and a masked close 1000, with a zero mask key.
		ws.NetConn().Write([]byte{0x89, 0x81, 0, 0, 0, 0, 'p', 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
		ws.ReadMessage() // until the close reply
		ws.Close()
	}
	eventually(t, func() error {
		d := s.tower.Stats().Disconnects
		if d["client"] != n || d["write_error"] != 0 {
			return fmt.Errorf("disconnects %v, want %d by the client and none by write errors", d, n)
		}
		return nil
	})
}
