package topicsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
)

// The Core's presence (broker.Presencer): per topic, the connections the
// nodes added (conn id -> user, info, owning node, options) and, per user,
// how many of them the user has and whether a leave is pending. It lives
// in shards of its own, like the streams, so that different topics do
// not contend and a join storm on one topic does not stall routing.
//
// Every decision about a (topic, user) — join, leave, a leave scheduled
// or cancelled — is taken under the topic's presence shard lock, and the
// event is published (Core.Publish) before the lock is released: events
// are decided once, whichever nodes race, and delivered in the order they
// were decided.
//
// Lock order: Node.mu (held by a node's removal), then a presenceShard's
// mu, then (while an event is published) a coreShard's read lock and what
// deliver takes. Nothing that holds a coreShard lock or runs in deliver
// takes a presence lock, and nothing that holds a presence lock takes
// Node.mu. For the embedded broker, deliver takes the firetower hub's
// locks: a node must not call AddPresence or RemovePresence while it
// holds them.

// MaxPresenceIDLen is the longest connection id and user id, in bytes, of
// a presence entry.
const MaxPresenceIDLen = 256

// presenceShard maps topics to their presence.
type presenceShard struct {
	mu     sync.RWMutex
	topics map[string]*presenceTopic
	// byNode indexes the entries of each node in this shard, so that a
	// node's removal finds its entries without scanning every topic.
	byNode map[*Node]map[presenceKey]struct{}
}

type presenceKey struct{ topic, conn string }

// presenceTopic is one topic's presence. It is dropped from its shard
// when it has neither an entry nor a user (a user with a pending leave
// stays until the leave is sent or cancelled).
type presenceTopic struct {
	entries map[string]*presenceEntry // by conn id
	users   map[string]*presenceUser  // by user id; never ""
	live    int                       // users with at least one connection
}

type presenceEntry struct {
	user string
	info json.RawMessage // compacted; nil for none
	node *Node
	opts broker.PresenceOptions
}

type presenceUser struct {
	conns int
	leave *pendingLeave // nil when none is pending
}

// pendingLeave is a leave waiting for its grace. Its timer's function
// checks, under the shard lock, that it is still the user's pending leave
// and that the user still has no connection before it sends anything.
type pendingLeave struct {
	timer *time.Timer
}

// presenceState is the part of a Core that holds presence.
type presenceState struct {
	pshards [coreShards]presenceShard
	entries atomic.Int64 // entries over all topics
	topics  atomic.Int64 // topics with presence state
	pending atomic.Int64 // leaves waiting for their grace
	joins   atomic.Int64 // join events published, since the start
	leaves  atomic.Int64 // leave events published, since the start
}

func (c *Core) pshard(topic string) *presenceShard {
	return &c.presence.pshards[c.slot(topic)%coreShards]
}

// ValidPresenceTopic reports why topic cannot have a presence, or nil:
// it is 1..broker.MaxTopicLen bytes of UTF-8.
func ValidPresenceTopic(topic string) error {
	switch {
	case topic == "":
		return errors.New("topicsvc: presence: empty topic")
	case len(topic) > broker.MaxTopicLen:
		return fmt.Errorf("topicsvc: presence: topic of %d bytes, the limit is %d", len(topic), broker.MaxTopicLen)
	case !utf8.ValidString(topic):
		return fmt.Errorf("topicsvc: presence: topic %q is not valid UTF-8", topic)
	}
	return nil
}

// ValidPresenceClient reports why c cannot be a presence entry, or nil: a
// connection id of 1..MaxPresenceIDLen bytes, a user id of at most
// MaxPresenceIDLen bytes, both UTF-8, and an Info that is empty or a JSON
// object in UTF-8 of at most broker.MaxPresenceInfo bytes.
func ValidPresenceClient(c broker.PresenceClient) error {
	switch {
	case c.Conn == "":
		return errors.New("topicsvc: presence: empty connection id")
	case len(c.Conn) > MaxPresenceIDLen:
		return fmt.Errorf("topicsvc: presence: connection id of %d bytes, the limit is %d", len(c.Conn), MaxPresenceIDLen)
	case !utf8.ValidString(c.Conn):
		return fmt.Errorf("topicsvc: presence: connection id %q is not valid UTF-8", c.Conn)
	case len(c.User) > MaxPresenceIDLen:
		return fmt.Errorf("topicsvc: presence: user id of %d bytes, the limit is %d", len(c.User), MaxPresenceIDLen)
	case !utf8.ValidString(c.User):
		return fmt.Errorf("topicsvc: presence: user id %q is not valid UTF-8", c.User)
	}
	return validInfo(c.Info)
}

