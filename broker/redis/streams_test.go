//go:build redis

package redis_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// The Redis specifics of broker.Streamer; brokertest runs the contract.

var keep = broker.StreamOptions{Size: 100, TTL: time.Minute}

func publishStream(t *testing.T, b broker.Broker, topic, id string, opts broker.StreamOptions) broker.StreamPosition {
	t.Helper()
	p, err := b.(broker.Streamer).PublishStream(ctxFor(t, 10*time.Second), broker.Message{Topic: topic, ID: id, Data: []byte(strconv.Quote(id))}, opts)
	must(t, err)
	return p
}

func history(t *testing.T, b broker.Broker, topic string, q broker.HistoryQuery) broker.HistoryResult {
	t.Helper()
	if q.Options == (broker.StreamOptions{}) {
		q.Options = keep
	}
	r, err := b.(broker.Streamer).History(ctxFor(t, 10*time.Second), topic, q)
	must(t, err)
	return r
}

// wantMessages checks that ms are the messages with ids prefix-from …
// prefix-(from+len-1), at offsets first, first+1, … of epoch.
func wantMessages(t *testing.T, ms []broker.Message, epoch string, first uint64, ids []string) {
	t.Helper()
	if len(ms) != len(ids) {
		t.Fatalf("%d messages, want %d", len(ms), len(ids))
	}
	for i, m := range ms {
		if m.Offset != first+uint64(i) || m.Epoch != epoch || m.ID != ids[i] || string(m.Data) != strconv.Quote(ids[i]) {
			t.Fatalf("message %d is %+v, want id %s at %d in %q", i, m, ids[i], first+uint64(i), epoch)
		}
	}
}

func idRange(tag string, from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, tag+strconv.Itoa(i))
	}
	return ids
}

// TestStreamSurvivesNodeRestart: the stream lives in Redis, not in the
// node: a node closed and a new one opened on the same Redis read the
// same history, and offsets go on in the same epoch.
func TestStreamSurvivesNodeRestart(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		prefix := uniquePrefix()
		old := newBroker(t, newClient(), fredis.Options{Prefix: prefix})
		start(t, old, func(broker.Message) {})
		var p broker.StreamPosition
		for i := range 20 {
			p = publishStream(t, old, "/chat/lobby", "m"+strconv.Itoa(i), keep)
		}
		must(t, old.Close())

		fresh := newBroker(t, newClient(), fredis.Options{Prefix: prefix})
		rec := newRecorder(10)
		start(t, fresh, rec.handle)
		r := history(t, fresh, "/chat/lobby", broker.HistoryQuery{Limit: 100})
		if r.StreamPosition != p {
			t.Fatalf("after the restart the stream is at %+v, was %+v", r.StreamPosition, p)
		}
		wantMessages(t, r.Messages, p.Epoch, 1, idRange("m", 0, 20))
		must(t, fresh.Subscribe(ctxFor(t, 10*time.Second), "/chat/lobby"))
		if q := publishStream(t, fresh, "/chat/lobby", "m20", keep); q.Epoch != p.Epoch || q.Offset != 21 {
			t.Fatalf("the next publish got %+v, want offset 21 in %q", q, p.Epoch)
		}
		if m := rec.next(t, 5*time.Second); m.ID != "m20" || m.Offset != 21 || m.Epoch != p.Epoch {
			t.Fatalf("delivered %+v", m)
		}
	})
}

