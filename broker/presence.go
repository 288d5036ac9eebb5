package broker

import (
	"context"
	"encoding/json"
	"time"
)

// Presence: the optional capability of knowing, cluster-wide, which
// connections are subscribed to a topic and whose they are, and of
// announcing the users who come and go (DESIGN §6).
//
// A node records each of its connections' subscriptions to a presence
// topic with AddPresence and forgets them with RemovePresence; the broker
// keeps them in one place for the whole cluster (the topic service's core,
// or Redis), so that Presence answers for every node and the join and
// leave events are decided once, whichever nodes race. A node that dies
// without removing its entries loses them within the broker's node-death
// bound (the topic service: 5 s; Redis: NodeTTL, at most 15 s), with the
// leaves they cause.
//
// Join and leave are per user, not per connection: with JoinLeave, the
// broker publishes a join event to the topic when a user's first
// connection in the cluster is added, and a leave event Grace after the
// user's last connection was removed, unless a connection of the user is
// added within Grace, in which case there is neither a leave nor a new
// join (a page reload, a reconnect to another node). Connections with no
// user (User "") are counted and listed, and cause no event.
//
// The events travel as ordinary messages of the topic, to the nodes
// subscribed to it, in the order the broker decided them:
//
//	Message{Topic: topic, ID: JoinID,  Data: {"user":"…","info":{…}}}
//	Message{Topic: topic, ID: LeaveID, Data: {"user":"…"}}
//
// They have no offset and are not kept in the topic's stream. No message
// a node or a client publishes has these ids (theirs are uuids); a node
// checks an event's data like any message's before it uses it.

// JoinID and LeaveID are the ids of the join and leave events a broker
// publishes to a presence topic.
const (
	JoinID  = "firetower join"
	LeaveID = "firetower leave"
)

// PresenceClient is one connection in a topic's presence. Its JSON is the
// element of the "clients" list firetower answers.
type PresenceClient struct {
	// Conn is the connection's id, unique in the cluster.
	Conn string `json:"conn"`
	// User is the connection's user id, "" for an anonymous one.
	User string `json:"user"`
	// Info is the connection's public info, a JSON object (at most
	// MaxPresenceInfo bytes); nil stands for {}.
	Info json.RawMessage `json:"info"`
}

// MaxPresenceInfo is the largest Info, in bytes, that every broker keeps.
const MaxPresenceInfo = 1024

// PresenceOptions say how a topic's presence behaves. Every AddPresence and
// RemovePresence passes them: the broker acts as the latest call says.
type PresenceOptions struct {
	// JoinLeave makes the broker publish join and leave events.
	JoinLeave bool
	// Grace is how long a leave waits after the user's last connection
	// was removed; 0 sends it at once.
	Grace time.Duration
}

// PresenceResult is a topic's presence at one moment.
type PresenceResult struct {
	// Users is the number of distinct users (User not "") with a
	// connection in the topic, and Connections the number of connections,
	// anonymous ones included.
	Users       int
	Connections int
	// Clients are at most the query's limit of the connections, in no
	// particular order.
	Clients []PresenceClient
}

// Presencer is implemented by brokers that keep presence.
//
// A connection's entry is keyed by (topic, Conn): adding it again replaces
// its User and Info, and removing an entry that is not there does nothing.
// Entries belong to the node that added them; Close removes the node's
// entries as RemovePresence would (with their leaves).
type Presencer interface {
	// AddPresence records c in the presence of each of topics, with the
	// join events that causes. When it returns nil, Presence on any node
	// lists c. On an error the entries may or may not be recorded; the
	// caller removes them.
	AddPresence(ctx context.Context, c PresenceClient, topics []string, opts PresenceOptions) error

	// RemovePresence removes c's entry (c.Conn; c.User tells the broker
	// whose it was) from each of topics, with the leave events that
	// causes, Grace later.
	RemovePresence(ctx context.Context, c PresenceClient, topics []string, opts PresenceOptions) error

	// Presence returns topic's presence across the cluster, with at most
	// limit clients (0: the counts only).
	Presence(ctx context.Context, topic string, limit int) (PresenceResult, error)
}
