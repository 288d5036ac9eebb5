// Package recoverytest checks that recovery after a reconnect is gapless
// and exactly once on a cluster of real nodes: WebSocket clients that
// drop their connection again and again and resubscribe with since, to
// any node, while publishers on every node keep publishing. The node
// tests of every broker run it.
package recoverytest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// Config describes one run.
type Config struct {
	// Towers are the nodes of one cluster. Topic must have history on
	// each, of at least Publishes × len(Towers) messages, so that every
	// recovery can succeed.
	Towers []*firetower.Tower
	Topic  string
	// Clients is how many clients recover at once; 30 if 0.
	Clients int
	// Publishes is how many messages each node publishes; 300 if 0.
	Publishes int
}

type frame struct {
	Type    string          `json:"type"`
	Topic   json.RawMessage `json:"topic"`
	Offset  uint64          `json:"offset"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Streams map[string]struct {
		Epoch     string `json:"epoch"`
		Offset    uint64 `json:"offset"`
		Recovered *bool  `json:"recovered"`
	} `json:"streams"`
}

// Run runs the check.
func Run(t *testing.T, cfg Config) {
	if cfg.Clients == 0 {
		cfg.Clients = 30
	}
	if cfg.Publishes == 0 {
		cfg.Publishes = 300
	}
	gin.SetMode(gin.TestMode)
	urls := make([]string, len(cfg.Towers))
	for i, tw := range cfg.Towers {
		r := gin.New()
		r.Use(tw.Middleware())
		srv := httptest.NewServer(r)
		t.Cleanup(srv.Close)
		urls[i] = "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var published sync.WaitGroup
	done := make(chan struct{})
	for i, tw := range cfg.Towers {
		published.Add(1)
		go func() {
			defer published.Done()
			for n := range cfg.Publishes {
				if _, err := tw.Publish(ctx, cfg.Topic, fmt.Sprintf("%d-%d", i, n)); err != nil {
					t.Errorf("node %d: publish %d: %v", i, n, err)
					return
				}
				if n%10 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	var final uint64
	var finalSet sync.WaitGroup
	finalSet.Add(1)
	go func() {
		defer finalSet.Done()
		published.Wait()
		h, err := cfg.Towers[0].History(ctx, cfg.Topic, firetower.HistoryQuery{})
		if err != nil {
			t.Errorf("History: %v", err)
		}
		final = h.Offset
		close(done)
	}()

	var clients sync.WaitGroup
	reconnects := make([]int, cfg.Clients)
	for i := range cfg.Clients {
		clients.Add(1)
		go func() {
			defer clients.Done()
			reconnects[i] = runClient(t, ctx, urls, cfg.Topic, i, done, &finalSet, &final)
		}()
	}
	clients.Wait()
	if t.Failed() {
		cancel()
	}
	finalSet.Wait()
	total := 0
	for _, n := range reconnects {
		total += n
	}
	if !t.Failed() && total < cfg.Clients {
		t.Fatalf("only %d reconnects with recovery in all: the run proves little", total)
	}
	t.Logf("%d clients, %d recoveries, %d messages per client at most", cfg.Clients, total, final)
}

// runClient subscribes, then drops its connection after a few messages
// and recovers from its position, on any node, until it has every message
// up to the final top; it returns how many times it recovered.
func runClient(t *testing.T, ctx context.Context, urls []string, topic string, i int, done <-chan struct{}, finalSet *sync.WaitGroup, final *uint64) int {
	rnd := rand.New(rand.NewPCG(uint64(i), 7))
	var epoch string
	var last uint64
	first := true
	recoveries, stalls := 0, 0
	for ctx.Err() == nil {
		url := urls[rnd.IntN(len(urls))]
		batch := rnd.IntN(2) == 0
		if batch {
			url += "?batch=1"
		}
		ws, _, err := websocket.DefaultDialer.DialContext(ctx, url, nil)
		if err != nil {
			t.Errorf("client %d: dial: %v", i, err)
			return recoveries
		}
		sub := map[string]any{"type": "subscribe", "topic": []string{topic}, "id": 1}
		if !first {
			sub["since"] = map[string]any{topic: map[string]any{"epoch": epoch, "offset": last}}
		}
		b, _ := json.Marshal(sub)
		ws.WriteMessage(websocket.TextMessage, b)
		// Read until a number of messages, then drop the connection; at
		// the end read until the final top.
		quota := 3 + rnd.IntN(40)
		finished := false
		for !finished {
			ws.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			_, b, err := ws.ReadMessage()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				// Nothing came for a while: done if the publishers are
				// and the client has it all; else it drops the
				// connection and recovers, as when its quota is spent.
				select {
				case <-done:
					finalSet.Wait()
					if last >= *final {
						ws.Close()
						return recoveries
					}
				default:
				}
				if stalls++; stalls > 20 {
					t.Errorf("client %d: no message for 10s at offset %d", i, last)
					ws.Close()
					return recoveries
				}
				break
			}
			if err != nil {
				t.Errorf("client %d: read at offset %d: %v", i, last, err)
				ws.Close()
				return recoveries
			}
			stalls = 0
			var frames []frame
			if batch {
				err = json.Unmarshal(b, &frames)
			} else {
				var f frame
				err = json.Unmarshal(b, &f)
				frames = []frame{f}
			}
			if err != nil {
				t.Errorf("client %d: frame %s: %v", i, b, err)
				ws.Close()
				return recoveries
			}
			for _, f := range frames {
				switch f.Type {
				case "subscribed":
					st, ok := f.Streams[topic]
					if !ok {
						t.Errorf("client %d: subscribed without a stream entry", i)
						ws.Close()
						return recoveries
					}
					if first {
						epoch, last, first = st.Epoch, st.Offset, false
						continue
					}
					if st.Recovered == nil || !*st.Recovered || st.Epoch != epoch {
						t.Errorf("client %d: recovery from %d not recovered: %+v", i, last, st)
						ws.Close()
						return recoveries
					}
					recoveries++
				case "publish":
					if f.Offset != last+1 {
						t.Errorf("client %d: offset %d after %d: a gap or a duplicate", i, f.Offset, last)
						ws.Close()
						return recoveries
					}
					last = f.Offset
					quota--
				case "error":
					t.Errorf("client %d: error frame %s: %s", i, f.Code, f.Message)
					ws.Close()
					return recoveries
				}
			}
			select {
			case <-done:
				finalSet.Wait()
				if last >= *final {
					ws.Close()
					return recoveries
				}
			default:
				if quota <= 0 {
					finished = true
				}
			}
		}
		ws.Close()
		time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
	}
	return recoveries
}