// TestStreamKeysInOneSlot: on Redis Cluster a topic's stream keys and its
// channel share one slot (the script that appends also publishes), and the
// stream is the two keys alone, trimmed near its size and expiring.
func TestStreamKeysInOneSlot(t *testing.T) {
	admin := newClusterClient(t)
	prefix := uniquePrefix()
	b := newBroker(t, newClusterClient(t), fredis.Options{Prefix: prefix})
	start(t, b, func(broker.Message) {})
	ctx := ctxFor(t, 30*time.Second)
	opts := broker.StreamOptions{Size: 10, TTL: time.Minute}
	// Enough topics to cover every shard group, and topics with braces of
	// their own, which must not pick the slot.
	topics := []string{"{x}", "a{b}c", "}{", "/chat/世界"}
	for i := range 60 {
		topics = append(topics, fmt.Sprintf("/room/%d", i))
	}
	want := map[string]bool{}
	slotsUsed := map[int64]bool{}
	for _, topic := range topics {
		for i := range 12 {
			publishStream(t, b, topic, strconv.Itoa(i), opts)
		}
		meta, stream, channel := fredis.StreamKeys(b, topic)
		want[meta], want[stream] = true, true
		var slots []int64
		for _, name := range []string{meta, stream, channel} {
			slot, err := admin.ClusterKeySlot(ctx, name).Result()
			must(t, err)
			slots = append(slots, slot)
		}
		if slots[0] != slots[1] || slots[1] != slots[2] {
			t.Fatalf("topic %q: %s in slot %d, %s in %d, channel %s in %d", topic, meta, slots[0], stream, slots[1], channel, slots[2])
		}
		slotsUsed[slots[0]] = true
		if n, err := admin.XLen(ctx, stream).Result(); err != nil || n != 12 {
			t.Fatalf("topic %q: XLEN %s = %d, %v; want 12, less than a node to trim", topic, stream, n, err)
		}
		for _, key := range []string{meta, stream} {
			if ttl, err := admin.PTTL(ctx, key).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
				t.Fatalf("topic %q: PTTL %s = %v, %v; want at most the TTL, 1m", topic, key, ttl, err)
			}
		}
	}
	// XADD trims whole nodes of the Redis Stream: it keeps at most one
	// node (100 entries) more than the size.
	for i := range 1000 {
		publishStream(t, b, topics[0], strconv.Itoa(i), opts)
	}
	_, stream, _ := fredis.StreamKeys(b, topics[0])
	if n, err := admin.XLen(ctx, stream).Result(); err != nil || n < 10 || n > 110 {
		t.Fatalf("after 1,000 publishes XLEN %s = %d, %v; want 10 to 110", stream, n, err)
	}
	if len(slotsUsed) != 16 {
		t.Errorf("the streams of %d topics use %d slots, want one per shard group, 16", len(topics), len(slotsUsed))
	}
	got := allKeys(t, admin, prefix+":*")
	if len(got) != len(want) {
		t.Fatalf("%d keys under %s:, want the %d stream keys: %v", len(got), prefix, len(want), got)
	}
	for _, key := range got {
		if !want[key] {
			t.Fatalf("unexpected key %s", key)
		}
	}
}

// TestStreamDropsExpiredMessages: a stream published to all along keeps
// its epoch but returns no message older than its TTL.
func TestStreamDropsExpiredMessages(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		b := newBroker(t, newClient(), fredis.Options{Prefix: uniquePrefix()})
		start(t, b, func(broker.Message) {})
		const ttl = 2 * time.Second
		opts := broker.StreamOptions{Size: 1000, TTL: ttl}
		var p broker.StreamPosition
		for i := range 50 {
			p = publishStream(t, b, "aging", "old"+strconv.Itoa(i), opts)
		}
		oldDone := time.Now()
		time.Sleep(ttl / 2)
		newBegan := time.Now()
		for i := range 30 {
			publishStream(t, b, "aging", "new"+strconv.Itoa(i), opts)
		}
		time.Sleep(time.Until(oldDone.Add(ttl + 300*time.Millisecond)))
		r := history(t, b, "aging", broker.HistoryQuery{Limit: 1000, Options: opts})
		if age := time.Since(newBegan); age > ttl-200*time.Millisecond {
			t.Fatalf("the machine is too slow for this test: the newer messages are %v old, near their TTL %v", age, ttl)
		}
		if r.Epoch != p.Epoch || r.Offset != 80 {
			t.Fatalf("the stream is at %+v, want top 80 in %q", r.StreamPosition, p.Epoch)
		}
		wantMessages(t, r.Messages, p.Epoch, 51, idRange("new", 0, 30))
		// From a position among the expired messages: what is left.
		r = history(t, b, "aging", broker.HistoryQuery{Since: &broker.StreamPosition{Epoch: p.Epoch, Offset: 10}, Limit: 5, Options: opts})
		wantMessages(t, r.Messages, p.Epoch, 51, idRange("new", 0, 5))
	})
}

