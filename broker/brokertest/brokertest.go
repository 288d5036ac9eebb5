// Package brokertest is the conformance suite every broker.Broker passes.
//
// An implementation's test calls Run with a function that returns the
// brokers of a fresh, isolated cluster:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Config{NewCluster: func(t *testing.T, n int) []broker.Broker { ... }})
//	}
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// Config describes the implementation under test.
type Config struct {
	// NewCluster returns n unstarted brokers that form one cluster, isolated
	// from every other call's. The suite starts and closes them.
	NewCluster func(t *testing.T, n int) []broker.Broker
	// Propagation bounds how long a publish, or a count made on one node,
	// takes to be visible on another; 2s if zero.
	Propagation time.Duration
	// Streams says the broker must implement broker.Streamer; the streams
	// part of the suite runs for every broker that does.
	Streams bool
	// LoseStreams, if not nil, makes the store lose every stream (restart
	// it, or wipe it), for the test that a lost stream gets a new epoch.
	// The brokers of the cluster may need to reconnect afterwards.
	LoseStreams func(t *testing.T)
	// Presence says the broker must implement broker.Presencer; the
	// presence part of the suite runs for every broker that does, and
	// then needs Kill and NodeDeath.
	Presence bool
	// Kill makes b die as a crashed node would: it stops, withdrawing
	// nothing, and never comes back. The suite closes it afterwards.
	Kill func(t *testing.T, b broker.Broker)
	// NodeDeath bounds how long after Kill the node's presence entries
	// are gone and the leaves of its users sent (a 300 ms grace
	// included).
	NodeDeath time.Duration
}

// Run runs the suite as subtests of t.
func Run(t *testing.T, cfg Config) {
	if cfg.Propagation == 0 {
		cfg.Propagation = 2 * time.Second
	}
	s := &suite{cfg: cfg}
	t.Run("DeliversToSubscribedNodesOnly", s.deliversToSubscribedNodesOnly)
	t.Run("PublisherReceivesOwnTopics", s.publisherReceivesOwnTopics)
	t.Run("UnsubscribeStopsDelivery", s.unsubscribeStopsDelivery)
	t.Run("SubscribeIsIdempotent", s.subscribeIsIdempotent)
	t.Run("SubscribesTopicsInOneCall", s.subscribesTopicsInOneCall)
	t.Run("PayloadsArriveIntact", s.payloadsArriveIntact)
	t.Run("TopicsArriveIntact", s.topicsArriveIntact)
	t.Run("UserTopicsAcrossNodes", s.userTopicsAcrossNodes)
	t.Run("PerPublisherOrder", s.perPublisherOrder)
	t.Run("ConcurrentPublishers", s.concurrentPublishers)
	t.Run("CountsSumAcrossNodes", s.countsSumAcrossNodes)
	t.Run("CountReadsOwnWrites", s.countReadsOwnWrites)
	t.Run("ClosedNodeStopsCounting", s.closedNodeStopsCounting)
	t.Run("CloseIsIdempotent", s.closeIsIdempotent)
	t.Run("TopicLister", s.topicLister)
	s.runStreams(t)
	s.runPresence(t)
}

type suite struct{ cfg Config }

// node is a started broker with the messages it received.
type node struct {
	broker.Broker
	mu   sync.Mutex
	got  []broker.Message
	wake chan struct{}
}

func (n *node) handle(m broker.Message) {
	// Copy: the suite must see the bytes as delivered even if the broker
	// reuses its buffers afterwards, which it must not do.
	m.Data = bytes.Clone(m.Data)
	n.mu.Lock()
	n.got = append(n.got, m)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *node) messages() []broker.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]broker.Message(nil), n.got...)
}

// waitFor waits until the node received at least count messages.
func (n *node) waitFor(t *testing.T, count int, within time.Duration) []broker.Message {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		if got := n.messages(); len(got) >= count {
			return got
		}
		select {
		case <-n.wake:
		case <-deadline.C:
			t.Fatalf("received %d messages, want %d within %v", len(n.messages()), count, within)
		}
	}
}

