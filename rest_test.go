package firetower

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
)

func TestRESTAuthorization(t *testing.T) {
	none := newServer(t, Config{})
	code, body := post(t, none, "/publish", "anything", `{"topic":"a","data":1}`)
	if code != http.StatusForbidden || !strings.Contains(body["error"].(string), "APIToken") {
		t.Fatalf("no token configured: %d %v", code, body)
	}
	s := newServer(t, Config{APIToken: testToken})
	for _, tok := range []string{"", "wrong", testToken + "x"} {
		if code, body := post(t, s, "/publish", tok, `{"topic":"a","data":1}`); code != http.StatusUnauthorized {
			t.Fatalf("token %q: %d %v", tok, code, body)
		}
	}
	if code, body := post(t, s, "/publish", testToken, `{"topic":"a","data":1}`); code != http.StatusOK {
		t.Fatalf("right token: %d %v", code, body)
	}
	hook := newServer(t, Config{AuthorizeREST: func(c *gin.Context) error {
		if c.GetHeader("X-Key") != "k" {
			return errors.New("missing X-Key")
		}
		return nil
	}})
	if code, body := post(t, hook, "/publish", "", `{"topic":"a","data":1}`); code != http.StatusUnauthorized || body["error"] != "missing X-Key" {
		t.Fatalf("hook refusing: %d %v", code, body)
	}
	req, _ := http.NewRequest(http.MethodPost, hook.URL+"/publish", strings.NewReader(`{"topic":"a","data":1}`))
	req.Header.Set("X-Key", "k")
	req.Header.Set("Content-Type", "application/json")
	if code, body := do(t, req); code != http.StatusOK {
		t.Fatalf("hook allowing: %d %v", code, body)
	}
}

func TestRESTErrors(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, MaxBodySize: 1024})
	for _, tc := range []struct {
		body string
		code int
	}{
		{`not json`, 400},
		{`{"topic":"a","data":1} trailing`, 400},
		{`{"topic":"a"}`, 400},
		{`{"data":1}`, 400},
		{`{"topic":"a b","data":1}`, 400},
		{`{"topics":["ok","bad,topic"],"data":1}`, 400},
		{`{"topic":"a","data":1,"extra":true}`, 400},
		{`{"topic":"a","data":{"broken":}`, 400},
		{`{"topic":"a","data":"` + strings.Repeat("x", 2000) + `"}`, 413},
	} {
		code, body := post(t, s, "/publish", testToken, tc.body)
		if code != tc.code || body["error"] == "" {
			t.Errorf("body %.40q: %d %v, want %d with an error", tc.body, code, body, tc.code)
		}
	}
	if code, _ := get(t, s, "/publish"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /publish: %d", code)
	}
	if code, body := get(t, s, "/topics/a%20b/count"); code != 400 {
		t.Errorf("invalid topic in the path: %d %v", code, body)
	}
}

func TestRESTCountPercentEncoded(t *testing.T) {
	s := newServer(t, Config{})
	c := dial(t, s, "", nil)
	c.subscribe("/chat/world")
	for _, p := range []string{"/topics/%2Fchat%2Fworld/count", "/topics//chat/world/count"} {
		code, body := get(t, s, p)
		if code != 200 || body["topic"] != "/chat/world" || body["count"] != float64(1) {
			t.Errorf("GET %s: %d %v", p, code, body)
		}
	}
}

// fakeBroker is a broker whose behaviour each test sets; methods left nil
// fall through to an embedded topic service.
type fakeBroker struct {
	*topicsvc.Embedded
	publish   func(context.Context, broker.Message) error
	subscribe func(context.Context, string) error
	count     func(context.Context, string) (int, error)
}

func (f *fakeBroker) Count(ctx context.Context, topic string) (int, error) {
	if f.count != nil {
		return f.count(ctx, topic)
	}
	return f.Embedded.Count(ctx, topic)
}

// InProcess is false: the calls a test sets may wait, and the embedded
// broker's promise must not pass through the embedding.
func (f *fakeBroker) InProcess() bool { return false }

func (f *fakeBroker) Publish(ctx context.Context, m broker.Message) error {
	if f.publish != nil {
		return f.publish(ctx, m)
	}
	return f.Embedded.Publish(ctx, m)
}

