package topicsvc

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// The Core's own stream tests: what the conformance suite cannot see from
// outside (the memory cap, the figures, the sweep), on a Core whose clock
// the test moves.

// testClock is a Core clock that only moves when the test says.
type testClock struct{ ns atomic.Int64 }

func (k *testClock) now() time.Time          { return time.Unix(0, k.ns.Load()) }
func (k *testClock) advance(d time.Duration) { k.ns.Add(int64(d)) }
func newClockedCore() (*Core, *testClock) {
	c := NewCore()
	k := &testClock{}
	k.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	c.streams.nowForTest = k.now
	return c, k
}

// settle waits for a background sweep that a publish started to end, so
// that the figures the test reads next are final.
func settle(t *testing.T, c *Core) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.streams.sweeping.Load(); {
		if time.Now().After(deadline) {
			t.Fatal("a background sweep did not end within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// data returns a message body of exactly n bytes.
func data(n int) []byte { return []byte(strings.Repeat("x", n)) }

func pub(c *Core, topic, id string, body []byte, opts broker.StreamOptions) broker.StreamPosition {
	return c.PublishStream(broker.Message{Topic: topic, ID: id, Data: body}, opts)
}

// window checks that the stream of topic holds exactly the offsets
// first..last of epoch, in order, and returns its messages.
func window(t *testing.T, c *Core, topic, epoch string, first, last uint64) []broker.Message {
	t.Helper()
	r := c.History(topic, broker.HistoryQuery{Limit: math.MaxInt32, Options: long})
	if r.Epoch != epoch || r.Offset != last {
		t.Fatalf("%s: epoch %q top %d, want %q top %d", topic, r.Epoch, r.Offset, epoch, last)
	}
	want := int(last - first + 1)
	if first > last {
		want = 0
	}
	if len(r.Messages) != want {
		t.Fatalf("%s: %d messages (%d..%d), want %d..%d", topic, len(r.Messages), firstOffset(r.Messages), r.Offset, first, last)
	}
	for i, m := range r.Messages {
		if m.Offset != first+uint64(i) || m.Epoch != epoch || m.Topic != topic {
			t.Fatalf("%s: message %d is %+v, want offset %d in %q", topic, i, m, first+uint64(i), epoch)
		}
	}
	return r.Messages
}

func firstOffset(ms []broker.Message) uint64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[0].Offset
}

var long = broker.StreamOptions{Size: 1000, TTL: time.Hour}

// The cost the memory cap counts for one message of the tests: a 2-byte
// id and 100 bytes of data.
const unit = 2 + 100 + entryOverhead

func TestStreamCapEvictsLeastRecentlyPublished(t *testing.T) {
	c, _ := newClockedCore()
	c.SetMaxStreamBytes(10 * unit)
	a := pub(c, "a", "a1", data(100), long)
	pub(c, "a", "a2", data(100), long)
	b := pub(c, "b", "b1", data(100), long)
	pub(c, "b", "b2", data(100), long)
	pub(c, "c", "c1", data(100), long)
	pub(c, "c", "c2", data(100), long)
	pub(c, "a", "a3", data(100), long) // a is now the most recent, b the least
	pub(c, "c", "c3", data(100), long)
	pub(c, "d", "d1", data(100), long)
	pub(c, "d", "d2", data(100), long) // ten messages: at the cap, not over it
	settle(t, c)
	if s := c.StreamStats(); s.Bytes != 10*unit || s.Evicted != 0 || s.Streams != 4 {
		t.Fatalf("at the cap: %+v, want 10 units in 4 streams, none evicted", s)
	}
	d := pub(c, "d", "d3", data(100), long) // one over: b goes, whole
	settle(t, c)
	s := c.StreamStats()
	if s.Evicted != 1 || s.Streams != 3 || s.Messages != 9 || s.Bytes != 9*unit || s.Trimmed != 0 {
		t.Fatalf("after one message over the cap: %+v, want b evicted whole: 3 streams, 9 messages", s)
	}
	window(t, c, "a", a.Epoch, 1, 3)
	window(t, c, "d", d.Epoch, 1, 3)
	// b was forgotten: a query starts it again, in a new epoch, empty.
	r := c.History("b", broker.HistoryQuery{Limit: 10, Options: long})
	if r.Epoch == b.Epoch || r.Offset != 0 || len(r.Messages) != 0 {
		t.Fatalf("the evicted stream reads as %+v, want a new epoch at 0 (was %q)", r, b.Epoch)
	}
	// Publishes went a3, c3, d1..d3: a is now the least recently
	// published, so it goes next, before c.
	pub(c, "d", "d4", data(100), long)
	pub(c, "d", "d5", data(100), long)
	settle(t, c)
	if r := c.History("a", broker.HistoryQuery{Limit: 10, Options: long}); r.Epoch == a.Epoch {
		t.Fatalf("a, the least recently published, was kept and c evicted: %+v", c.StreamStats())
	}
	if s := c.StreamStats(); s.Evicted != 2 || s.Bytes > 10*unit {
		t.Fatalf("after a second eviction: %+v", s)
	}
}

func TestStreamOverCapLosesOldest(t *testing.T) {
	c, _ := newClockedCore()
	c.SetMaxStreamBytes(5 * unit)
	var p broker.StreamPosition
	for i := range 12 {
		p = pub(c, "alone", fmt.Sprintf("%02d", i), data(100), long)
	}
	settle(t, c)
	s := c.StreamStats()
	if s.Streams != 1 || s.Messages != 5 || s.Bytes != 5*unit || s.Trimmed != 7 || s.Evicted != 0 {
		t.Fatalf("one stream over the cap: %+v, want it trimmed to its 5 newest (7 trimmed), not evicted", s)
	}
	if p.Offset != 12 {
		t.Fatalf("the 12th publish got offset %d", p.Offset)
	}
	ms := window(t, c, "alone", p.Epoch, 8, 12)
	if ms[0].ID != "07" || ms[4].ID != "11" {
		t.Fatalf("kept %s..%s, want 07..11", ms[0].ID, ms[4].ID)
	}
	// A single message larger than the cap is kept alone: the stream
	// never drops its newest message.
	huge := pub(c, "alone", "huge", data(10*unit), long)
	settle(t, c)
	if s := c.StreamStats(); s.Messages != 1 || s.Trimmed != 12 {
		t.Fatalf("after a message over the cap by itself: %+v, want it alone", s)
	}
	if ms := window(t, c, "alone", p.Epoch, 13, 13); ms[0].ID != "huge" || huge.Offset != 13 {
		t.Fatalf("kept %+v", ms)
	}
}

func TestStreamStats(t *testing.T) {
	c, k := newClockedCore()
	if s := c.StreamStats(); s != (StreamStats{MaxBytes: DefaultMaxStreamBytes}) {
		t.Fatalf("a new Core: %+v", s)
	}
	short := broker.StreamOptions{Size: 3, TTL: time.Second}
	for i := range 5 {
		pub(c, "short", fmt.Sprint(i), data(10), short) // the size keeps 3
	}
	pub(c, "long", "id", data(1000), long)
	c.History("read-only", broker.HistoryQuery{Options: short}) // an empty stream
	settle(t, c)
	want := StreamStats{
		Streams: 3, Messages: 4, MaxBytes: DefaultMaxStreamBytes,
		Bytes: 3*(1+10+entryOverhead) + (2 + 1000 + entryOverhead),
	}
	if s := c.StreamStats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	// Past the short TTL, the next look at "short" forgets it and the
	// empty stream: expired, not evicted.
	k.advance(2 * time.Second)
	r := c.History("short", broker.HistoryQuery{Limit: 10, Options: short})
	if len(r.Messages) != 0 || r.Offset != 0 {
		t.Fatalf("history after the TTL: %+v", r)
	}
	c.SweepStreams()
	want = StreamStats{
		Streams: 2, Messages: 1, MaxBytes: DefaultMaxStreamBytes,
		Bytes: 2 + 1000 + entryOverhead, Expired: 2,
	}
	if s := c.StreamStats(); s != want {
		t.Fatalf("after the TTL: %+v, want %+v", s, want)
	}
	c.SetMaxStreamBytes(1 << 20)
	c.SetMaxStreamBytes(0) // refused: the cap stays
	c.SetMaxStreamBytes(-1)
	if s := c.StreamStats(); s.MaxBytes != 1<<20 {
		t.Fatalf("cap %d after SetMaxStreamBytes(1 MiB, 0, -1)", s.MaxBytes)
	}
}

func TestStreamMessagesExpireOneByOne(t *testing.T) {
	c, k := newClockedCore()
	opts := broker.StreamOptions{Size: 100, TTL: 10 * time.Second}
	var p broker.StreamPosition
	for i := range 4 {
		p = pub(c, "aging", fmt.Sprint(i), data(1), opts)
		k.advance(3 * time.Second)
	}
	// Published at 0, 3, 6 and 9 s; now 12 s: the first is 12 s old.
	window(t, c, "aging", p.Epoch, 2, 4)
	k.advance(4 * time.Second) // 16 s: the one of 6 s is 10 s old, still kept
	window(t, c, "aging", p.Epoch, 3, 4)
	if s := c.StreamStats(); s.Messages != 2 || s.Expired != 0 || s.Streams != 1 {
		t.Fatalf("stats %+v, want 2 messages of a stream that is still alive", s)
	}
}

func TestSweepStreamsForgetsIdleStreams(t *testing.T) {
	c, k := newClockedCore()
	short := broker.StreamOptions{Size: 10, TTL: time.Second}
	idle := pub(c, "idle", "1", data(10), short)
	pub(c, "busy", "1", data(10), short)
	kept := pub(c, "kept", "1", data(10), long)
	settle(t, c)
	k.advance(800 * time.Millisecond)
	pub(c, "busy", "2", data(10), short)
	k.advance(800 * time.Millisecond) // idle: 1.6 s without a publish; busy: 0.8 s
	c.SweepStreams()
	s := c.StreamStats()
	if s.Streams != 2 || s.Expired != 1 || s.Messages != 3 {
		t.Fatalf("after the sweep: %+v, want idle forgotten, busy (2 messages) and kept (1) there", s)
	}
	if s.Bytes != 3*(1+10+entryOverhead) {
		t.Fatalf("bytes %d after the sweep, want those of 3 messages", s.Bytes)
	}
	window(t, c, "kept", kept.Epoch, 1, 1)
	// What was idle starts again in a new epoch.
	if p := pub(c, "idle", "2", data(10), short); p.Epoch == idle.Epoch || p.Offset != 1 {
		t.Fatalf("the swept stream goes on at %d in %q (was %q)", p.Offset, p.Epoch, idle.Epoch)
	}
	settle(t, c)
	// A publish sweeps by itself, at most once per sweepEvery.
	k.advance(time.Hour + time.Second)
	pub(c, "other", "1", data(10), short)
	settle(t, c)
	if s := c.StreamStats(); s.Streams != 1 || s.Expired != 4 {
		t.Fatalf("after a publish an hour later: %+v, want only the new stream left", s)
	}
}

func TestNewCoreNewEpochs(t *testing.T) {
	epochs := map[string]bool{}
	for range 20 {
		c := NewCore()
		p := pub(c, "same", "1", data(1), long)
		if p.Offset != 1 || p.Epoch == "" {
			t.Fatalf("a new Core's first publish: %+v", p)
		}
		if epochs[p.Epoch] {
			t.Fatalf("epoch %q given by two Cores to the same topic", p.Epoch)
		}
		epochs[p.Epoch] = true
	}
	// Within one Core, topics have epochs of their own too.
	c := NewCore()
	if a, b := pub(c, "a", "1", data(1), long), pub(c, "b", "1", data(1), long); a.Epoch == b.Epoch {
		t.Fatalf("topics a and b share epoch %q", a.Epoch)
	}
}

func TestStreamOptionsChange(t *testing.T) {
	c, k := newClockedCore()
	ten := broker.StreamOptions{Size: 10, TTL: time.Hour}
	var p broker.StreamPosition
	for i := range 10 {
		p = pub(c, "resized", fmt.Sprint(i+1), data(1), ten)
	}
	window(t, c, "resized", p.Epoch, 1, 10)
	// Shrinking keeps the newest messages, and the offsets go on.
	five := broker.StreamOptions{Size: 5, TTL: time.Hour}
	p = pub(c, "resized", "11", data(1), five)
	if p.Offset != 11 {
		t.Fatalf("the publish that shrank the stream got offset %d", p.Offset)
	}
	ms := window(t, c, "resized", p.Epoch, 7, 11)
	if ms[0].ID != "7" || ms[4].ID != "11" {
		t.Fatalf("kept %s..%s after shrinking, want 7..11", ms[0].ID, ms[4].ID)
	}
	// ids "7".."9" are 1 byte, "10" and "11" 2 bytes.
	if s := c.StreamStats(); s.Messages != 5 || s.Bytes != 3*(1+1+entryOverhead)+2*(2+1+entryOverhead) {
		t.Fatalf("stats after shrinking: %+v", s)
	}
	// Growing keeps them all, and makes room for more.
	big := broker.StreamOptions{Size: 50, TTL: time.Hour}
	for i := 12; i <= 40; i++ {
		p = pub(c, "resized", fmt.Sprint(i), data(1), big)
	}
	ms = window(t, c, "resized", p.Epoch, 7, 40)
	if ms[0].ID != "7" || ms[len(ms)-1].ID != "40" {
		t.Fatalf("kept %s..%s after growing, want 7..40", ms[0].ID, ms[len(ms)-1].ID)
	}
	// Size 1, then back: one message survives, the epoch stays.
	pub(c, "resized", "41", data(1), broker.StreamOptions{Size: 1, TTL: time.Hour})
	window(t, c, "resized", p.Epoch, 41, 41)
	p = pub(c, "resized", "42", data(1), ten)
	window(t, c, "resized", p.Epoch, 41, 42)
	// A shorter TTL applies to what is kept at once.
	k.advance(time.Minute)
	p = pub(c, "resized", "43", data(1), broker.StreamOptions{Size: 10, TTL: 30 * time.Second})
	window(t, c, "resized", p.Epoch, 43, 43)
	// Nonsense options are read as the smallest stream: one message for
	// a millisecond.
	p = pub(c, "tiny", "1", data(1), broker.StreamOptions{Size: -5, TTL: -time.Hour})
	pub(c, "tiny", "2", data(1), broker.StreamOptions{})
	window(t, c, "tiny", p.Epoch, 2, 2)
}

func TestStreamHistoryQueries(t *testing.T) {
	c, _ := newClockedCore()
	var p broker.StreamPosition
	for i := range 20 {
		p = pub(c, "q", fmt.Sprint(i+1), data(1), broker.StreamOptions{Size: 10, TTL: time.Hour})
	}
	since := func(off uint64, limit int) broker.HistoryResult {
		return c.History("q", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: p.Epoch, Offset: off}, Limit: limit})
	}
	// Limits that would overflow an int when added to the start are
	// read as "all of them".
	for _, limit := range []int{math.MaxInt, math.MaxInt - 1, math.MaxInt32} {
		if r := since(15, limit); len(r.Messages) != 5 || r.Messages[0].Offset != 16 {
			t.Fatalf("since 15, limit %d: %d messages from %d", limit, len(r.Messages), firstOffset(r.Messages))
		}
		if r := c.History("q", broker.HistoryQuery{Limit: limit}); len(r.Messages) != 10 || r.Messages[0].Offset != 11 {
			t.Fatalf("newest, limit %d: %d messages from %d", limit, len(r.Messages), firstOffset(r.Messages))
		}
	}
	for _, tc := range []struct {
		since       uint64
		limit       int
		first, n    uint64
		description string
	}{
		{0, 100, 11, 10, "since 0: the whole window, after the gap"},
		{10, 100, 11, 10, "since the offset just before the window"},
		{11, 3, 12, 3, "inside the window, limited"},
		{19, 100, 20, 1, "the last one"},
		{20, 100, 0, 0, "since the top"},
		{25, 100, 0, 0, "since beyond the top"},
		{11, 0, 0, 0, "limit 0: the position only"},
		{11, -3, 0, 0, "a negative limit: the position only"},
	} {
		r := since(tc.since, tc.limit)
		if uint64(len(r.Messages)) != tc.n || firstOffset(r.Messages) != tc.first || r.Offset != 20 || r.Epoch != p.Epoch {
			t.Errorf("%s: %d messages from %d, top %d; want %d from %d, top 20", tc.description, len(r.Messages), firstOffset(r.Messages), r.Offset, tc.n, tc.first)
		}
	}
	if r := c.History("q", broker.HistoryQuery{Limit: 4}); len(r.Messages) != 4 || r.Messages[0].Offset != 17 {
		t.Fatalf("the newest 4: %d from %d", len(r.Messages), firstOffset(r.Messages))
	}
}

