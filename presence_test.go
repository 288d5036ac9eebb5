package firetower

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/gin-gonic/gin"
)

const testGrace = 300 * time.Millisecond

// presenceConfig: "room…" topics have presence with join and leave,
// "quiet…" presence only; a connection is the user of its "user" query
// parameter, named by its "name".
func presenceConfig() Config {
	return Config{
		APIToken:      testToken,
		PresenceGrace: testGrace,
		Authenticate: func(c *gin.Context) (string, error) {
			if name := c.Query("name"); name != "" {
				if err := SetConnInfo(c, map[string]string{"name": name}); err != nil {
					return "", err
				}
			}
			return c.Query("user"), nil
		},
		TopicOptions: func(topic string) TopicOptions {
			switch {
			case strings.HasPrefix(topic, "room"):
				return TopicOptions{JoinLeave: true}
			case strings.HasPrefix(topic, "quiet"):
				return TopicOptions{Presence: true}
			}
			return TopicOptions{}
		},
	}
}

// presenceAnswer is a presence frame or REST answer, decoded.
type presenceAnswer struct {
	Type        string          `json:"type"`
	Topic       string          `json:"topic"`
	ID          json.RawMessage `json:"id"`
	Users       int             `json:"users"`
	Connections int             `json:"connections"`
	Clients     []struct {
		Conn string          `json:"conn"`
		User string          `json:"user"`
		Info json.RawMessage `json:"info"`
	} `json:"clients"`
}

// keys renders the clients as sorted "user info" strings.
func (p presenceAnswer) keys() []string {
	var out []string
	for _, c := range p.Clients {
		out = append(out, c.User+" "+string(c.Info))
	}
	slices.Sort(out)
	return out
}

func (c *client) presence(topic string, id any) presenceAnswer {
	c.t.Helper()
	c.send(map[string]any{"type": "presence", "topic": topic, "id": id})
	f := c.expect(TypePresence)
	var p presenceAnswer
	if err := json.Unmarshal(f.raw, &p); err != nil {
		c.t.Fatalf("presence frame %s: %v", f.raw, err)
	}
	return p
}

func dialAs(t *testing.T, s *server, user, name string) *client {
	t.Helper()
	q := "user=" + user
	if name != "" {
		q += "&name=" + name
	}
	c := dial(t, s, q, nil)
	c.alive()
	return c
}

// TestPresenceFrame: the presence frame's answer has exactly the
// documented shape and lists every subscriber with its user and info.
func TestPresenceFrame(t *testing.T) {
	s := newServer(t, presenceConfig())
	a1, a2 := dialAs(t, s, "alice", "Alice"), dialAs(t, s, "alice", "Alice")
	b := dialAs(t, s, "bob", "")
	anon := dial(t, s, "", nil)
	for _, c := range []*client{a1, a2, b, anon} {
		c.subscribe("quiet")
	}
	b.send(`{"type":"presence","topic":"quiet","id":5}`)
	f := b.expect(TypePresence)
	if want := `{"type":"presence","topic":"quiet","id":5,"users":2,"connections":4,"clients":[`; !strings.HasPrefix(string(f.raw), want) {
		t.Fatalf("presence frame %s, want it to start %s", f.raw, want)
	}
	var p presenceAnswer
	if err := json.Unmarshal(f.raw, &p); err != nil {
		t.Fatal(err)
	}
	want := []string{" {}", `alice {"name":"Alice"}`, `alice {"name":"Alice"}`, "bob {}"}
	if got := p.keys(); !slices.Equal(got, want) {
		t.Fatalf("clients %q, want %q", got, want)
	}
	conns := map[string]bool{}
	for _, cl := range p.Clients {
		conns[cl.Conn] = true
	}
	s.tower.mu.Lock()
	for c := range s.tower.conns {
		if !conns[c.ID()] {
			t.Errorf("connection %s of user %q is not listed", c.ID(), c.UserID())
		}
	}
	s.tower.mu.Unlock()

	// Unsubscribing, or going away, leaves the presence.
	a2.send(`{"type":"unsubscribe","topic":"quiet"}`)
	a2.expect(TypeUnsubscribed)
	anon.ws.Close()
	brokerEventually(t, func() error {
		if p := b.presence("quiet", "again"); p.Users != 2 || p.Connections != 2 {
			return errors.New("presence still counts what left")
		}
		return nil
	})
	if p := b.presence("quiet", 6); !slices.Equal(p.keys(), []string{`alice {"name":"Alice"}`, "bob {}"}) {
		t.Fatalf("after the leaves: %q", p.keys())
	}
}