func (s *suite) cluster(t *testing.T, size int) []*node {
	t.Helper()
	bs := s.cfg.NewCluster(t, size)
	if len(bs) != size {
		t.Fatalf("NewCluster returned %d brokers, want %d", len(bs), size)
	}
	nodes := make([]*node, size)
	for i, b := range bs {
		n := &node{Broker: b, wake: make(chan struct{}, 1)}
		if err := b.Start(n.handle); err != nil {
			t.Fatalf("Start: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		nodes[i] = n
	}
	return nodes
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func msg(topic, id, data string) broker.Message {
	return broker.Message{Topic: topic, ID: id, Data: []byte(data)}
}

func (s *suite) deliversToSubscribedNodesOnly(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "a"))
	must(t, n[1].Subscribe(c, "b"))
	must(t, n[2].Publish(c, msg("a", "1", `{"x":1}`)))
	must(t, n[2].Publish(c, msg("b", "2", `"two"`)))
	got := n[0].waitFor(t, 1, s.cfg.Propagation)
	if m := got[0]; m.Topic != "a" || m.ID != "1" || string(m.Data) != `{"x":1}` {
		t.Fatalf("node 0 got %+v", m)
	}
	got = n[1].waitFor(t, 1, s.cfg.Propagation)
	if m := got[0]; m.Topic != "b" || m.ID != "2" || string(m.Data) != `"two"` {
		t.Fatalf("node 1 got %+v", m)
	}
	time.Sleep(s.cfg.Propagation / 4)
	if got := n[0].messages(); len(got) != 1 {
		t.Fatalf("node 0 got %d messages, want only its topic's 1", len(got))
	}
	if got := n[2].messages(); len(got) != 0 {
		t.Fatalf("unsubscribed node 2 got %v", got)
	}
}

func (s *suite) publisherReceivesOwnTopics(t *testing.T) {
	n := s.cluster(t, 1)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "self"))
	must(t, n[0].Publish(c, msg("self", "x", `1`)))
	n[0].waitFor(t, 1, s.cfg.Propagation)
}

func (s *suite) unsubscribeStopsDelivery(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "u"))
	must(t, n[0].Subscribe(c, "keep"))
	must(t, n[1].Publish(c, msg("u", "1", `1`)))
	n[0].waitFor(t, 1, s.cfg.Propagation)
	must(t, n[0].Unsubscribe(c, "u"))
	must(t, n[0].Unsubscribe(c, "never-subscribed"))
	must(t, n[1].Publish(c, msg("u", "2", `2`)))
	must(t, n[1].Publish(c, msg("keep", "3", `3`)))
	n[0].waitFor(t, 2, s.cfg.Propagation)
	time.Sleep(s.cfg.Propagation / 4)
	for _, m := range n[0].messages()[1:] {
		if m.Topic == "u" {
			t.Fatalf("got %+v after unsubscribing", m)
		}
	}
}

// subscribesTopicsInOneCall runs broker.SubscribeTopics and
// UnsubscribeTopics, which use the broker's BatchSubscriber and
// BatchUnsubscriber when it has them: a frame's worth of topics, one
// already held, then half of them withdrawn.
func (s *suite) subscribesTopicsInOneCall(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	_, batch := n[0].Broker.(broker.BatchSubscriber)
	_, unbatch := n[0].Broker.(broker.BatchUnsubscriber)
	t.Logf("BatchSubscriber: %v, BatchUnsubscriber: %v", batch, unbatch)
	must(t, n[0].Subscribe(c, "many/0"))
	topics := make([]string, 128)
	for i := range topics {
		topics[i] = fmt.Sprintf("many/%d", i)
	}
	must(t, broker.SubscribeTopics(c, n[0].Broker, topics))
	for i, topic := range topics {
		must(t, n[1].Publish(c, msg(topic, fmt.Sprint(i), `1`)))
	}
	got := n[0].waitFor(t, len(topics), s.cfg.Propagation)
	seen := map[string]int{}
	for _, m := range got {
		seen[m.Topic]++
	}
	for _, topic := range topics {
		if seen[topic] != 1 {
			t.Fatalf("topic %s delivered %d times, want 1", topic, seen[topic])
		}
	}
	must(t, broker.UnsubscribeTopics(c, n[0].Broker, topics[:64]))
	must(t, broker.UnsubscribeTopics(c, n[0].Broker, []string{"many/never"}))
	for i, topic := range topics {
		must(t, n[1].Publish(c, msg(topic, fmt.Sprint(1000+i), `2`)))
	}
	n[0].waitFor(t, len(topics)+64, s.cfg.Propagation)
	time.Sleep(s.cfg.Propagation / 4)
	for _, m := range n[0].messages()[len(topics):] {
		if m.ID < "1064" {
			t.Fatalf("got %+v after unsubscribing its topic", m)
		}
	}
	must(t, n[0].Close())
	if err := broker.SubscribeTopics(c, n[0].Broker, topics[:2]); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("SubscribeTopics after Close: %v, want ErrClosed", err)
	}
}

