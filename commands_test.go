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
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
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

// batchBroker is an embedded topic service that counts how the node
// subscribes, and fails the batches fail refuses.
type batchBroker struct {
	*topicsvc.Embedded
	fail func(topics []string) error

	mu           sync.Mutex
	singles      int        // Subscribe and Unsubscribe calls
	subs, unsubs [][]string // SubscribeTopics and UnsubscribeTopics calls
}

func (b *batchBroker) InProcess() bool { return false }

func (b *batchBroker) Subscribe(ctx context.Context, topic string) error {
	b.mu.Lock()
	b.singles++
	b.mu.Unlock()
	return b.Embedded.Subscribe(ctx, topic)
}

func (b *batchBroker) Unsubscribe(ctx context.Context, topic string) error {
	b.mu.Lock()
	b.singles++
	b.mu.Unlock()
	return b.Embedded.Unsubscribe(ctx, topic)
}

func (b *batchBroker) SubscribeTopics(ctx context.Context, topics []string) error {
	b.mu.Lock()
	b.subs = append(b.subs, slices.Clone(topics))
	b.mu.Unlock()
	if b.fail != nil {
		if err := b.fail(topics); err != nil {
			return err
		}
	}
	return b.Embedded.SubscribeTopics(ctx, topics)
}

func (b *batchBroker) UnsubscribeTopics(ctx context.Context, topics []string) error {
	b.mu.Lock()
	b.unsubs = append(b.unsubs, slices.Clone(topics))
	b.mu.Unlock()
	return b.Embedded.UnsubscribeTopics(ctx, topics)
}

// calls returns the batch sizes so far and the single calls, and forgets them.
func (b *batchBroker) calls() (subs, unsubs []int, singles int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.subs {
		subs = append(subs, len(c))
	}
	for _, c := range b.unsubs {
		unsubs = append(unsubs, len(c))
	}
	singles = b.singles
	b.subs, b.unsubs, b.singles = nil, nil, 0
	return subs, unsubs, singles
}

// TestSubscribeFrameIsOneBrokerCall: a frame of 128 topics costs the
// broker one call, not 128; the node still declares a topic only for its
// first local subscriber and withdraws it after the last, and a broker
// error rolls the whole frame back.
func TestSubscribeFrameIsOneBrokerCall(t *testing.T) {
	b := &batchBroker{Embedded: topicsvc.NewEmbedded()}
	b.fail = func(topics []string) error {
		if slices.Contains(topics, "down") {
			return broker.ErrUnavailable
		}
		return nil
	}
	s := newServer(t, Config{Broker: b, MaxTopicsPerConn: 129})
	topics := make([]string, 128)
	for i := range topics {
		topics[i] = fmt.Sprintf("/t/%d", i)
	}
	one, two := dial(t, s, "", nil), dial(t, s, "", nil)
	one.subscribe(topics...)
	if subs, _, singles := b.calls(); !slices.Equal(subs, []int{128}) || singles != 0 {
		t.Fatalf("128 topics in one frame: batches %v and %d single calls, want one batch of 128", subs, singles)
	}
	two.subscribe(append([]string{"/t/new"}, topics...)...)
	if subs, _, singles := b.calls(); !slices.Equal(subs, []int{1}) || singles != 0 {
		t.Fatalf("second subscriber: batches %v and %d single calls, want one batch of the 1 new topic", subs, singles)
	}
	one.send(map[string]any{"type": "unsubscribe", "topic": topics})
	one.expect(TypeUnsubscribed)
	if _, unsubs, singles := b.calls(); len(unsubs) != 0 || singles != 0 {
		t.Fatalf("topics still held by another connection were withdrawn: %v, %d", unsubs, singles)
	}
	two.send(map[string]any{"type": "unsubscribe", "topic": topics})
	two.expect(TypeUnsubscribed)
	if _, unsubs, singles := b.calls(); !slices.Equal(unsubs, []int{128}) || singles != 0 {
		t.Fatalf("last subscriber left: unsubscribe batches %v and %d single calls, want one of 128", unsubs, singles)
	}

	// All or nothing: nothing of a failed frame is held, locally or at the
	// broker, and the next frame starts clean.
	one.send(map[string]any{"type": "subscribe", "topic": []string{"/t/0", "/t/1", "down"}, "id": 7})
	if f := one.expectError(CodeUnavailable); string(f.ID) != "7" {
		t.Fatalf("error frame %s", f.raw)
	}
	for _, topic := range []string{"/t/0", "/t/1", "down"} {
		if n := s.tower.hub.count(topic); n != 0 {
			t.Fatalf("after a failed frame %s has %d local subscribers", topic, n)
		}
	}
	b.calls()
	one.subscribe("/t/0")
	if subs, _, _ := b.calls(); !slices.Equal(subs, []int{1}) {
		t.Fatalf("after the rollback /t/0 was not declared again: %v", subs)
	}
	two.subscribe("/t/0")
	if _, err := s.tower.Publish(context.Background(), "/t/0", 1); err != nil {
		t.Fatal(err)
	}
	one.expect(TypePublish)
	two.expect(TypePublish)
}