func (f *fakeBroker) Subscribe(ctx context.Context, topic string) error {
	if f.subscribe != nil {
		return f.subscribe(ctx, topic)
	}
	return f.Embedded.Subscribe(ctx, topic)
}

// SubscribeTopics hides the embedded broker's batch: the node then
// subscribes one topic after another, through the test's subscribe.
func (f *fakeBroker) SubscribeTopics(ctx context.Context, topics []string) error {
	return broker.SubscribeTopics(ctx, struct{ broker.Broker }{f}, topics)
}

func TestBrokerUnavailable(t *testing.T) {
	down := func(context.Context, broker.Message) error { return broker.ErrUnavailable }
	b := &fakeBroker{Embedded: topicsvc.NewEmbedded(), publish: down}
	b.subscribe = func(ctx context.Context, topic string) error {
		if topic == "down" {
			return broker.ErrUnavailable
		}
		return b.Embedded.Subscribe(ctx, topic)
	}
	s := newServer(t, Config{APIToken: testToken, Broker: b, ReadHandler: func(*Conn, *Frame) bool { return true }})
	code, body := post(t, s, "/publish", testToken, `{"topic":"a","data":1}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body["error"].(string), "unavailable") {
		t.Fatalf("publish with the broker down: %d %v", code, body)
	}
	c := dial(t, s, "", nil)
	c.send(`{"type":"subscribe","topic":"up,down","id":1}`)
	c.expectError(CodeUnavailable)
	if n := s.tower.LocalConnectNum("up"); n != 0 {
		t.Fatalf("a failed subscribe left %d subscribers of up", n)
	}
	c.send(`{"type":"publish","topic":"a","data":1,"id":2}`)
	c.expectError(CodeUnavailable)
	c.subscribe("up")
}

// TestRESTBodyLimit checks the 413 at the byte, for bodies whose length is
// announced and for chunked ones, whose length is not.
func TestRESTBodyLimit(t *testing.T) {
	const limit = 64
	s := newServer(t, Config{APIToken: testToken, MaxBodySize: limit})
	body := func(n int) string { // a publish of exactly n bytes
		b := `{"topic":"a","data":""}`
		return b[:len(b)-2] + strings.Repeat("x", n-len(b)) + `"}`
	}
	for _, chunked := range []bool{false, true} {
		for n, want := range map[int]int{limit - 1: 200, limit: 200, limit + 1: 413, 10 * limit: 413} {
			var r io.Reader = strings.NewReader(body(n))
			if chunked {
				r = io.MultiReader(r) // hides the length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/publish", r)
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("Content-Type", "application/json")
			code, answer := do(t, req)
			if code != want || (want == 413 && answer["error"] != "body larger than 64 bytes") {
				t.Errorf("chunked %v, %d bytes: %d %v, want %d", chunked, n, code, answer, want)
			}
		}
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestReadBody(t *testing.T) {
	in := strings.Repeat("0123456789", 300)
	for _, limit := range []int64{0, 1, 9, 10, 1023, 1024, 1025, 2999, 3000, 3001, 1 << 20} {
		for _, size := range []int64{-1, int64(len(in))} {
			for _, buf := range [][]byte{nil, make([]byte, 5, 16), make([]byte, 0, 1024)} {
				got, err := readBody(iotest.OneByteReader(strings.NewReader(in)), buf, size, limit)
				switch {
				case int64(len(in)) > limit:
					if err != errBodyTooLarge || int64(len(got)) > limit+1 {
						t.Errorf("limit %d size %d: %d bytes, %v; want errBodyTooLarge", limit, size, len(got), err)
					}
				case err != nil || string(got) != in:
					t.Errorf("limit %d size %d: %d bytes, %v", limit, size, len(got), err)
				}
			}
		}
	}
	boom := errors.New("boom")
	if _, err := readBody(io.MultiReader(strings.NewReader("{"), errReader{boom}), nil, -1, 100); err != boom {
		t.Errorf("read error: %v", err)
	}
}

func TestRESTPublishAnswer(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken})
	for range 3 { // the answer's buffer is reused
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/publish", strings.NewReader(`{"topics":["b","c"],"data":{"x":[1,2]},"topic":"a"}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var answer struct {
			ID     string   `json:"id"`
			Topics []string `json:"topics"`
		}
		if err := json.Unmarshal(body, &answer); err != nil || resp.StatusCode != 200 || len(answer.ID) == 0 || strings.Join(answer.Topics, ",") != "a,b,c" {
			t.Fatalf("%d %q: %+v %v", resp.StatusCode, body, answer, err)
		}
		if ct, cl := resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"); ct != "application/json; charset=utf-8" || cl != strconv.Itoa(len(body)) {
			t.Fatalf("Content-Type %q, Content-Length %q for %d bytes", ct, cl, len(body))
		}
	}
}