// TestStreamCapUnderConcurrentPublishers publishes to many topics from
// several goroutines under a small cap, then checks that the figures add
// up to what the streams hold and that the cap holds once they are done.
func TestStreamCapUnderConcurrentPublishers(t *testing.T) {
	c := NewCore()
	const capBytes = 40 * unit
	c.SetMaxStreamBytes(capBytes)
	const workers, each, topics = 4, 2000, 50
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				topic := fmt.Sprint("t", (w*7+i)%topics)
				pub(c, topic, "id", data(100), long)
				if i%50 == 0 {
					c.History(topic, broker.HistoryQuery{Limit: 5, Options: long})
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	settle(t, c)
	s := c.StreamStats()
	if s.Bytes > capBytes {
		t.Fatalf("%d bytes held once the publishers are done, the cap is %d", s.Bytes, capBytes)
	}
	var streams, messages, bytes int64
	for i := range c.streams.sshards {
		ss := &c.streams.sshards[i]
		ss.mu.Lock()
		for _, st := range ss.m {
			st.mu.Lock()
			streams++
			messages += int64(st.n)
			bytes += st.bytes
			st.mu.Unlock()
		}
		ss.mu.Unlock()
	}
	if s.Streams != streams || s.Messages != messages || s.Bytes != bytes {
		t.Fatalf("figures %+v; the streams hold %d streams, %d messages, %d bytes", s, streams, messages, bytes)
	}
	if s.Evicted == 0 {
		t.Fatalf("nothing evicted with %d topics of 100-byte messages under a cap of 40: %+v", topics, s)
	}
	t.Logf("%+v", s)
}

func TestPublishKeptAndHistoryKept(t *testing.T) {
	c, k := newClockedCore()
	var got []broker.Message
	n := c.AddNode("n", func(m broker.Message) { got = append(got, m) })
	n.Listen("kept")
	n.Listen("plain")
	// No stream: nothing is published, nothing is started.
	if _, _, ok := c.PublishKept(broker.Message{Topic: "plain", ID: "1", Data: data(1)}); ok {
		t.Fatal("PublishKept to a topic without a stream reported a publish")
	}
	if _, _, ok := c.HistoryKept("plain", broker.HistoryQuery{Limit: 10, Options: long}, 0); ok {
		t.Fatal("HistoryKept of a topic without a stream found one")
	}
	if s := c.StreamStats(); s.Streams != 0 || len(got) != 0 {
		t.Fatalf("after PublishKept and HistoryKept of a topic without a stream: %+v, %d deliveries", s, len(got))
	}
	// With a stream: the message goes in with the stream's own options.
	opts := broker.StreamOptions{Size: 2, TTL: time.Minute}
	p := pub(c, "kept", "1", data(1), opts)
	for i := 2; i <= 4; i++ {
		q, nodes, ok := c.PublishKept(broker.Message{Topic: "kept", ID: fmt.Sprint(i), Data: data(1)})
		if !ok || q.Epoch != p.Epoch || q.Offset != uint64(i) || nodes != 1 {
			t.Fatalf("PublishKept %d: %+v to %d nodes, %v; want offset %d in %q to 1 node", i, q, nodes, ok, i, p.Epoch)
		}
	}
	window(t, c, "kept", p.Epoch, 3, 4) // the stream's size, 2
	r, _, ok := c.HistoryKept("kept", broker.HistoryQuery{Since: &broker.StreamPosition{Offset: 3}, Limit: 10}, 0)
	if !ok || r.Epoch != p.Epoch || r.Offset != 4 || len(r.Messages) != 1 || r.Messages[0].ID != "4" {
		t.Fatalf("HistoryKept since 3: %+v %v", r, ok)
	}
	if len(got) != 4 || got[3].Offset != 4 || got[3].Epoch != p.Epoch {
		t.Fatalf("deliveries %+v, want 4 with offsets", got)
	}
	// An expired stream is not kept.
	k.advance(2 * time.Minute)
	if _, _, ok := c.HistoryKept("kept", broker.HistoryQuery{Limit: 10}, 0); ok {
		t.Fatal("HistoryKept found a stream past its TTL")
	}
	if _, _, ok := c.PublishKept(broker.Message{Topic: "kept", ID: "5", Data: data(1)}); ok {
		t.Fatal("PublishKept appended to a stream past its TTL")
	}
	if s := c.StreamStats(); s.Streams != 0 || s.Expired != 1 {
		t.Fatalf("after the TTL: %+v", s)
	}
}

func TestHistoryPage(t *testing.T) {
	c, _ := newClockedCore()
	var p broker.StreamPosition
	for i := range 30 {
		p = pub(c, "paged", fmt.Sprint(i+1), data(100), long)
	}
	cost := len("paged") + int(entrySize("10", data(100))) // ids 1..9 cost a byte less
	// Newest 20 (offsets 11..30), 5 of them to a page: the first 5 of those.
	r, more := c.HistoryPage("paged", broker.HistoryQuery{Limit: 20}, 5*cost)
	if !more || len(r.Messages) != 5 || r.Messages[0].Offset != 11 || r.Offset != 30 || r.Epoch != p.Epoch {
		t.Fatalf("newest 20 in pages of 5: %d from %d, more %v, top %d", len(r.Messages), firstOffset(r.Messages), more, r.Offset)
	}
	// The pages after it, since its last message, to the end.
	var got []uint64
	since := r.Messages[len(r.Messages)-1].Offset
	for more {
		r, more = c.HistoryPage("paged", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: r.Epoch, Offset: since}, Limit: int(30 - since)}, 5*cost)
		for _, m := range r.Messages {
			got = append(got, m.Offset)
		}
		since = r.Messages[len(r.Messages)-1].Offset
		if len(got) > 30 {
			t.Fatal("paging does not end")
		}
	}
	if len(got) != 15 || got[0] != 16 || got[14] != 30 {
		t.Fatalf("the following pages hold %v, want 16..30", got)
	}
	// A budget smaller than one message still answers one.
	if r, more := c.HistoryPage("paged", broker.HistoryQuery{Limit: 3}, 1); len(r.Messages) != 1 || !more || r.Messages[0].Offset != 28 {
		t.Fatalf("a budget of 1 byte: %d messages from %d, more %v", len(r.Messages), firstOffset(r.Messages), more)
	}
	// What fits is not truncated.
	if r, more := c.HistoryPage("paged", broker.HistoryQuery{Limit: 3}, 3*cost); len(r.Messages) != 3 || more {
		t.Fatalf("3 messages in a budget of 3: %d, more %v", len(r.Messages), more)
	}
	if r, more, ok := c.HistoryKept("paged", broker.HistoryQuery{Limit: 30}, 10*cost); !ok || !more || len(r.Messages) != 10 || r.Messages[0].Offset != 1 {
		t.Fatalf("HistoryKept in pages of 10: %d messages from %d, more %v, kept %v", len(r.Messages), firstOffset(r.Messages), more, ok)
	}
}
