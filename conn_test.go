package firetower

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gorilla/websocket"
)

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
	brokertest.Eventually(t, 5*time.Second, func() error {
		d := s.tower.Stats().Disconnects
		if d["client"] != n || d["write_error"] != 0 {
			return fmt.Errorf("disconnects %v, want %d by the client and none by write errors", d, n)
		}
		return nil
	})
}

// TestDisconnectReasons: each way a connection ends is recorded as what
// it is, in Conn.DisconnectReason (final when OnDisconnect runs) and in
// Stats.Disconnects.
func TestDisconnectReasons(t *testing.T) {
	reasons := make(chan DisconnectReason, 10)
	opened := make(chan *Conn, 10)
	s := newServer(t, Config{
		MaxFrameSize: 1024,
		PingInterval: 100 * time.Millisecond, PongTimeout: 400 * time.Millisecond,
		OnConnect: func(c *Conn) {
			if got := c.DisconnectReason(); got != DisconnectNone {
				t.Errorf("an open connection's reason: %v", got)
			}
			opened <- c
		},
		OnDisconnect: func(c *Conn) { reasons <- c.DisconnectReason() },
	})
	want := func(w DisconnectReason) {
		t.Helper()
		select {
		case got := <-reasons:
			if got != w {
				t.Fatalf("disconnect reason %q, want %q", got, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no disconnect, want %q", w)
		}
	}

	c := dial(t, s, "", nil)
	c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	want(DisconnectClient)

	c = dial(t, s, "", nil)
	c.ws.Close() // no close frame: the client went away
	want(DisconnectClient)

	c = dial(t, s, "", nil)
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)
	want(DisconnectTooLarge)

	c = dial(t, s, "", nil)
	c.ws.NetConn().Write([]byte{0x81, 0x01, 'x'}) // an unmasked client frame
	want(DisconnectProtocol)

	// A client that reads nothing answers no ping.
	silent, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	want(DisconnectPingTimeout)

	for range 5 {
		<-opened
	}
	dial(t, s, "", nil)
	(<-opened).Close()
	want(DisconnectServer)

	// A client that reads nothing: once its socket's buffers are full, its
	// queue fills (4 frames) and it is closed. On a node of its own with
	// the default pings, so that a slow machine does not make it a ping
	// timeout first.
	slowNode := newServer(t, Config{
		SendQueueSize: 4,
		OnConnect:     func(c *Conn) { opened <- c },
		OnDisconnect:  func(c *Conn) { reasons <- c.DisconnectReason() },
	})
	ws, _, err := websocket.DefaultDialer.Dial(slowNode.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	slow := <-opened
	big := strings.Repeat("y", 1<<20)
	for i := 0; i < 200 && slow.Send(big) == nil; i++ {
	}
	want(DisconnectSlow)
	if d := slowNode.tower.Stats().Disconnects; d["slow"] != 1 {
		t.Errorf("disconnects %v: want one slow", d)
	}

	brokertest.Eventually(t, 5*time.Second, func() error {
		d := s.tower.Stats().Disconnects
		for _, r := range []string{"ping_timeout", "too_large", "protocol_error", "server"} {
			if d[r] != 1 {
				return fmt.Errorf("disconnects %v: want one %s", d, r)
			}
		}
		if d["client"] != 2 || d["write_error"] != 0 || d["shutdown"] != 0 || d["slow"] != 0 {
			return fmt.Errorf("disconnects %v: want 2 by the client", d)
		}
		if _, ok := d[""]; ok {
			return fmt.Errorf("disconnects %v count open connections", d)
		}
		return nil
	})
}