// TestRESTPublishBrokerTimeout checks that a REST publish through a broker
// other than the embedded one is bounded by BrokerTimeout.
func TestRESTPublishBrokerTimeout(t *testing.T) {
	deadlines := make(chan bool, 1)
	b := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	b.publish = func(ctx context.Context, m broker.Message) error {
		_, ok := ctx.Deadline()
		deadlines <- ok
		return broker.ErrUnavailable
	}
	s := newServer(t, Config{APIToken: testToken, Broker: b, BrokerTimeout: time.Hour})
	if code, body := post(t, s, "/publish", testToken, `{"topic":"a","data":1}`); code != http.StatusServiceUnavailable {
		t.Fatalf("publish with the broker down: %d %v", code, body)
	}
	if !<-deadlines {
		t.Fatal("the broker's context had no deadline")
	}
}

// BenchmarkRESTPublish is a POST /publish through the gin engine to a
// topic with 10 local subscribers, without the network.
func BenchmarkRESTPublish(b *testing.B) {
	tower, err := New(Config{APIToken: "t", SendQueueSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tower.Shutdown(context.Background()) })
	for range 10 {
		tower.hub.subscribe(b.Context(), benchConn(b, tower), []string{"/room/1"})
	}
	r := gin.New()
	r.Use(tower.Middleware())
	body := `{"topic":"/room/1","data":{"ts":1732500000000000000,"seq":1,"p":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}`
	b.ReportAllocs()
	for range b.N {
		req := httptest.NewRequest("POST", "/publish", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}

// TestRESTBodyMeansOneThing: trailing data after the object is 400 (as
// json.Unmarshal says), a topic named twice is delivered once, and the
// topics of one publish are capped.
func TestRESTBodyMeansOneThing(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken})
	for _, body := range []string{
		`{"topic":"a","data":1} } not json`,
		`{"topic":"a","data":1} }`,
		`{"topic":"a","data":1}]`,
		`{"topic":"a","data":1}{}`,
		`{"topic":"a\u0062","data":1} ]`, // encoding/json's path
		`{"topic":"a\u0062","data":1} x`,
		`{"topic":"a\u0062","data":1} {"topic":"b","data":2}`,
	} {
		if code, answer := post(t, s, "/publish", testToken, body); code != http.StatusBadRequest || answer["error"] == "" {
			t.Errorf("%q: %d %v, want 400", body, code, answer)
		}
	}
	c := dial(t, s, "batch=1", nil)
	c.subscribe("a", "b")
	many := make([]string, 40)
	for i := range many {
		many[i] = `"` + []string{"b", "a"}[i%2] + `"`
	}
	for _, tc := range []struct{ body, topics string }{
		{`{"topic":"a","topics":["a","a"],"data":1}`, "a"},
		{`{"topic":"a\u0000","data":1}`, ""}, // refused: control character
		{`{"topics":["b","a","b","a"],"topic":"a","data":2}`, "a,b"},
		{`{"topics":[` + strings.Join(many, ",") + `],"data":3}`, "b,a"},
		{`{"topic":"\u0061","topics":["a"],"data":4}`, "a"},
	} {
		code, answer := post(t, s, "/publish", testToken, tc.body)
		if tc.topics == "" {
			if code != 400 {
				t.Errorf("%q: %d %v", tc.body, code, answer)
			}
			continue
		}
		got, _ := json.Marshal(answer["topics"])
		if code != 200 || strings.Join(strings.Split(strings.Trim(string(got), `[]`), ","), ",") != `"`+strings.ReplaceAll(tc.topics, ",", `","`)+`"` {
			t.Fatalf("%q: %d %v, want topics %s", tc.body, code, answer, tc.topics)
		}
		for range strings.Split(tc.topics, ",") {
			c.expect(TypePublish)
		}
	}
	c.quiet(200 * time.Millisecond)

	topics := make([]string, MaxPublishTopics+1)
	for i := range topics {
		topics[i] = `"t` + strconv.Itoa(i) + `"`
	}
	if code, answer := post(t, s, "/publish", testToken, `{"topics":[`+strings.Join(topics, ",")+`],"data":1}`); code != 400 || !strings.Contains(answer["error"].(string), "at most 1024") {
		t.Errorf("%d topics: %d %v", len(topics), code, answer)
	}
	if code, answer := post(t, s, "/publish", testToken, `{"topics":[`+strings.Join(topics[:MaxPublishTopics], ",")+`],"data":1}`); code != 200 {
		t.Errorf("%d topics: %d %v", MaxPublishTopics, code, answer)
	}
	if _, err := s.tower.PublishTopics(context.Background(), make([]string, MaxPublishTopics+1), 1); !errors.Is(err, ErrInvalidTopic) {
		t.Errorf("PublishTopics over the cap: %v", err)
	}
	in := []string{"a", "b", "a"}
	if _, err := s.tower.PublishTopics(context.Background(), in, 5); err != nil || strings.Join(in, ",") != "a,b,a" {
		t.Fatalf("PublishTopics: %v, the caller's slice is now %q", err, in)
	}
	c.expect(TypePublish)
	c.expect(TypePublish)
	c.quiet(200 * time.Millisecond)
}

