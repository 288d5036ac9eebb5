package brokertest

import (
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// The streams part of the suite, for brokers that implement
// broker.Streamer (Config.Streams says they must).

func (s *suite) runStreams(t *testing.T) {
	probe := s.cfg.NewCluster(t, 1)
	_, ok := probe[0].(broker.Streamer)
	probe[0].Close()
	if !ok {
		if s.cfg.Streams {
			t.Fatal("Config.Streams is set but the broker does not implement broker.Streamer")
		}
		return
	}
	t.Run("StreamOffsetsContiguous", s.streamOffsetsContiguous)
	t.Run("StreamDeliversInOffsetOrder", s.streamDeliversInOffsetOrder)
	t.Run("StreamBoundedBySize", s.streamBoundedBySize)
	t.Run("StreamBoundedByTTL", s.streamBoundedByTTL)
	t.Run("StreamHistoryFromPosition", s.streamHistoryFromPosition)
	t.Run("StreamQueryStartsStream", s.streamQueryStartsStream)
	t.Run("StreamSubscribeThenReadMissesNothing", s.streamSubscribeThenRead)
	t.Run("StreamPlainPublishHasNoOffset", s.streamPlainPublish)
	t.Run("StreamNewEpochWhenLost", s.streamNewEpochWhenLost)
}

func streamer(t *testing.T, n *node) broker.Streamer {
	t.Helper()
	st, ok := n.Broker.(broker.Streamer)
	if !ok {
		t.Fatal("broker does not implement broker.Streamer")
	}
	return st
}

var streamOpts = broker.StreamOptions{Size: 1000, TTL: time.Minute}

func history(t *testing.T, n *node, topic string, q broker.HistoryQuery) broker.HistoryResult {
	t.Helper()
	if q.Options.Size == 0 {
		q.Options = streamOpts
	}
	r, err := streamer(t, n).History(ctx(t), topic, q)
	if err != nil {
		t.Fatalf("History(%q): %v", topic, err)
	}
	return r
}

// offsetsOf returns the offsets of ms and checks that they run
// consecutively from first, in epoch.
func offsetsOf(t *testing.T, ms []broker.Message, epoch string, first uint64) {
	t.Helper()
	for i, m := range ms {
		if m.Offset != first+uint64(i) || m.Epoch != epoch {
			t.Fatalf("message %d: offset %d epoch %q, want offset %d epoch %q", i, m.Offset, m.Epoch, first+uint64(i), epoch)
		}
	}
}

// publishConcurrently publishes each messages to topic from every one of
// from at once, and returns the positions the broker gave them by id.
func publishConcurrently(t *testing.T, topic string, from []*node, each int) map[string]broker.StreamPosition {
	t.Helper()
	c := ctx(t)
	var mu sync.Mutex
	pos := map[string]broker.StreamPosition{}
	var wg sync.WaitGroup
	errs := make(chan error, len(from))
	for p, n := range from {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := streamer(t, n)
			for i := range each {
				id := fmt.Sprintf("%d-%d", p, i)
				sp, err := st.PublishStream(c, msg(topic, id, fmt.Sprint(i)), streamOpts)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				pos[id] = sp
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return pos
}

func (s *suite) streamOffsetsContiguous(t *testing.T) {
	n := s.cluster(t, 3)
	const each = 100
	pos := publishConcurrently(t, "contig", []*node{n[0], n[1], n[2], n[1]}, each)
	var epoch string
	offsets := make([]int, 0, len(pos))
	for _, p := range pos {
		if epoch == "" {
			epoch = p.Epoch
		}
		if p.Epoch != epoch || p.Epoch == "" {
			t.Fatalf("epochs %q and %q in one stream", epoch, p.Epoch)
		}
		offsets = append(offsets, int(p.Offset))
	}
	sort.Ints(offsets)
	for i, o := range offsets {
		if o != i+1 {
			t.Fatalf("offsets are not 1..%d without gap or reuse: position %d holds %d", len(offsets), i, o)
		}
	}
	r := history(t, n[2], "contig", broker.HistoryQuery{Limit: 4 * each})
	if r.Epoch != epoch || r.Offset != 4*each || len(r.Messages) != 4*each {
		t.Fatalf("history: epoch %q top %d, %d messages; want %q, %d, %d", r.Epoch, r.Offset, len(r.Messages), epoch, 4*each, 4*each)
	}
	offsetsOf(t, r.Messages, epoch, 1)
	for _, m := range r.Messages {
		if pos[m.ID].Offset != m.Offset {
			t.Fatalf("history has %s at offset %d, its publish got %d", m.ID, m.Offset, pos[m.ID].Offset)
		}
	}
}

func (s *suite) streamDeliversInOffsetOrder(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "ordered"))
	must(t, n[1].Subscribe(c, "ordered"))
	const each = 100
	pos := publishConcurrently(t, "ordered", []*node{n[1], n[2], n[2]}, each)
	for _, nd := range n[:2] {
		got := nd.waitFor(t, 3*each, 5*s.cfg.Propagation)
		epoch := got[0].Epoch
		offsetsOf(t, got, epoch, 1)
		for _, m := range got {
			if p := pos[m.ID]; p.Offset != m.Offset || p.Epoch != m.Epoch {
				t.Fatalf("%s delivered at %d %q, published at %d %q", m.ID, m.Offset, m.Epoch, p.Offset, p.Epoch)
			}
		}
	}
}

func (s *suite) streamBoundedBySize(t *testing.T) {
	n := s.cluster(t, 2)
	st := streamer(t, n[0])
	opts := broker.StreamOptions{Size: 10, TTL: time.Minute}
	var last broker.StreamPosition
	for i := range 25 {
		p, err := st.PublishStream(ctx(t), msg("sized", fmt.Sprint(i), fmt.Sprint(i)), opts)
		must(t, err)
		last = p
	}
	r := history(t, n[1], "sized", broker.HistoryQuery{Limit: 100, Options: opts})
	if r.Offset != 25 || r.Epoch != last.Epoch || len(r.Messages) != 10 {
		t.Fatalf("history: top %d epoch %q with %d messages, want 25 %q with 10", r.Offset, r.Epoch, len(r.Messages), last.Epoch)
	}
	offsetsOf(t, r.Messages, last.Epoch, 16)
	// A position older than the window: what is left comes, starting
	// after the gap, so the caller sees the gap.
	r = history(t, n[1], "sized", broker.HistoryQuery{Since: &last, Limit: 100, Options: opts})
	if len(r.Messages) != 0 || r.Offset != 25 {
		t.Fatalf("history since the top: %d messages, top %d", len(r.Messages), r.Offset)
	}
	r = history(t, n[1], "sized", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: last.Epoch, Offset: 5}, Limit: 100, Options: opts})
	if len(r.Messages) != 10 {
		t.Fatalf("history since 5 of a window 16..25: %d messages, the first at %d", len(r.Messages), first(r.Messages))
	}
	offsetsOf(t, r.Messages, last.Epoch, 16)
	r = history(t, n[1], "sized", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: last.Epoch, Offset: 20}, Limit: 3, Options: opts})
	offsetsOf(t, r.Messages, last.Epoch, 21)
	if len(r.Messages) != 3 {
		t.Fatalf("history since 20, limit 3: %d messages", len(r.Messages))
	}
}