// TestStreamLatestPublishRules: the latest publish says how the stream is
// kept; a query's options matter only for a stream it starts.
func TestStreamLatestPublishRules(t *testing.T) {
	b := newBroker(t, newClient(t, standaloneAddr(t)), fredis.Options{Prefix: uniquePrefix()})
	start(t, b, func(broker.Message) {})
	big := broker.StreamOptions{Size: 50, TTL: time.Minute}
	var p broker.StreamPosition
	for i := range 50 {
		p = publishStream(t, b, "rules", strconv.Itoa(i), big)
	}
	small := broker.StreamOptions{Size: 5, TTL: 250 * time.Millisecond}
	r := history(t, b, "rules", broker.HistoryQuery{Limit: 100, Options: small})
	wantMessages(t, r.Messages, p.Epoch, 1, idRange("", 0, 50))
	// A smaller size: the window shrinks at once.
	publishStream(t, b, "rules", "50", broker.StreamOptions{Size: 5, TTL: time.Minute})
	r = history(t, b, "rules", broker.HistoryQuery{Limit: 100})
	wantMessages(t, r.Messages, p.Epoch, 47, idRange("", 46, 51))
	// A shorter TTL: what is older than it goes at once, in the same
	// epoch.
	time.Sleep(500 * time.Millisecond)
	publishStream(t, b, "rules", "51", broker.StreamOptions{Size: 5, TTL: time.Minute})
	publishStream(t, b, "rules", "52", broker.StreamOptions{Size: 5, TTL: time.Minute})
	publishStream(t, b, "rules", "53", small)
	r = history(t, b, "rules", broker.HistoryQuery{Limit: 100})
	wantMessages(t, r.Messages, p.Epoch, 52, idRange("", 51, 54))
}

// TestStreamLargerSizeDropsExpired: a larger size brings back messages
// that XADD had not trimmed yet (it trims whole nodes); those older than
// the TTL stay out, although the last look for expired messages found the
// oldest of the smaller window fresh.
func TestStreamLargerSizeDropsExpired(t *testing.T) {
	b := newBroker(t, newClient(t, standaloneAddr(t)), fredis.Options{Prefix: uniquePrefix()})
	start(t, b, func(broker.Message) {})
	const ttl = 2 * time.Second
	small := broker.StreamOptions{Size: 5, TTL: ttl}
	began := time.Now()
	var p broker.StreamPosition
	for i := range 20 {
		p = publishStream(t, b, "grow", strconv.Itoa(i), small)
	}
	time.Sleep(time.Until(began.Add(ttl / 2)))
	for i := 20; i < 25; i++ {
		publishStream(t, b, "grow", strconv.Itoa(i), small)
	}
	// Past the first messages' TTL: this publish looks for expired
	// messages, in a window of 5 that are all fresh.
	time.Sleep(time.Until(began.Add(ttl + 200*time.Millisecond)))
	publishStream(t, b, "grow", "25", small)
	publishStream(t, b, "grow", "26", broker.StreamOptions{Size: 100, TTL: ttl})
	r := history(t, b, "grow", broker.HistoryQuery{Limit: 100})
	if late := time.Since(began); late > ttl*3/2-200*time.Millisecond {
		t.Fatalf("the machine is too slow for this test: %v since the start, near the TTL of the second batch", late)
	}
	wantMessages(t, r.Messages, p.Epoch, 21, idRange("", 20, 27))
}

