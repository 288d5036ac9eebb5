package brokertest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// The presence part of the suite, for brokers that implement
// broker.Presencer (Config.Presence says they must).

func (s *suite) runPresence(t *testing.T) {
	probe := s.cfg.NewCluster(t, 1)
	_, ok := probe[0].(broker.Presencer)
	probe[0].Close()
	if !ok {
		if s.cfg.Presence {
			t.Fatal("Config.Presence is set but the broker does not implement broker.Presencer")
		}
		return
	}
	if s.cfg.Kill == nil {
		t.Fatal("the broker implements broker.Presencer: Config.Kill must say how one of its nodes dies")
	}
	if s.cfg.NodeDeath == 0 {
		t.Fatal("the broker implements broker.Presencer: Config.NodeDeath must give its node-death bound")
	}
	t.Run("PresenceMergesNodes", s.presenceMergesNodes)
	t.Run("PresenceReplacesAndRemoves", s.presenceReplacesAndRemoves)
	t.Run("PresenceLimit", s.presenceLimit)
	t.Run("JoinLeaveOncePerUser", s.joinLeaveOncePerUser)
	t.Run("GraceCancelsLeave", s.graceCancelsLeave)
	t.Run("NoEventsWithoutJoinLeave", s.noEventsWithoutJoinLeave)
	t.Run("NoDuplicateEventsWhenNodesRace", s.noDuplicateEventsWhenNodesRace)
	t.Run("CloseRemovesPresence", s.closeRemovesPresence)
	t.Run("KilledNodeLosesPresence", s.killedNodeLosesPresence)
}

func presencer(t *testing.T, n *node) broker.Presencer {
	t.Helper()
	p, ok := n.Broker.(broker.Presencer)
	if !ok {
		t.Fatal("broker does not implement broker.Presencer")
	}
	return p
}

func client(conn, user, info string) broker.PresenceClient {
	c := broker.PresenceClient{Conn: conn, User: user}
	if info != "" {
		c.Info = json.RawMessage(info)
	}
	return c
}

func add(t *testing.T, n *node, c broker.PresenceClient, opts broker.PresenceOptions, topics ...string) {
	t.Helper()
	if err := presencer(t, n).AddPresence(ctx(t), c, topics, opts); err != nil {
		t.Fatalf("AddPresence(%+v, %q): %v", c, topics, err)
	}
}

func remove(t *testing.T, n *node, c broker.PresenceClient, opts broker.PresenceOptions, topics ...string) {
	t.Helper()
	if err := presencer(t, n).RemovePresence(ctx(t), c, topics, opts); err != nil {
		t.Fatalf("RemovePresence(%+v, %q): %v", c, topics, err)
	}
}

// presenceIs returns a check: n answers exactly these clients (in any
// order) and the counts they make.
func presenceIs(t *testing.T, n *node, topic string, want ...broker.PresenceClient) func() error {
	return func() error {
		r, err := presencer(t, n).Presence(ctx(t), topic, 1000)
		if err != nil {
			return err
		}
		users := map[string]bool{}
		for _, c := range want {
			if c.User != "" {
				users[c.User] = true
			}
		}
		if r.Users != len(users) || r.Connections != len(want) {
			return fmt.Errorf("Presence(%q) counts %d users and %d connections, want %d and %d", topic, r.Users, r.Connections, len(users), len(want))
		}
		if got, exp := clientKeys(r.Clients), clientKeys(want); !slices.Equal(got, exp) {
			return fmt.Errorf("Presence(%q) lists %q, want %q", topic, got, exp)
		}
		return nil
	}
}

// clientKeys renders clients as sorted "conn user info" strings, info
// compacted ({} for none).
func clientKeys(cs []broker.PresenceClient) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Conn+" "+c.User+" "+compactInfo(c.Info))
	}
	slices.Sort(out)
	return out
}

