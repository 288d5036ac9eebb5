package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// events returns the join and leave events a node received, as "join
// alice" and "leave alice".
func events(n *svctest.Node) []string {
	var out []string
	for _, m := range n.Rec.Messages() {
		var d struct {
			User string `json:"user"`
		}
		switch m.ID {
		case broker.JoinID, broker.LeaveID:
			if err := json.Unmarshal(m.Data, &d); err != nil {
				out = append(out, "malformed "+string(m.Data))
				continue
			}
			out = append(out, strings.TrimPrefix(m.ID, "firetower ")+" "+d.User)
		}
	}
	return out
}

func eventsAre(n *svctest.Node, want ...string) func() error {
	return func() error {
		if got := events(n); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("events %q, want %q", got, want)
		}
		return nil
	}
}

// listed returns a check: n's Presence of topic lists exactly conns.
func listed(t *testing.T, n *svctest.Node, topic string, conns ...string) func() error {
	return func() error {
		r, err := n.Presence(svctest.Ctx(t), topic, 100)
		if err != nil {
			return err
		}
		var got []string
		for _, c := range r.Clients {
			got = append(got, c.Conn)
		}
		if r.Connections != len(conns) || strings.Join(sorted(got), ",") != strings.Join(sorted(conns), ",") {
			return fmt.Errorf("Presence(%q) lists %q (%d connections), want %q", topic, got, r.Connections, conns)
		}
		return nil
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// TestPresenceSilentNodeLeavesAtOnce: a node whose link goes silent (its
// connection stays open, nothing passes) is removed by the service's
// heartbeat timeout (5 s), and its users' leaves are sent then, not a
// grace later: the leave of a 3 s grace comes within the timeout of the
// node's last frame, so within 5 s of the silence, not at timeout plus
// grace (8 s).
func TestPresenceSilentNodeLeavesAtOnce(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	observer := svctest.DialNode(t, svc.Addr, client.Options{})
	proxy := svctest.StartProxy(t, svc.Addr)
	owner := svctest.DialNode(t, proxy.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, observer.Subscribe(ctx, "room"))
	opts := broker.PresenceOptions{JoinLeave: true, Grace: 3 * time.Second}
	must(t, owner.AddPresence(ctx, broker.PresenceClient{Conn: "c1", User: "alice"}, []string{"room"}, opts))
	must(t, observer.AddPresence(ctx, broker.PresenceClient{Conn: "c2", User: "bob"}, []string{"room"}, opts))
	brokertest.Eventually(t, 5*time.Second, eventsAre(observer, "join alice", "join bob"))

	proxy.Freeze()
	took := brokertest.Eventually(t, 15*time.Second, eventsAre(observer, "join alice", "join bob", "leave alice"))
	t.Logf("the silent node's user left %v after the silence began (heartbeat timeout 5 s, grace 3 s)", took.Round(time.Millisecond))
	// Not before the timeout less a heartbeat interval (the last frame
	// came at most 1 s before the silence, and the service checks once a
	// second), and within the timeout of the silence (plus the delivery
	// and this test's polling, with a second of slack for a loaded
	// machine).
	if took < 3*time.Second {
		t.Fatalf("leave %v after the silence began, before the heartbeat timeout could pass", took)
	}
	if took >= 6*time.Second {
		t.Fatalf("leave %v after the silence began: over the 5 s node-death bound", took)
	}
	must(t, listed(t, observer, "room", "c2")())
	if !strings.Contains(svc.Logs(), "no heartbeat") {
		t.Fatalf("the service did not log a heartbeat timeout:\n%s", svc.Logs())
	}
}

// TestPresenceReconnectWithinGrace: a node whose connection breaks and
// comes back within the grace adds its entries again at its new session:
// the leaves the old session's end scheduled are cancelled, and no event
// is sent.
func TestPresenceReconnectWithinGrace(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	observer := svctest.DialNode(t, svc.Addr, client.Options{})
	proxy := svctest.StartProxy(t, svc.Addr)
	owner := svctest.DialNode(t, proxy.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, observer.Subscribe(ctx, "room"))
	opts := broker.PresenceOptions{JoinLeave: true, Grace: 3 * time.Second}
	must(t, owner.AddPresence(ctx, broker.PresenceClient{Conn: "c1", User: "alice", Info: json.RawMessage(`{"n":1}`)}, []string{"room", "hall"}, opts))
	brokertest.Eventually(t, 5*time.Second, eventsAre(observer, "join alice"))

	proxy.Break()
	broke := time.Now()
	brokertest.Eventually(t, 10*time.Second, func() error {
		if owner.Reconnects() < 1 || !owner.Connected() {
			return errors.New("the owner has not reconnected")
		}
		return nil
	})
	if d := time.Since(broke); d > opts.Grace {
		t.Fatalf("the reconnect took %v, longer than the grace: the test cannot tell", d)
	}
	must(t, listed(t, observer, "room", "c1")())
	must(t, listed(t, observer, "hall", "c1")())
	time.Sleep(opts.Grace + 500*time.Millisecond)
	must(t, eventsAre(observer, "join alice")())
	if n := owner.PresenceEntries(); n != 2 {
		t.Fatalf("the owner keeps %d entries, want 2", n)
	}
	// Close removes the entries at the service, with the leave after the
	// grace.
	must(t, owner.Close())
	if n := owner.PresenceEntries(); n != 0 {
		t.Fatalf("the owner keeps %d entries after Close", n)
	}
	brokertest.Eventually(t, opts.Grace+5*time.Second, eventsAre(observer, "join alice", "leave alice"))
	must(t, listed(t, observer, "room")())
}

// TestPresenceAfterServiceRestart: the service loses every entry when it
// restarts; each node adds its own again at its new session, so the
// cluster's presence comes back, with joins for the users again. While
// the service is down, presence calls fail fast with ErrUnavailable, and
// an entry removed then is not added again.
func TestPresenceAfterServiceRestart(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	owner := svctest.DialNode(t, svc.Addr, client.Options{})
	observer := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	opts := broker.PresenceOptions{JoinLeave: true, Grace: 300 * time.Millisecond}
	must(t, observer.Subscribe(ctx, "room"))
	alice := broker.PresenceClient{Conn: "c1", User: "alice"}
	bob := broker.PresenceClient{Conn: "c2", User: "bob"}
	must(t, owner.AddPresence(ctx, alice, []string{"room"}, opts))
	must(t, owner.AddPresence(ctx, bob, []string{"room"}, opts))
	brokertest.Eventually(t, 5*time.Second, listed(t, observer, "room", "c1", "c2"))

	svc.Kill()
	brokertest.Eventually(t, 10*time.Second, func() error {
		if owner.Connected() {
			return errors.New("the owner has not noticed the service is gone")
		}
		return nil
	})
	for _, err := range []error{
		owner.AddPresence(ctx, broker.PresenceClient{Conn: "c3", User: "carol"}, []string{"room"}, opts),
		owner.RemovePresence(ctx, bob, []string{"room"}, opts),
		func() error { _, err := owner.Presence(ctx, "room", 10); return err }(),
	} {
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("a presence call while the service is down: %v, want ErrUnavailable", err)
		}
	}
	if n := owner.PresenceEntries(); n != 1 {
		t.Fatalf("the owner keeps %d entries, want alice's alone", n)
	}
	observer.Rec.Reset()
	svctest.Start(t, svc.Addr)
	brokertest.Eventually(t, 15*time.Second, listed(t, observer, "room", "c1"))
	// The observer gets alice's join again when it resubscribed before
	// the owner added her back; either way, nobody else.
	for _, e := range events(observer) {
		if e != "join alice" {
			t.Fatalf("after the restart: event %q", e)
		}
	}
}

// TestPresenceClientBounds: what the client refuses before sending, and
// a limit over the service's cap asks for the cap.
func TestPresenceClientBounds(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	n := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	for _, c := range []struct {
		err  error
		want string
	}{
		{n.AddPresence(ctx, broker.PresenceClient{User: "alice"}, []string{"room"}, broker.PresenceOptions{}), "empty connection id"},
		{n.AddPresence(ctx, broker.PresenceClient{Conn: "c1", Info: json.RawMessage(`"x"`)}, []string{"room"}, broker.PresenceOptions{}), "JSON object"},
		{n.AddPresence(ctx, broker.PresenceClient{Conn: "c1"}, []string{""}, broker.PresenceOptions{}), "empty topic"},
		{n.AddPresence(ctx, broker.PresenceClient{Conn: "c1"}, []string{"room"}, broker.PresenceOptions{JoinLeave: true, Grace: time.Hour}), "grace of 1h0m0s, the limit is 1m0s"},
		{n.RemovePresence(ctx, broker.PresenceClient{}, []string{"room"}, broker.PresenceOptions{}), "empty connection id"},
		{func() error { _, err := n.Presence(ctx, "", 1); return err }(), "empty topic"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("got %v, want an error saying %q", c.err, c.want)
		}
	}
	// Many topics at once travel in several operations; a large limit
	// is capped.
	topics := make([]string, 3000)
	for i := range topics {
		topics[i] = fmt.Sprintf("%0200d", i) // 600 kB of topics
	}
	must(t, n.AddPresence(ctx, broker.PresenceClient{Conn: "c1", User: "alice"}, topics, broker.PresenceOptions{}))
	for _, topic := range []string{topics[0], topics[1500], topics[2999]} {
		r, err := n.Presence(ctx, topic, 1<<30)
		must(t, err)
		if r.Users != 1 || len(r.Clients) != 1 {
			t.Fatalf("Presence of one of 3,000 topics: %+v", r)
		}
	}
	must(t, n.RemovePresence(ctx, broker.PresenceClient{Conn: "c1"}, topics, broker.PresenceOptions{}))
	r, err := n.Presence(ctx, topics[2999], 10)
	must(t, err)
	if r.Connections != 0 {
		t.Fatalf("after the remove: %+v", r)
	}
}
