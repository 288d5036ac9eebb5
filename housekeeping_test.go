package firetower

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gorilla/websocket"
)

// TestPingsAndIdleWriters: the node pings every PingInterval, a client
// that answers stays connected past PongTimeout, and an idle connection's
// writer goroutine ends.
func TestPingsAndIdleWriters(t *testing.T) {
	// PongTimeout leaves room for a loaded machine to be late with a pong:
	// the test is about a client that answers staying, not about how late
	// it may answer.
	s := newServer(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: time.Second})
	c := dial(t, s, "", nil)
	var pings atomic.Int32
	c.ws.SetPingHandler(func(data string) error {
		pings.Add(1)
		return c.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	c.subscribe("idle")
	time.Sleep(2 * time.Second) // twice PongTimeout
	c.alive()
	if n := pings.Load(); n < 3 {
		t.Fatalf("%d pings in two seconds at a 100ms interval", n)
	}

	quiet := newServer(t, Config{}) // pings every 25s: nothing to write now
	q := dial(t, quiet, "", nil)
	q.subscribe("idle")
	brokertest.Eventually(t, 5*time.Second, func() error {
		quiet.tower.mu.Lock()
		defer quiet.tower.mu.Unlock()
		for conn := range quiet.tower.conns {
			conn.qmu.Lock()
			writing := conn.writing
			conn.qmu.Unlock()
			if writing {
				return errors.New("an idle connection still has its writer")
			}
		}
		return nil
	})
	quiet.tower.Publish(context.Background(), "idle", "wake up") // a new writer starts
	q.expect(TypePublish)
}

// TestUnansweredPingsClose: a client that never answers pings is closed
// after PongTimeout.
func TestUnansweredPingsClose(t *testing.T) {
	s := newServer(t, Config{PingInterval: 100 * time.Millisecond, PongTimeout: 300 * time.Millisecond})
	c := dial(t, s, "", nil)
	c.ws.SetPingHandler(func(string) error { return nil }) // no pong
	c.subscribe("x")
	brokertest.Eventually(t, 5*time.Second, func() error {
		if s.tower.Stats().Connections != 0 {
			return errors.New("still connected")
		}
		return nil
	})
}
