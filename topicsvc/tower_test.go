package topicsvc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker/brokertest"
	_ "github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func init() { gin.SetMode(gin.TestMode) }

// gateway is a firetower node on a real gin engine behind httptest, whose
// broker is the topic service.
type gateway struct {
	*httptest.Server
	tower *firetower.Tower
}

const apiToken = "rest-token"

func startGateway(t *testing.T, svcAddr string) *gateway {
	t.Helper()
	tower, err := firetower.New(firetower.Config{
		BrokerURL:   "topicsvc://" + svcAddr,
		BrokerToken: svctest.Token,
		APIToken:    apiToken,
		ReadHandler: func(*firetower.Conn, *firetower.Frame) bool { return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(tower.Middleware())
	g := &gateway{Server: httptest.NewServer(r), tower: tower}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tower.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		g.Close()
	})
	return g
}

// wsClient is a real WebSocket client of a gateway.
type wsClient struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan map[string]json.RawMessage
	done   chan struct{}
}

func dialWS(t *testing.T, g *gateway) *wsClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(g.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, ws: ws, frames: make(chan map[string]json.RawMessage, 256), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]json.RawMessage
			if json.Unmarshal(b, &f) != nil {
				t.Errorf("frame is not a JSON object: %s", b)
				return
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() { ws.Close(); <-c.done })
	return c
}

func (c *wsClient) send(frame string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// expect returns the next frame of type typ, skipping none.
func (c *wsClient) expect(typ string) map[string]json.RawMessage {
	c.t.Helper()
	select {
	case f := <-c.frames:
		if string(f["type"]) != `"`+typ+`"` {
			c.t.Fatalf("got frame %v, want type %s", f, typ)
		}
		return f
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no %s frame within 5s", typ)
	}
	return nil
}

func getCount(t *testing.T, g *gateway, topic string) (int, int) {
	t.Helper()
	resp, err := http.Get(g.URL + "/topics/" + strings.ReplaceAll(topic, "/", "%2F") + "/count")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Count int }
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &body)
	return resp.StatusCode, body.Count
}

func restPublish(t *testing.T, g *gateway, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.URL+"/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTowersThroughService: two firetower nodes, each with a WebSocket
// client, share a topic service process. A message published on one
// node's WebSocket arrives at the other's, counts are cluster-wide, and
// while the service is down publishes answer 503 and error frames with
// code unavailable.
func TestTowersThroughService(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	g1, g2 := startGateway(t, svc.Addr), startGateway(t, svc.Addr)
	a, b := dialWS(t, g1), dialWS(t, g2)
	a.send(`{"type":"subscribe","topic":"/chat/world","id":1}`)
	a.expect("subscribed")
	b.send(`{"type":"subscribe","topic":"/chat/world","id":1}`)
	b.expect("subscribed")

	a.send(`{"type":"publish","topic":"/chat/world","data":{"text":"hello from node 1","n":12345678901234567890},"id":2}`)
	pubAck := a.expect("published")
	for name, c := range map[string]*wsClient{"node 2": b, "node 1": a} {
		f := c.expect("publish")
		if string(f["data"]) != `{"text":"hello from node 1","n":12345678901234567890}` || string(f["id"]) != string(pubAck["messageId"]) {
			t.Fatalf("%s got %v (ack %v)", name, f, pubAck)
		}
	}

	// The count is the sum of both nodes, read on either.
	for _, g := range []*gateway{g1, g2} {
		brokertest.Eventually(t, 10*time.Second, func() error {
			if code, n := getCount(t, g, "/chat/world"); code != 200 || n != 2 {
				return fmt.Errorf("GET count = %d %d, want 200 2", code, n)
			}
			return nil
		})
	}

	// A REST publish on node 2 reaches node 1's client.
	if code, body := restPublish(t, g2, `{"topic":"/chat/world","data":"over REST"}`); code != 200 {
		t.Fatalf("REST publish: %d %s", code, body)
	}
	if f := a.expect("publish"); string(f["data"]) != `"over REST"` {
		t.Fatalf("node 1 got %v", f)
	}
	b.expect("publish")

	// The service goes away: publishes fail clearly instead of hanging.
	svc.Kill()
	brokertest.Eventually(t, 10*time.Second, func() error {
		code, body := restPublish(t, g1, `{"topic":"/chat/world","data":1}`)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "error") {
			return fmt.Errorf("REST publish while the service is down: %d %s, want 503", code, body)
		}
		return nil
	})
	a.send(`{"type":"publish","topic":"/chat/world","data":1,"id":3}`)
	if f := a.expect("error"); string(f["code"]) != `"unavailable"` {
		t.Fatalf("publish frame while the service is down: %v", f)
	}
	if code, _ := getCount(t, g1, "/chat/world"); code != http.StatusServiceUnavailable {
		t.Fatalf("GET count while the service is down: %d, want 503", code)
	}

	// It comes back on the same port: both nodes re-send their state, and
	// cross-node delivery and counts resume without any client action.
	svctest.Start(t, svc.Addr)
	brokertest.Eventually(t, 15*time.Second, func() error {
		if code, n := getCount(t, g2, "/chat/world"); code != 200 || n != 2 {
			return fmt.Errorf("GET count after the restart = %d %d, want 200 2", code, n)
		}
		return nil
	})
	b.send(`{"type":"publish","topic":"/chat/world","data":"back","id":4}`)
	b.expect("published")
	if f := a.expect("publish"); string(f["data"]) != `"back"` {
		t.Fatalf("node 1 got %v after the restart", f)
	}
}
