package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func TestOversizeFrameCloses1009(t *testing.T) {
	s := newServer(t, Config{MaxFrameSize: 1024})
	ok := dial(t, s, "", nil)
	c := dial(t, s, "", nil)
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", 900) + `"}`) // fits
	c.expect(TypePong)
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)
	err := c.waitClosed()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("closed with %v, want 1009", err)
	}
	ok.alive() // the server and the others are fine
}

func TestDisconnectUnsubscribesEachTopicOnce(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	done := make(chan struct{}, 10)
	s := newServer(t, Config{
		UnSubscribeHandler: func(_ *Conn, topics []string) {
			mu.Lock()
			for _, t := range topics {
				seen[t]++
			}
			mu.Unlock()
		},
		OnDisconnect: func(*Conn) { done <- struct{}{} },
	})
	ctx := context.Background()
	stay := dial(t, s, "", nil)
	stay.subscribe("b")
	c := dial(t, s, "", nil)
	c.subscribe("a", "b")
	c.subscribe("c")
	if n, _ := s.tower.GetConnectNum(ctx, "b"); n != 2 {
		t.Fatalf("count b = %d", n)
	}
	c.ws.Close()
	<-done
	mu.Lock()
	if len(seen) != 3 || seen["a"] != 1 || seen["b"] != 1 || seen["c"] != 1 {
		t.Fatalf("UnSubscribeHandler saw %v, want a, b, c once each", seen)
	}
	mu.Unlock()
	for topic, want := range map[string]int{"a": 0, "b": 1, "c": 0} {
		if n, _ := s.tower.GetConnectNum(ctx, topic); n != want {
			t.Fatalf("count %s = %d, want %d", topic, n, want)
		}
	}
	stay.alive()
}

func TestAuthenticate(t *testing.T) {
	s := newServer(t, Config{Authenticate: func(c *gin.Context) (string, error) {
		if tok := c.Query("token"); tok != "good" {
			return "", errors.New("bad token")
		}
		return "alice", nil
	}, OnConnect: func(c *Conn) { c.Send(map[string]string{"type": "welcome", "user": c.UserID()}) }})
	_, resp, err := websocket.DefaultDialer.Dial(s.wsURL("token=bad"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dial with a bad token: %v, %v", err, resp)
	}
	c := dial(t, s, "token=good", nil)
	if f := c.expect("welcome"); !strings.Contains(string(f.raw), `"alice"`) {
		t.Fatalf("got %s", f.raw)
	}
}

func TestOriginCheck(t *testing.T) {
	s := newServer(t, Config{AllowedOrigins: []string{"*.example.com"}})
	host := strings.TrimPrefix(s.URL, "http://")
	for origin, ok := range map[string]bool{
		"":                             true, // not a browser
		"http://" + host:               true, // same origin
		"https://app.example.com":      true,
		"https://evil.com":             false,
		"https://example.com.evil.com": false,
		"null":                         false,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), h)
		if ok != (err == nil) {
			t.Errorf("origin %q: err %v", origin, err)
		}
		if !ok && resp != nil && resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: status %d, want 403", origin, resp.StatusCode)
		}
		if ws != nil {
			ws.Close()
		}
	}
	open := newServer(t, Config{InsecureSkipOriginCheck: true})
	h := http.Header{"Origin": {"https://evil.com"}}
	ws, _, err := websocket.DefaultDialer.Dial(open.wsURL(""), h)
	if err != nil {
		t.Fatalf("InsecureSkipOriginCheck: %v", err)
	}
	ws.Close()
}

// TestCallbackPanic: a panicking callback closes its connection with
// 1011, its subscriptions are still cleaned up, and the server goes on.
func TestCallbackPanic(t *testing.T) {
	left := make(chan []string, 1)
	s := newServer(t, Config{
		ReadHandler:        func(*Conn, *Frame) bool { panic("boom") },
		UnSubscribeHandler: func(_ *Conn, topics []string) { left <- topics },
	})
	c := dial(t, s, "", nil)
	c.subscribe("p")
	c.send(`{"type":"custom"}`)
	if err := c.waitClosed(); !websocket.IsCloseError(err, websocket.CloseInternalServerErr) {
		t.Fatalf("closed with %v, want 1011", err)
	}
	if got := <-left; !slices.Equal(got, []string{"p"}) {
		t.Fatalf("unsubscribed %v", got)
	}
	if n := s.tower.LocalConnectNum("p"); n != 0 {
		t.Fatalf("%d subscribers left", n)
	}
	dial(t, s, "", nil).alive()
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
		brokertest.Eventually(t, 5*time.Second, func() error {
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
