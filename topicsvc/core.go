// Package topicsvc is the firetower topic service: the routing and counting
// core that connects the nodes of a cluster, and the embedded broker.
//
// The Core runs in-process for a single node (NewEmbedded, the default
// broker of firetower) or inside a standalone service that nodes reach over
// gRPC. It tracks, per node, the topics the node listens to and its
// subscriber counts, routes each publish only to the nodes with
// subscribers, and sums the counts across nodes.
//
// This package links neither gRPC nor Prometheus. The standalone service is
// package topicsvc/server (run by cmd/firetower-topicsvc); a node reaches it
// through package topicsvc/client, whose import registers the topicsvc://
// and topicsvcs:// broker URLs.
package topicsvc

import (
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

const coreShards = 64

// Core routes messages between the nodes attached to it and counts their
// subscribers. It is safe for concurrent use.
type Core struct {
	seed   maphash.Seed
	shards [coreShards]coreShard

	mu    sync.Mutex
	nodes map[string]*Node

	streams  streamsState  // streams.go
	presence presenceState // presence.go
}

// coreShard's lock is the first of a delivery's locks: Publish holds its
// read lock while each listening node's deliver runs, which, for the
// embedded broker, takes the node's hub shard lock and then each
// subscriber's send queue lock (DESIGN §1). deliver must never call back
// into the Core. A presence event is published under its topic's presence
// shard lock, which therefore comes before this one (presence.go).
type coreShard struct {
	mu     sync.RWMutex
	topics map[string]*coreTopic
}

// coreTopic is one topic's routing and counting state.
type coreTopic struct {
	listeners []*Node       // nodes interested in the topic, no duplicates
	counts    map[*Node]int // per-node subscriber counts, only non-zero ones
	total     int
}

// Node is one node attached to a Core. Its methods are safe for concurrent
// use; after Remove they do nothing.
type Node struct {
	id      string
	core    *Core
	deliver func(broker.Message)

	mu       sync.Mutex
	removed  bool
	listens  map[string]struct{}
	counts   map[string]int
	total    int
	lastSeen atomic.Int64 // Unix milliseconds

	// presenceGone is set when the node's removal starts removing its
	// presence entries; AddPresence checks it under each presence shard
	// lock (presence.go).
	presenceGone atomic.Bool
}

// NewCore returns an empty Core.
func NewCore() *Core {
	c := &Core{seed: maphash.MakeSeed(), nodes: map[string]*Node{}}
	for i := range c.shards {
		c.shards[i].topics = map[string]*coreTopic{}
		c.streams.sshards[i].m = map[string]*stream{}
		c.presence.pshards[i].topics = map[string]*presenceTopic{}
		c.presence.pshards[i].byNode = map[*Node]map[presenceKey]struct{}{}
	}
	return c
}

func (c *Core) slot(topic string) uint64 { return maphash.String(c.seed, topic) }

func (c *Core) shard(topic string) *coreShard { return &c.shards[c.slot(topic)%coreShards] }

// AddNode attaches a node. deliver receives the messages of the topics the
// node listens to; it is called with a shard lock held, so it must not block
// and must not call back into the Core. A node already attached under the
// same id (a node that reconnected before its old session was noticed dead)
// is removed first, as Remove does: the leaves of its presence wait for
// their grace, within which the new node adds its entries again.
func (c *Core) AddNode(id string, deliver func(broker.Message)) *Node {
	n := &Node{id: id, core: c, deliver: deliver, listens: map[string]struct{}{}, counts: map[string]int{}}
	n.Touch()
	c.mu.Lock()
	old := c.nodes[id]
	c.nodes[id] = n
	c.mu.Unlock()
	if old != nil {
		old.remove()
	}
	return n
}

// Publish delivers m to every node listening to m.Topic and returns how many
// nodes it reached.
func (c *Core) Publish(m broker.Message) int {
	s := c.shard(m.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.topics[m.Topic]
	if t == nil {
		return 0
	}
	for _, n := range t.listeners {
		n.deliver(m)
	}
	return len(t.listeners)
}

// Count returns the sum of all nodes' counts for topic.
func (c *Core) Count(topic string) int {
	return c.CountExcept(topic, nil)
}

// CountExcept returns the sum of the counts for topic of every node but
// except (nil: of every node). A remote node adds its own, fresher count to
// it, so that it reads its own writes.
func (c *Core) CountExcept(topic string, except *Node) int {
	s := c.shard(topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := s.topics[topic]
	if t == nil {
		return 0
	}
	return t.total - t.counts[except]
}

// Topics returns every topic with a non-zero count.
func (c *Core) Topics() []broker.TopicCount {
	var out []broker.TopicCount
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for name, t := range s.topics {
			if t.total > 0 {
				out = append(out, broker.TopicCount{Topic: name, Count: t.total})
			}
		}
		s.mu.RUnlock()
	}
	return out
}

// EachTopicShard calls fn with the topics of one shard at a time (those
// with a non-zero count), in no particular order, until fn returns an
// error. Only one shard's topics are held at once (a 64th of them), and
// each shard's read lock only while they are copied, so that listing a
// million topics neither stalls routing nor doubles the memory.
func (c *Core) EachTopicShard(fn func([]broker.TopicCount) error) error {
	var buf []broker.TopicCount
	for i := range c.shards {
		s := &c.shards[i]
		buf = buf[:0]
		s.mu.RLock()
		for name, t := range s.topics {
			if t.total > 0 {
				buf = append(buf, broker.TopicCount{Topic: name, Count: t.total})
			}
		}
		s.mu.RUnlock()
		if len(buf) == 0 {
			continue
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
	return nil
}

// Nodes describes the attached nodes, sorted by id.
func (c *Core) Nodes() []broker.NodeInfo {
	c.mu.Lock()
	nodes := make([]*Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		nodes = append(nodes, n)
	}
	c.mu.Unlock()
	out := make([]broker.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		n.mu.Lock()
		out = append(out, broker.NodeInfo{ID: n.id, Connections: n.total, Topics: len(n.listens), LastHeartbeat: n.lastSeen.Load()})
		n.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// RouteStats are a Core's routing figures at one moment.
type RouteStats struct {
	// Topics counts the topics at least one node listens to.
	Topics int
	// Subscriptions counts the node-topic interests: the (node, topic)
	// pairs the Core routes.
	Subscriptions int
	// Subscribers sums the subscriber counts the nodes report, over nodes
	// and topics.
	Subscribers int
}

// RouteStats counts, shard by shard, the topics some node listens to, the
// node-topic interests and the subscribers the nodes report. It takes each
// shard's read lock in turn, so that reading it (a metrics scrape) never
// stalls routing for long.
func (c *Core) RouteStats() RouteStats {
	var rs RouteStats
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		for _, t := range s.topics {
			if len(t.listeners) > 0 {
				rs.Topics++
				rs.Subscriptions += len(t.listeners)
			}
			rs.Subscribers += t.total
		}
		s.mu.RUnlock()
	}
	return rs
}

// Expire removes the nodes not touched for longer than maxAge, as
// RemoveSilent does, and returns their ids.
func (c *Core) Expire(maxAge time.Duration) []string {
	limit := time.Now().Add(-maxAge).UnixMilli()
	var dead []*Node
	c.mu.Lock()
	for _, n := range c.nodes {
		if n.lastSeen.Load() < limit {
			dead = append(dead, n)
		}
	}
	c.mu.Unlock()
	ids := make([]string, 0, len(dead))
	for _, n := range dead {
		n.RemoveSilent()
		ids = append(ids, n.id)
	}
	return ids
}

// ID returns the node's id.
func (n *Node) ID() string { return n.id }

// Touch records a sign of life (any traffic) from the node.
func (n *Node) Touch() { n.TouchAt(time.Now()) }

// TouchAt is Touch at a time the caller already read.
func (n *Node) TouchAt(t time.Time) { n.lastSeen.Store(t.UnixMilli()) }

// Listen routes the messages of topic to the node.
func (n *Node) Listen(topic string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.removed {
		return
	}
	if _, ok := n.listens[topic]; ok {
		return
	}
	n.listens[topic] = struct{}{}
	s := n.core.shard(topic)
	s.mu.Lock()
	t := s.topic(topic)
	t.listeners = append(t.listeners, n)
	s.mu.Unlock()
}

// Listening reports whether the node listens to topic.
func (n *Node) Listening(topic string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.listens[topic]
	return ok
}

// Counts reports whether the node has a non-zero count for topic.
func (n *Node) Counts(topic string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.counts[topic]
	return ok
}

// Counted returns how many topics the node has a non-zero count for.
func (n *Node) Counted() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.counts)
}

// Listens returns how many topics the node listens to.
func (n *Node) Listens() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.listens)
}

// Unlisten stops routing the messages of topic to the node.
func (n *Node) Unlisten(topic string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.listens[topic]; !ok {
		return
	}
	delete(n.listens, topic)
	n.core.unroute(topic, n)
}

// SetCount records the node's subscriber count for topic; negative counts
// are treated as 0.
func (n *Node) SetCount(topic string, count int) {
	if count < 0 {
		count = 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.removed || n.counts[topic] == count {
		return
	}
	n.total += count - n.counts[topic]
	if count == 0 {
		delete(n.counts, topic)
	} else {
		n.counts[topic] = count
	}
	s := n.core.shard(topic)
	s.mu.Lock()
	t := s.topic(topic)
	t.total += count - t.counts[n]
	if count == 0 {
		delete(t.counts, n)
	} else {
		t.counts[n] = count
	}
	s.dropIfEmpty(topic, t)
	s.mu.Unlock()
}

// Remove detaches the node: its interests and counts vanish, and so do its
// presence entries, with the leaves they cause, each after the grace of
// its options (a node that closed, or whose connection closed, may be
// back on another connection within it).
func (n *Node) Remove() { n.detach(false) }

// RemoveSilent is Remove for a node noticed dead by its silence (the
// heartbeat timeout): the leaves its presence entries cause are sent at
// once, since the silence already took the place of the grace, so that
// they come within the node-death bound.
func (n *Node) RemoveSilent() { n.detach(true) }

func (n *Node) detach(silent bool) {
	n.core.mu.Lock()
	if n.core.nodes[n.id] == n {
		delete(n.core.nodes, n.id)
	}
	n.core.mu.Unlock()
	n.removeAs(silent)
}

func (n *Node) remove() { n.removeAs(false) }

func (n *Node) removeAs(silent bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.removed {
		return
	}
	n.removed = true
	// Presence first, while the node still routes: its entries' leaves
	// reach the other nodes either way.
	n.removePresence(silent)
	for topic := range n.listens {
		n.core.unroute(topic, n)
	}
	for topic, c := range n.counts {
		s := n.core.shard(topic)
		s.mu.Lock()
		if t := s.topics[topic]; t != nil {
			t.total -= c
			delete(t.counts, n)
			s.dropIfEmpty(topic, t)
		}
		s.mu.Unlock()
	}
	n.listens, n.counts, n.total = map[string]struct{}{}, map[string]int{}, 0
}

// unroute removes n from the listeners of topic; n.mu must be held.
func (c *Core) unroute(topic string, n *Node) {
	s := c.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[topic]
	if t == nil {
		return
	}
	for i, l := range t.listeners {
		if l == n {
			last := len(t.listeners) - 1
			t.listeners[i] = t.listeners[last]
			t.listeners[last] = nil
			t.listeners = t.listeners[:last]
			break
		}
	}
	s.dropIfEmpty(topic, t)
}

// topic returns the state of topic, creating it; s.mu must be held.
func (s *coreShard) topic(name string) *coreTopic {
	t := s.topics[name]
	if t == nil {
		t = &coreTopic{counts: map[*Node]int{}}
		s.topics[name] = t
	}
	return t
}

func (s *coreShard) dropIfEmpty(name string, t *coreTopic) {
	if len(t.listeners) == 0 && len(t.counts) == 0 {
		delete(s.topics, name)
	}
}