// TestStreamMessagesLostHashKept: when Redis loses a stream's messages but
// not its hash (an eviction, a key deleted by hand), the stream has lost
// its continuity: it starts again in a new epoch.
func TestStreamMessagesLostHashKept(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		admin := newClient()
		b := newBroker(t, newClient(), fredis.Options{Prefix: uniquePrefix()})
		start(t, b, func(broker.Message) {})
		ctx := ctxFor(t, 10*time.Second)
		for _, via := range []string{"publish", "history"} {
			topic := "lost-by-" + via
			p := publishStream(t, b, topic, "1", keep)
			publishStream(t, b, topic, "2", keep)
			_, stream, _ := fredis.StreamKeys(b, topic)
			must(t, admin.Del(ctx, stream).Err())
			var q broker.StreamPosition
			if via == "publish" {
				q = publishStream(t, b, topic, "3", keep)
				if q.Epoch == p.Epoch || q.Offset != 1 {
					t.Fatalf("publish after the messages were lost: %+v, want offset 1 in a new epoch (was %q)", q, p.Epoch)
				}
			} else {
				r := history(t, b, topic, broker.HistoryQuery{})
				if r.Epoch == p.Epoch || r.Offset != 0 {
					t.Fatalf("history after the messages were lost: %+v, want top 0 in a new epoch (was %q)", r.StreamPosition, p.Epoch)
				}
				q = publishStream(t, b, topic, "3", keep)
				if q.Epoch != r.Epoch || q.Offset != 1 {
					t.Fatalf("publish after that history: %+v, want offset 1 in %q", q, r.Epoch)
				}
			}
			r := history(t, b, topic, broker.HistoryQuery{Limit: 10})
			wantMessages(t, r.Messages, q.Epoch, 1, []string{"3"})
		}
	})
}

// TestStreamWireVersions: a node reads messages of either encoding from
// the channel, such as version 1 from a node of an older release, and
// drops what is not firetower's without stopping.
func TestStreamWireVersions(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		c := newClient()
		b := newBroker(t, newClient(), fredis.Options{Prefix: uniquePrefix()})
		rec := newRecorder(10)
		start(t, b, rec.handle)
		ctx := ctxFor(t, 10*time.Second)
		must(t, b.Subscribe(ctx, "mixed"))
		_, _, channel := fredis.StreamKeys(b, "mixed")
		publish := func(payload []byte) {
			t.Helper()
			if cc, ok := c.(*goredis.ClusterClient); ok {
				must(t, cc.SPublish(ctx, channel, payload).Err())
			} else {
				must(t, c.Publish(ctx, channel, payload).Err())
			}
		}
		body := func(id, data string) []byte {
			return append(append(binary.AppendUvarint(nil, uint64(len(id))), id...), data...)
		}
		v2 := func(offset uint64, epoch string, rest []byte) []byte {
			p := binary.AppendUvarint([]byte{2}, offset)
			p = binary.AppendUvarint(p, uint64(len(epoch)))
			return append(append(p, epoch...), rest...)
		}
		publish(append([]byte{1}, body("v1", `"one"`)...))
		publish(v2(7, "ep", body("v2", `"two"`)))
		for _, bad := range [][]byte{
			nil,
			{3, 0},
			{1, 0x80},
			append([]byte{1, 9}, "short"...),
			{2},
			v2(0, "ep", body("x", "1")),
			v2(1, "", body("x", "1")),
			append(binary.AppendUvarint([]byte{2, 1}, 50), "ep"...),
		} {
			publish(bad)
		}
		publish(append([]byte{1}, body("last", `3`)...))
		for _, want := range []broker.Message{
			{Topic: "mixed", ID: "v1", Data: []byte(`"one"`)},
			{Topic: "mixed", ID: "v2", Data: []byte(`"two"`), Offset: 7, Epoch: "ep"},
			{Topic: "mixed", ID: "last", Data: []byte(`3`)},
		} {
			m := rec.next(t, 5*time.Second)
			if m.Topic != want.Topic || m.ID != want.ID || string(m.Data) != string(want.Data) || m.Offset != want.Offset || m.Epoch != want.Epoch {
				t.Fatalf("got %+v, want %+v", m, want)
			}
		}
	})
}

