package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

func TestSubscribeReceivePublish(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken})
	c := dial(t, s, "", nil)

	// A firetower v0 client: comma-separated topics and "data":"".
	c.send(`{"type":"subscribe","topic":"/chat/world,/chat/2","data":"","id":7}`)
	f := c.expect(TypeSubscribed)
	if got := f.topics(); !slices.Equal(got, []string{"/chat/world", "/chat/2"}) || string(f.ID) != "7" {
		t.Fatalf("subscribed %s", f.raw)
	}
	// The array form.
	c.send(`{"type":"subscribe","topic":["a","b"],"id":"s2"}`)
	if f := c.expect(TypeSubscribed); !slices.Equal(f.topics(), []string{"a", "b"}) || string(f.ID) != `"s2"` {
		t.Fatalf("subscribed %s", f.raw)
	}

	// Data travels as raw JSON: a large integer and unicode arrive as sent.
	data := `{"n":12345678901234567890,"text":"héllo 世界 \u2028","nested":[1,{"a":null}]}`
	code, body := post(t, s, "/publish", testToken, `{"topic":"/chat/2","data":`+data+`}`)
	if code != http.StatusOK {
		t.Fatalf("publish: %d %v", code, body)
	}
	f = c.expect(TypePublish)
	if string(f.Data) != data {
		t.Fatalf("data arrived as %s, want %s", f.Data, data)
	}
	var id string
	json.Unmarshal(f.ID, &id)
	if id != body["id"] || len(id) != 36 {
		t.Fatalf("message id %q, REST answered %v", id, body["id"])
	}
	if got := f.topics(); !slices.Equal(got, []string{"/chat/2"}) {
		t.Fatalf("topic %s", f.Topic)
	}

	// One REST publish to several topics: one message id, one frame per topic.
	code, body = post(t, s, "/publish", testToken, `{"topics":["a","b","nobody"],"data":"x"}`)
	if code != http.StatusOK {
		t.Fatalf("publish: %d %v", code, body)
	}
	got := map[string]string{}
	for range 2 {
		f := c.expect(TypePublish)
		var mid string
		json.Unmarshal(f.ID, &mid)
		got[f.topics()[0]] = mid
	}
	if got["a"] != body["id"] || got["b"] != body["id"] {
		t.Fatalf("frames %v, id %v", got, body["id"])
	}
	c.quiet(100 * time.Millisecond)
}