// brokerEventually retries f for up to 5 s.
func brokerEventually(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPresenceFrameRefused: a topic without presence is a bad request, a
// topic the client may not subscribe to is forbidden, and a frame with
// other than one topic is refused; the connection goes on.
func TestPresenceFrameRefused(t *testing.T) {
	cfg := presenceConfig()
	cfg.BeforeSubscribeHandler = func(c *Conn, topics []string) bool { return !slices.Contains(topics, "room-secret") }
	s := newServer(t, cfg)
	c := dialAs(t, s, "alice", "")
	c.send(`{"type":"presence","topic":"plain","id":1}`)
	if f := c.expectError(CodeBadRequest); string(f.ID) != "1" {
		t.Fatalf("error without the frame's id: %s", f.raw)
	}
	c.send(`{"type":"presence","topic":"room-secret","id":2}`)
	c.expectError(CodeForbidden)
	c.send(`{"type":"presence","topic":["room","room2"],"id":3}`)
	c.expectError(CodeBadRequest)
	c.send(`{"type":"presence","id":4}`)
	c.expectError(CodeBadRequest)
	c.send(`{"type":"presence","topic":"bad topic","id":4}`)
	c.expectError(CodeBadRequest)
	if p := c.presence("room", 7); p.Connections != 0 || p.Users != 0 || p.Clients == nil {
		t.Fatalf("presence of an empty room: %+v (clients must be [], not null)", p)
	}
	c.alive()
}

// TestJoinLeaveFrames: a user's first connection makes one join, in the
// documented shape, for every subscriber; the last one's going makes one
// leave, no sooner than the grace; anonymous connections and further
// connections of a present user make none.
func TestJoinLeaveFrames(t *testing.T) {
	s := newServer(t, presenceConfig())
	bob := dialAs(t, s, "bob", "")
	bob.subscribe("room")
	if f := bob.expect("join"); string(f.raw) != `{"type":"join","topic":"room","user":"bob","info":{}}` {
		t.Fatalf("bob's own join %s", f.raw)
	}
	a1 := dialAs(t, s, "alice", "Alice")
	a1.subscribe("room")
	const join = `{"type":"join","topic":"room","user":"alice","info":{"name":"Alice"}}`
	for _, c := range []*client{bob, a1} {
		if f := c.expect("join"); string(f.raw) != join {
			t.Fatalf("join frame %s, want %s", f.raw, join)
		}
	}
	a2 := dialAs(t, s, "alice", "Alice")
	a2.subscribe("room")
	anon := dial(t, s, "", nil)
	anon.subscribe("room")
	anon.ws.Close()
	a1.ws.Close()
	bob.quiet(2 * testGrace)

	start := time.Now()
	a2.send(`{"type":"unsubscribe","topic":"room"}`)
	a2.expect(TypeUnsubscribed)
	if f := bob.expect("leave"); string(f.raw) != `{"type":"leave","topic":"room","user":"alice"}` {
		t.Fatalf("leave frame %s", f.raw)
	}
	if waited := time.Since(start); waited < testGrace {
		t.Fatalf("leave after %v, before the grace of %v", waited, testGrace)
	}
	bob.quiet(testGrace)
	a2.alive()
}

// TestReloadMakesNoLeave: a connection that goes and one of the same user
// that subscribes within the grace (a page reload) make neither a leave
// nor a join.
func TestReloadMakesNoLeave(t *testing.T) {
	s := newServer(t, presenceConfig())
	bob := dialAs(t, s, "bob", "")
	bob.subscribe("room")
	bob.expect("join")
	old := dialAs(t, s, "alice", "")
	old.subscribe("room")
	bob.expect("join")
	old.ws.Close()
	reloaded := dialAs(t, s, "alice", "")
	reloaded.subscribe("room")
	reloaded.quiet(3 * testGrace)
	bob.quiet(testGrace)
	if p := bob.presence("room", 1); p.Users != 2 || p.Connections != 2 {
		t.Fatalf("after the reload: %d users, %d connections; want 2 and 2", p.Users, p.Connections)
	}
}

// TestServerSubscribeHasPresence: Conn.Subscribe records presence as a
// client subscribe does, and Conn.Unsubscribe removes it.
func TestServerSubscribeHasPresence(t *testing.T) {
	cfg := presenceConfig()
	cfg.OnConnect = func(c *Conn) {
		if c.UserID() == "alice" {
			if err := c.Subscribe("room"); err != nil {
				t.Errorf("Subscribe: %v", err)
			}
		}
	}
	s := newServer(t, cfg)
	bob := dialAs(t, s, "bob", "")
	bob.subscribe("room")
	bob.expect("join")
	a := dial(t, s, "user=alice", nil)
	a.expect(TypeSubscribed)
	a.expect("join")
	if f := bob.expect("join"); !strings.Contains(string(f.raw), `"user":"alice"`) {
		t.Fatalf("join %s", f.raw)
	}
	var conn *Conn
	s.tower.mu.Lock()
	for c := range s.tower.conns {
		if c.UserID() == "alice" {
			conn = c
		}
	}
	s.tower.mu.Unlock()
	if err := conn.Unsubscribe("room"); err != nil {
		t.Fatal(err)
	}
	a.expect(TypeUnsubscribed)
	bob.expect("leave")
	a.alive()
}

// TestPresenceREST: GET .../presence is authorized like publish and
// answers the documented shape; GET .../count adds users on presence
// topics only.
func TestPresenceREST(t *testing.T) {
	s := newServer(t, presenceConfig())
	for _, u := range []string{"alice", "alice", "bob"} {
		dialAs(t, s, u, "").subscribe("quiet/x", "plain")
	}
	path := "/topics/" + "quiet%2Fx" + "/presence"
	if status, _ := get(t, s, path); status != http.StatusUnauthorized {
		t.Fatalf("presence without the token: %d, want 401", status)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p presenceAnswer
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != 200 {
		t.Fatalf("presence: %d, %v", resp.StatusCode, err)
	}
	if p.Topic != "quiet/x" || p.Users != 2 || p.Connections != 3 || len(p.Clients) != 3 || p.Type != "" {
		t.Fatalf("presence answer %+v", p)
	}
	req, _ = http.NewRequest(http.MethodGet, s.URL+"/topics/plain/presence", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if status, body := do(t, req); status != http.StatusNotFound || body["error"] == nil {
		t.Fatalf("presence of a plain topic: %d %v, want 404 with an error", status, body)
	}
	_, count := get(t, s, "/topics/quiet%2Fx/count")
	if count["count"] != 3.0 || count["users"] != 2.0 {
		t.Fatalf("count of a presence topic: %v, want count 3 and users 2", count)
	}
	_, count = get(t, s, "/topics/plain/count")
	if _, has := count["users"]; has || count["count"] != 3.0 {
		t.Fatalf("count of a plain topic: %v, want count 3 and no users", count)
	}
}

// TestTowerPresence: the Go call, and its errors.
func TestTowerPresence(t *testing.T) {
	s := newServer(t, presenceConfig())
	dialAs(t, s, "alice", "A").subscribe("room")
	p, err := s.tower.Presence(t.Context(), "room")
	if err != nil || p.Topic != "room" || p.Users != 1 || p.Connections != 1 || len(p.Clients) != 1 ||
		p.Clients[0].User != "alice" || string(p.Clients[0].Info) != `{"name":"A"}` {
		t.Fatalf("Presence: %+v, %v", p, err)
	}
	if _, err := s.tower.Presence(t.Context(), "plain"); !errors.Is(err, ErrNoPresence) {
		t.Fatalf("Presence of a plain topic: %v, want ErrNoPresence", err)
	}
	if _, err := s.tower.Presence(t.Context(), "a,b"); !errors.Is(err, ErrInvalidTopic) {
		t.Fatalf("Presence of a bad topic: %v, want ErrInvalidTopic", err)
	}
	if _, err := s.tower.Presence(t.Context(), UserTopic("alice")); err == nil {
		t.Fatal("Presence of an internal topic answered")
	}
}

// TestSetConnInfo: only a JSON object of at most MaxConnInfo bytes is
// taken; an Authenticate that passes the error on refuses the upgrade.
func TestSetConnInfo(t *testing.T) {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	for _, bad := range []any{"a name", []int{1}, nil, map[string]string{"name": strings.Repeat("x", MaxConnInfo)}, func() {}} {
		if err := SetConnInfo(c, bad); !errors.Is(err, ErrInvalidData) {
			t.Errorf("SetConnInfo(%T): %v, want ErrInvalidData", bad, err)
		}
	}
	if connInfo(c) != nil {
		t.Fatal("a refused info was kept")
	}
	if err := SetConnInfo(c, map[string]any{"name": "Ålice", "avatar": "/a.png"}); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, presenceConfig())
	resp, err := http.Get(s.URL + "/ws?user=alice&name=" + strings.Repeat("x", MaxConnInfo))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("an upgrade with too big an info: %d, want 401", resp.StatusCode)
	}
}

// TestForgedPresenceEvents: join and leave events whose data is not what
// the broker package says are dropped; an info that is not an object
// shows as {}; only valid JSON reaches the client.
func TestForgedPresenceEvents(t *testing.T) {
	s := newServer(t, presenceConfig())
	c := dialAs(t, s, "bob", "")
	c.subscribe("quiet")
	for _, data := range []string{`{"user":5}`, `{}`, `{"user":""}`, `[1]`, `"x"`} {
		s.tower.hub.deliver(broker.Message{Topic: "quiet", ID: broker.JoinID, Data: []byte(data)})
		s.tower.hub.deliver(broker.Message{Topic: "quiet", ID: broker.LeaveID, Data: []byte(data)})
	}
	s.tower.hub.deliver(broker.Message{Topic: "quiet", ID: broker.JoinID, Data: []byte(`{"user":"x","info":[1,2]}`)})
	if f := c.expect("join"); string(f.raw) != `{"type":"join","topic":"quiet","user":"x","info":{}}` {
		t.Fatalf("join %s", f.raw)
	}
	c.alive()
}

// FuzzPresenceEvent: whatever data a join or leave event carries, the
// node makes of it a frame of valid JSON in valid UTF-8, with the topic
// and a non-empty user, or nothing.
func FuzzPresenceEvent(f *testing.F) {
	f.Add("room", true, []byte(`{"user":"alice","info":{"name":"Alice"}}`))
	f.Add("room", false, []byte(`{"user":"alice"}`))
	f.Add("r", true, []byte(`{"user":"a","info":[1]}`))
	f.Add("r", true, []byte(`{"user":"\ud800","info":{"x":"\udfff"}}`))
	f.Add("r", true, []byte("{\"user\":\"a\",\"info\":{\"n\":\"\xff\"}}"))
	f.Fuzz(func(t *testing.T, topic string, join bool, data []byte) {
		b, ok := presenceEventFrame(topic, join, data)
		if !ok {
			return
		}
		if !utf8.Valid(b) || !json.Valid(b) {
			t.Fatalf("frame %q is not valid UTF-8 JSON", b)
		}
		var fr struct {
			Type, Topic, User string
			Info              json.RawMessage
		}
		if err := json.Unmarshal(b, &fr); err != nil || fr.Topic != topic || fr.User == "" {
			t.Fatalf("frame %s: %v", b, err)
		}
		if want := map[bool]string{true: "join", false: "leave"}[join]; fr.Type != want {
			t.Fatalf("frame %s, want type %s", b, want)
		}
		if join && (len(fr.Info) == 0 || fr.Info[0] != '{') {
			t.Fatalf("join %s without an info object", b)
		}
	})
}

// BenchmarkPresence10k: a presence answer for a topic with 10,000
// subscribers on the embedded broker, as a presence frame makes it: the
// broker's query (capped at MaxPresenceClients), the checks, the frame.
func BenchmarkPresence10k(b *testing.B) {
	tw, err := New(presenceConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer tw.Shutdown(b.Context())
	for i := range 10_000 {
		c := broker.PresenceClient{Conn: newID(), User: "user" + itoa(i), Info: json.RawMessage(`{"name":"User ` + itoa(i) + `"}`)}
		if err := tw.presencer.AddPresence(b.Context(), c, []string{"room"}, broker.PresenceOptions{JoinLeave: true, Grace: time.Second}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		p, err := tw.Presence(b.Context(), "room")
		if err != nil || p.Users != 10_000 || len(p.Clients) != MaxPresenceClients {
			b.Fatalf("%d users, %d clients, %v", p.Users, len(p.Clients), err)
		}
		size = len(appendPresence(make([]byte, 0, 64*1024), p))
	}
	b.ReportMetric(float64(size), "B/answer")
}

// TestJoinLeaveRoom: join and leave frames have room of their own beyond
// SendQueueSize (eventRoomFactor times it), so a churning room does not
// close a subscriber that would keep up with its messages; beyond that
// room the subscriber is closed as too slow, as for messages.
func TestJoinLeaveRoom(t *testing.T) {
	cfg := presenceConfig()
	cfg.SendQueueSize = 4
	s := newServer(t, cfg)
	dialAs(t, s, "bob", "").subscribe("room")
	var conn *Conn
	s.tower.mu.Lock()
	for c := range s.tower.conns {
		conn = c
	}
	s.tower.mu.Unlock()
	brokerEventually(t, func() error {
		conn.qmu.Lock()
		defer conn.qmu.Unlock()
		if len(conn.queue) > 0 || conn.held {
			return errors.New("the subscribe's frames are still queued")
		}
		return nil
	})
	conn.hold() // the writer takes nothing from now on
	event := func(i int) {
		s.tower.hub.deliver(broker.Message{Topic: "room", ID: broker.JoinID, Data: []byte(`{"user":"u` + itoa(i) + `"}`)})
	}
	for i := range (eventRoomFactor + 1) * cfg.SendQueueSize {
		event(i)
	}
	if why := conn.closedReason(); why != DisconnectNone {
		t.Fatalf("closed (%v) with %d events queued, within their room", why, (eventRoomFactor+1)*cfg.SendQueueSize)
	}
	event(-1)
	if why := conn.closedReason(); why != DisconnectSlow {
		t.Fatalf("after one event more than the room: %v, want slow", why)
	}
}
