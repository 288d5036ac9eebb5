package topicsvc

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// The Core's own presence tests: what the conformance suite cannot see
// from outside (the timers' re-checks, the state freed, the figures).

// eventLog is a node's deliver that keeps the join and leave events.
type eventLog struct {
	mu  sync.Mutex
	got []string // "join alice {…}", "leave alice"
}

func (l *eventLog) deliver(m broker.Message) {
	var d struct {
		User string          `json:"user"`
		Info json.RawMessage `json:"info"`
	}
	if err := json.Unmarshal(m.Data, &d); err != nil {
		panic(fmt.Sprintf("event data %q is not JSON: %v", m.Data, err))
	}
	var e string
	switch m.ID {
	case broker.JoinID:
		e = "join " + d.User + " " + string(d.Info)
	case broker.LeaveID:
		e = "leave " + d.User
	default:
		return
	}
	l.mu.Lock()
	l.got = append(l.got, e)
	l.mu.Unlock()
}

func (l *eventLog) events() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.got...)
}

func (l *eventLog) is(t *testing.T, want ...string) {
	t.Helper()
	if got := l.events(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// listening returns a Core with a node listening to topic, recording its
// events, and a second node to own entries.
func listening(t *testing.T, topic string) (*Core, *eventLog, *Node) {
	t.Helper()
	c := NewCore()
	log := &eventLog{}
	obs := c.AddNode("observer", log.deliver)
	obs.Listen(topic)
	return c, log, c.AddNode("owner", func(broker.Message) {})
}

func pc(conn, user, info string) broker.PresenceClient {
	c := broker.PresenceClient{Conn: conn, User: user}
	if info != "" {
		c.Info = json.RawMessage(info)
	}
	return c
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// freed checks that the Core holds no presence state at all.
func freed(t *testing.T, c *Core) {
	t.Helper()
	if s := c.PresenceStats(); s.Entries != 0 || s.Topics != 0 || s.Pending != 0 {
		t.Fatalf("presence figures %+v, want no entry, topic or pending leave", s)
	}
	for i := range c.presence.pshards {
		ps := &c.presence.pshards[i]
		ps.mu.RLock()
		topics, nodes := len(ps.topics), len(ps.byNode)
		ps.mu.RUnlock()
		if topics != 0 || nodes != 0 {
			t.Fatalf("shard %d still holds %d topics and the entries of %d nodes", i, topics, nodes)
		}
	}
}

// pendingOf returns the pending leave of user in topic, nil if none.
func pendingOf(c *Core, topic, user string) *pendingLeave {
	ps := c.pshard(topic)
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	if t := ps.topics[topic]; t != nil {
		if u := t.users[user]; u != nil {
			return u.leave
		}
	}
	return nil
}

var jlOpts = broker.PresenceOptions{JoinLeave: true, Grace: time.Hour} // leaves only when the test fires them

func TestPresenceJoinDataAndReplace(t *testing.T) {
	c, log, n := listening(t, "room")
	// Info is kept compacted, and a user id with quotes is escaped.
	mustNil(t, n.AddPresence(pc("c1", `al"ice`, `{ "name" : "Alice" }`), []string{"room"}, broker.PresenceOptions{JoinLeave: true}))
	log.is(t, `join al"ice {"name":"Alice"}`)
	r, err := c.Presence("room", 10)
	mustNil(t, err)
	if len(r.Clients) != 1 || string(r.Clients[0].Info) != `{"name":"Alice"}` {
		t.Fatalf("Presence = %+v", r)
	}
	// The same connection, another user: the old one's leave (grace 0),
	// the new one's join with an empty info.
	mustNil(t, n.AddPresence(pc("c1", "bob", `{}`), []string{"room"}, broker.PresenceOptions{JoinLeave: true}))
	log.is(t, `join al"ice {"name":"Alice"}`, `leave al"ice`, `join bob {}`)
	r, _ = c.Presence("room", 10)
	if r.Users != 1 || r.Connections != 1 || r.Clients[0].User != "bob" || r.Clients[0].Info != nil {
		t.Fatalf("after the replace: %+v", r)
	}
	mustNil(t, n.RemovePresence(pc("c1", "", ""), []string{"room"}, broker.PresenceOptions{JoinLeave: true}))
	log.is(t, `join al"ice {"name":"Alice"}`, `leave al"ice`, `join bob {}`, `leave bob`)
	freed(t, c)
}

func TestPresenceGraceCancelsLeave(t *testing.T) {
	c, log, n := listening(t, "room")
	opts := broker.PresenceOptions{JoinLeave: true, Grace: 100 * time.Millisecond}
	mustNil(t, n.AddPresence(pc("c1", "alice", ""), []string{"room"}, opts))
	mustNil(t, n.RemovePresence(pc("c1", "alice", ""), []string{"room"}, opts))
	if s := c.PresenceStats(); s.Pending != 1 || s.Topics != 1 || s.Entries != 0 {
		t.Fatalf("with a leave pending: %+v", s)
	}
	mustNil(t, n.AddPresence(pc("c2", "alice", ""), []string{"room"}, opts))
	if s := c.PresenceStats(); s.Pending != 0 {
		t.Fatalf("the leave is still pending after the user came back: %+v", s)
	}
	time.Sleep(3 * opts.Grace)
	log.is(t, "join alice {}")
	// Her last connection goes for good: the leave comes after the grace.
	start := time.Now()
	mustNil(t, n.RemovePresence(pc("c2", "alice", ""), []string{"room"}, opts))
	log.is(t, "join alice {}")
	for len(log.events()) < 2 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("no leave within 5 s of a 100 ms grace")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if waited := time.Since(start); waited < opts.Grace {
		t.Fatalf("leave after %v, before the grace of %v", waited, opts.Grace)
	}
	log.is(t, "join alice {}", "leave alice")
	freed(t, c)
}

// TestPresenceStaleTimer: a timer that fires after its leave was
// cancelled, or after another leave of the same user replaced it, sends
// nothing; the current one sends its leave once.
func TestPresenceStaleTimer(t *testing.T) {
	c, log, n := listening(t, "room")
	a := pc("c1", "alice", "")
	mustNil(t, n.AddPresence(a, []string{"room"}, jlOpts))
	mustNil(t, n.RemovePresence(a, []string{"room"}, jlOpts))
	first := pendingOf(c, "room", "alice")
	if first == nil {
		t.Fatal("no pending leave after the last connection went")
	}
	mustNil(t, n.AddPresence(a, []string{"room"}, jlOpts)) // cancels it
	c.fireLeave("room", "alice", first)                    // as if its timer fired just before the cancel
	log.is(t, "join alice {}")
	mustNil(t, n.RemovePresence(a, []string{"room"}, jlOpts))
	second := pendingOf(c, "room", "alice")
	if second == nil || second == first {
		t.Fatal("no new pending leave")
	}
	c.fireLeave("room", "alice", first) // the stale timer again: not the current leave
	log.is(t, "join alice {}")
	c.fireLeave("room", "alice", second)
	log.is(t, "join alice {}", "leave alice")
	c.fireLeave("room", "alice", second) // fired twice: once only
	log.is(t, "join alice {}", "leave alice")
	second.timer.Stop()
	freed(t, c)
}

// TestPresenceRacesAlternate: nodes add and remove connections of the
// same users concurrently, with leaves whose grace is about as long as
// the gaps: for each user the events alternate join, leave, join, …, and
// after the last removal every user has left once more than they
// rejoined.
func TestPresenceRacesAlternate(t *testing.T) {
	c, log, _ := listening(t, "race")
	opts := broker.PresenceOptions{JoinLeave: true, Grace: time.Millisecond}
	var wg sync.WaitGroup
	for i := range 4 {
		nd := c.AddNode(fmt.Sprint("n", i), func(broker.Message) {})
		for u := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cl := pc(fmt.Sprintf("n%d-u%d", i, u), fmt.Sprint("u", u), "")
				for range 200 {
					mustNil(t, nd.AddPresence(cl, []string{"race"}, opts))
					time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
					mustNil(t, nd.RemovePresence(cl, []string{"race"}, opts))
					// Away for about the grace: the timer fires as the
					// user comes back, on this node or another.
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				}
			}()
		}
	}
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for c.PresenceStats().Pending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("leaves still pending: %+v", c.PresenceStats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	last := map[string]string{}
	evs := log.events()
	t.Logf("%d events for 4,000 adds and removes", len(evs))
	if len(evs) < 50 {
		t.Fatalf("only %d events: the test did not race the timers", len(evs))
	}
	for _, e := range evs {
		kind, user, _ := strings.Cut(e, " ")
		user, _, _ = strings.Cut(user, " ")
		if last[user] == kind {
			t.Fatalf("two %ss of %s in a row", kind, user)
		}
		if last[user] == "" && kind != "join" {
			t.Fatalf("%s of %s before any join", kind, user)
		}
		last[user] = kind
	}
	for u := range 5 {
		if k := last[fmt.Sprint("u", u)]; k != "leave" {
			t.Fatalf("user u%d's last event is %q, want a leave", u, k)
		}
	}
	freed(t, c)
}

// TestPresenceNodeRemoval: a node's removal takes its entries, and the
// leaves of the users it had the last connection of follow after their
// grace (Remove) or at once (RemoveSilent); a leave already pending goes
// on; a user connected elsewhere stays.
func TestPresenceNodeRemoval(t *testing.T) {
	for _, silent := range []bool{false, true} {
		t.Run(fmt.Sprint("silent=", silent), func(t *testing.T) {
			c, log, n := listening(t, "room")
			other := c.AddNode("other", func(broker.Message) {})
			opts := broker.PresenceOptions{JoinLeave: true, Grace: 200 * time.Millisecond}
			mustNil(t, n.AddPresence(pc("a1", "alice", ""), []string{"room"}, opts))
			mustNil(t, n.AddPresence(pc("b1", "bob", ""), []string{"room", "hall"}, opts))
			mustNil(t, n.AddPresence(pc("c1", "carol", ""), []string{"room"}, opts))
			mustNil(t, other.AddPresence(pc("c2", "carol", ""), []string{"room"}, opts))
			mustNil(t, n.RemovePresence(pc("a1", "alice", ""), []string{"room"}, opts)) // alice's leave pending
			start := time.Now()
			if silent {
				n.RemoveSilent()
				log.is(t, "join alice {}", "join bob {}", "join carol {}", "leave bob")
			} else {
				n.Remove()
				log.is(t, "join alice {}", "join bob {}", "join carol {}")
			}
			if err := n.AddPresence(pc("d1", "dave", ""), []string{"room"}, opts); !errors.Is(err, broker.ErrClosed) {
				t.Fatalf("AddPresence of a removed node: %v, want ErrClosed", err)
			}
			r, _ := c.Presence("room", 10)
			if r.Connections != 1 || r.Users != 1 || r.Clients[0].Conn != "c2" {
				t.Fatalf("after the removal: %+v", r)
			}
			for c.PresenceStats().Pending != 0 {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("leaves still pending: %+v", c.PresenceStats())
				}
				time.Sleep(5 * time.Millisecond)
			}
			got := log.events()
			leaves := map[string]int{}
			for _, e := range got[3:] {
				leaves[e]++
			}
			if len(got) != 5 || leaves["leave alice"] != 1 || leaves["leave bob"] != 1 {
				t.Fatalf("events %q: want one leave each of alice and bob, none of carol", got)
			}
			mustNil(t, other.RemovePresence(pc("c2", "carol", ""), []string{"room"}, broker.PresenceOptions{}))
			freed(t, c)
		})
	}
}

// TestPresenceAddNodeReplaces: a node that reconnects under the same id
// replaces its old node, whose entries go with the leaves after their
// grace; the new node's adds within the grace cancel them.
func TestPresenceAddNodeReplaces(t *testing.T) {
	c, log, _ := listening(t, "room")
	opts := broker.PresenceOptions{JoinLeave: true, Grace: 200 * time.Millisecond}
	old := c.AddNode("gw", func(broker.Message) {})
	mustNil(t, old.AddPresence(pc("c1", "alice", ""), []string{"room"}, opts))
	nu := c.AddNode("gw", func(broker.Message) {})
	mustNil(t, nu.AddPresence(pc("c1", "alice", ""), []string{"room"}, opts))
	time.Sleep(2 * opts.Grace)
	log.is(t, "join alice {}")
	if s := c.PresenceStats(); s.Entries != 1 || s.Pending != 0 {
		t.Fatalf("figures %+v, want the new node's entry only", s)
	}
	nu.Remove()
	time.Sleep(2 * opts.Grace)
	log.is(t, "join alice {}", "leave alice")
	freed(t, c)
}

func TestPresenceValidation(t *testing.T) {
	c, log, n := listening(t, "room")
	long := strings.Repeat("x", MaxPresenceIDLen+1)
	bad := []struct {
		name  string
		c     broker.PresenceClient
		topic string
		want  string
	}{
		{"no conn", pc("", "alice", ""), "room", "empty connection id"},
		{"long conn", pc(long, "alice", ""), "room", "connection id of 257 bytes"},
		{"conn not UTF-8", pc("c\xff", "alice", ""), "room", "not valid UTF-8"},
		{"long user", pc("c1", long, ""), "room", "user id of 257 bytes"},
		{"user not UTF-8", pc("c1", "al\xffice", ""), "room", "not valid UTF-8"},
		{"info an array", pc("c1", "alice", `[1]`), "room", "must be a JSON object"},
		{"info a string", pc("c1", "alice", ` "x"`), "room", "must be a JSON object"},
		{"info not JSON", pc("c1", "alice", `{"a":`), "room", "not JSON"},
		{"info not UTF-8", pc("c1", "alice", "{\"a\":\"\xff\"}"), "room", "not valid UTF-8"},
		{"info too large", pc("c1", "alice", `{"a":"`+strings.Repeat("x", broker.MaxPresenceInfo)+`"}`), "room", "info of 1032 bytes"},
		{"empty topic", pc("c1", "alice", ""), "", "empty topic"},
		{"long topic", pc("c1", "alice", ""), strings.Repeat("t", broker.MaxTopicLen+1), "topic of 257 bytes"},
		{"topic not UTF-8", pc("c1", "alice", ""), "ro\xffom", "not valid UTF-8"},
	}
	for _, b := range bad {
		err := n.AddPresence(b.c, []string{"room", b.topic}, jlOpts)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: AddPresence: %v, want an error saying %q", b.name, err, b.want)
		}
	}
	if err := n.RemovePresence(pc("", "alice", ""), []string{"room"}, jlOpts); err == nil {
		t.Error("RemovePresence without a connection id: no error")
	}
	if err := n.RemovePresence(pc("c1", "alice", ""), []string{""}, jlOpts); err == nil {
		t.Error("RemovePresence of an empty topic: no error")
	}
	if _, err := c.Presence(strings.Repeat("t", broker.MaxTopicLen+1), 1); err == nil {
		t.Error("Presence of a topic too long: no error")
	}
	// The largest info there is, and a nil info, are fine.
	max := `{"a":"` + strings.Repeat("x", broker.MaxPresenceInfo-8) + `"}`
	mustNil(t, n.AddPresence(pc("c1", "alice", max), []string{"room"}, broker.PresenceOptions{}))
	mustNil(t, n.AddPresence(pc("c2", "", ""), []string{"room"}, broker.PresenceOptions{}))
	log.is(t)
	if s := c.PresenceStats(); s.Entries != 2 {
		t.Fatalf("after the refusals and two valid adds: %+v", s)
	}
}

