package firetower

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc"
)

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
	brokertest.Eventually(t, 5*time.Second, func() error {
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
			l.page(TopicsQuery{Limit: 100, Sort: "count"})
		}
	})
	b.Run("search", func(b *testing.B) {
		warm()
		for b.Loop() {
			l, _ := tower.ops.topics(ctx)
			l.page(TopicsQuery{Limit: 20, Sort: "count", Query: "/room/0421"})
		}
	})
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			tower.ops.listing.mu.Lock()
			tower.ops.listing.cached = nil
			tower.ops.listing.mu.Unlock()
			l, _ := tower.ops.topics(ctx)
			l.page(TopicsQuery{Limit: 100, Sort: "count"})
		}
	})
}

// TestTopicsFromGo: Tower.Topics pages as GET /topics does, and refuses
// a query it cannot answer.
func TestTopicsFromGo(t *testing.T) {
	s := newServer(t, Config{})
	a, b := dial(t, s, "", nil), dial(t, s, "", nil)
	a.subscribe("room", "solo")
	b.subscribe("room")
	page, err := s.tower.Topics(t.Context(), TopicsQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if page.Limit != 100 || page.Sort != "count" || page.Total != 2 ||
		!slices.Equal(page.Topics, []broker.TopicCount{{Topic: "room", Count: 2}, {Topic: "solo", Count: 1}}) {
		t.Errorf("Topics(zero query) = %+v", page)
	}
	if page, err := s.tower.Topics(t.Context(), TopicsQuery{Limit: 1, Sort: "name", Query: "o"}); err != nil || page.Total != 2 ||
		!slices.Equal(page.Topics, []broker.TopicCount{{Topic: "room", Count: 2}}) || page.NextOffset == nil || *page.NextOffset != 1 {
		t.Errorf("Topics(limit 1 by name) = %+v, %v", page, err)
	}
	for _, q := range []TopicsQuery{{Limit: -1}, {Offset: -1}, {Sort: "size"}} {
		if _, err := s.tower.Topics(t.Context(), q); !errors.Is(err, ErrInvalidQuery) {
			t.Errorf("Topics(%+v): %v, want ErrInvalidQuery", q, err)
		}
	}
}
