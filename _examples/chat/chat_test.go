package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// slowCounts is the embedded topic service with a gate on Count: while
// gate is open (nil) counts answer at once; otherwise each waits for it.
// It counts the calls per topic.
type slowCounts struct {
	*topicsvc.Embedded
	mu    sync.Mutex
	gate  chan struct{}
	calls map[string]int
}

func (b *slowCounts) Count(ctx context.Context, topic string) (int, error) {
	b.mu.Lock()
	b.calls[topic]++
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return b.Embedded.Count(ctx, topic)
}

func (b *slowCounts) callsFor(topic string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[topic]
}

var _ broker.Broker = (*slowCounts)(nil)

// startDemo serves the demo's Tower, as newTower builds it, over a real
// gin engine and HTTP server.
func startDemo(t *testing.T, b broker.Broker) string {
	t.Helper()
	_, url := startTower(t, chatConfig{Broker: b})
	return url
}

// startTower is startDemo for a configuration of the test's own (its API
// token, logger and interval are set here); it returns the Tower too.
func startTower(t *testing.T, cc chatConfig) (*firetower.Tower, string) {
	t.Helper()
	cc.APIToken = "test-token"
	cc.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cc.Interval = 100 * time.Millisecond
	tower, rooms, err := newTower(cc)
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(tower.Middleware())
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		rooms.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tower.Shutdown(ctx)
		srv.Close()
	})
	return tower, "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialDemo(t *testing.T, url string) *wsClient {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