// TestPresence10k: a topic of 10,000 connections of 2,500 users, listed
// in part and whole, then emptied: the state is freed.
func TestPresence10k(t *testing.T) {
	c, log, n := listening(t, "big")
	const conns, users = 10_000, 2_500
	for i := range conns {
		mustNil(t, n.AddPresence(pc(fmt.Sprint("c", i), fmt.Sprint("u", i%users), `{"i":1}`), []string{"big"}, broker.PresenceOptions{JoinLeave: true}))
	}
	if got := len(log.events()); got != users {
		t.Fatalf("%d joins, want one per user, %d", got, users)
	}
	for _, limit := range []int{0, 1, 1000, conns, 2 * conns} {
		r, err := c.Presence("big", limit)
		mustNil(t, err)
		want := min(limit, conns)
		if r.Users != users || r.Connections != conns || len(r.Clients) != want {
			t.Fatalf("limit %d: %d users, %d connections, %d clients; want %d, %d, %d", limit, r.Users, r.Connections, len(r.Clients), users, conns, want)
		}
		seen := map[string]bool{}
		for _, cl := range r.Clients {
			if seen[cl.Conn] {
				t.Fatalf("limit %d: %s listed twice", limit, cl.Conn)
			}
			seen[cl.Conn] = true
		}
	}
	if s := c.PresenceStats(); s.Entries != conns || s.Topics != 1 || s.Joins != users {
		t.Fatalf("figures %+v", s)
	}
	for i := range conns {
		mustNil(t, n.RemovePresence(pc(fmt.Sprint("c", i), "", ""), []string{"big"}, broker.PresenceOptions{JoinLeave: true}))
	}
	if got := len(log.events()); got != 2*users {
		t.Fatalf("%d events, want a join and a leave per user", got)
	}
	freed(t, c)
}