// TestSubscribeRateCountsTopics: each topic of a subscribe or unsubscribe
// frame costs one of SubscribeRate, so a frame rate within InboundRate
// cannot churn more topics than that.
func TestSubscribeRateCountsTopics(t *testing.T) {
	s := newServer(t, Config{SubscribeRate: 0.001, SubscribeBurst: 200, MaxTopicsPerConn: 128})
	c := dial(t, s, "", nil)
	topics := make([]string, 100)
	for i := range topics {
		topics[i] = fmt.Sprintf("/t/%d", i)
	}
	c.subscribe(topics...)
	c.send(map[string]any{"type": "unsubscribe", "topic": topics})
	c.expect(TypeUnsubscribed)
	before := s.tower.Stats().RateLimited
	c.send(map[string]any{"type": "subscribe", "topic": topics[:1], "id": "over"})
	f := c.expectError(CodeRateLimited)
	if string(f.ID) != `"over"` || !slices.Equal(f.topics(), topics[:1]) {
		t.Fatalf("rate_limited frame %s, want the frame's id and topic", f.raw)
	}
	if got := s.tower.Stats().RateLimited - before; got != 1 {
		t.Fatalf("Stats.RateLimited rose by %d, want 1", got)
	}
	if n := s.tower.hub.count(topics[0]); n != 0 {
		t.Fatalf("a dropped subscribe frame subscribed: %d", n)
	}
	c.alive() // pings are frames, not topics
}

// pinger is a raw client that sends ping control frames and counts the
// pongs it gets.
type pinger struct {
	ws     *websocket.Conn
	pongs  atomic.Int64
	closed chan error
}

func dialPinger(t *testing.T, s *server) *pinger {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(s.wsURL(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &pinger{ws: ws, closed: make(chan error, 1)}
	ws.SetPongHandler(func(string) error { p.pongs.Add(1); return nil })
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				p.closed <- err
				return
			}
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return p
}

// TestPingsCountAgainstTheRate: a ping is a frame; over the budget it gets
// no pong, is counted, and a client that keeps flooding is closed with
// 1008 while the others go on.
func TestPingsCountAgainstTheRate(t *testing.T) {
	s := newServer(t, Config{InboundRate: 0.001, InboundBurst: 5})
	other := dial(t, s, "", nil)
	other.subscribe("/room")
	p := dialPinger(t, s)
	for range 8 {
		if err := p.ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	// A text frame after the pings: its answer comes after theirs.
	if err := p.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := s.tower.Stats().RateLimited; n != 4 {
			return fmt.Errorf("Stats.RateLimited = %d, want 4 (3 pings, 1 text frame)", n)
		}
		return nil
	})
	// The node answers only the last of the pings waiting for its writer,
	// so up to 5: the 3 over budget never get one.
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := p.pongs.Load(); n < 1 || n > 5 {
			return fmt.Errorf("%d pongs for 8 pings with a burst of 5, want 1 to 5", n)
		}
		return nil
	})
	// Dropped frames beyond minStrikes (the burst of 5 is less) close the
	// connection.
	for range minStrikes + 10 {
		p.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
	}
	select {
	case err := <-p.closed:
		if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Fatalf("flooding client closed with %v, want 1008", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a client flooding pings was not closed")
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := s.tower.Stats().Disconnects["rate_limited"]; n != 1 {
			return fmt.Errorf("Stats.Disconnects[rate_limited] = %d, want 1", n)
		}
		return nil
	})
	other.alive()
	if _, err := s.tower.Publish(context.Background(), "/room", 1); err != nil {
		t.Fatal(err)
	}
	other.expect(TypePublish)
}

