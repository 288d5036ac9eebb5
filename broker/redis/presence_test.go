//go:build redis

package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// pevent is a join or leave a node received.
type pevent struct {
	kind, topic, user string
	info              string // joins only, as published
}

// eventLog is a node's handler that keeps the join and leave events, and
// fails the test on one whose data is not the documented JSON.
type eventLog struct {
	t   testing.TB
	mu  sync.Mutex
	evs []pevent
}

func newEventLog(t testing.TB) *eventLog { return &eventLog{t: t} }

func (l *eventLog) handle(m broker.Message) {
	var kind string
	switch m.ID {
	case broker.JoinID:
		kind = "join"
	case broker.LeaveID:
		kind = "leave"
	default:
		return
	}
	var d struct {
		User *string         `json:"user"`
		Info json.RawMessage `json:"info"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil || d.User == nil || (kind == "join") != (d.Info != nil) {
		l.t.Errorf("%s event with data %q: %v", kind, m.Data, err)
		return
	}
	l.mu.Lock()
	l.evs = append(l.evs, pevent{kind: kind, topic: m.Topic, user: *d.User, info: string(d.Info)})
	l.mu.Unlock()
}

func (l *eventLog) events() []pevent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

// count returns how many events of kind each user had in the topic, or
// in all topics without one.
func (l *eventLog) count(kind string, topic ...string) map[string]int {
	out := map[string]int{}
	for _, e := range l.events() {
		if e.kind == kind && (len(topic) == 0 || e.topic == topic[0]) {
			out[e.user]++
		}
	}
	return out
}

var jlNow = broker.PresenceOptions{JoinLeave: true}

func addP(t testing.TB, b *fredis.Broker, conn, user, info string, opts broker.PresenceOptions, topics ...string) {
	t.Helper()
	c := broker.PresenceClient{Conn: conn, User: user}
	if info != "" {
		c.Info = json.RawMessage(info)
	}
	if err := b.AddPresence(ctxFor(t, 30*time.Second), c, topics, opts); err != nil {
		t.Fatalf("AddPresence(%s, %q): %v", conn, topics, err)
	}
}

// presenceCounts returns a check: topic has users users and conns
// connections.
func presenceCounts(t testing.TB, b *fredis.Broker, topic string, users, conns int) func() error {
	return func() error {
		r, err := b.Presence(ctxFor(t, 10*time.Second), topic, 0)
		if err != nil {
			return err
		}
		if r.Users != users || r.Connections != conns {
			return fmt.Errorf("Presence(%q): %d users, %d connections; want %d and %d", topic, r.Users, r.Connections, users, conns)
		}
		return nil
	}
}

// TestPresenceRedisRestart: Redis restarts empty under two nodes; each
// adds its entries again by itself, and Presence answers them all.
// While Redis is down, the presence calls fail as unavailable, quickly.
func TestPresenceRedisRestart(t *testing.T) {
	srv := newRedisServer(t)
	prefix := uniquePrefix()
	a := newBroker(t, newClient(t, srv.addr), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
	b := newBroker(t, newClient(t, srv.addr), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
	log := newEventLog(t)
	start(t, a, func(broker.Message) {})
	start(t, b, log.handle)
	ctx := ctxFor(t, time.Minute)
	must(t, b.Subscribe(ctx, "room"))
	addP(t, a, "c1", "alice", `{"n":1}`, jlNow, "room", "hall")
	addP(t, a, "c2", "bob", "", jlNow, "room")
	addP(t, b, "c3", "carol", "", jlNow, "room")
	addP(t, b, "c4", "", "", jlNow, "hall")
	brokertest.Eventually(t, 5*time.Second, presenceCounts(t, b, "room", 3, 3))
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := len(log.count("join", "room")); n != 3 {
			return fmt.Errorf("joins of %d users, want 3", n)
		}
		return nil
	})

	srv.kill()
	began := time.Now()
	err := a.AddPresence(ctx, broker.PresenceClient{Conn: "c5", User: "dave"}, []string{"room"}, jlNow)
	if !isUnavailable(err) {
		t.Fatalf("AddPresence while Redis is down: %v, want ErrUnavailable", err)
	}
	if _, err := b.Presence(ctx, "room", 10); !isUnavailable(err) {
		t.Fatalf("Presence while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := a.RemovePresence(ctx, broker.PresenceClient{Conn: "c5", User: "dave"}, []string{"room"}, jlNow); !isUnavailable(err) {
		t.Fatalf("RemovePresence while Redis is down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(began); d > 8*time.Second {
		t.Fatalf("three presence calls while Redis is down took %v", d)
	}

	srv.start()
	restarted := time.Now()
	brokertest.Eventually(t, 15*time.Second, presenceCounts(t, b, "room", 3, 3))
	brokertest.Eventually(t, 5*time.Second, presenceCounts(t, a, "hall", 1, 2))
	t.Logf("the nodes' presence was back %v after Redis restarted", time.Since(restarted).Round(10*time.Millisecond))
	r, err := a.Presence(ctx, "room", 10)
	must(t, err)
	var got []string
	for _, c := range r.Clients {
		got = append(got, c.Conn+" "+c.User+" "+string(c.Info))
	}
	slices.Sort(got)
	if want := []string{"c1 alice {\"n\":1}", "c2 bob ", "c3 carol "}; !slices.Equal(got, want) {
		t.Fatalf("after the restart Presence lists %q, want %q", got, want)
	}
	if leaves := log.count("leave"); len(leaves) != 0 {
		t.Fatalf("leaves %v, but nobody left", leaves)
	}
	// The entries are live again: a removal is a leave.
	must(t, a.RemovePresence(ctx, broker.PresenceClient{Conn: "c2", User: "bob"}, []string{"room"}, jlNow))
	brokertest.Eventually(t, 5*time.Second, func() error {
		if log.count("leave", "room")["bob"] != 1 {
			return fmt.Errorf("no leave of bob: %+v", log.events())
		}
		return nil
	})
}

// TestPresenceClusterSlots: on Redis Cluster every presence key of a
// topic, its group's pending leaves and registry are in the slot of the
// topic's channel, and the scripts run there (no CROSSSLOT): adds,
// removes, leaves after a grace and a dead node's cleanup, in all 16
// slot groups.
func TestPresenceClusterSlots(t *testing.T) {
	admin := newClusterClient(t)
	prefix := uniquePrefix()
	watcher := newBroker(t, newClusterClient(t), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
	member := newBroker(t, newClusterClient(t), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
	log := newEventLog(t)
	start(t, watcher, log.handle)
	start(t, member, func(broker.Message) {})
	ctx := ctxFor(t, time.Minute)

	topics := make([]string, 64)
	for i := range topics {
		topics[i] = fmt.Sprintf("/slot/%d", i)
	}
	groups := map[int64]bool{}
	for _, topic := range topics {
		keys, channel := fredis.PresenceKeys(member, topic)
		want, err := admin.ClusterKeySlot(ctx, channel).Result()
		must(t, err)
		groups[want] = true
		for _, k := range keys {
			if slot, err := admin.ClusterKeySlot(ctx, k).Result(); err != nil || slot != want {
				t.Fatalf("key %q is in slot %d, its channel %q in %d (%v)", k, slot, channel, want, err)
			}
		}
	}
	if len(groups) != 16 {
		t.Fatalf("the topics cover %d slot groups, want 16", len(groups))
	}
	must(t, watcher.SubscribeTopics(ctx, topics))

	grace := broker.PresenceOptions{JoinLeave: true, Grace: 100 * time.Millisecond}
	c := broker.PresenceClient{Conn: "conn-1", User: "alice", Info: json.RawMessage(`{"a":1}`)}
	must(t, member.AddPresence(ctx, c, topics, grace))
	for _, topic := range topics {
		must(t, presenceCounts(t, watcher, topic, 1, 1)())
	}
	must(t, member.RemovePresence(ctx, c, topics, grace))
	brokertest.Eventually(t, 5*time.Second, func() error {
		if j, l := len(log.count("join")), len(log.count("leave")); j != 1 || l != 1 {
			return fmt.Errorf("joins of %d users and leaves of %d, want 1 and 1", j, l)
		}
		if n := len(log.events()); n != 2*len(topics) {
			return fmt.Errorf("%d events, want a join and a leave in each of %d topics", n, len(topics))
		}
		return nil
	})

	// A dead node's entries, in every group, are removed by the sweeps.
	must(t, member.AddPresence(ctx, broker.PresenceClient{Conn: "conn-2", User: "bob"}, topics, jlNow))
	brokertest.Eventually(t, 5*time.Second, func() error {
		if n := log.count("join")["bob"]; n != len(topics) {
			return fmt.Errorf("%d joins of bob, want %d", n, len(topics))
		}
		return nil
	})
	fredis.Kill(member)
	brokertest.Eventually(t, testNodeDeath+2*time.Second, func() error {
		if n := log.count("leave")["bob"]; n != len(topics) {
			return fmt.Errorf("%d leaves of bob, want %d", n, len(topics))
		}
		return nil
	})
	for _, topic := range topics {
		must(t, presenceCounts(t, watcher, topic, 0, 0)())
	}
}

// TestPresenceDeadNodeManyEntries: a killed node held more entries in one
// topic than a sweep script removes in a call; the live node removes them
// all in batches within the node-death bound, and sends one leave per
// user who had no other connection.
func TestPresenceDeadNodeManyEntries(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		const entries = 2*fredis.SweepBatch + 500
		prefix := uniquePrefix()
		dead := newBroker(t, newClient(), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
		live := newBroker(t, newClient(), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
		log := newEventLog(t)
		start(t, dead, func(broker.Message) {})
		start(t, live, log.handle)
		ctx := ctxFor(t, time.Minute)
		must(t, live.Subscribe(ctx, "big"))
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for w := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < entries; i += 32 {
					c := broker.PresenceClient{Conn: fmt.Sprintf("c%d", i), User: fmt.Sprintf("u%d", i)}
					if err := dead.AddPresence(ctx, c, []string{"big"}, jlNow); err != nil {
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
		// u0 has another connection, on the live node: no leave for u0.
		addP(t, live, "live-c0", "u0", "", jlNow, "big")
		must(t, presenceCounts(t, live, "big", entries, entries+1)())
		brokertest.Eventually(t, 10*time.Second, func() error {
			if n := len(log.count("join", "big")); n != entries {
				return fmt.Errorf("joins of %d users, want %d", n, entries)
			}
			return nil
		})

		fredis.Kill(dead)
		killed := time.Now()
		brokertest.Eventually(t, testNodeDeath+5*time.Second, presenceCounts(t, live, "big", 1, 1))
		brokertest.Eventually(t, 5*time.Second, func() error {
			if n := len(log.count("leave", "big")); n != entries-1 {
				return fmt.Errorf("leaves of %d users, want %d", n, entries-1)
			}
			return nil
		})
		t.Logf("the dead node's %d entries were gone %v after it was killed", entries, time.Since(killed).Round(10*time.Millisecond))
		for user, n := range log.count("leave", "big") {
			if n != 1 || user == "u0" {
				t.Fatalf("%d leaves of %s", n, user)
			}
		}
		// The live node is the only one sweeping: it removed them all (its
		// figures are added once the last script answered, which may be
		// after the leaves came).
		brokertest.Eventually(t, 5*time.Second, func() error {
			if n := live.BrokerStats()["presence_dead_entries_removed_total"]; n != entries {
				return fmt.Errorf("the sweeps removed %d entries, want %d", n, entries)
			}
			return nil
		})
		r, err := live.Presence(ctx, "big", 10)
		must(t, err)
		if len(r.Clients) != 1 || r.Clients[0].Conn != "live-c0" {
			t.Fatalf("Presence lists %+v, want live-c0 alone", r.Clients)
		}
	})
}

// TestKilledNodePresenceDefaultTTL: with the default NodeTTL (10 s) a
// killed node's presence is gone and its leaves sent within 15 s.
func TestKilledNodePresenceDefaultTTL(t *testing.T) {
	addr := standaloneAddr(t)
	prefix := uniquePrefix()
	dead := newBroker(t, newClient(t, addr), fredis.Options{Prefix: prefix})
	live := newBroker(t, newClient(t, addr), fredis.Options{Prefix: prefix})
	log := newEventLog(t)
	start(t, dead, func(broker.Message) {})
	start(t, live, log.handle)
	ctx := ctxFor(t, time.Minute)
	must(t, live.Subscribe(ctx, "room"))
	addP(t, dead, "c1", "alice", "", jlNow, "room")
	must(t, presenceCounts(t, live, "room", 1, 1)())
	fredis.Kill(dead)
	killed := time.Now()
	const bound = 15 * time.Second
	brokertest.Eventually(t, bound, func() error {
		if err := presenceCounts(t, live, "room", 0, 0)(); err != nil {
			return err
		}
		if log.count("leave", "room")["alice"] != 1 {
			return fmt.Errorf("no leave of alice")
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("with the default NodeTTL the killed node's presence was gone, and its leave sent, %v after its death", took.Round(10*time.Millisecond))
	if took > bound {
		t.Fatalf("took %v, more than %v", took, bound)
	}
}

// TestPresenceDeclaredDeadComesBack: a node whose deadline passed (as
// after a long pause) loses its entries to a sweep, with their leaves; at
// its next heartbeat it finds out and adds them again, with new joins.
func TestPresenceDeclaredDeadComesBack(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		admin := newClient()
		prefix := uniquePrefix()
		// A long NodeTTL: the node beats every 3 s, and the test moves
		// its deadline back between two beats.
		paused := newBroker(t, newClient(), fredis.Options{Prefix: prefix, NodeTTL: 15 * time.Second})
		other := newBroker(t, newClient(), fredis.Options{Prefix: prefix, NodeTTL: 15 * time.Second})
		log := newEventLog(t)
		start(t, paused, func(broker.Message) {})
		start(t, other, log.handle)
		ctx := ctxFor(t, time.Minute)
		must(t, other.Subscribe(ctx, "room"))
		addP(t, paused, "c1", "alice", `{"x":true}`, jlNow, "room")
		brokertest.Eventually(t, 5*time.Second, func() error {
			if log.count("join", "room")["alice"] != 1 {
				return fmt.Errorf("no join of alice")
			}
			return nil
		})
		keys, _ := fredis.PresenceKeys(paused, "room")
		registry := keys[4]
		must(t, admin.ZAdd(ctx, registry, goredis.Z{Score: 0, Member: paused.NodeID()}).Err())
		fredis.Sweep(other)
		must(t, presenceCounts(t, other, "room", 0, 0)())
		took := brokertest.Eventually(t, 10*time.Second, presenceCounts(t, other, "room", 1, 1))
		t.Logf("the node declared dead was back %v after the sweep", took.Round(10*time.Millisecond))
		brokertest.Eventually(t, 5*time.Second, func() error {
			want := []pevent{
				{kind: "join", topic: "room", user: "alice", info: `{"x":true}`},
				{kind: "leave", topic: "room", user: "alice"},
				{kind: "join", topic: "room", user: "alice", info: `{"x":true}`},
			}
			if got := log.events(); !slices.Equal(got, want) {
				return fmt.Errorf("events %+v, want %+v", got, want)
			}
			return nil
		})
	})
}

// TestPresenceAnyBytes: topics and conns with separators, braces and
// NUL bytes, and users that JSON must escape, are kept apart and come
// back intact, in the entries and in the events.
func TestPresenceAnyBytes(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		prefix := uniquePrefix()
		a := newBroker(t, newClient(), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
		log := newEventLog(t)
		start(t, a, log.handle)
		ctx := ctxFor(t, time.Minute)
		topics := []string{"1:a", "1:a1", "{x}:\x00", "", strings.Repeat("é", broker.MaxTopicLen/2)}
		must(t, a.SubscribeTopics(ctx, topics))
		users := []string{`al"ice\`, "bob\n\t\x01", "ünï ☃", "3:abc", "x\x7f"}
		for i, u := range users {
			addP(t, a, fmt.Sprintf("c:%d\x00%s", i, u), u, fmt.Sprintf(`{"i": %d}`, i), jlNow, topics...)
		}
		for _, topic := range topics {
			r, err := a.Presence(ctx, topic, 100)
			must(t, err)
			if r.Users != len(users) || r.Connections != len(users) || len(r.Clients) != len(users) {
				t.Fatalf("Presence(%q) = %+v, want %d users", topic, r, len(users))
			}
			for _, c := range r.Clients {
				var i int
				if _, err := fmt.Sscanf(c.Conn, "c:%d", &i); err != nil || i >= len(users) || c.User != users[i] || c.Conn != fmt.Sprintf("c:%d\x00%s", i, users[i]) {
					t.Fatalf("Presence(%q) lists %+v", topic, c)
				}
			}
		}
		for i, u := range users {
			must(t, a.RemovePresence(ctx, broker.PresenceClient{Conn: fmt.Sprintf("c:%d\x00%s", i, u), User: u}, topics, jlNow))
		}
		brokertest.Eventually(t, 5*time.Second, func() error {
			if n := len(log.events()); n != 2*len(users)*len(topics) {
				return fmt.Errorf("%d events, want %d", n, 2*len(users)*len(topics))
			}
			return nil
		})
		for _, kind := range []string{"join", "leave"} {
			for _, topic := range topics {
				got := log.count(kind, topic)
				for _, u := range users {
					if got[u] != 1 {
						t.Fatalf("%ss in %q: %v, want one of each user", kind, topic, got)
					}
				}
			}
		}
	})
}