func (s *suite) subscribeIsIdempotent(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "twice"))
	must(t, n[0].Subscribe(c, "twice"))
	must(t, n[1].Publish(c, msg("twice", "1", `1`)))
	must(t, n[1].Publish(c, msg("twice", "2", `2`)))
	n[0].waitFor(t, 2, s.cfg.Propagation)
	time.Sleep(s.cfg.Propagation / 4)
	if got := n[0].messages(); len(got) != 2 {
		t.Fatalf("got %d messages, want 2 (each once)", len(got))
	}
	// One Unsubscribe withdraws the interest however often it was declared.
	must(t, n[0].Unsubscribe(c, "twice"))
	must(t, n[0].Subscribe(c, "marker"))
	must(t, n[1].Publish(c, msg("twice", "3", `3`)))
	must(t, n[1].Publish(c, msg("marker", "4", `4`)))
	n[0].waitFor(t, 3, s.cfg.Propagation)
	time.Sleep(s.cfg.Propagation / 4)
	if got := n[0].messages(); len(got) != 3 || got[2].Topic != "marker" {
		t.Fatalf("after Unsubscribe got %+v", got[2:])
	}
}

func (s *suite) payloadsArriveIntact(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "p"))
	rnd := rand.New(rand.NewPCG(1, 2))
	var sent [][]byte
	for _, size := range []int{0, 1, 4 << 10, 4<<10 + 1, 64 << 10, 1 << 20} {
		b := RandomJSON(rnd, size)
		sent = append(sent, b)
		must(t, n[1].Publish(c, broker.Message{Topic: "p", ID: fmt.Sprint(size), Data: b}))
	}
	got := n[0].waitFor(t, len(sent), 2*s.cfg.Propagation)
	for i, m := range got {
		if !bytes.Equal(m.Data, sent[i]) {
			t.Fatalf("payload %d (%d bytes) arrived as %d different bytes", i, len(sent[i]), len(m.Data))
		}
	}
}

func (s *suite) topicsArriveIntact(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	topics := []string{"/chat/world", "/chat/世界", `quote"back\slash`, "a:b{c}*?[x]", "émoji-🔥"}
	for _, topic := range topics {
		must(t, n[0].Subscribe(c, topic))
	}
	for i, topic := range topics {
		must(t, n[1].Publish(c, msg(topic, fmt.Sprint(i), `"`+fmt.Sprint(i)+`"`)))
	}
	got := n[0].waitFor(t, len(topics), s.cfg.Propagation)
	seen := map[string]string{}
	for _, m := range got {
		seen[m.Topic] = m.ID
	}
	for i, topic := range topics {
		if seen[topic] != fmt.Sprint(i) {
			t.Errorf("topic %q: got id %q, want %d (received %v)", topic, seen[topic], i, seen)
		}
	}
}

// userTopicsAcrossNodes: what a node's users are built on (DESIGN §2,
// "Users"): a user's internal topic, "firetower user <id>", with spaces
// and up to MaxTopicLen bytes, carries a user message and a disconnect
// (an id that starts "firetower disconnect ") from any node to every node
// holding a connection of the user, and counts the user's connections
// across the nodes.
func (s *suite) userTopicsAcrossNodes(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	long := "firetower user " + strings.Repeat("é", (broker.MaxTopicLen-len("firetower user "))/2)
	for _, topic := range []string{"firetower user 42", long} {
		must(t, n[0].Subscribe(c, topic))
		must(t, n[1].Subscribe(c, topic))
		n[0].SetCount(topic, 2)
		n[1].SetCount(topic, 1)
		Eventually(t, s.cfg.Propagation, CountIs(c, n[2], topic, 3))
	}
	must(t, n[2].Publish(c, msg("firetower user 42", "b0e9c4d2-7f1a-4c8e-9d3b-2a6f5e8c1d70", `{"text":"hi"}`)))
	must(t, n[2].Publish(c, msg(long, "firetower disconnect 1", `"bye"`)))
	for _, nd := range n[:2] {
		got := nd.waitFor(t, 2, s.cfg.Propagation)
		want := map[string]string{"firetower user 42": `{"text":"hi"}`, long: `"bye"`}
		for _, m := range got {
			if want[m.Topic] != string(m.Data) {
				t.Fatalf("user topic %q: got %q (id %q)", m.Topic, m.Data, m.ID)
			}
			delete(want, m.Topic)
		}
		if len(want) != 0 {
			t.Fatalf("missing the messages of %q", want)
		}
	}
	if got := n[2].messages(); len(got) != 0 {
		t.Fatalf("a node with no connection of the user got %v", got)
	}
}

func (s *suite) perPublisherOrder(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "order"))
	must(t, n[1].Subscribe(c, "order"))
	const total = 1000
	for i := range total {
		must(t, n[2].Publish(c, msg("order", fmt.Sprint(i), fmt.Sprint(i))))
	}
	for _, nd := range n[:2] {
		got := nd.waitFor(t, total, 5*s.cfg.Propagation)
		for i, m := range got {
			if m.ID != fmt.Sprint(i) {
				t.Fatalf("message %d has id %s: out of order", i, m.ID)
			}
		}
	}
}

