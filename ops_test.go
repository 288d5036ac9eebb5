package firetower

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
)

// getAuth sends an authorized GET and decodes the JSON answer into out.
func getAuth(t testing.TB, s *server, path, token string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+s.tower.cfg.Prefix+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET %s: %d with Content-Type %q: %q", path, resp.StatusCode, ct, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: answer %d is not the expected JSON: %v: %q", path, resp.StatusCode, err, b)
	}
	return resp.StatusCode
}

func TestOpsAuthorization(t *testing.T) {
	paths := []string{"/topics", "/stats", "/dashboard/events"}
	none := newServer(t, Config{Dashboard: true})
	for _, p := range paths {
		var body map[string]any
		if code := getAuth(t, none, p, "anything", &body); code != http.StatusForbidden || !strings.Contains(fmt.Sprint(body["error"]), "APIToken") {
			t.Errorf("%s with no token configured: %d %v", p, code, body)
		}
	}
	s := newServer(t, Config{APIToken: testToken, Prefix: "/rt"})
	for _, p := range paths[:2] {
		for _, tok := range []string{"", "wrong", testToken + "x"} {
			var body map[string]any
			if code := getAuth(t, s, p, tok, &body); code != http.StatusUnauthorized || body["error"] == "" {
				t.Errorf("%s with token %q: %d %v", p, tok, code, body)
			}
		}
		var body map[string]any
		if code := getAuth(t, s, p, testToken, &body); code != http.StatusOK {
			t.Errorf("%s with the token: %d %v", p, code, body)
		}
	}
	// The dashboard is off by default: its paths are the app's.
	for _, p := range []string{"/rt/dashboard", "/rt/dashboard/events", "/rt/dashboard/dashboard.js"} {
		resp, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without Config.Dashboard: %d, want the app's 404", p, resp.StatusCode)
		}
	}
	hook := newServer(t, Config{Dashboard: true, AuthorizeREST: func(c *gin.Context) error {
		if c.GetHeader("X-Key") != "k" {
			return errors.New("missing X-Key")
		}
		return nil
	}})
	for _, p := range paths[:2] {
		req, _ := http.NewRequest(http.MethodGet, hook.URL+p, nil)
		if code, body := do(t, req); code != http.StatusUnauthorized || body["error"] != "missing X-Key" {
			t.Errorf("%s without X-Key: %d %v", p, code, body)
		}
		req.Header.Set("X-Key", "k")
		if code, body := do(t, req); code != http.StatusOK {
			t.Errorf("%s with X-Key: %d %v", p, code, body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/rt/stats", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if code, _ := do(t, req); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /stats: %d", code)
	}
}

// manyTopics starts a Tower on a Core shared with a second embedded node
// that counts n topics: topic i (t00000...) has i%37+1 subscribers.
func manyTopics(t *testing.T, n int, cfg Config) (*server, *topicsvc.Embedded) {
	t.Helper()
	core := topicsvc.NewCore()
	other := core.Embedded()
	if err := other.Start(func(broker.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	ctx := context.Background()
	for i := range n {
		topic := fmt.Sprintf("t%05d", i)
		if err := other.Subscribe(ctx, topic); err != nil {
			t.Fatal(err)
		}
		other.SetCount(topic, i%37+1)
	}
	cfg.Broker = core.Embedded()
	return newServer(t, cfg), other
}

// plainBroker hides every optional interface of the broker it wraps.
type plainBroker struct{ broker.Broker }

func TestStatsShape(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, ReadHandler: func(*Conn, *Frame) bool { return true }})
	a, b := dial(t, s, "", nil), dial(t, s, "", nil)
	a.subscribe("room", "solo")
	b.subscribe("room")
	a.send(`{"type":"publish","topic":"room","data":{"n":1}}`)
	a.expect(TypePublish)
	b.expect(TypePublish)

	var raw map[string]json.RawMessage
	getAuth(t, s, "/stats", testToken, &raw)
	for _, k := range []string{"time", "startedAt", "node", "rates", "history", "topics", "nodes"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("/stats has no %q: %s", k, raw)
		}
	}
	var st OpsStats
	getAuth(t, s, "/stats", testToken, &st)
	n := st.Node
	if n.Connections != 2 || n.Subscriptions != 3 || n.Topics != 2 || n.Published != 1 || n.Delivered != 2 || n.Disconnects["client"] != 0 {
		t.Errorf("node figures: %+v", n)
	}
	if len(n.Latency.Buckets) == 0 || len(n.Latency.Counts) != len(n.Latency.Buckets) {
		t.Errorf("latency histogram: %+v", n.Latency)
	}
	if !slices.Equal(st.Topics.Top, []broker.TopicCount{{Topic: "room", Count: 2}, {Topic: "solo", Count: 1}}) || st.Topics.Total != 2 || st.Topics.Scope != "cluster" {
		t.Errorf("topics: %+v", st.Topics)
	}
	if len(st.Nodes) != 1 || st.Nodes[0].Connections != 3 || st.Nodes[0].Topics != 2 {
		t.Errorf("nodes: %+v", st.Nodes)
	}
	if age := st.Time - st.Nodes[0].LastHeartbeat; age < 0 || age > 5000 {
		t.Errorf("node heartbeat %d ms before the answer", age)
	}
	if st.Time < st.StartedAt || st.History.Step != 1000 || len(st.History.Connections) == 0 || st.History.Connections[len(st.History.Connections)-1] > 2 {
		t.Errorf("history: %+v (time %d, started %d)", st.History, st.Time, st.StartedAt)
	}
	// The sampler runs since the first /stats: within a few seconds the
	// history shows both connections and rates exist.
	brokertest.Eventually(t, 5*time.Second, func() error {
		var st OpsStats
		getAuth(t, s, "/stats", testToken, &st)
		h := st.History
		if len(h.Connections) < 2 || h.Connections[len(h.Connections)-1] != 2 || len(h.Published) != len(h.Connections)-1 {
			return fmt.Errorf("history: %+v", h)
		}
		return nil
	})
}