func first(ms []broker.Message) uint64 {
	if len(ms) == 0 {
		return 0
	}
	return ms[0].Offset
}

func (s *suite) streamBoundedByTTL(t *testing.T) {
	n := s.cluster(t, 2)
	st := streamer(t, n[0])
	opts := broker.StreamOptions{Size: 100, TTL: 300 * time.Millisecond}
	var p broker.StreamPosition
	for i := range 3 {
		var err error
		p, err = st.PublishStream(ctx(t), msg("ttl", fmt.Sprint(i), "1"), opts)
		must(t, err)
	}
	if r := history(t, n[1], "ttl", broker.HistoryQuery{Limit: 100, Options: opts}); len(r.Messages) != 3 {
		t.Fatalf("history before the TTL: %d messages, want 3", len(r.Messages))
	}
	time.Sleep(700 * time.Millisecond)
	if r := history(t, n[1], "ttl", broker.HistoryQuery{Limit: 100, Options: opts}); len(r.Messages) != 0 {
		t.Fatalf("history after the TTL: %d messages, want none", len(r.Messages))
	}
	// The stream had no publish for its TTL: forgotten, so the next
	// message starts a new epoch.
	time.Sleep(700 * time.Millisecond)
	q, err := st.PublishStream(ctx(t), msg("ttl", "again", "1"), opts)
	must(t, err)
	if q.Epoch == p.Epoch || q.Offset != 1 {
		t.Fatalf("after an expiry the stream goes on at %d in epoch %q (was %q): want offset 1 in a new epoch", q.Offset, q.Epoch, p.Epoch)
	}
}

func (s *suite) streamHistoryFromPosition(t *testing.T) {
	n := s.cluster(t, 2)
	st := streamer(t, n[0])
	var p broker.StreamPosition
	for i := range 10 {
		var err error
		p, err = st.PublishStream(ctx(t), msg("pos", fmt.Sprint(i+1), fmt.Sprint(i+1)), streamOpts)
		must(t, err)
	}
	r := history(t, n[1], "pos", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: p.Epoch, Offset: 4}, Limit: 100})
	offsetsOf(t, r.Messages, p.Epoch, 5)
	if len(r.Messages) != 6 || r.Messages[0].ID != "5" || string(r.Messages[0].Data) != "5" {
		t.Fatalf("since 4: %d messages, first %+v", len(r.Messages), r.Messages)
	}
	r = history(t, n[1], "pos", broker.HistoryQuery{Since: &broker.StreamPosition{Offset: 7}, Limit: 100})
	offsetsOf(t, r.Messages, p.Epoch, 8)
	if len(r.Messages) != 3 {
		t.Fatalf("since 7 of the current epoch: %d messages, want 3", len(r.Messages))
	}
	// Another epoch's position says nothing about this one: as if none.
	r = history(t, n[1], "pos", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: "not-" + p.Epoch, Offset: 4}, Limit: 2})
	offsetsOf(t, r.Messages, p.Epoch, 9)
	if len(r.Messages) != 2 || r.Epoch != p.Epoch {
		t.Fatalf("since another epoch, limit 2: %d messages in %q", len(r.Messages), r.Epoch)
	}
	r = history(t, n[1], "pos", broker.HistoryQuery{})
	if len(r.Messages) != 0 || r.Offset != 10 || r.Epoch != p.Epoch {
		t.Fatalf("position only: %+v", r)
	}
}

