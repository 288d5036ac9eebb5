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

func TestTopicsPagination(t *testing.T) {
	const n = 5000
	s, other := manyTopics(t, n, Config{APIToken: testToken})
	// Two local subscribers make "busy" the busiest topic, with the other
	// node's counts added.
	for range 2 {
		dial(t, s, "", nil).subscribe("busy")
	}
	other.Subscribe(context.Background(), "busy")
	other.SetCount("busy", 100)

	var all []broker.TopicCount
	offset := 0
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("more pages than topics")
		}
		var page TopicsPage
		if code := getAuth(t, s, fmt.Sprintf("/topics?limit=1000&offset=%d", offset), testToken, &page); code != 200 {
			t.Fatalf("page at %d: %d", offset, code)
		}
		if page.Total != n+1 || page.Offset != offset || page.Limit != 1000 || page.Sort != "count" || page.Scope != "cluster" {
			t.Fatalf("page at %d: total %d offset %d limit %d sort %q scope %q", offset, page.Total, page.Offset, page.Limit, page.Sort, page.Scope)
		}
		all = append(all, page.Topics...)
		if page.NextOffset == nil {
			break
		}
		if *page.NextOffset != offset+len(page.Topics) {
			t.Fatalf("nextOffset %d after %d topics from %d", *page.NextOffset, len(page.Topics), offset)
		}
		offset = *page.NextOffset
	}
	if len(all) != n+1 {
		t.Fatalf("paged through %d topics, want %d", len(all), n+1)
	}
	if all[0] != (broker.TopicCount{Topic: "busy", Count: 102}) {
		t.Fatalf("busiest topic %+v, want busy with 102 (100 elsewhere, 2 here)", all[0])
	}
	seen := map[string]bool{}
	for i, tc := range all {
		if seen[tc.Topic] {
			t.Fatalf("topic %q listed twice", tc.Topic)
		}
		seen[tc.Topic] = true
		if i > 0 {
			prev := all[i-1]
			if prev.Count < tc.Count || prev.Count == tc.Count && prev.Topic > tc.Topic {
				t.Fatalf("order at %d: %+v before %+v", i, prev, tc)
			}
		}
		var k int
		if _, err := fmt.Sscanf(tc.Topic, "t%05d", &k); tc.Topic != "busy" && (err != nil || tc.Count != k%37+1) {
			t.Fatalf("topic %+v, want count %d", tc, k%37+1)
		}
	}

	var byName TopicsPage
	getAuth(t, s, "/topics?sort=name&limit=3&offset=4999", testToken, &byName)
	want := []broker.TopicCount{{Topic: "t04999", Count: 4999%37 + 1}}
	if byName.Total != n+1 || byName.NextOffset != nil || !slices.Equal(byName.Topics, []broker.TopicCount{{Topic: "t04998", Count: 4998%37 + 1}, want[0]}) {
		t.Fatalf("by name from 4999: %+v", byName)
	}
	byName = TopicsPage{}
	getAuth(t, s, "/topics?sort=name&limit=2", testToken, &byName)
	if !slices.Equal(byName.Topics, []broker.TopicCount{{Topic: "busy", Count: 102}, {Topic: "t00000", Count: 1}}) || *byName.NextOffset != 2 {
		t.Fatalf("first by name: %+v", byName)
	}

	// Filter: t012xx are 100 topics; the busiest of them have 37 (i%37 == 36).
	var found TopicsPage
	getAuth(t, s, "/topics?q=t012&limit=5", testToken, &found)
	if found.Total != 100 || len(found.Topics) != 5 || found.Query != "t012" || found.Topics[0].Count != 37 {
		t.Fatalf("q=t012: %+v", found)
	}
	for _, tc := range found.Topics {
		if !strings.Contains(tc.Topic, "t012") {
			t.Fatalf("q=t012 found %q", tc.Topic)
		}
	}
	found = TopicsPage{}
	getAuth(t, s, "/topics?q=nothing-like-it", testToken, &found)
	if found.Total != 0 || found.Topics == nil || len(found.Topics) != 0 {
		t.Fatalf("no match: %+v", found)
	}
	found = TopicsPage{}
	getAuth(t, s, "/topics?offset=99999", testToken, &found)
	if found.Total != n+1 || len(found.Topics) != 0 || found.NextOffset != nil {
		t.Fatalf("past the end: %+v", found)
	}
	getAuth(t, s, "/topics?limit=100000", testToken, &found)
	if found.Limit != 1000 || len(found.Topics) != 1000 {
		t.Fatalf("limit is not capped at 1000: limit %d, %d topics", found.Limit, len(found.Topics))
	}
	for _, q := range []string{"limit=0", "limit=x", "offset=-1", "sort=size"} {
		var body map[string]any
		if code := getAuth(t, s, "/topics?"+q, testToken, &body); code != http.StatusBadRequest || body["error"] == "" {
			t.Errorf("?%s: %d %v", q, code, body)
		}
	}

	// A listing is reused for at most a second: a new topic shows up.
	dial(t, s, "", nil).subscribe("newcomer")
	eventually(t, func() error {
		var p TopicsPage
		getAuth(t, s, "/topics?q=newcomer", testToken, &p)
		if p.Total != 1 || p.Topics[0].Count != 1 {
			return fmt.Errorf("newcomer not listed: %+v", p)
		}
		return nil
	})
}

