package firetower

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// userConfig authenticates a connection as the user of its "user" query
// parameter.
func userConfig() Config {
	return Config{
		APIToken:     testToken,
		Authenticate: func(c *gin.Context) (string, error) { return c.Query("user"), nil },
	}
}

// TestUserMessageFrame: a message to a user reaches each of its
// connections, in exactly the documented shape, and nobody else's;
// internal topics are neither listed nor counted in Stats.
func TestUserMessageFrame(t *testing.T) {
	s := newServer(t, userConfig())
	a1, a2 := dialUser(t, s, "42"), dialUser(t, s, "42")
	other, anon := dialUser(t, s, "43"), dial(t, s, "", nil)
	anon.subscribe("a")
	id, err := s.tower.PublishToUser(t.Context(), "42", map[string]any{"text": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client{a1, a2} {
		if f := c.expect("message"); string(f.raw) != `{"type":"message","data":{"text":"hi"},"id":"`+id+`"}` {
			t.Fatalf("message frame %s", f.raw)
		}
	}
	other.alive()
	anon.alive()
	if st := s.tower.Stats(); st.Topics != 1 || st.Subscriptions != 1 {
		t.Fatalf("Stats counts internal topics: %d topics, %d subscriptions", st.Topics, st.Subscriptions)
	}
	page, err := s.tower.Topics(t.Context(), TopicsQuery{})
	if err != nil || len(page.Topics) != 1 || page.Topics[0].Topic != "a" {
		t.Fatalf("Topics %+v, %v: want only a", page.Topics, err)
	}
	if got := userTopics(s, "42"); len(got) != 0 {
		t.Fatalf("Conn.Topics of user 42: %q, want none", got)
	}
}

// userTopics returns the Topics of the node's connections of user.
func userTopics(s *server, user string) []string {
	s.tower.mu.Lock()
	defer s.tower.mu.Unlock()
	var out []string
	for c := range s.tower.conns {
		if c.UserID() == user {
			out = append(out, c.Topics()...)
		}
	}
	return out
}

// TestUserTopicsCannotBeNamed: no client, REST publish or Tower.Publish
// can name an internal topic, so none can forge a disconnect.
func TestUserTopicsCannotBeNamed(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, ReadHandler: func(*Conn, *Frame) bool { return true },
		Authenticate: func(c *gin.Context) (string, error) { return c.Query("user"), nil }})
	victim := dialUser(t, s, "42")
	c := dial(t, s, "", nil)
	topic := UserTopic("42")
	c.send(map[string]any{"type": "subscribe", "topic": []string{topic}})
	c.expectError(CodeBadRequest)
	c.send(map[string]any{"type": "publish", "topic": []string{topic}, "data": "x", "id": 1})
	c.expectError(CodeBadRequest)
	if status, _ := post(t, s, "/publish", testToken, `{"topic":"firetower user 42","data":"x"}`); status != 400 {
		t.Fatalf("REST publish to a user topic: %d", status)
	}
	if _, err := s.tower.Publish(t.Context(), topic, "x"); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("Publish to a user topic: %v", err)
	}
	if _, err := s.tower.PublishToUser(t.Context(), "42", "firetower disconnect x"); err != nil {
		t.Fatal(err)
	}
	victim.expect("message")
	victim.alive()
}

// TestRESTPublishToUsers: the answer's shape, and bad input.
func TestRESTPublishToUsers(t *testing.T) {
	s := newServer(t, userConfig())
	dialUser(t, s, "42")
	c := dialUser(t, s, "43")
	status, m := post(t, s, "/publish", testToken, `{"users":["43","42","43"],"data":[1]}`)
	if status != 200 || m["connections"] != float64(2) || fmt.Sprint(m["users"]) != "[43 42]" || m["id"] == "" {
		t.Fatalf("%d %v", status, m)
	}
	if f := c.expect("message"); string(f.Data) != "[1]" || string(f.ID) != `"`+m["id"].(string)+`"` {
		t.Fatalf("frame %s", f.raw)
	}
	long := strings.Repeat("u", MaxUserIDLen+1)
	for _, body := range []string{
		`{"users":["42"],"topic":"a","data":1}`,
		`{"users":["42"],"topics":["a"],"data":1}`,
		`{"users":[],"data":1}`,
		`{"users":[""],"data":1}`,
		`{"users":["` + long + `"],"data":1}`,
		`{"users":["42"]}`,
		`{"users":"42","data":1}`,
		`{"users":[42],"data":1}`,
		`{"users":["\udc00"],"data":1}`,
		`{"users":["42"],"data":1} x`,
	} {
		if status, m := post(t, s, "/publish", testToken, body); status != 400 || m["error"] == "" {
			t.Errorf("%s: %d %v, want 400 with an error", body, status, m)
		}
	}
	many := `{"users":[` + strings.Repeat(`"u",`, MaxPublishTopics) + `"u"],"data":1}`
	if status, _ := post(t, s, "/publish", testToken, many); status != 400 {
		t.Errorf("publish to %d users: %d", MaxPublishTopics+1, status)
	}
	if status, _ := post(t, s, "/publish", "", `{"users":["42"],"data":1}`); status != 401 {
		t.Errorf("without a token: %d", status)
	}
	c.alive()
}