// TestRESTPublishErrorStatus: the broker's refusals are 400, its
// unavailability 503.
func TestRESTPublishErrorStatus(t *testing.T) {
	var fail error
	b := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	b.publish = func(ctx context.Context, m broker.Message) error { return fail }
	s := newServer(t, Config{APIToken: testToken, Broker: b})
	for _, tc := range []struct {
		err  error
		code int
	}{
		{errors.New("topicsvc: topic longer than the service carries"), 400},
		{fmt.Errorf("%w: session lost", broker.ErrUnavailable), 503},
		{broker.ErrClosed, 503},
		{context.DeadlineExceeded, 503},
		{nil, 200},
	} {
		fail = tc.err
		code, answer := post(t, s, "/publish", testToken, `{"topic":"a","data":1}`)
		if code != tc.code || (tc.err != nil && !strings.Contains(answer["error"].(string), tc.err.Error())) {
			t.Errorf("broker error %v: %d %v, want %d with its message", tc.err, code, answer, tc.code)
		}
	}
}

// FuzzRESTPublish checks the meaning of any body POST /publish takes: it
// is one JSON object in valid UTF-8 with nothing after it (json.Unmarshal
// takes it), and each topic it names is published exactly once, in the
// order first named, with valid data.
func FuzzRESTPublish(f *testing.F) {
	for _, s := range []string{
		`{"topic":"a","data":1}`,
		`{"topic":"a","topics":["a","a"],"data":1}`,
		`{"topics":["b","a","b"],"data":{"x":"é"}}`,
		`{"topic":"a\u0062","topics":["ab"],"data":1}`,
		`{"topic":"a","data":1} } not json`,
		`{"topic":"a","data":1}]`,
		`{"topic":"a\u0062","data":1} ]`,
		`{"topic":"a","data":"` + "\xff" + `"}`,
		`{"topic":"\udc00","data":1}`,
		`{"TOPIC":"a","Data":1}`,
		`{"users":["42","43","42"],"data":{"x":1}}`,
		`{"users":["42"],"topic":"a","data":1}`,
		`{"users":[],"data":1}`,
		`{"users":["\udc00"],"data":1}`,
		`{"users":["a b"],"data":1} x`,
	} {
		f.Add([]byte(s))
	}
	var mu sync.Mutex
	var published []broker.Message
	b := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	b.publish = func(_ context.Context, m broker.Message) error {
		mu.Lock()
		published = append(published, m)
		mu.Unlock()
		return nil
	}
	tower, err := New(Config{APIToken: testToken, Broker: b})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tower.Shutdown(context.Background()) })
	r := gin.New()
	r.Use(tower.Middleware())
	f.Fuzz(func(t *testing.T, body []byte) {
		mu.Lock()
		published = published[:0]
		mu.Unlock()
		req := httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != 200 {
			if w.Code != 400 && w.Code != 413 {
				t.Fatalf("%q: %d %s", body, w.Code, w.Body)
			}
			return
		}
		var req2 struct {
			Topic  *string
			Topics []string
			Users  []string
			Data   json.RawMessage
		}
		if !utf8.Valid(body) || json.Unmarshal(body, &req2) != nil {
			t.Fatalf("%q: taken, but json.Unmarshal refuses it (or it is not UTF-8)", body)
		}
		var want []string
		if req2.Users != nil {
			// A publish to users: to each one's topic, once.
			if req2.Topic != nil || req2.Topics != nil {
				t.Fatalf("%q: users and topics taken together", body)
			}
			for _, u := range req2.Users {
				if !slices.Contains(want, UserTopic(u)) {
					want = append(want, UserTopic(u))
				}
			}
			req2.Topics = nil
		}
		var want2 []string
		if req2.Users != nil {
			want2, want = want, nil
		}
		if req2.Topic != nil {
			want = append(want, *req2.Topic)
		}
		for _, topic := range append(want, req2.Topics...) {
			if !slices.Contains(want, topic) {
				want = append(want, topic)
			}
		}
		var answer struct{ Topics, Users []string }
		json.Unmarshal(w.Body.Bytes(), &answer)
		mu.Lock()
		defer mu.Unlock()
		var got []string
		for _, m := range published {
			got = append(got, m.Topic)
			if !validData(m.Data) || !bytes.Equal(m.Data, req2.Data) {
				t.Fatalf("%q: published data %q", body, m.Data)
			}
		}
		if req2.Users != nil {
			var users []string
			for _, u := range answer.Users {
				users = append(users, UserTopic(u))
			}
			if !slices.Equal(got, want2) || !slices.Equal(users, want2) {
				t.Fatalf("%q: published to %q, answered users %q, want %q", body, got, answer.Users, want2)
			}
			return
		}
		if !slices.Equal(got, want) || !slices.Equal(answer.Topics, want) {
			t.Fatalf("%q: published to %q, answered %q, want each of %q once", body, got, answer.Topics, want)
		}
	})
}