// TestTopicsWithoutLister: a broker that cannot list topics gets this
// node's own.
func TestTopicsWithoutLister(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken, Broker: plainBroker{topicsvc.NewEmbedded()}})
	a, b := dial(t, s, "", nil), dial(t, s, "", nil)
	a.subscribe("x", "y")
	b.subscribe("x")
	var p TopicsPage
	getAuth(t, s, "/topics", testToken, &p)
	if p.Scope != "node" || !slices.Equal(p.Topics, []broker.TopicCount{{Topic: "x", Count: 2}, {Topic: "y", Count: 1}}) {
		t.Fatalf("local listing: %+v", p)
	}
	var st OpsStats
	getAuth(t, s, "/stats", testToken, &st)
	if st.Nodes != nil || st.Topics.Scope != "node" || st.Topics.Total != 2 {
		t.Fatalf("stats without listers: nodes %v topics %+v", st.Nodes, st.Topics)
	}
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
	if len(n.LatencyBuckets) == 0 || len(n.LatencyCounts) != len(n.LatencyBuckets) {
		t.Errorf("latency histogram: %v %v", n.LatencyBuckets, n.LatencyCounts)
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
	eventually(t, func() error {
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

// BenchmarkTopicsPage pages through 100,000 topics: a cached listing, a
// search over all of them, and the first request after the listing
// expired (list, sort).
func BenchmarkTopicsPage(b *testing.B) {
	core := topicsvc.NewCore()
	other := core.Embedded()
	other.Start(func(broker.Message) {})
	defer other.Close()
	for i := range 100_000 {
		topic := fmt.Sprintf("/room/%06d", i)
		other.Subscribe(context.Background(), topic)
		other.SetCount(topic, i%1000+1)
	}
	tower, err := New(Config{Broker: core.Embedded()})
	if err != nil {
		b.Fatal(err)
	}
	defer tower.Shutdown(context.Background())
	ctx := context.Background()
	// A listing that stays fresh for the cached cases.
	warm := func() {
		l, _ := tower.ops.topics(ctx)
		l.at = time.Now().Add(time.Hour)
	}
	b.Run("cached", func(b *testing.B) {
		warm()
		for b.Loop() {
			l, _ := tower.ops.topics(ctx)
			l.page(topicsQuery{limit: 100, sort: "count"})
		}
	})
	b.Run("search", func(b *testing.B) {
		warm()
		for b.Loop() {
			l, _ := tower.ops.topics(ctx)
			l.page(topicsQuery{limit: 20, sort: "count", q: "/room/0421"})
		}
	})
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			tower.ops.cmu.Lock()
			tower.ops.cached = nil
			tower.ops.cmu.Unlock()
			l, _ := tower.ops.topics(ctx)
			l.page(topicsQuery{limit: 100, sort: "count"})
		}
	})
}