func compactInfo(info json.RawMessage) string {
	if len(info) == 0 {
		return "{}"
	}
	var v any
	if err := json.Unmarshal(info, &v); err != nil {
		return "invalid JSON " + string(info)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// event is a join or leave a node received.
type event struct {
	Kind  string // "join" or "leave"
	Topic string
	User  string
	Info  string // compacted, joins only
}

// events returns the join and leave events n received, in order; it fails
// the test on an event whose data is not what the broker package says.
func (n *node) events(t *testing.T) []event {
	t.Helper()
	var out []event
	for _, m := range n.messages() {
		var kind string
		switch m.ID {
		case broker.JoinID:
			kind = "join"
		case broker.LeaveID:
			kind = "leave"
		default:
			continue
		}
		if m.Offset != 0 || m.Epoch != "" {
			t.Fatalf("%s event has offset %d in epoch %q, want none", kind, m.Offset, m.Epoch)
		}
		var d struct {
			User *string         `json:"user"`
			Info json.RawMessage `json:"info"`
		}
		if err := json.Unmarshal(m.Data, &d); err != nil || d.User == nil {
			t.Fatalf("%s event data %q: want {\"user\":…}: %v", kind, m.Data, err)
		}
		e := event{Kind: kind, Topic: m.Topic, User: *d.User}
		if kind == "join" {
			e.Info = compactInfo(d.Info)
		}
		out = append(out, e)
	}
	return out
}

// eventsAre returns a check: n received exactly want, in order.
func eventsAre(t *testing.T, n *node, want ...event) func() error {
	return func() error {
		got := n.events(t)
		if !slices.Equal(got, want) {
			return fmt.Errorf("events %+v, want %+v", got, want)
		}
		return nil
	}
}

var (
	plain = broker.PresenceOptions{}
	jl    = broker.PresenceOptions{JoinLeave: true, Grace: 300 * time.Millisecond}
)

func (s *suite) presenceMergesNodes(t *testing.T) {
	n := s.cluster(t, 3)
	a1 := client("c1", "alice", `{"name": "Alice", "avatar": "/a.png"}`)
	a2 := client("c2", "alice", `{"name":"Alice"}`)
	b := client("c3", "bob", "")
	anon := client("c4", "", "")
	add(t, n[0], a1, plain, "room")
	add(t, n[1], a2, plain, "room", "other")
	add(t, n[1], b, plain, "room")
	add(t, n[2], anon, plain, "room")
	for i := range n {
		Eventually(t, s.cfg.Propagation, presenceIs(t, n[i], "room", a1, a2, b, anon))
	}
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[0], "other", a2))
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[0], "nobody"))
}

func (s *suite) presenceReplacesAndRemoves(t *testing.T) {
	n := s.cluster(t, 2)
	a := client("c1", "alice", `{"v":1}`)
	add(t, n[0], a, plain, "r")
	a.Info = json.RawMessage(`{"v":2}`)
	add(t, n[0], a, plain, "r")
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[1], "r", a))
	remove(t, n[0], client("never-added", "x", ""), plain, "r", "no-such-topic")
	remove(t, n[0], a, plain, "r")
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[1], "r"))
}

func (s *suite) presenceLimit(t *testing.T) {
	n := s.cluster(t, 2)
	var all []broker.PresenceClient
	for i := range 50 {
		c := client(fmt.Sprintf("c%d", i), fmt.Sprintf("u%d", i%20), "")
		all = append(all, c)
		add(t, n[i%2], c, plain, "big")
	}
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[0], "big", all...))
	r, err := presencer(t, n[1]).Presence(ctx(t), "big", 10)
	must(t, err)
	if r.Users != 20 || r.Connections != 50 || len(r.Clients) != 10 {
		t.Fatalf("limit 10: %d users, %d connections, %d clients; want 20, 50, 10", r.Users, r.Connections, len(r.Clients))
	}
	r, err = presencer(t, n[1]).Presence(ctx(t), "big", 0)
	must(t, err)
	if r.Users != 20 || r.Connections != 50 || len(r.Clients) != 0 {
		t.Fatalf("limit 0: %d users, %d connections, %d clients; want 20, 50, 0", r.Users, r.Connections, len(r.Clients))
	}
}

func (s *suite) joinLeaveOncePerUser(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "room"))
	must(t, n[1].Subscribe(c, "room"))
	a1 := client("c1", "alice", `{"name":"Alice"}`)
	a2 := client("c2", "alice", `{"name":"Alice on her phone"}`)
	add(t, n[0], a1, jl, "room")
	join := event{Kind: "join", Topic: "room", User: "alice", Info: `{"name":"Alice"}`}
	for i := range n {
		Eventually(t, s.cfg.Propagation, eventsAre(t, n[i], join))
	}
	add(t, n[1], a2, jl, "room") // a second connection of the same user
	remove(t, n[0], a1, jl, "room")
	time.Sleep(jl.Grace + s.cfg.Propagation/4)
	must(t, eventsAre(t, n[0], join)())
	start := time.Now()
	remove(t, n[1], a2, jl, "room") // her last one
	leave := event{Kind: "leave", Topic: "room", User: "alice"}
	for i := range n {
		Eventually(t, jl.Grace+s.cfg.Propagation, eventsAre(t, n[i], join, leave))
	}
	if waited := time.Since(start); waited < jl.Grace {
		t.Fatalf("leave came %v after the last connection left, before the grace of %v", waited, jl.Grace)
	}
	add(t, n[1], a1, jl, "room") // back after the leave: a new join
	Eventually(t, s.cfg.Propagation, eventsAre(t, n[0], join, leave, join))
}

func (s *suite) graceCancelsLeave(t *testing.T) {
	n := s.cluster(t, 2)
	must(t, n[0].Subscribe(ctx(t), "room"))
	a1 := client("c1", "alice", "")
	add(t, n[0], a1, jl, "room")
	join := event{Kind: "join", Topic: "room", User: "alice", Info: "{}"}
	Eventually(t, s.cfg.Propagation, eventsAre(t, n[0], join))
	// A reload: the old connection goes, a new one comes, on another node.
	remove(t, n[0], a1, jl, "room")
	a2 := client("c2", "alice", "")
	add(t, n[1], a2, jl, "room")
	time.Sleep(2*jl.Grace + s.cfg.Propagation/2)
	must(t, eventsAre(t, n[0], join)())
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[0], "room", a2))
}

