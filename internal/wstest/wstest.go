// Package wstest is a real WebSocket client for the node-level test
// packages (userstest, presencetest): its frames are read by a goroutine
// of its own, and every wait is bounded.
package wstest

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wait bounds every wait for a frame or a close.
const wait = 10 * time.Second

// Client is one WebSocket connection of a test.
type Client struct {
	t      testing.TB
	WS     *websocket.Conn
	frames chan string
	done   chan struct{}
	err    error // the read loop's end, once done is closed
}

// Dial opens a connection to url, failing the test if it cannot; the
// connection is closed when the test ends.
func Dial(t testing.TB, url string) *Client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c := &Client{t: t, WS: ws, frames: make(chan string, 64), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { ws.Close(); <-c.done })
	return c
}

func (c *Client) read() {
	defer close(c.done)
	defer close(c.frames)
	for {
		_, b, err := c.WS.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		c.frames <- string(b)
	}
}

// Next returns the next frame.
func (c *Client) Next() string {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("connection closed: %v", c.err)
		}
		return f
	case <-time.After(wait):
		c.t.Fatalf("no frame within %v", wait)
	}
	return ""
}

// Want checks that the next frame is frame.
func (c *Client) Want(frame string) {
	c.t.Helper()
	if got := c.Next(); got != frame {
		c.t.Fatalf("got %s, want %s", got, frame)
	}
}

// Quiet checks that no frame arrives for d.
func (c *Client) Quiet(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("unexpected frame %s", f)
		}
	case <-time.After(d):
	}
}

// Send writes one text frame.
func (c *Client) Send(frame string) {
	c.t.Helper()
	if err := c.WS.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// Closed waits for the end of the connection, with no frame before it,
// and returns its error.
func (c *Client) Closed() error {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if ok {
			c.t.Fatalf("frame %s before the close", f)
		}
		<-c.done
		return c.err
	case <-time.After(wait):
		c.t.Fatalf("not closed within %v", wait)
	}
	return nil
}

// Ping checks the connection still answers, with nothing before it.
func (c *Client) Ping() {
	c.t.Helper()
	c.Send(`{"type":"ping"}`)
	if got := c.Next(); got != `{"type":"pong"}` {
		c.t.Fatalf("got %s, want a pong", got)
	}
}