// readEvent reads one server-sent event's data.
func readEvent(t *testing.T, r *bufio.Reader) OpsStats {
	t.Helper()
	var data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the feed: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" && data != "" {
			break
		}
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			data += d
		}
	}
	var st OpsStats
	if err := json.Unmarshal([]byte(data), &st); err != nil {
		t.Fatalf("event is not the stats JSON: %v: %q", err, data)
	}
	return st
}

func TestDashboard(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, Dashboard: true, Prefix: "/rt"})
	for path, ct := range map[string]string{"/rt/dashboard": "text/html", "/rt/dashboard/dashboard.js": "text/javascript", "/rt/dashboard/dashboard.css": "text/css"} {
		resp, err := http.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) || len(b) == 0 {
			t.Errorf("GET %s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(s.URL + "/rt/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/rt/dashboard" {
		t.Errorf("GET /rt/dashboard/: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, p := range []string{"/rt/dashboard/index.html", "/rt/dashboard/nope.js"} {
		resp, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, s.URL+"/rt/dashboard/events", nil)
	if code, body := do(t, req); code != http.StatusUnauthorized {
		t.Fatalf("feed without the token: %d %v", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/rt/dashboard/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("feed: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := bufio.NewReader(resp.Body)
	first := readEvent(t, r)
	if first.Node.Connections != 0 {
		t.Fatalf("first event: %+v", first.Node)
	}
	c := dial(t, s, "", nil)
	c.subscribe("/chat/world")
	// One event a second, from a topic listing up to a second old.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev := readEvent(t, r)
		if ev.Time < first.Time {
			t.Fatalf("event time went back: %d after %d", ev.Time, first.Time)
		}
		if ev.Node.Connections == 1 && len(ev.Topics.Top) == 1 && ev.Topics.Top[0].Topic == "/chat/world" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed did not show the connection within 10 s: %+v", ev)
		}
	}

	// Shutdown ends the feed.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := s.tower.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the feed did not end within 5 s of Shutdown")
	}
}

// TestStatsOnIdleNode: a node with no topics and no connections answers
// /stats with empty lists, never null, so that pages can iterate them.
func TestStatsOnIdleNode(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken})
	code, body := getBody(t, s, http.MethodGet, "/stats")
	if code != 200 {
		t.Fatalf("GET /stats: %d %s", code, body)
	}
	for _, want := range []string{`"top":[]`, `"connections":[`, `"published":[]`, `"delivered":[]`} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /stats on an idle node lacks %s: %s", want, body)
		}
	}
	if strings.Contains(body, "null") {
		t.Errorf("GET /stats on an idle node has a null: %s", body)
	}
	// The same from Go.
	st := s.tower.OpsStats(t.Context())
	if st.Topics.Top == nil || len(st.Topics.Top) != 0 || st.Topics.Total != 0 {
		t.Errorf("OpsStats().Topics = %+v", st.Topics)
	}
}