// TestStreamQueueKeepsOffsetOrder: a handler too slow for the delivery
// queue loses messages, never their order: what it gets of a stream is in
// increasing offset order.
func TestStreamQueueKeepsOffsetOrder(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		prefix := uniquePrefix()
		slow := newBroker(t, newClient(), fredis.Options{Prefix: prefix, DeliveryQueue: 8})
		pub := newBroker(t, newClient(), fredis.Options{Prefix: prefix})
		var mu sync.Mutex
		var got []broker.Message
		start(t, slow, func(m broker.Message) {
			time.Sleep(time.Millisecond)
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
		})
		start(t, pub, func(broker.Message) {})
		ctx := ctxFor(t, 30*time.Second)
		must(t, slow.Subscribe(ctx, "flood"))
		const total = 400
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for p := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range total / 4 {
					if _, err := pub.PublishStream(ctx, broker.Message{Topic: "flood", ID: fmt.Sprint(p, "-", i), Data: []byte("0")}, keep); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		brokertest.Eventually(t, 10*time.Second, statIs(slow, "messages_received_total", total))
		dropped := slow.BrokerStats()["dropped_messages_total"]
		if dropped == 0 {
			t.Fatal("nothing was dropped: the test proves nothing")
		}
		brokertest.Eventually(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if n := int64(len(got)); n != total-dropped {
				return fmt.Errorf("handled %d, want the %d not dropped", n, total-dropped)
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		for i := 1; i < len(got); i++ {
			if got[i].Offset <= got[i-1].Offset || got[i].Epoch != got[0].Epoch {
				t.Fatalf("delivery %d is offset %d after %d", i, got[i].Offset, got[i-1].Offset)
			}
		}
		t.Logf("%d of %d delivered, in offset order", len(got), total)
	})
}

// TestStreamScriptReloaded: Redis forgets its scripts when it restarts
// (and a new master never had them): a stream publish that finds the
// script unknown runs it again, so publishes sharing one pipeline with it
// still get contiguous offsets, and the subscribers get all of them.
func TestStreamScriptReloaded(t *testing.T) {
	srv := newRedisServer(t)
	admin := newClient(t, srv.addr)
	prefix := uniquePrefix()
	sub := newBroker(t, newClient(t, srv.addr), fredis.Options{Prefix: prefix})
	pub := newBroker(t, newClient(t, srv.addr), fredis.Options{Prefix: prefix})
	rec := newRecorder(1000)
	start(t, sub, rec.handle)
	start(t, pub, func(broker.Message) {})
	ctx := ctxFor(t, 30*time.Second)
	must(t, sub.Subscribe(ctx, "reload"))
	var offsets sync.Map
	for round := range 3 {
		// Round 0 meets a server that never saw the script.
		if round > 0 {
			must(t, admin.ScriptFlush(ctx).Err())
		}
		var wg sync.WaitGroup
		for p := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pos, err := pub.PublishStream(ctx, broker.Message{Topic: "reload", ID: fmt.Sprint(round, "-", p), Data: []byte("0")}, keep)
				if err != nil {
					t.Error(err)
					return
				}
				offsets.Store(pos.Offset, true)
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		if _, err := sub.History(ctx, "reload", broker.HistoryQuery{Options: keep}); err != nil {
			t.Fatal(err)
		}
	}
	for o := uint64(1); o <= 96; o++ {
		if _, ok := offsets.Load(o); !ok {
			t.Fatalf("no publish got offset %d of 1..96", o)
		}
	}
	for o := uint64(1); o <= 96; o++ {
		if m := rec.next(t, 5*time.Second); m.Offset != o {
			t.Fatalf("delivered offset %d, want %d", m.Offset, o)
		}
	}
}

// TestStreamBadInput: options below the floors are raised to them, odd
// queries answer what they can, and misuse gets errors, never a panic.
func TestStreamBadInput(t *testing.T) {
	addr := standaloneAddr(t)
	prefix := uniquePrefix()
	b := newBroker(t, newClient(t, addr), fredis.Options{Prefix: prefix})
	ctx := ctxFor(t, 10*time.Second)
	if _, err := b.PublishStream(ctx, broker.Message{Topic: "x", ID: "1", Data: []byte("1")}, keep); err == nil {
		t.Error("PublishStream before Start succeeded")
	}
	if _, err := b.History(ctx, "x", broker.HistoryQuery{}); err == nil {
		t.Error("History before Start succeeded")
	}
	start(t, b, func(broker.Message) {})

	// Size 0 and a TTL under a millisecond: one message, kept a
	// millisecond.
	for i := range 3 {
		publishStream(t, b, "floor", strconv.Itoa(i), broker.StreamOptions{Size: -5, TTL: time.Microsecond})
	}
	time.Sleep(20 * time.Millisecond)
	if r := history(t, b, "floor", broker.HistoryQuery{Limit: 10}); len(r.Messages) != 0 {
		t.Errorf("a stream kept a millisecond: %+v after 20ms", r)
	}
	var p broker.StreamPosition
	for i := range 3 {
		p = publishStream(t, b, "one", strconv.Itoa(i), broker.StreamOptions{TTL: time.Minute})
	}
	r := history(t, b, "one", broker.HistoryQuery{Limit: 10})
	wantMessages(t, r.Messages, p.Epoch, 3, []string{"2"})

	// Sizes and limits beyond any stream's.
	huge := broker.StreamOptions{Size: int(^uint(0) >> 1), TTL: time.Duration(1<<63 - 1)}
	h := publishStream(t, b, "huge", "1", huge)
	if r := history(t, b, "huge", broker.HistoryQuery{Limit: int(^uint(0) >> 1), Since: &broker.StreamPosition{}, Options: huge}); len(r.Messages) != 1 || r.StreamPosition != h {
		t.Errorf("a huge size and limit: %+v", r)
	}
	if r := history(t, b, "huge", broker.HistoryQuery{Limit: int(^uint(0) >> 1), Options: huge}); len(r.Messages) != 1 {
		t.Errorf("a huge limit without a position: %+v", r)
	}

	// Queries: a negative limit asks for the position only; a position
	// past the top, or with a huge offset, finds nothing after it.
	for _, q := range []broker.HistoryQuery{
		{Limit: -1},
		{Limit: 10, Since: &broker.StreamPosition{Offset: 3}},
		{Limit: 10, Since: &broker.StreamPosition{Epoch: p.Epoch, Offset: 1 << 63}},
		{Limit: 10, Since: &broker.StreamPosition{Offset: ^uint64(0)}},
	} {
		if r := history(t, b, "one", q); r.StreamPosition != p || len(r.Messages) != 0 {
			t.Errorf("History(%+v) = %+v, want position %+v and no message", q, r, p)
		}
	}
	// Empty ids and data, and binary bytes in them, come back intact.
	odd := broker.Message{Topic: "odd", ID: "", Data: nil}
	q, err := b.PublishStream(ctx, odd, keep)
	must(t, err)
	odd.ID, odd.Data = "\x00\xff-0", []byte("\x00\x02")
	_, err = b.PublishStream(ctx, odd, keep)
	must(t, err)
	r = history(t, b, "odd", broker.HistoryQuery{Limit: 10})
	if len(r.Messages) != 2 || r.Messages[0].ID != "" || len(r.Messages[0].Data) != 0 || r.Messages[1].ID != odd.ID || string(r.Messages[1].Data) != string(odd.Data) || r.Epoch != q.Epoch {
		t.Errorf("odd messages came back as %+v", r.Messages)
	}

	// A key of the stream's that holds something else: an error that says
	// so, not an outage.
	admin := newClient(t, addr)
	meta, stream, _ := fredis.StreamKeys(b, "taken")
	must(t, admin.Set(ctx, stream, "not a stream", time.Minute).Err())
	must(t, admin.HSet(ctx, meta, "e", "E", "top", 3).Err())
	must(t, admin.Expire(ctx, meta, time.Minute).Err())
	_, err = b.PublishStream(ctx, broker.Message{Topic: "taken", ID: "1", Data: []byte("1")}, keep)
	if err == nil || isUnavailable(err) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("PublishStream onto a string key: %v, want a WRONGTYPE error that is not ErrUnavailable", err)
	}
	_, err = b.History(ctx, "taken", broker.HistoryQuery{Limit: 1, Options: keep})
	if err == nil || isUnavailable(err) {
		t.Errorf("History of a string key: %v, want an error that is not ErrUnavailable", err)
	}

	must(t, b.Close())
	if _, err := b.PublishStream(ctx, odd, keep); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("PublishStream after Close: %v, want ErrClosed", err)
	}
	if _, err := b.History(ctx, "odd", broker.HistoryQuery{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("History after Close: %v, want ErrClosed", err)
	}
}