// TestPresenceValidated: what no broker takes is refused with a clear
// error, before Redis is asked.
func TestPresenceValidated(t *testing.T) {
	a := newBroker(t, newClient(t, standaloneAddr(t)), fredis.Options{Prefix: uniquePrefix()})
	start(t, a, func(broker.Message) {})
	ctx := ctxFor(t, 10*time.Second)
	long := strings.Repeat("t", broker.MaxTopicLen+1)
	for _, tc := range []struct {
		c      broker.PresenceClient
		topics []string
		want   string
	}{
		{broker.PresenceClient{Conn: ""}, []string{"t"}, "empty conn"},
		{broker.PresenceClient{Conn: "c\xff"}, []string{"t"}, "UTF-8"},
		{broker.PresenceClient{Conn: "c", User: "u\xff"}, []string{"t"}, "UTF-8"},
		{broker.PresenceClient{Conn: "c"}, []string{"t", long}, "topic of"},
		{broker.PresenceClient{Conn: "c", Info: json.RawMessage(`[1]`)}, []string{"t"}, "not a JSON object"},
		{broker.PresenceClient{Conn: "c", Info: json.RawMessage(`{"a":`)}, []string{"t"}, "not JSON"},
		{broker.PresenceClient{Conn: "c", Info: json.RawMessage("{\"a\":\"\xff\"}")}, []string{"t"}, "UTF-8"},
		{broker.PresenceClient{Conn: "c", Info: json.RawMessage(`{"a":"` + strings.Repeat("x", broker.MaxPresenceInfo) + `"}`)}, []string{"t"}, "more than"},
	} {
		err := a.AddPresence(ctx, tc.c, tc.topics, jlNow)
		if err == nil || isUnavailable(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddPresence(%+v, %d topics) = %v, want an error saying %q", tc.c, len(tc.topics), err, tc.want)
		}
	}
	if err := a.RemovePresence(ctx, broker.PresenceClient{}, []string{"t"}, jlNow); err == nil {
		t.Error("RemovePresence with an empty conn succeeded")
	}
	if _, err := a.Presence(ctx, long, 10); err == nil || isUnavailable(err) {
		t.Errorf("Presence of a %d-byte topic: %v, want an error", len(long), err)
	}
	// Nothing was recorded: the topic is empty.
	must(t, presenceCounts(t, a, "t", 0, 0)())
	// Info with spaces is kept compacted; no info is {}.
	addP(t, a, "c", "u", "{ \"a\" : [1, 2] }", jlNow, "t")
	r, err := a.Presence(ctx, "t", 1)
	must(t, err)
	if len(r.Clients) != 1 || string(r.Clients[0].Info) != `{"a":[1,2]}` {
		t.Fatalf("Presence lists %+v", r.Clients)
	}
	// A closed broker refuses.
	must(t, a.Close())
	if err := a.AddPresence(context.Background(), broker.PresenceClient{Conn: "c"}, []string{"t"}, jlNow); err == nil {
		t.Error("AddPresence after Close succeeded")
	}
}