func validInfo(info json.RawMessage) error {
	if len(info) == 0 {
		return nil
	}
	if len(info) > broker.MaxPresenceInfo {
		return fmt.Errorf("topicsvc: presence: info of %d bytes, the limit is %d", len(info), broker.MaxPresenceInfo)
	}
	if !utf8.Valid(info) {
		return errors.New("topicsvc: presence: info is not valid UTF-8")
	}
	if !json.Valid(info) {
		return errors.New("topicsvc: presence: info is not JSON")
	}
	if first := bytes.TrimLeft(info, " \t\r\n"); first[0] != '{' {
		return errors.New("topicsvc: presence: info must be a JSON object, such as {\"name\":\"Alice\"}")
	}
	return nil
}

// compactInfo returns a copy of a valid info without insignificant
// spaces, nil for none: what the Core keeps, so that the caller may reuse
// its buffer.
func compactInfo(info json.RawMessage) json.RawMessage {
	if len(info) == 0 {
		return nil
	}
	var b bytes.Buffer
	b.Grow(len(info))
	if err := json.Compact(&b, info); err != nil {
		return bytes.Clone(info) // checked by validInfo: not reached
	}
	if b.Len() == 2 { // {}: the same as none
		return nil
	}
	return b.Bytes()
}

func validTopics(topics []string) error {
	for _, t := range topics {
		if err := ValidPresenceTopic(t); err != nil {
			return err
		}
	}
	return nil
}

// errNodeRemoved is the answer to a presence change of a removed node: it
// would record entries that nothing removes any more.
var errNodeRemoved = fmt.Errorf("topicsvc: presence: %w: the node was removed from the core", broker.ErrClosed)

// AddPresence records c in the presence of each of topics, replacing the
// entry of c.Conn if there is one (its user, info, options and owner), with
// the join events that causes (broker.Presencer). It refuses invalid
// input with an error and records nothing then; after Remove it records
// nothing and returns an error wrapping broker.ErrClosed.
func (n *Node) AddPresence(c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if err := ValidPresenceClient(c); err != nil {
		return err
	}
	if err := validTopics(topics); err != nil {
		return err
	}
	opts.Grace = max(opts.Grace, 0)
	info := compactInfo(c.Info)
	core := n.core
	for _, topic := range topics {
		ps := core.pshard(topic)
		ps.mu.Lock()
		// Checked under the shard lock: a removal that set it sweeps this
		// shard after, so it either finds the entry or it was never added.
		if n.presenceGone.Load() {
			ps.mu.Unlock()
			return errNodeRemoved
		}
		core.addEntry(ps, topic, c.Conn, &presenceEntry{user: c.User, info: info, node: n, opts: opts})
		ps.mu.Unlock()
	}
	return nil
}

// RemovePresence removes the entry of c.Conn from each of topics, with the
// leave events that causes, opts.Grace later (broker.Presencer). An entry
// that is not there is no error. c.User is not needed: the Core knows
// whose the entry was.
func (n *Node) RemovePresence(c broker.PresenceClient, topics []string, opts broker.PresenceOptions) error {
	if c.Conn == "" {
		return errors.New("topicsvc: presence: empty connection id")
	}
	if err := validTopics(topics); err != nil {
		return err
	}
	opts.Grace = max(opts.Grace, 0)
	core := n.core
	for _, topic := range topics {
		ps := core.pshard(topic)
		ps.mu.Lock()
		if t := ps.topics[topic]; t != nil {
			if e := t.entries[c.Conn]; e != nil {
				core.removeEntry(ps, topic, t, c.Conn, e, opts.JoinLeave, opts.Grace)
			}
		}
		ps.mu.Unlock()
	}
	return nil
}