// TestRESTRefusesCrossSite: a browser's publish from another site is 403
// whatever its credentials, unless Config.AllowedOrigins allows it; a
// body not declared JSON is 415 (what an HTML form sends); a backend's
// request, with neither Origin nor Sec-Fetch-Site, goes through.
func TestRESTRefusesCrossSite(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, AllowedOrigins: []string{"app.example.com"}})
	c := dial(t, s, "", nil)
	c.subscribe("a")
	host := strings.TrimPrefix(s.URL, "http://")
	for _, tc := range []struct {
		header map[string]string
		code   int
	}{
		{map[string]string{"Content-Type": "text/plain"}, 415},
		{map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{map[string]string{"Content-Type": "multipart/form-data; boundary=x"}, 415},
		{map[string]string{}, 415},
		{map[string]string{"Content-Type": "application/jsonx"}, 415},
		{map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403},
		{map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403},
		{map[string]string{"Content-Type": "application/json", "Origin": "null"}, 403},
		{map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403},
		{map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403},
		{map[string]string{"Content-Type": "application/json", "Origin": "http://sub." + host, "Sec-Fetch-Site": "same-site"}, 403},
		// what is allowed
		{map[string]string{"Content-Type": "application/json"}, 200},
		{map[string]string{"Content-Type": "Application/JSON; charset=utf-8"}, 200},
		{map[string]string{"Content-Type": "application/json", "Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"}, 200},
		{map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "none"}, 200},
		{map[string]string{"Content-Type": "application/json", "Origin": "https://app.example.com", "Sec-Fetch-Site": "cross-site"}, 200},
	} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/publish", strings.NewReader(`{"topic":"a","data":1}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		code, answer := do(t, req)
		if code != tc.code || (code != 200 && answer["error"] == "") {
			t.Errorf("%v: %d %v, want %d", tc.header, code, answer, tc.code)
		}
		if code == 200 {
			c.expect(TypePublish)
		}
	}
	c.quiet(200 * time.Millisecond)
}