func (s *suite) streamQueryStartsStream(t *testing.T) {
	n := s.cluster(t, 2)
	r := history(t, n[1], "fresh", broker.HistoryQuery{Limit: 10})
	if r.Epoch == "" || r.Offset != 0 || len(r.Messages) != 0 {
		t.Fatalf("a stream never published to: %+v, want an epoch, top 0", r)
	}
	p, err := streamer(t, n[0]).PublishStream(ctx(t), msg("fresh", "1", "1"), streamOpts)
	must(t, err)
	if p.Epoch != r.Epoch || p.Offset != 1 {
		t.Fatalf("the first publish after a query: %+v, want offset 1 in %q", p, r.Epoch)
	}
}

// streamSubscribeThenRead is what recovery relies on: a node that
// subscribes, then reads the stream's top, gets every later message live.
func (s *suite) streamSubscribeThenRead(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	stop := make(chan struct{})
	var published atomic.Int64
	var wg sync.WaitGroup
	for _, from := range n[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := streamer(t, from)
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := st.PublishStream(c, msg("live", fmt.Sprint(i), "0"), streamOpts); err != nil {
					t.Error(err)
					return
				}
				published.Add(1)
			}
		}()
	}
	waitCount := func(n int64) {
		for deadline := time.Now().Add(10 * time.Second); published.Load() < n && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	waitCount(50)
	must(t, n[0].Subscribe(c, "live"))
	r := history(t, n[0], "live", broker.HistoryQuery{})
	waitCount(published.Load() + 200)
	close(stop)
	wg.Wait()
	final := history(t, n[0], "live", broker.HistoryQuery{})
	if final.Offset <= r.Offset {
		t.Fatalf("nothing published after the read at %d (final %d): the test proves nothing", r.Offset, final.Offset)
	}
	want := int(final.Offset - r.Offset)
	deadline := time.Now().Add(5 * s.cfg.Propagation)
	for {
		var after []broker.Message
		for _, m := range n[0].messages() {
			if m.Offset > r.Offset {
				after = append(after, m)
			}
		}
		if len(after) >= want {
			offsetsOf(t, after[:want], r.Epoch, r.Offset+1)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reading top %d, %d of the %d later messages arrived", r.Offset, len(after), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *suite) streamPlainPublish(t *testing.T) {
	n := s.cluster(t, 2)
	must(t, n[0].Subscribe(ctx(t), "mixed"))
	_, err := streamer(t, n[1]).PublishStream(ctx(t), msg("mixed", "s", "1"), streamOpts)
	must(t, err)
	must(t, n[1].Publish(ctx(t), msg("mixed", "p", "2")))
	got := n[0].waitFor(t, 2, 5*s.cfg.Propagation)
	if got[0].Offset != 1 || got[1].Offset != 0 || got[1].Epoch != "" {
		t.Fatalf("a stream publish then a plain one arrived as %+v", got)
	}
	if r := history(t, n[0], "mixed", broker.HistoryQuery{Limit: 10}); len(r.Messages) != 1 || r.Offset != 1 {
		t.Fatalf("a plain publish went into the stream: %+v", r)
	}
}

func (s *suite) streamNewEpochWhenLost(t *testing.T) {
	if s.cfg.LoseStreams == nil {
		t.Skip("Config.LoseStreams is nil: the implementation's own tests cover a lost store")
	}
	n := s.cluster(t, 2)
	p, err := streamer(t, n[0]).PublishStream(ctx(t), msg("lost", "1", "1"), streamOpts)
	must(t, err)
	s.cfg.LoseStreams(t)
	var q broker.StreamPosition
	brokerEventually(t, 10*time.Second, func() error {
		q, err = streamer(t, n[0]).PublishStream(ctx(t), msg("lost", "2", "2"), streamOpts)
		return err
	})
	if q.Epoch == p.Epoch || q.Offset != 1 {
		t.Fatalf("after the store was lost the stream goes on at %d in epoch %q (was %q)", q.Offset, q.Epoch, p.Epoch)
	}
}

// brokerEventually retries f until it succeeds or within passes.
func brokerEventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