// addEntry records e as the entry of conn in topic; ps.mu held.
func (c *Core) addEntry(ps *presenceShard, topic, conn string, e *presenceEntry) {
	t := ps.topics[topic]
	if t == nil {
		t = &presenceTopic{entries: map[string]*presenceEntry{}, users: map[string]*presenceUser{}}
		ps.topics[topic] = t
		c.presence.topics.Add(1)
	}
	old := t.entries[conn]
	if old != nil {
		if old.node != e.node {
			ps.unindex(old.node, topic, conn)
		}
		if old.user == e.user {
			// The same connection of the same user: new info and options,
			// no event (the user's count does not change).
			t.entries[conn] = e
			ps.index(e.node, topic, conn)
			return
		}
		// The connection changed hands between users: the old one loses
		// it (a leave, if it was their last), the new one gains it.
		delete(t.entries, conn)
		c.presence.entries.Add(-1)
		c.userLost(topic, t, old.user, e.opts.JoinLeave, e.opts.Grace)
	}
	t.entries[conn] = e
	c.presence.entries.Add(1)
	ps.index(e.node, topic, conn)
	if e.user == "" {
		return
	}
	u := t.users[e.user]
	if u == nil {
		u = &presenceUser{}
		t.users[e.user] = u
	}
	u.conns++
	if u.conns > 1 {
		return
	}
	t.live++
	if u.leave != nil {
		// Back within the grace (a reload, a reconnect to another node):
		// neither the leave nor a new join.
		u.leave.timer.Stop()
		u.leave = nil
		c.presence.pending.Add(-1)
		return
	}
	if e.opts.JoinLeave {
		c.publishEvent(topic, broker.JoinID, joinData(e.user, e.info))
		c.presence.joins.Add(1)
	}
}

// removeEntry removes the entry e of conn from topic, with the leave that
// causes when it was its user's last connection: after grace, or at once
// for grace 0; ps.mu held. It frees the topic's state when nothing is left.
func (c *Core) removeEntry(ps *presenceShard, topic string, t *presenceTopic, conn string, e *presenceEntry, joinLeave bool, grace time.Duration) {
	delete(t.entries, conn)
	c.presence.entries.Add(-1)
	ps.unindex(e.node, topic, conn)
	c.userLost(topic, t, e.user, joinLeave, grace)
	ps.dropIfEmpty(c, topic, t)
}

// userLost counts one connection less for user in topic; ps.mu held.
// When it was the last one, the leave is sent at once (grace 0),
// scheduled, or, without joinLeave, not sent at all.
func (c *Core) userLost(topic string, t *presenceTopic, user string, joinLeave bool, grace time.Duration) {
	if user == "" {
		return
	}
	u := t.users[user]
	if u == nil || u.conns == 0 {
		return // not reached: every entry of a user is counted
	}
	u.conns--
	if u.conns > 0 {
		return
	}
	t.live--
	switch {
	case !joinLeave:
		delete(t.users, user)
	case grace == 0:
		delete(t.users, user)
		c.publishEvent(topic, broker.LeaveID, leaveData(user))
		c.presence.leaves.Add(1)
	default:
		p := &pendingLeave{}
		u.leave = p
		c.presence.pending.Add(1)
		// The timer may fire before AfterFunc returns its value to p:
		// fireLeave takes the shard lock, which this caller holds, so it
		// reads p.timer only after the assignment.
		p.timer = time.AfterFunc(grace, func() { c.fireLeave(topic, user, p) })
	}
}

// fireLeave sends the leave p of user in topic, unless the user came back
// or p is no longer the user's pending leave (it was cancelled, and maybe
// another one scheduled, while this timer was firing).
func (c *Core) fireLeave(topic, user string, p *pendingLeave) {
	ps := c.pshard(topic)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	t := ps.topics[topic]
	if t == nil {
		return
	}
	u := t.users[user]
	if u == nil || u.leave != p || u.conns > 0 {
		return
	}
	u.leave = nil
	delete(t.users, user)
	c.publishEvent(topic, broker.LeaveID, leaveData(user))
	c.presence.leaves.Add(1)
	// Counted as pending until it has been handed to the listeners, so
	// that a reader who sees Pending fall to 0 finds the leave delivered.
	c.presence.pending.Add(-1)
	ps.dropIfEmpty(c, topic, t)
}

// publishEvent routes a join or leave to the nodes listening to topic. It
// runs under the topic's presence shard lock, so that events reach every
// node in the order they were decided.
func (c *Core) publishEvent(topic, id string, data []byte) {
	c.Publish(broker.Message{Topic: topic, ID: id, Data: data})
}