type serverFrame struct {
	Type    string          `json:"type"`
	Topic   json.RawMessage `json:"topic"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	ID      json.RawMessage `json:"id"`
	Offset  uint64          `json:"offset"`
	Epoch   string          `json:"epoch"`
	Streams map[string]struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	} `json:"streams"`
	Messages []struct {
		ID     string          `json:"id"`
		Offset uint64          `json:"offset"`
		Data   json.RawMessage `json:"data"`
	} `json:"messages"`
}

// next returns the next frame that match accepts, failing the test if
// none comes within d.
func (c *wsClient) next(d time.Duration, what string, match func(serverFrame) bool) serverFrame {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.conn.SetReadDeadline(deadline)
		var f serverFrame
		if err := c.conn.ReadJSON(&f); err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

func isType(typ string) func(serverFrame) bool {
	return func(f serverFrame) bool { return f.Type == typ }
}

// onlineCount matches the announcement of n on topic.
func onlineCount(topic string, n int) func(serverFrame) bool {
	return func(f serverFrame) bool {
		var data struct {
			Type  string `json:"type"`
			Count int    `json:"count"`
		}
		return f.Type == "publish" && string(f.Topic) == `"`+topic+`"` &&
			json.Unmarshal(f.Data, &data) == nil && data.Type == "online" && data.Count == n
	}
}

// While the broker takes its time to count, a connection that just joined
// a room still answers at once: the count is not on its read path. Once
// the broker answers, the count arrives on the room's online topic.
func TestAnnouncementOffTheReadPath(t *testing.T) {
	b := &slowCounts{Embedded: topicsvc.NewEmbedded(), gate: make(chan struct{}), calls: map[string]int{}}
	url := startDemo(t, b)
	c := dialDemo(t, url)
	c.send(map[string]any{"type": "subscribe", "topic": []string{"/chat/slow", "/online/chat/slow"}})
	c.next(2*time.Second, "subscribed", isType("subscribed"))
	c.send(map[string]any{"type": "ping"})
	c.next(2*time.Second, "a pong while the room is being counted", isType("pong"))
	c.send(map[string]any{"type": "publish", "topic": "/chat/slow", "id": 1, "data": map[string]any{"text": "hi"}})
	c.next(2*time.Second, "the publish accepted while the room is being counted", isType("published"))

	b.mu.Lock()
	close(b.gate)
	b.gate = nil
	b.mu.Unlock()
	c.next(5*time.Second, "the room's count", onlineCount("/online/chat/slow", 1))
}

// A burst of joins is announced in a few counts, not one per join, and the
// last announcement has the final count.
func TestAnnouncementsCoalesced(t *testing.T) {
	b := &slowCounts{Embedded: topicsvc.NewEmbedded(), calls: map[string]int{}}
	url := startDemo(t, b)
	const n = 40
	watcher := dialDemo(t, url)
	watcher.send(map[string]any{"type": "subscribe", "topic": "/online/chat/burst"})
	watcher.next(2*time.Second, "subscribed", isType("subscribed"))
	for range n {
		c := dialDemo(t, url)
		c.send(map[string]any{"type": "subscribe", "topic": "/chat/burst"})
		c.next(2*time.Second, "subscribed", isType("subscribed"))
	}
	watcher.next(5*time.Second, "the final count", onlineCount("/online/chat/burst", n))
	if calls := b.callsFor("/chat/burst"); calls > n/4 {
		t.Errorf("%d joins made %d counts; want them coalesced", n, calls)
	}
}

// A client cannot publish to an online topic, so it cannot forge a count.
func TestClientCannotForgeCount(t *testing.T) {
	url := startDemo(t, topicsvc.NewEmbedded())
	c := dialDemo(t, url)
	c.send(map[string]any{"type": "subscribe", "topic": "/online/chat/x"})
	c.next(2*time.Second, "subscribed", isType("subscribed"))
	c.send(map[string]any{"type": "publish", "topic": "/online/chat/x", "data": map[string]any{"type": "online", "count": 424242}})
	f := c.next(2*time.Second, "the refusal", func(f serverFrame) bool { return f.Type == "error" || f.Type == "publish" })
	if f.Type != "error" || f.Code != "forbidden" {
		t.Fatalf("a client publish to an online topic: got %+v, want a forbidden error", f)
	}
}

// presence stops on Close, with a round still waiting for the broker.
func TestPresenceCloseAbandonsRound(t *testing.T) {
	counting := make(chan struct{})
	var once sync.Once
	var announced atomic.Int32
	p := newPresence(time.Millisecond, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(ctx context.Context, room string) (int, error) {
			once.Do(func() { close(counting) })
			<-ctx.Done()
			return 0, ctx.Err()
		},
		func(context.Context, string, string, int) error { announced.Add(1); return nil })
	p.changed("onSubscribe", []string{"/chat/a"})
	<-counting
	done := make(chan struct{})
	go func() { p.Close(); p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if announced.Load() != 0 {
		t.Error("a failed count was announced")
	}
}

func TestAllowChatMessage(t *testing.T) {
	for _, tc := range []struct {
		data  string
		topic string
		ok    bool
	}{
		{`{"text":"hi"}`, "", true},
		{`{"text":"hi","nick":"ann","at":1767225600000,"cid":"0f3a"}`, "", true},
		{`{"from":"1234","data":"hi","type":"publish"}`, "", true},
		{`{"data":"hi"}`, "", true},
		{`{"text":"hi"}`, "/online/chat/world", false},
		{`{"text":"hi"}`, "/other", false},

		{`{"text":"boom","at":1e300}`, "", false},
		{`{"text":"boom","at":-1}`, "", false},
		{`{"text":"boom","at":1767225600000.5}`, "", false},
		{`{"text":"boom","at":"now"}`, "", false},
		{`{"text":"x","type":"online","count":424242}`, "", false},
		{`{"text":"x","count":424242}`, "", false},
		{`{"type":"onSubscribe","data":"5"}`, "", false},
		{`{"type":"online","data":"5"}`, "", false},
		{`{"text":{"nested":true}}`, "", false},
		{`{"text":"x","nick":{"a":1}}`, "", false},
		{`{"text":"x","nick":null}`, "", false},
		{`{"text":["x"]}`, "", false},
		{`{"text":12345678901234567890}`, "", false},
		{`{"TEXT":"x"}`, "", false},
		{`{"Text":"x","text":"y"}`, "", false},
		{`{"text":""}`, "", false},
		{`{"text":"` + strings.Repeat("a", 2001) + `"}`, "", false},
		{`{"text":"x","nick":"` + strings.Repeat("n", 25) + `"}`, "", false},
		{`{"text":"x","cid":"` + strings.Repeat("c", 65) + `"}`, "", false},
		{`{"text":"x","from":"1"}`, "", false},
		{`null`, "", false},
		{`"hi"`, "", false},
		{`["hi"]`, "", false},
		{`42`, "", false},
	} {
		topic := tc.topic
		if topic == "" {
			topic = "/chat/world"
		}
		f := &firetower.Frame{Type: firetower.TypePublish, Topics: []string{topic}, Data: json.RawMessage(tc.data)}
		if got := allowChatMessage(nil, f); got != tc.ok {
			t.Errorf("allowChatMessage(%s to %s) = %v, want %v", tc.data, topic, got, tc.ok)
		}
	}
}

// Rooms keep their last 100 messages for 24 h; the online topics, and
// every other topic, keep nothing. With bare data nothing keeps history.
func TestTopicOptions(t *testing.T) {
	opts := topicOptions(false)
	if opts == nil {
		t.Fatal("no TopicOptions")
	}
	for _, room := range []string{"/chat/world", "/chat/2", "/chat/team-7"} {
		if got, want := opts(room), (firetower.TopicOptions{HistorySize: 100, HistoryTTL: 24 * time.Hour}); got != want {
			t.Errorf("options of %s: %+v, want %+v", room, got, want)
		}
	}
	for _, topic := range []string{"/online/chat/world", "/online/chat/2", "/other", "chat/world", "/chatx"} {
		if got := opts(topic); got != (firetower.TopicOptions{}) {
			t.Errorf("options of %s: %+v, want none", topic, got)
		}
	}
	if topicOptions(true) != nil {
		t.Error("bare data has TopicOptions")
	}
}

// roomHistoryFrame reads topic's history over c, as the page does.
func roomHistoryFrame(c *wsClient, topic string, id int) serverFrame {
	c.t.Helper()
	c.send(map[string]any{"type": "history", "topic": topic, "limit": 100, "id": id})
	return c.next(2*time.Second, "the history of "+topic, func(f serverFrame) bool {
		return (f.Type == "history" || f.Type == "error") && string(f.ID) == fmt.Sprint(id)
	})
}

// What pages say in a room is kept, in order and as sent, and read back
// by a history frame and Tower.History; the room's count, announced on
// its online topic meanwhile, is not, and neither is a message the
// ReadHandler refused. The stream keeps the newest 100.
func TestRoomsKeepHistory(t *testing.T) {
	tower, url := startTower(t, chatConfig{Broker: topicsvc.NewEmbedded()})
	c := dialDemo(t, url)
	c.send(map[string]any{"type": "subscribe", "topic": []string{"/chat/h", "/online/chat/h"}, "id": 1})
	sub := c.next(2*time.Second, "subscribed", isType("subscribed"))
	if _, ok := sub.Streams["/chat/h"]; !ok || len(sub.Streams) != 1 {
		t.Fatalf("subscribed streams %v: want the room's only", sub.Streams)
	}
	// The count comes on the online topic: announced, but not kept.
	c.next(5*time.Second, "the room's count", onlineCount("/online/chat/h", 1))

	said := []string{`{"text":"one","nick":"ann"}`, `{"text":"two <b>","nick":"bob"}`, `{"text":"three"}`}
	for i, data := range said {
		// As written: WriteJSON would escape the markup.
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"publish","topic":"/chat/h","id":%d,"data":%s}`, 10+i, data))); err != nil {
			t.Fatal(err)
		}
		c.next(2*time.Second, "the publish accepted", isType("published"))
		m := c.next(2*time.Second, "the message back", isType("publish"))
		if m.Offset != uint64(i+1) || string(m.Data) != data {
			t.Fatalf("message %d came back as offset %d data %s", i+1, m.Offset, m.Data)
		}
	}
	// Refused: it is not kept either.
	c.send(map[string]any{"type": "publish", "topic": "/chat/h", "id": 20, "data": map[string]any{"text": "x", "type": "online", "count": 424242}})
	if f := c.next(2*time.Second, "the refusal", func(f serverFrame) bool { return f.Type == "error" || f.Type == "publish" }); f.Code != "forbidden" {
		t.Fatalf("a forged count: %+v, want forbidden", f)
	}

	h := roomHistoryFrame(c, "/chat/h", 30)
	if h.Type != "history" || h.Offset != 3 || h.Epoch == "" || len(h.Messages) != 3 {
		t.Fatalf("history of the room: %+v", h)
	}
	for i, m := range h.Messages {
		if m.Offset != uint64(i+1) || string(m.Data) != said[i] || m.ID == "" {
			t.Errorf("history message %d: offset %d data %s id %q", i, m.Offset, m.Data, m.ID)
		}
	}
	if f := roomHistoryFrame(c, "/online/chat/h", 31); f.Type != "error" || f.Code != "bad_request" {
		t.Errorf("history of the online topic: %+v, want bad_request", f)
	}
	if _, err := tower.History(context.Background(), "/online/chat/h", firetower.HistoryQuery{Limit: -1}); !errors.Is(err, firetower.ErrNoHistory) {
		t.Errorf("Tower.History of the online topic: %v, want ErrNoHistory", err)
	}
	// Another page joining and leaving announces again; the room's
	// history stays the three messages.
	d := dialDemo(t, url)
	d.send(map[string]any{"type": "subscribe", "topic": "/chat/h"})
	d.next(2*time.Second, "subscribed", isType("subscribed"))
	c.next(5*time.Second, "the room's new count", onlineCount("/online/chat/h", 2))
	got, err := tower.History(context.Background(), "/chat/h", firetower.HistoryQuery{Limit: -1})
	if err != nil || got.Offset != 3 || len(got.Messages) != 3 {
		t.Fatalf("Tower.History of the room: %+v, %v; want the three messages", got, err)
	}

	// Past 100 the oldest go.
	for i := range 105 {
		if _, err := tower.Publish(context.Background(), "/chat/full", map[string]any{"text": fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	full, err := tower.History(context.Background(), "/chat/full", firetower.HistoryQuery{Limit: -1})
	if err != nil || len(full.Messages) != 100 || full.Offset != 105 || full.Messages[0].Offset != 6 || string(full.Messages[0].Data) != `{"text":"5"}` {
		t.Fatalf("history of a room of 105 messages: %d messages, top %d, %v", len(full.Messages), full.Offset, err)
	}
}

// With bare data the count is published in the room itself, and no room
// keeps history: the count never lands in one.
func TestBareDataKeepsNoHistory(t *testing.T) {
	tower, url := startTower(t, chatConfig{Broker: topicsvc.NewEmbedded(), BareData: true})
	c := dialDemo(t, url)
	c.send(map[string]any{"type": "subscribe", "topic": "/chat/bare"})
	// Bare frames are the data alone: the count's v0.x shape.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.conn.SetReadDeadline(deadline)
		var v map[string]any
		if err := c.conn.ReadJSON(&v); err != nil {
			t.Fatalf("waiting for the count in the room: %v", err)
		}
		if v["type"] == "onSubscribe" {
			break
		}
	}
	if _, err := tower.History(context.Background(), "/chat/bare", firetower.HistoryQuery{Limit: -1}); !errors.Is(err, firetower.ErrNoHistory) {
		t.Errorf("Tower.History of a room with bare data: %v, want ErrNoHistory", err)
	}
}
