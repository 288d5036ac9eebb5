package firetower

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func init() { gin.SetMode(gin.TestMode) }

const testToken = "s3cret"

// server is a Tower mounted on a real gin engine behind httptest.
type server struct {
	*httptest.Server
	tower *Tower
}

// newServer starts a gin app with firetower's middleware and one route
// of its own; it shuts everything down when the test ends.
func newServer(t testing.TB, cfg Config) *server {
	t.Helper()
	tower, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(tower.Middleware())
	r.GET("/app", func(c *gin.Context) {
		c.String(http.StatusOK, "app:%v", FromContext(c) == tower)
	})
	s := &server{Server: httptest.NewServer(r), tower: tower}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tower.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		s.Close()
	})
	return s
}

func (s *server) wsURL(query string) string {
	u := "ws" + strings.TrimPrefix(s.URL, "http") + s.tower.cfg.Prefix + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// client is a real WebSocket client whose frames are read by a goroutine.
type client struct {
	t      testing.TB
	ws     *websocket.Conn
	frames chan frame
	closed chan struct{} // closed when the read loop ends
	mu     sync.Mutex
	err    error // the read loop's final error
}

// frame is a server frame as the tests look at it.
type frame struct {
	Type      string          `json:"type"`
	Topic     json.RawMessage `json:"topic"`
	Data      json.RawMessage `json:"data"`
	ID        json.RawMessage `json:"id"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	MessageID string          `json:"messageId"`
	Offset    uint64          `json:"offset"`
	Epoch     string          `json:"epoch"`
	Streams   map[string]struct {
		Epoch     string `json:"epoch"`
		Offset    uint64 `json:"offset"`
		Recovered *bool  `json:"recovered"`
	} `json:"streams"`
	Messages []struct {
		ID     string          `json:"id"`
		Offset uint64          `json:"offset"`
		Data   json.RawMessage `json:"data"`
	} `json:"messages"`
	raw []byte
}

func (f frame) topics() []string {
	var list []string
	if json.Unmarshal(f.Topic, &list) == nil {
		return list
	}
	var one string
	json.Unmarshal(f.Topic, &one)
	return []string{one}
}

func dial(t testing.TB, s *server, query string, header http.Header) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL(query), header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	c := &client{t: t, ws: ws, frames: make(chan frame, 4096), closed: make(chan struct{})}
	go c.readLoop(query == "batch=1")
	t.Cleanup(func() { ws.Close(); <-c.closed })
	return c
}

func (c *client) readLoop(batched bool) {
	defer close(c.closed)
	defer close(c.frames)
	for {
		mt, b, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		if mt == websocket.TextMessage && !utf8.Valid(b) {
			// A browser closes the connection on such a frame (1006).
			c.t.Errorf("text frame is not valid UTF-8: %q", b)
			return
		}
		var batch []json.RawMessage
		if batched {
			if err := json.Unmarshal(b, &batch); err != nil {
				c.t.Errorf("batched frame is not an array: %s", b)
				return
			}
		} else {
			batch = []json.RawMessage{b}
		}
		for _, raw := range batch {
			var f frame
			if err := json.Unmarshal(raw, &f); err != nil {
				c.t.Errorf("server frame is not a JSON object: %s", raw)
				return
			}
			f.raw = raw
			c.frames <- f
		}
	}
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next frame, failing the test after 5s.
func (c *client) next() frame {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("connection closed: %v", c.readErr())
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatal("no frame within 5s")
	}
	return frame{}
}

// expect returns the next frame and checks its type.
func (c *client) expect(typ string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got frame %s, want type %q", f.raw, typ)
	}
	return f
}

func (c *client) expectError(code string) frame {
	c.t.Helper()
	f := c.expect(TypeError)
	if f.Code != code {
		c.t.Fatalf("got error %s, want code %q", f.raw, code)
	}
	if f.Message == "" {
		c.t.Fatalf("error frame without a message: %s", f.raw)
	}
	return f
}

// quiet checks that no frame arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("unexpected frame %s", f.raw)
		}
	case <-time.After(d):
	}
}

func (c *client) subscribe(topics ...string) {
	c.t.Helper()
	c.send(map[string]any{"type": "subscribe", "topic": topics})
	c.expect(TypeSubscribed)
}

// alive checks the connection still answers.
func (c *client) alive() {
	c.t.Helper()
	c.send(`{"type":"ping","id":"alive"}`)
	if f := c.expect(TypePong); string(f.ID) != `"alive"` {
		c.t.Fatalf("pong with id %s", f.ID)
	}
}

// waitClosed waits for the server to close the connection and returns the
// close error.
func (c *client) waitClosed() error {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return c.readErr()
			}
		case <-deadline:
			c.t.Fatal("connection not closed within 10s")
		}
	}
}

func (c *client) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// post sends a REST request and decodes the JSON answer.
func post(t testing.TB, s *server, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+s.tower.cfg.Prefix+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func get(t testing.TB, s *server, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+s.tower.cfg.Prefix+path, nil)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: answer %d is not JSON: %q", req.Method, req.URL.Path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}