func (s *suite) noEventsWithoutJoinLeave(t *testing.T) {
	n := s.cluster(t, 1)
	must(t, n[0].Subscribe(ctx(t), "quiet"))
	must(t, n[0].Subscribe(ctx(t), "anon"))
	a := client("c1", "alice", "")
	add(t, n[0], a, plain, "quiet")
	remove(t, n[0], a, plain, "quiet")
	anon := client("c2", "", "")
	add(t, n[0], anon, jl, "anon")
	remove(t, n[0], anon, jl, "anon")
	time.Sleep(jl.Grace + s.cfg.Propagation/2)
	must(t, eventsAre(t, n[0])())
}

func (s *suite) noDuplicateEventsWhenNodesRace(t *testing.T) {
	const users = 10
	n := s.cluster(t, 3)
	observer := n[0]
	must(t, observer.Subscribe(ctx(t), "race"))
	// Every node adds a connection of every user at once, then removes
	// it at once: one join and one leave per user, whatever the order.
	run := func(f func(nd *node, c broker.PresenceClient)) {
		var wg sync.WaitGroup
		for i, nd := range n {
			for u := range users {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f(nd, client(fmt.Sprintf("n%d-u%d", i, u), fmt.Sprintf("u%d", u), ""))
				}()
			}
		}
		wg.Wait()
	}
	run(func(nd *node, c broker.PresenceClient) { add(t, nd, c, jl, "race") })
	run(func(nd *node, c broker.PresenceClient) { remove(t, nd, c, jl, "race") })
	count := func() (joins, leaves map[string]int) {
		joins, leaves = map[string]int{}, map[string]int{}
		for _, e := range observer.events(t) {
			if e.Kind == "join" {
				joins[e.User]++
			} else {
				if joins[e.User] == 0 {
					t.Fatalf("leave of %s before its join", e.User)
				}
				leaves[e.User]++
			}
		}
		return joins, leaves
	}
	Eventually(t, jl.Grace+2*s.cfg.Propagation, func() error {
		if joins, leaves := count(); len(joins) != users || len(leaves) != users {
			return fmt.Errorf("joins of %d users and leaves of %d, want %d each", len(joins), len(leaves), users)
		}
		return nil
	})
	time.Sleep(jl.Grace + s.cfg.Propagation/2)
	joins, leaves := count()
	for u := range users {
		name := fmt.Sprintf("u%d", u)
		if joins[name] != 1 || leaves[name] != 1 {
			t.Fatalf("user %s: %d joins and %d leaves, want one of each", name, joins[name], leaves[name])
		}
	}
}

func (s *suite) closeRemovesPresence(t *testing.T) {
	n := s.cluster(t, 2)
	must(t, n[1].Subscribe(ctx(t), "room"))
	a := client("c1", "alice", "")
	b := client("c2", "bob", "")
	add(t, n[0], a, jl, "room")
	add(t, n[1], b, jl, "room")
	must(t, n[0].Close())
	Eventually(t, jl.Grace+s.cfg.Propagation, presenceIs(t, n[1], "room", b))
	Eventually(t, jl.Grace+s.cfg.Propagation, func() error {
		for _, e := range n[1].events(t) {
			if e.Kind == "leave" && e.User == "alice" {
				return nil
			}
		}
		return fmt.Errorf("no leave of alice after her node closed: %+v", n[1].events(t))
	})
}

func (s *suite) killedNodeLosesPresence(t *testing.T) {
	n := s.cluster(t, 2)
	must(t, n[1].Subscribe(ctx(t), "room"))
	a := client("c1", "alice", "")
	b1 := client("c2", "bob", "")
	b2 := client("c3", "bob", "")
	add(t, n[0], a, jl, "room")
	add(t, n[0], b1, jl, "room")
	add(t, n[1], b2, jl, "room")
	Eventually(t, s.cfg.Propagation, presenceIs(t, n[1], "room", a, b1, b2))
	s.cfg.Kill(t, n[0].Broker)
	took := Eventually(t, s.cfg.NodeDeath+s.cfg.Propagation, func() error {
		if err := presenceIs(t, n[1], "room", b2)(); err != nil {
			return err
		}
		for _, e := range n[1].events(t) {
			if e.Kind == "leave" && e.User == "alice" {
				return nil
			}
		}
		return fmt.Errorf("no leave of alice yet")
	})
	t.Logf("a killed node's presence was gone, and its user's leave sent, %v after its death", took)
	time.Sleep(jl.Grace + s.cfg.Propagation/2)
	for _, e := range n[1].events(t) {
		if e.Kind == "leave" && e.User == "bob" {
			t.Fatal("bob, still connected on the live node, got a leave")
		}
	}
}