// TestRESTDisconnect: POST /disconnect closes every connection of the
// user with 4001 and the reason; DisconnectReason is kicked; bad input is
// 400, and the route is authorized and same-site like publish.
func TestRESTDisconnect(t *testing.T) {
	cfg := userConfig()
	reasons := make(chan DisconnectReason, 4)
	cfg.OnDisconnect = func(c *Conn) { reasons <- c.DisconnectReason() }
	s := newServer(t, cfg)
	a1, a2, other := dialUser(t, s, "42"), dialUser(t, s, "42"), dialUser(t, s, "43")
	a1.subscribe("a")
	status, m := post(t, s, "/disconnect", testToken, `{"user":"42","reason":"banned"}`)
	if status != 200 || m["connections"] != float64(2) || m["user"] != "42" {
		t.Fatalf("%d %v", status, m)
	}
	for _, c := range []*client{a1, a2} {
		var ce *websocket.CloseError
		if err := c.waitClosed(); !errors.As(err, &ce) || ce.Code != CloseUserDisconnected || ce.Text != "banned" {
			t.Fatalf("closed with %v", err)
		}
	}
	for range 2 {
		if r := <-reasons; r != DisconnectKicked || r.String() != "kicked" {
			t.Fatalf("reason %v", r)
		}
	}
	other.alive()
	waitFor(t, func() bool { return s.tower.LocalConnectNum("a") == 0 && s.tower.hub.count(UserTopic("42")) == 0 })
	if n := s.tower.Stats().Disconnects["kicked"]; n != 2 {
		t.Fatalf("Stats.Disconnects[kicked] = %d", n)
	}
	for _, body := range []string{`{}`, `{"user":""}`, `{"user":42}`, `{"user":"42","extra":1}`, `{"user":"42"}{}`, `[]`, `{"user":"42","reason":7}`} {
		if status, m := post(t, s, "/disconnect", testToken, body); status != 400 || m["error"] == "" {
			t.Errorf("%s: %d %v", body, status, m)
		}
	}
	if status, _ := post(t, s, "/disconnect", "", `{"user":"43"}`); status != 401 {
		t.Errorf("without a token: %d", status)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/disconnect", strings.NewReader(`{"user":"43"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://evil.example")
	if status, _ := do(t, req); status != 403 {
		t.Errorf("cross-site: %d", status)
	}
	req, _ = http.NewRequest(http.MethodPost, s.URL+"/disconnect", strings.NewReader(`{"user":"43"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "text/plain")
	if status, _ := do(t, req); status != 415 {
		t.Errorf("text/plain: %d", status)
	}
	other.alive()
	// A reason too long for a close frame is cut at a character.
	long := strings.Repeat("é", 100)
	if n, err := s.tower.DisconnectUser(t.Context(), "43", long); err != nil || n != 1 {
		t.Fatalf("DisconnectUser: %d %v", n, err)
	}
	var ce *websocket.CloseError
	if err := other.waitClosed(); !errors.As(err, &ce) || ce.Code != CloseUserDisconnected || len(ce.Text) != 122 {
		t.Fatalf("closed with %v", err)
	}
	if _, err := s.tower.DisconnectUser(t.Context(), "", "x"); !errors.Is(err, ErrInvalidUser) {
		t.Fatalf("DisconnectUser of no one: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMaxConnsPerUser: the connection over the limit is refused with 429
// and a JSON error; anonymous ones are not counted; a connection that
// left makes room.
func TestMaxConnsPerUser(t *testing.T) {
	cfg := userConfig()
	cfg.MaxConnsPerUser = 2
	s := newServer(t, cfg)
	first := dialUser(t, s, "42")
	dialUser(t, s, "42")
	for range 3 {
		dial(t, s, "", nil)
	}
	ws, resp, err := websocket.DefaultDialer.Dial(s.wsURL("user=42"), nil)
	if err == nil {
		ws.Close()
		t.Fatal("third connection accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: %v %v", resp, err)
	}
	first.ws.Close()
	waitFor(t, func() bool { return s.tower.hub.count(UserTopic("42")) == 1 })
	dialUser(t, s, "42").alive()
	if _, err := New(Config{MaxConnsPerUser: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("negative MaxConnsPerUser: %v", err)
	}
}

// TestUserIDTooLong: a user id whose topic would not fit is refused at
// the upgrade with 400.
func TestUserIDTooLong(t *testing.T) {
	s := newServer(t, userConfig())
	dial(t, s, "user="+strings.Repeat("u", MaxUserIDLen), nil).alive()
	_, resp, err := websocket.DefaultDialer.Dial(s.wsURL("user="+strings.Repeat("u", MaxUserIDLen+1)), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("long user id: %v %v", resp, err)
	}
}

// TestServerSideSubscribe: Conn.Subscribe from OnConnect, past a
// BeforeSubscribeHandler that refuses everything; the client is told;
// MaxTopicsPerConn applies; Unsubscribe tells the client too; a closed
// connection refuses.
func TestServerSideSubscribe(t *testing.T) {
	conns := make(chan *Conn, 1)
	subscribed := make(chan []string, 4)
	s := newServer(t, Config{
		MaxTopicsPerConn:       3,
		BeforeSubscribeHandler: func(*Conn, []string) bool { return false },
		SubscribeHandler:       func(_ *Conn, topics []string) { subscribed <- topics },
		OnConnect: func(c *Conn) {
			if err := c.Subscribe("a", "b", "a"); err != nil {
				t.Errorf("Subscribe: %v", err)
			}
			conns <- c
		},
	})
	cl := dial(t, s, "", nil)
	if f := cl.expect(TypeSubscribed); fmt.Sprint(f.topics()) != "[a b]" {
		t.Fatalf("subscribed %s", f.raw)
	}
	if got := <-subscribed; fmt.Sprint(got) != "[a b]" {
		t.Fatalf("SubscribeHandler got %v", got)
	}
	c := <-conns
	if _, err := s.tower.Publish(t.Context(), "b", 1); err != nil {
		t.Fatal(err)
	}
	cl.expect(TypePublish)
	cl.send(`{"type":"subscribe","topic":"c"}`)
	cl.expectError(CodeForbidden)
	if err := c.Subscribe("c", "d"); !errors.Is(err, ErrTooManyTopics) {
		t.Fatalf("over MaxTopicsPerConn: %v", err)
	}
	if err := c.Subscribe("bad topic"); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("invalid topic: %v", err)
	}
	if err := c.Unsubscribe("a", "z"); err != nil {
		t.Fatal(err)
	}
	if f := cl.expect(TypeUnsubscribed); fmt.Sprint(f.topics()) != "[a z]" {
		t.Fatalf("unsubscribed %s", f.raw)
	}
	if got := c.Topics(); fmt.Sprint(got) != "[b]" {
		t.Fatalf("Topics %v", got)
	}
	cl.ws.Close()
	waitFor(t, func() bool { return c.DisconnectReason() != DisconnectNone })
	waitFor(t, func() bool { return c.Context().Err() != nil })
	if err := c.Subscribe("e"); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("Subscribe on a closed connection: %v", err)
	}
	if err := c.Unsubscribe("b"); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("Unsubscribe on a closed connection: %v", err)
	}
	if n := s.tower.LocalConnectNum("e") + s.tower.LocalConnectNum("b"); n != 0 {
		t.Fatalf("%d subscriptions left behind", n)
	}
}

// TestServerSideSubscribeHistory: a server-side subscribe to a topic with
// history gets its position in the reply, as a client subscribe does.
func TestServerSideSubscribeHistory(t *testing.T) {
	conns := make(chan *Conn, 1)
	s := newServer(t, Config{
		TopicOptions: func(topic string) TopicOptions {
			if topic == "h" {
				return TopicOptions{HistorySize: 10}
			}
			return TopicOptions{}
		},
		OnConnect: func(c *Conn) { conns <- c },
	})
	for i := range 2 {
		if _, err := s.tower.Publish(t.Context(), "h", i); err != nil {
			t.Fatal(err)
		}
	}
	cl := dial(t, s, "", nil)
	c := <-conns
	if err := c.Subscribe("h"); err != nil {
		t.Fatal(err)
	}
	f := cl.expect(TypeSubscribed)
	if p, ok := f.Streams["h"]; !ok || p.Offset != 2 || p.Epoch == "" {
		t.Fatalf("subscribed %s: want the position of h at 2", f.raw)
	}
	if _, err := s.tower.Publish(t.Context(), "h", 2); err != nil {
		t.Fatal(err)
	}
	if f := cl.expect(TypePublish); f.Offset != 3 {
		t.Fatalf("publish %s", f.raw)
	}
}

// TestServerSideSubscribeConcurrent: server-side subscribes and
// unsubscribes from many goroutines alongside the client's own frames and
// a disconnect leave the node's index consistent, with nothing left
// behind.
func TestServerSideSubscribeConcurrent(t *testing.T) {
	conns := make(chan *Conn, 1)
	s := newServer(t, Config{OnConnect: func(c *Conn) { conns <- c }, InboundRate: 1e6, InboundBurst: 1e6, SubscribeRate: 1e6, SubscribeBurst: 1e6,
		ReadHandler: func(*Conn, *Frame) bool { return true }})
	cl := dial(t, s, "", nil)
	c := <-conns
	go func() { // drain
		for range cl.frames {
		}
	}()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				topic := fmt.Sprintf("t%d", (g+i)%6)
				c.Subscribe(topic)
				if i%3 == 0 {
					c.Unsubscribe(topic)
				}
			}
		}()
	}
	for i := range 100 {
		topic := fmt.Sprintf("t%d", i%6)
		cl.send(map[string]any{"type": "subscribe", "topic": topic})
		cl.send(map[string]any{"type": "publish", "topic": topic, "data": i, "id": i})
		if i%2 == 0 {
			cl.send(map[string]any{"type": "unsubscribe", "topic": topic})
		}
	}
	wg.Wait()
	// Once the server-side calls are done and the client's frames are
	// answered, the index holds the connection exactly in its topics.
	cl.send(`{"type":"ping"}`)
	waitFor(t, func() bool {
		held := c.Topics()
		for i := range 6 {
			topic := fmt.Sprintf("t%d", i)
			if s.tower.LocalConnectNum(topic) != b2i(slices.Contains(held, topic)) {
				return false
			}
		}
		return true
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			c.Subscribe("late")
		}
	}()
	cl.ws.Close()
	<-done
	waitFor(t, func() bool { return c.Context().Err() != nil })
	for i := range 6 {
		if n := s.tower.LocalConnectNum(fmt.Sprintf("t%d", i)); n != 0 {
			t.Fatalf("t%d: %d subscribers left after the disconnect", i, n)
		}
	}
	if n := s.tower.LocalConnectNum("late"); n != 0 {
		t.Fatalf("late: %d subscribers left after the disconnect", n)
	}
	if st := s.tower.Stats(); st.Subscriptions != 0 || st.Topics != 0 {
		t.Fatalf("Stats after the disconnect: %d subscriptions, %d topics", st.Subscriptions, st.Topics)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPublishToUsersGo: the Go form's validation and counts.
func TestPublishToUsersGo(t *testing.T) {
	s := newServer(t, userConfig())
	c := dialUser(t, s, "42")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	p, err := s.tower.PublishToUsers(ctx, []string{"42", "nobody", "42"}, "x")
	if err != nil || p.Connections != 1 || fmt.Sprint(p.Users) != "[42 nobody]" {
		t.Fatalf("%+v %v", p, err)
	}
	c.expect("message")
	for _, users := range [][]string{nil, {""}, {strings.Repeat("u", MaxUserIDLen+1)}, {"\xff"}} {
		if _, err := s.tower.PublishToUsers(ctx, users, "x"); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("%q: %v", users, err)
		}
	}
	if _, err := s.tower.PublishToUser(ctx, "42", func() {}); !errors.Is(err, ErrInvalidData) {
		t.Errorf("unencodable data: %v", err)
	}
}

// dialUser connects as user and waits until the connection is open: its
// first ping is answered after the node subscribed it to its user topic.
func dialUser(t *testing.T, s *server, user string) *client {
	t.Helper()
	c := dial(t, s, "user="+user, nil)
	c.alive()
	return c
}