func (s *suite) concurrentPublishers(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "many"))
	const publishers, each = 4, 250
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := n[1+p%2]
			for i := range each {
				if err := from.Publish(c, msg("many", fmt.Sprintf("%d-%d", p, i), "0")); err != nil {
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
	got := n[0].waitFor(t, publishers*each, 5*s.cfg.Propagation)
	next := make([]int, publishers)
	for _, m := range got {
		var p, i int
		if _, err := fmt.Sscanf(m.ID, "%d-%d", &p, &i); err != nil {
			t.Fatalf("bad id %q", m.ID)
		}
		if i != next[p] {
			t.Fatalf("publisher %d: got message %d, want %d", p, i, next[p])
		}
		next[p]++
	}
}

func (s *suite) countsSumAcrossNodes(t *testing.T) {
	n := s.cluster(t, 3)
	c := ctx(t)
	// A node counts the subscribers of topics it subscribed to.
	must(t, n[0].Subscribe(c, "room"))
	must(t, n[1].Subscribe(c, "room"))
	n[0].SetCount("room", 2)
	n[1].SetCount("room", 3)
	for _, nd := range n {
		Eventually(t, s.cfg.Propagation, CountIs(c, nd, "room", 5))
	}
	n[1].SetCount("room", 1)
	Eventually(t, s.cfg.Propagation, CountIs(c, n[2], "room", 3))
	n[0].SetCount("room", 0)
	n[1].SetCount("room", 0)
	for _, nd := range n {
		Eventually(t, s.cfg.Propagation, CountIs(c, nd, "room", 0))
	}
	must(t, CountIs(c, n[2], "unknown-topic", 0)())
}

func (s *suite) countReadsOwnWrites(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "mine"))
	for i := 1; i <= 3; i++ {
		n[0].SetCount("mine", i)
		// No waiting: the node that set a count reads it back at once.
		must(t, CountIs(c, n[0], "mine", i)())
	}
	n[0].SetCount("mine", 0)
	must(t, CountIs(c, n[0], "mine", 0)())
}

func (s *suite) closedNodeStopsCounting(t *testing.T) {
	n := s.cluster(t, 2)
	c := ctx(t)
	must(t, n[0].Subscribe(c, "gone"))
	must(t, n[1].Subscribe(c, "gone"))
	n[0].SetCount("gone", 4)
	n[1].SetCount("gone", 1)
	Eventually(t, s.cfg.Propagation, CountIs(c, n[1], "gone", 5))
	must(t, n[0].Close())
	Eventually(t, s.cfg.Propagation, CountIs(c, n[1], "gone", 1))
}

func (s *suite) closeIsIdempotent(t *testing.T) {
	n := s.cluster(t, 1)
	c := ctx(t)
	must(t, n[0].Close())
	must(t, n[0].Close())
	if err := n[0].Publish(c, msg("x", "1", "1")); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := n[0].Subscribe(c, "x"); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
	if _, err := n[0].Count(c, "x"); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Count after Close: %v, want ErrClosed", err)
	}
	n[0].SetCount("x", 1) // must not panic
}

func (s *suite) topicLister(t *testing.T) {
	n := s.cluster(t, 2)
	lister, ok := n[0].Broker.(broker.TopicLister)
	if !ok {
		t.Skip("the broker does not implement broker.TopicLister (optional)")
	}
	c := ctx(t)
	must(t, n[0].Subscribe(c, "l1"))
	must(t, n[1].Subscribe(c, "l1"))
	must(t, n[1].Subscribe(c, "l2"))
	n[0].SetCount("l1", 2)
	n[1].SetCount("l1", 1)
	n[1].SetCount("l2", 7)
	Eventually(t, s.cfg.Propagation, func() error {
		got, err := lister.Topics(c)
		if err != nil {
			return err
		}
		m := map[string]int{}
		for _, tc := range got {
			m[tc.Topic] = tc.Count
		}
		if m["l1"] != 3 || m["l2"] != 7 || len(m) != 2 {
			return fmt.Errorf("Topics() = %v, want l1:3 l2:7", m)
		}
		return nil
	})
}

// RandomJSON returns a JSON string text of about size bytes (at least
// 2) made of runes of every width, escapes of NUL, newline and quote
// included: data any broker must carry byte for byte, and that a topic
// service accepts (JSON in valid UTF-8).
func RandomJSON(rnd *rand.Rand, size int) []byte {
	pieces := []string{"a", "Z", "0", " ", `\n`, `\u0000`, `\"`, `\\`, "é", "€", "😀", "{", "}", ","}
	b := make([]byte, 0, size+8)
	b = append(b, '"')
	for len(b) < size-1 {
		b = append(b, pieces[rnd.UintN(uint(len(pieces)))]...)
	}
	return append(b, '"')
}