// joinData is {"user":…,"info":{…}}; info is valid, compacted JSON or nil.
func joinData(user string, info json.RawMessage) []byte {
	u, _ := json.Marshal(user) // valid UTF-8: cannot fail
	b := make([]byte, 0, len(`{"user":,"info":}`)+len(u)+max(len(info), 2))
	b = append(b, `{"user":`...)
	b = append(b, u...)
	b = append(b, `,"info":`...)
	if len(info) == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, info...)
	}
	return append(b, '}')
}

// leaveData is {"user":…}.
func leaveData(user string) []byte {
	u, _ := json.Marshal(user)
	b := make([]byte, 0, len(`{"user":}`)+len(u))
	b = append(b, `{"user":`...)
	b = append(b, u...)
	return append(b, '}')
}

func (ps *presenceShard) index(n *Node, topic, conn string) {
	m := ps.byNode[n]
	if m == nil {
		m = map[presenceKey]struct{}{}
		ps.byNode[n] = m
	}
	m[presenceKey{topic, conn}] = struct{}{}
}

func (ps *presenceShard) unindex(n *Node, topic, conn string) {
	m := ps.byNode[n]
	if m == nil {
		return
	}
	delete(m, presenceKey{topic, conn})
	if len(m) == 0 {
		delete(ps.byNode, n)
	}
}

// dropIfEmpty frees the topic's state when it has no entry and no user
// (none with a pending leave); ps.mu held.
func (ps *presenceShard) dropIfEmpty(c *Core, topic string, t *presenceTopic) {
	if len(t.entries) == 0 && len(t.users) == 0 && ps.topics[topic] == t {
		delete(ps.topics, topic)
		c.presence.topics.Add(-1)
	}
}

// removePresence removes every entry of n, with the leaves that causes:
// each after the grace of the entry's options, or at once when silent
// (the node was noticed dead by its silence, which took the place of the
// grace). Later AddPresence calls of n fail.
func (n *Node) removePresence(silent bool) {
	n.presenceGone.Store(true)
	c := n.core
	for i := range c.presence.pshards {
		ps := &c.presence.pshards[i]
		ps.mu.Lock()
		keys := ps.byNode[n]
		delete(ps.byNode, n)
		for k := range keys {
			t := ps.topics[k.topic]
			if t == nil {
				continue
			}
			e := t.entries[k.conn]
			if e == nil || e.node != n {
				continue
			}
			grace := e.opts.Grace
			if silent {
				grace = 0
			}
			c.removeEntry(ps, k.topic, t, k.conn, e, e.opts.JoinLeave, grace)
		}
		ps.mu.Unlock()
	}
}

// Presence returns topic's presence (broker.Presencer): the distinct
// users, the connections, and at most limit of the connections (0 or
// less: the counts only), in no particular order. The Info of a client is
// the Core's own copy: the caller must not modify it.
func (c *Core) Presence(topic string, limit int) (broker.PresenceResult, error) {
	if err := ValidPresenceTopic(topic); err != nil {
		return broker.PresenceResult{}, err
	}
	ps := c.pshard(topic)
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	t := ps.topics[topic]
	if t == nil {
		return broker.PresenceResult{}, nil
	}
	r := broker.PresenceResult{Users: t.live, Connections: len(t.entries)}
	if limit <= 0 || len(t.entries) == 0 {
		return r, nil
	}
	r.Clients = make([]broker.PresenceClient, 0, min(limit, len(t.entries)))
	for conn, e := range t.entries {
		if len(r.Clients) == limit {
			break
		}
		r.Clients = append(r.Clients, broker.PresenceClient{Conn: conn, User: e.user, Info: e.info})
	}
	return r, nil
}

// PresenceStats are a Core's presence figures at one moment.
type PresenceStats struct {
	Entries int64 // connection entries over all topics
	Topics  int64 // topics with presence state (entries or a pending leave)
	Pending int64 // leaves waiting for their grace
	Joins   int64 // join events published, since the start
	Leaves  int64 // leave events published, since the start
}

// PresenceStats returns the Core's presence figures.
func (c *Core) PresenceStats() PresenceStats {
	p := &c.presence
	return PresenceStats{
		Entries: p.entries.Load(), Topics: p.topics.Load(), Pending: p.pending.Load(),
		Joins: p.joins.Load(), Leaves: p.leaves.Load(),
	}
}
