package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
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
// gin engine and HTTP server, and returns its WebSocket URL.
func startDemo(t *testing.T, b broker.Broker) string {
	t.Helper()
	_, url := startTower(t, chatConfig{Broker: b})
	return url
}

// startBare is startDemo with bare data, as for v0.x pages.
func startBare(t *testing.T, b broker.Broker) string {
	t.Helper()
	_, url := startTower(t, chatConfig{Broker: b, BareData: true})
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

// dialAs connects as the page does for a user: /ws?user=...&name=....
func dialAs(t *testing.T, wsURL, user, name string) *wsClient {
	t.Helper()
	return dialDemo(t, wsURL+"?"+url.Values{"user": {user}, "name": {name}}.Encode())
}

// httpBase is the demo's HTTP address, from its WebSocket URL.
func httpBase(wsURL string) string {
	return "http" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws"), "/ws")
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

type serverFrame struct {
	Type    string          `json:"type"`
	User    string          `json:"user"`
	Info    json.RawMessage `json:"info"`
	Users   int             `json:"users"`
	Conns   int             `json:"connections"`
	Clients []presenceEntry `json:"clients"`
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

type presenceEntry struct {
	Conn string            `json:"conn"`
	User string            `json:"user"`
	Info map[string]string `json:"info"`
}

// bareFrame reads bare frames (the data alone, as a v0.x page gets them)
// until match accepts one, failing the test if none comes within d.
func (c *wsClient) bareFrame(d time.Duration, what string, match func(map[string]any) bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.conn.SetReadDeadline(deadline)
		var v map[string]any
		if err := c.conn.ReadJSON(&v); err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(v) {
			return
		}
	}
}

// v0Count matches the v0.x count announcement {"type":"onSubscribe","data":n}.
func v0Count(n int) func(map[string]any) bool {
	return func(v map[string]any) bool { return v["type"] == "onSubscribe" && v["data"] == float64(n) }
}

// With bare data, while the broker takes its time to count, a connection
// that just joined a room still gets the room's messages at once: the
// count is not on its read path. Once the broker answers, the count
// arrives in the room, in the v0.x shape.
func TestV0CountOffTheReadPath(t *testing.T) {
	b := &slowCounts{Embedded: topicsvc.NewEmbedded(), gate: make(chan struct{}), calls: map[string]int{}}
	url := startBare(t, b)
	c := dialDemo(t, url)
	c.send(map[string]any{"type": "subscribe", "topic": "/chat/slow", "data": ""})
	time.Sleep(100 * time.Millisecond) // a v0.x subscribe has no reply to wait for
	c.send(map[string]any{"type": "publish", "topic": "/chat/slow", "data": map[string]any{"from": "ann", "data": "hi", "type": "publish"}})
	c.bareFrame(2*time.Second, "the message back while the room is being counted", func(v map[string]any) bool { return v["data"] == "hi" })
	if b.callsFor("/chat/slow") == 0 {
		t.Error("the room was not being counted")
	}

	b.mu.Lock()
	close(b.gate)
	b.gate = nil
	b.mu.Unlock()
	c.bareFrame(5*time.Second, "the room's count", v0Count(1))
}

// A burst of joins is announced in a few counts, not one per join, and the
// last announcement has the final count.
func TestV0CountsCoalesced(t *testing.T) {
	b := &slowCounts{Embedded: topicsvc.NewEmbedded(), calls: map[string]int{}}
	url := startBare(t, b)
	const n = 40
	watcher := dialDemo(t, url)
	watcher.send(map[string]any{"type": "subscribe", "topic": "/chat/burst", "data": ""})
	watcher.bareFrame(5*time.Second, "the first count", v0Count(1))
	before := b.callsFor("/chat/burst")
	for range n - 1 {
		c := dialDemo(t, url)
		c.send(map[string]any{"type": "subscribe", "topic": "/chat/burst", "data": ""})
	}
	watcher.bareFrame(5*time.Second, "the final count", v0Count(n))
	if calls := b.callsFor("/chat/burst") - before; calls > n/4 {
		t.Errorf("%d joins made %d counts; want them coalesced", n-1, calls)
	}
}

// Without bare data who is in a room is firetower's presence: the demo
// counts no room of its own, and a page may subscribe to rooms only.
func TestNoCountsWithoutBareData(t *testing.T) {
	b := &slowCounts{Embedded: topicsvc.NewEmbedded(), calls: map[string]int{}}
	url := startDemo(t, b)
	c := dialAs(t, url, "ann", "Ann")
	c.send(map[string]any{"type": "subscribe", "topic": "/chat/quiet", "id": 1})
	c.next(2*time.Second, "subscribed", isType("subscribed"))
	c.next(2*time.Second, "ann's own join", isType("join"))
	c.send(map[string]any{"type": "subscribe", "topic": "/online/chat/quiet", "id": 2})
	if f := c.next(2*time.Second, "the refusal", func(f serverFrame) bool { return f.Type == "error" || f.Type == "subscribed" }); f.Code != "forbidden" {
		t.Fatalf("subscribe to a topic that is not a room: %+v, want forbidden", f)
	}
	time.Sleep(300 * time.Millisecond) // three count intervals
	if calls := b.callsFor("/chat/quiet"); calls != 0 {
		t.Errorf("the room was counted %d times", calls)
	}
}

// v0Counts stops on Close, with a round still waiting for the broker.
func TestV0CountsCloseAbandonsRound(t *testing.T) {
	counting := make(chan struct{})
	var once sync.Once
	var announced atomic.Int32
	p := newV0Counts(time.Millisecond, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)),
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
		{`{"text":"hi"}`, "/chatx", false},
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
		{`{"text":"x","nick":"` + strings.Repeat("n", maxNick+1) + `"}`, "", false},
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

// Rooms keep their last 100 messages for 24 h and who is in them, with
// joins and leaves; every other topic keeps nothing. With bare data
// nothing keeps either.
func TestTopicOptions(t *testing.T) {
	opts := topicOptions(false)
	if opts == nil {
		t.Fatal("no TopicOptions")
	}
	for _, room := range []string{"/chat/world", "/chat/2", "/chat/team-7"} {
		if got, want := opts(room), (firetower.TopicOptions{HistorySize: 100, HistoryTTL: 24 * time.Hour, Presence: true, JoinLeave: true}); got != want {
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
// by a history frame and Tower.History; the joins announced meanwhile are
// not, and neither is a message the ReadHandler refused. The stream keeps
// the newest 100.
func TestRoomsKeepHistory(t *testing.T) {
	tower, url := startTower(t, chatConfig{Broker: topicsvc.NewEmbedded()})
	c := dialAs(t, url, "ann", "Ann")
	c.send(map[string]any{"type": "subscribe", "topic": []string{"/chat/h"}, "id": 1})
	sub := c.next(2*time.Second, "subscribed", isType("subscribed"))
	if _, ok := sub.Streams["/chat/h"]; !ok || len(sub.Streams) != 1 {
		t.Fatalf("subscribed streams %v: want the room's", sub.Streams)
	}
	// The join is announced, but not kept.
	c.next(5*time.Second, "ann's join", isType("join"))

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
	if _, err := tower.History(context.Background(), "/other", firetower.HistoryQuery{Limit: -1}); !errors.Is(err, firetower.ErrNoHistory) {
		t.Errorf("Tower.History of a topic that is not a room: %v, want ErrNoHistory", err)
	}
	// Another page joining announces again; the room's history stays the
	// three messages.
	d := dialAs(t, url, "bob", "Bob")
	d.send(map[string]any{"type": "subscribe", "topic": "/chat/h"})
	d.next(2*time.Second, "subscribed", isType("subscribed"))
	if j := c.next(5*time.Second, "bob's join", isType("join")); j.User != "bob" {
		t.Fatalf("join %+v, want bob's", j)
	}
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
// keeps history (the count never lands in one) or presence.
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
	if _, err := tower.Presence(context.Background(), "/chat/bare"); err == nil {
		t.Error("Tower.Presence of a room with bare data: no error, want one")
	}
}

// The page's identity comes from the WebSocket URL's query: a user id and
// a display name, both checked; no user is an anonymous connection.
func TestAuthenticate(t *testing.T) {
	wsURL := startDemo(t, topicsvc.NewEmbedded())
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"", true},
		{"user=alice&name=Alice", true},
		{"user=alice", true},
		{"user=bob.smith-2_x&name=" + url.QueryEscape("<img src=x onerror=alert(1)>"), true},
		{"user=ann&name=" + url.QueryEscape("Ωμέγα żółw"), true},
		{"user=ann&name=" + strings.Repeat("n", maxNick), true},
		{"user=ann&name=" + strings.Repeat("n", maxNick+1), false},
		{"user=ann&name=" + url.QueryEscape("a\nb"), false},
		{"user=ann&name=" + url.QueryEscape("a\x00b"), false},
		{"user=" + url.QueryEscape("<b>x</b>"), false},
		{"user=" + url.QueryEscape("a b"), false},
		{"user=" + strings.Repeat("u", maxUserID), true},
		{"user=" + strings.Repeat("u", maxUserID+1), false},
	} {
		conn, res, err := websocket.DefaultDialer.Dial(wsURL+"?"+tc.query, nil)
		if conn != nil {
			conn.Close()
		}
		switch {
		case tc.ok && err != nil:
			t.Errorf("?%s: %v, want the connection", tc.query, err)
		case !tc.ok && err == nil:
			t.Errorf("?%s: connected, want it refused", tc.query)
		case !tc.ok && res.StatusCode != http.StatusUnauthorized:
			t.Errorf("?%s: status %d, want 401", tc.query, res.StatusCode)
		}
	}
	for _, tc := range []struct{ name, user, want string }{
		{"", "alice", "alice"},
		{"  ", "alice", "alice"},
		{" Alice ", "alice", "Alice"},
		{"<img src=x>", "alice", "<img src=x>"},
	} {
		if got, err := displayName(tc.name, tc.user); err != nil || got != tc.want {
			t.Errorf("displayName(%q, %q) = %q, %v; want %q", tc.name, tc.user, got, err, tc.want)
		}
	}
}

// presenceOf asks for topic's presence over c, as the page does.
func presenceOf(c *wsClient, topic string, id int) serverFrame {
	c.t.Helper()
	c.send(map[string]any{"type": "presence", "topic": topic, "id": id})
	return c.next(2*time.Second, "the presence of "+topic, func(f serverFrame) bool {
		return (f.Type == "presence" || f.Type == "error") && string(f.ID) == fmt.Sprint(id)
	})
}

// names lists the users of a presence answer with their names, sorted,
// one entry per connection: "alice=Alice".
func names(clients []presenceEntry) []string {
	var out []string
	for _, c := range clients {
		out = append(out, c.User+"="+c.Info["name"])
	}
	sort.Strings(out)
	return out
}

// A room keeps who is in it: each connection with its user and the name
// its page gave, over a presence frame and GET /topics/:topic/presence;
// joins go to the room when a user's first connection arrives and leaves
// when their last has gone for the grace. A connection back within the
// grace (a reload) makes neither.
func TestRoomPresence(t *testing.T) {
	const grace = 300 * time.Millisecond
	_, wsURL := startTower(t, chatConfig{Broker: topicsvc.NewEmbedded(), PresenceGrace: grace})
	const room = "/chat/p"
	sub := func(c *wsClient, id int) {
		c.t.Helper()
		c.send(map[string]any{"type": "subscribe", "topic": room, "id": id})
		c.next(2*time.Second, "subscribed", isType("subscribed"))
	}

	alice := dialAs(t, wsURL, "alice", "Alice")
	sub(alice, 1)
	if j := alice.next(2*time.Second, "alice's own join", isType("join")); j.User != "alice" || string(j.Info) != `{"name":"Alice"}` {
		t.Fatalf("alice's join: user %q info %s", j.User, j.Info)
	}
	hostile := `<img src=x onerror=alert(1)>`
	bob := dialAs(t, wsURL, "bob", hostile)
	sub(bob, 1)
	if j := alice.next(2*time.Second, "bob's join", isType("join")); j.User != "bob" || string(j.Info) != `{"name":"\u003cimg src=x onerror=alert(1)\u003e"}` && string(j.Info) != `{"name":"<img src=x onerror=alert(1)>"}` {
		t.Fatalf("bob's join: user %q info %s", j.User, j.Info)
	}
	// A second tab of alice's is no join; an anonymous connection neither.
	alice2 := dialAs(t, wsURL, "alice", "Alice")
	sub(alice2, 1)
	anon := dialDemo(t, wsURL)
	sub(anon, 1)

	p := presenceOf(bob, room, 2)
	if p.Type != "presence" || p.Users != 2 || p.Conns != 4 {
		t.Fatalf("presence of the room: %+v, want 2 users on 4 connections", p)
	}
	want := []string{"=", "alice=Alice", "alice=Alice", "bob=" + hostile}
	if got := names(p.Clients); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("presence clients %v, want %v", got, want)
	}
	// A topic that is not a room keeps no presence.
	if f := presenceOf(bob, "/other", 3); f.Type != "error" || f.Code != "bad_request" {
		t.Errorf("presence of /other: %+v, want bad_request", f)
	}

	// The same over REST, for a backend.
	req, _ := http.NewRequest(http.MethodGet, httpBase(wsURL)+"/topics/"+url.PathEscape(room)+"/presence", nil)
	req.Header.Set("Authorization", "Bearer test-token")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rest struct {
		Topic   string          `json:"topic"`
		Users   int             `json:"users"`
		Conns   int             `json:"connections"`
		Clients []presenceEntry `json:"clients"`
	}
	err = json.NewDecoder(res.Body).Decode(&rest)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || rest.Topic != room || rest.Users != 2 || rest.Conns != 4 || strings.Join(names(rest.Clients), "|") != strings.Join(want, "|") {
		t.Errorf("GET presence: %d %+v %v", res.StatusCode, rest, err)
	}
	res, err = http.Get(httpBase(wsURL) + "/topics/" + url.PathEscape(room) + "/count")
	if err != nil {
		t.Fatal(err)
	}
	var count struct{ Count, Users int }
	err = json.NewDecoder(res.Body).Decode(&count)
	res.Body.Close()
	if err != nil || count.Count != 4 || count.Users != 2 {
		t.Errorf("GET count: %+v %v, want 4 connections of 2 users", count, err)
	}

	// One of alice's tabs closes: she is still there, no leave.
	alice2.conn.Close()
	// Bob reloads: his connection goes and a new one comes within the
	// grace: neither a leave nor a join.
	bob.conn.Close()
	bob2 := dialAs(t, wsURL, "bob", hostile)
	sub(bob2, 1)
	// Then alice's last tab goes: her leave comes after the grace.
	closed := time.Now()
	alice.conn.Close()
	f := bob2.next(grace+3*time.Second, "a join or leave", func(f serverFrame) bool { return f.Type == "join" || f.Type == "leave" })
	if f.Type != "leave" || f.User != "alice" {
		t.Fatalf("after bob's reload and alice's close: %+v, want alice's leave only", f)
	}
	if waited := time.Since(closed); waited < grace-50*time.Millisecond {
		t.Errorf("alice's leave came %v after she left, before the grace of %v", waited, grace)
	}
	p = presenceOf(bob2, room, 4)
	if got := names(p.Clients); p.Users != 1 || strings.Join(got, "|") != "=|bob="+hostile {
		t.Errorf("presence after alice left: %d users, %v", p.Users, got)
	}
	// No more joins or leaves are on their way.
	bob2.conn.SetReadDeadline(time.Now().Add(2 * grace))
	for {
		var v serverFrame
		if err := bob2.conn.ReadJSON(&v); err != nil {
			break
		}
		if v.Type == "join" || v.Type == "leave" {
			t.Errorf("unexpected %s of %q", v.Type, v.User)
		}
	}
}

// A user-addressed message reaches every connection of that user, and no
// other: the page's notifications.
func TestNotifyUser(t *testing.T) {
	wsURL := startDemo(t, topicsvc.NewEmbedded())
	a1 := dialAs(t, wsURL, "alice", "Alice")
	a2 := dialAs(t, wsURL, "alice", "Alice")
	bob := dialAs(t, wsURL, "bob", "Bob")
	body := `{"users":["alice"],"data":{"text":"hi <b>alice</b>"}}`
	post := func(auth string) int {
		req, _ := http.NewRequest(http.MethodPost, httpBase(wsURL)+"/publish", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post(""); code != http.StatusUnauthorized {
		t.Fatalf("POST /publish without the token: %d, want 401", code)
	}
	if code := post("test-token"); code != http.StatusOK {
		t.Fatalf("POST /publish: %d", code)
	}
	for _, c := range []*wsClient{a1, a2} {
		m := c.next(2*time.Second, "the notification", isType("message"))
		if string(m.Data) != `{"text":"hi <b>alice</b>"}` && string(m.Data) != `{"text":"hi \u003cb\u003ealice\u003c/b\u003e"}` {
			t.Errorf("notification data %s", m.Data)
		}
	}
	bob.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var v serverFrame
	if err := bob.conn.ReadJSON(&v); err == nil {
		t.Errorf("bob got %+v", v)
	}
}