func TestUnsubscribe(t *testing.T) {
	var mu sync.Mutex
	var left [][]string
	s := newServer(t, Config{UnSubscribeHandler: func(_ *Conn, topics []string) {
		mu.Lock()
		left = append(left, topics)
		mu.Unlock()
	}})
	c := dial(t, s, "", nil)
	c.subscribe("a", "b", "c")
	c.send(`{"type":"unSubscribe","topic":"a","id":1}`)
	if f := c.expect(TypeUnsubscribed); !slices.Equal(f.topics(), []string{"a"}) || string(f.ID) != "1" {
		t.Fatalf("unsubscribed %s", f.raw)
	}
	c.send(`{"type":"unsubscribe","topic":["b","never"]}`) // lower-case spelling; a topic not held is ignored
	c.expect(TypeUnsubscribed)
	ctx := context.Background()
	for _, topic := range []string{"a", "b"} {
		if _, err := s.tower.Publish(ctx, topic, 1); err != nil {
			t.Fatal(err)
		}
	}
	s.tower.Publish(ctx, "c", "still")
	if f := c.expect(TypePublish); string(f.Data) != `"still"` {
		t.Fatalf("got %s", f.raw)
	}
	if n, _ := s.tower.GetConnectNum(ctx, "a"); n != 0 {
		t.Fatalf("count of a = %d after unsubscribe", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(left) != 2 || !slices.Equal(left[0], []string{"a"}) || !slices.Equal(left[1], []string{"b"}) {
		t.Fatalf("UnSubscribeHandler calls %v", left)
	}
}

func TestPingPong(t *testing.T) {
	s := newServer(t, Config{})
	c := dial(t, s, "", nil)
	c.send(`{"type":"ping"}`)
	if f := c.expect(TypePong); f.ID != nil {
		t.Fatalf("pong %s", f.raw)
	}
	c.send(`{"type":"ping","id":42}`)
	if f := c.expect(TypePong); string(f.ID) != "42" {
		t.Fatalf("pong %s", f.raw)
	}
}

// TestBadInput sends every kind of bad frame; each gets its error frame
// and the connection stays usable.
func TestBadInput(t *testing.T) {
	s := newServer(t, Config{MaxTopicsPerConn: 3})
	c := dial(t, s, "", nil)
	long := strings.Repeat("x", MaxTopicLen+1)
	cases := []struct{ frame, code, id string }{
		{`not json`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":"a"`, CodeBadRequest, ""},
		{`[1,2]`, CodeBadRequest, ""},
		{`"hello"`, CodeBadRequest, ""},
		{`{}`, CodeBadRequest, ""},
		{`{"type":5}`, CodeBadRequest, ""},
		{`{"type":"subscribe","id":"m"}`, CodeBadRequest, `"m"`},
		{`{"type":"subscribe","topic":5,"id":9}`, CodeBadRequest, "9"},
		{`{"type":"subscribe","topic":[1]}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":""}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":","}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":["a b"]}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":["a,b"]}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":["tab\there"]}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":["nul\u0000"]}`, CodeBadRequest, ""},
		{`{"type":"subscribe","topic":["` + long + `"]}`, CodeBadRequest, ""},
		{"{\"type\":\"subscribe\",\"topic\":\"\xff\xfe\"}", CodeBadRequest, ""},
		{`{"type":"subscribe","topic":"a","id":{"x":1}}`, CodeBadRequest, ""},
		{`{"type":"publish","topic":"a","id":3}`, CodeBadRequest, "3"}, // no data
		{`{"type":"publish","topic":"a","data":1,"id":4}`, CodeForbidden, "4"},
		{`{"type":"custom","id":5}`, CodeBadRequest, "5"},
		{`{"type":"subscribe","topic":["a","b","c","d"],"id":6}`, CodeTooManyTopics, "6"},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		f := c.expectError(tc.code)
		if string(f.ID) != tc.id {
			t.Errorf("frame %s: error id %s, want %s", tc.frame, f.ID, tc.id)
		}
		c.alive()
	}
	// Binary frames are refused, and the connection stays.
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	c.expectError(CodeBadRequest)
	// Too many topics counts the topics already held.
	c.subscribe("a", "b")
	c.send(`{"type":"subscribe","topic":"c,d"}`)
	if f := c.expectError(CodeTooManyTopics); !slices.Equal(f.topics(), []string{"c", "d"}) {
		t.Fatalf("error %s", f.raw)
	}
	c.subscribe("a", "c") // a is held already: this one fits
	c.alive()
}

func TestRateLimit(t *testing.T) {
	var mu sync.Mutex
	var dropped []string
	s := newServer(t, Config{InboundRate: 0.001, InboundBurst: 3, ReadTimeoutHandler: func(_ *Conn, frame []byte) {
		mu.Lock()
		dropped = append(dropped, string(frame))
		mu.Unlock()
	}})
	c := dial(t, s, "", nil)
	for i := range 5 {
		c.send(fmt.Sprintf(`{"type":"ping","id":%d}`, i))
	}
	for i := range 3 {
		if f := c.expect(TypePong); string(f.ID) != fmt.Sprint(i) {
			t.Fatalf("pong %s", f.raw)
		}
	}
	c.expectError(CodeRateLimited)
	c.expectError(CodeRateLimited)
	mu.Lock()
	defer mu.Unlock()
	if len(dropped) != 2 || dropped[0] != `{"type":"ping","id":3}` {
		t.Fatalf("ReadTimeoutHandler saw %q", dropped)
	}
}

func TestCallbackOrder(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(format string, args ...any) {
		mu.Lock()
		events = append(events, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	disconnected := make(chan struct{})
	cfg := Config{
		OnConnect: func(c *Conn) { record("connect user=%s", c.UserID()) },
		BeforeSubscribeHandler: func(c *Conn, topics []string) bool {
			n, _ := c.Tower().GetConnectNum(context.Background(), topics[0])
			record("before %v count=%d", topics, n)
			return true
		},
		SubscribeHandler: func(c *Conn, topics []string) {
			n, _ := c.Tower().GetConnectNum(context.Background(), topics[0])
			record("subscribe %v count=%d held=%v", topics, n, c.Topics())
		},
		ReadHandler: func(c *Conn, f *Frame) bool {
			record("read %s %v", f.Type, f.Topics)
			return true
		},
		UnSubscribeHandler: func(c *Conn, topics []string) { record("unsubscribe %v", topics) },
		OnDisconnect:       func(c *Conn) { record("disconnect"); close(disconnected) },
		Authenticate:       func(*gin.Context) (string, error) { return "u1", nil },
	}
	s := newServer(t, cfg)
	c := dial(t, s, "", nil)
	c.subscribe("t1")
	c.send(`{"type":"publish","topic":"t1","data":1}`)
	c.expect(TypePublish)
	c.send(`{"type":"hello","data":{}}`)
	c.send(`{"type":"unSubscribe","topic":"t1"}`)
	c.expect(TypeUnsubscribed)
	c.subscribe("t2", "t3")
	c.ws.Close()
	<-disconnected
	want := []string{
		"connect user=u1",
		"before [t1] count=0",
		"subscribe [t1] count=1 held=[t1]",
		"read publish [t1]",
		"read hello []",
		"unsubscribe [t1]",
		"before [t2 t3] count=0",
		"subscribe [t2 t3] count=1 held=[t2 t3]",
		"unsubscribe [t2 t3]",
		"disconnect",
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
}

func TestBeforeSubscribeRefuses(t *testing.T) {
	s := newServer(t, Config{BeforeSubscribeHandler: func(_ *Conn, topics []string) bool {
		return !slices.Contains(topics, "/private")
	}})
	c := dial(t, s, "", nil)
	c.send(`{"type":"subscribe","topic":"/public,/private","id":1}`)
	f := c.expectError(CodeForbidden)
	if string(f.ID) != "1" {
		t.Fatalf("error %s", f.raw)
	}
	if n := s.tower.LocalConnectNum("/public"); n != 0 {
		t.Fatalf("a refused frame subscribed /public (%d)", n)
	}
	c.subscribe("/public")
}

func TestClientPublish(t *testing.T) {
	s := newServer(t, Config{ReadHandler: func(_ *Conn, f *Frame) bool {
		return f.Type == TypePublish && !strings.HasPrefix(f.Topics[0], "/readonly")
	}})
	a := dial(t, s, "", nil)
	b := dial(t, s, "", nil)
	b.subscribe("/room", "/readonly")
	// A publisher that is also a subscriber gets the ack first.
	b.send(`{"type":"publish","topic":"/room","data":0,"id":"self"}`)
	b.expect(TypePublished)
	b.expect(TypePublish)
	a.send(`{"type":"publish","topic":"/room","data":{"text":"hi"},"id":"p1"}`)
	ack := a.expect(TypePublished)
	msg := b.expect(TypePublish)
	var mid string
	json.Unmarshal(msg.ID, &mid)
	if string(ack.ID) != `"p1"` || ack.MessageID != mid || string(msg.Data) != `{"text":"hi"}` {
		t.Fatalf("ack %s, message %s", ack.raw, msg.raw)
	}
	a.send(`{"type":"publish","topic":"/room","data":2}`) // no id: no ack
	b.expect(TypePublish)
	a.send(`{"type":"publish","topic":"/readonly/x","data":3,"id":2}`)
	a.expectError(CodeForbidden)
	a.quiet(50 * time.Millisecond)
	b.quiet(50 * time.Millisecond)
}

// TestSubscribedPrecedesMessages subscribes while the topic is being
// published to without pause: the first frame must be the reply.
func TestSubscribedPrecedesMessages(t *testing.T) {
	s := newServer(t, Config{SendQueueSize: 1 << 20}) // the flood outruns the readers
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil && i < 1_000_000; i++ {
			s.tower.Publish(ctx, "hot", i)
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	for range 20 {
		c := dial(t, s, "", nil)
		c.send(`{"type":"subscribe","topic":"hot"}`)
		c.expect(TypeSubscribed)
		c.expect(TypePublish)
		c.ws.Close()
	}
}

func TestBareData(t *testing.T) {
	s := newServer(t, Config{BareData: true})
	c := dial(t, s, "", nil)
	c.send(`{"type":"subscribe","topic":"/chat/world","data":""}`)
	brokertest.Eventually(t, 5*time.Second, func() error {
		if s.tower.LocalConnectNum("/chat/world") != 1 {
			return errors.New("not subscribed yet")
		}
		return nil
	})
	s.tower.Publish(context.Background(), "/chat/world", map[string]string{"type": "chat", "text": "hi"})
	// No subscribed reply came first: the first frame is the bare data.
	if f := c.next(); string(f.raw) != `{"text":"hi","type":"chat"}` {
		t.Fatalf("got %s, want the bare data", f.raw)
	}
}