// TestBytesCountAgainstTheRate: a frame costs its size of InboundBytesRate,
// so 64 KiB frames within the frame rate are dropped once the byte budget
// is spent, with a rate_limited error each; a flood of them is closed.
func TestBytesCountAgainstTheRate(t *testing.T) {
	s := newServer(t, Config{InboundBytesRate: 1})
	other := dial(t, s, "", nil)
	c := dial(t, s, "", nil)
	big := fmt.Sprintf(`{"type":"ping","pad":"%s"}`, strings.Repeat("x", 64<<10-32))
	for range 6 {
		c.send(big)
	}
	for range 4 { // the default burst: 4 × MaxFrameSize
		c.expect(TypePong)
	}
	c.expectError(CodeRateLimited)
	c.expectError(CodeRateLimited)
	if n := s.tower.Stats().RateLimited; n != 2 {
		t.Fatalf("Stats.RateLimited = %d, want 2", n)
	}
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", 100) + `"}`) // still over: the bucket holds 32 bytes
	c.expectError(CodeRateLimited)
	for range 400 {
		if c.ws.WriteMessage(websocket.TextMessage, []byte(big)) != nil {
			break
		}
	}
	if err := c.waitClosed(); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("flooding client closed with %v, want 1008", err)
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := s.tower.Stats().Disconnects["rate_limited"]; n != 1 {
			return fmt.Errorf("Stats.Disconnects[rate_limited] = %d, want 1", n)
		}
		return nil
	})
	other.alive()
}

// TestSubscribeRefusesLoneSurrogates: a topic escaped with an unpaired
// UTF-16 surrogate is refused, never rewritten to U+FFFD; a paired one is
// the character it spells.
func TestSubscribeRefusesLoneSurrogates(t *testing.T) {
	s := newServer(t, Config{})
	c := dial(t, s, "", nil)
	for _, topic := range []string{`"\udc00"`, `"a\ud800b"`, `["ok","\ud83d"]`} {
		c.send(`{"type":"subscribe","topic":` + topic + `}`)
		c.expectError(CodeBadRequest)
	}
	c.send(`{"type":"subscribe","topic":"\ud83d\ude00"}`)
	if f := c.expect(TypeSubscribed); len(f.topics()) != 1 || f.topics()[0] != "😀" {
		t.Fatalf("a surrogate pair: %s", f.raw)
	}
	if got := s.tower.hub.count("\ufffd"); got != 0 {
		t.Fatalf("%d subscribers of U+FFFD", got)
	}
}

// TestReadHandlerRewriteChecked: a ReadHandler that rewrites a publish
// into invalid data or an invalid topic gets it refused, not sent.
func TestReadHandlerRewriteChecked(t *testing.T) {
	rewrites := []func(f *Frame){
		func(f *Frame) { f.Data = []byte("\xff") },
		func(f *Frame) { f.Data = []byte(`{"broken":`) },
		func(f *Frame) { f.Topics = []string{"a,b"} },
		func(f *Frame) { f.Topics = nil },
	}
	var next int
	s := newServer(t, Config{ReadHandler: func(c *Conn, f *Frame) bool {
		if string(f.Data) != `"ok"` {
			rewrites[next](f)
			next++
		}
		return true
	}})
	sub := dial(t, s, "", nil)
	sub.subscribe("a")
	pub := dial(t, s, "", nil)
	for range rewrites {
		pub.send(`{"type":"publish","topic":"a","data":"x","id":1}`)
		pub.expectError(CodeBadRequest)
	}
	pub.send(`{"type":"publish","topic":"a","data":"ok","id":2}`)
	pub.expect(TypePublished)
	if f := sub.expect(TypePublish); string(f.Data) != `"ok"` {
		t.Fatalf("the subscriber got %s first", f.raw)
	}
}
