package firetower

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/internal/jsonstr"
	"github.com/gin-gonic/gin"
)

// Presence (DESIGN §6): on a topic whose TopicOptions say Presence, every
// subscription of a connection is an entry at the broker (its id, user
// and info), added once the subscription holds and removed when it ends;
// the broker keeps them for the whole cluster and, on JoinLeave topics,
// decides the joins and leaves, which reach the subscribers as join and
// leave frames.

// MaxPresenceClients is the most clients a presence answer lists (a
// presence frame, GET .../presence, Tower.Presence); its users and
// connections count them all.
const MaxPresenceClients = 1000

// MaxConnInfo is the largest connection info, in bytes of JSON, that
// SetConnInfo accepts.
const MaxConnInfo = broker.MaxPresenceInfo

// ErrNoPresence reports a presence query of a topic that has none
// (TopicOptions.Presence is false), or a broker that keeps none.
var ErrNoPresence = errors.New("firetower: the topic has no presence")

// PresenceClient is one connection of a presence answer: its id, user id
// ("" for an anonymous one) and info ({} when it has none).
type PresenceClient = broker.PresenceClient

// Presence is who is subscribed to a topic across the cluster.
type Presence struct {
	Topic string `json:"topic"`
	// Users is the number of distinct user ids among the connections,
	// Connections the number of connections (anonymous ones included).
	Users       int `json:"users"`
	Connections int `json:"connections"`
	// Clients lists the connections, at most MaxPresenceClients of them,
	// in no particular order.
	Clients []PresenceClient `json:"clients"`
}

// connInfoKey is the gin.Context key under which SetConnInfo leaves the
// info for the upgrade.
const connInfoKey = "firetower.connInfo"

// SetConnInfo gives the connection that c is opening a public info
// object, called from Config.Authenticate: what presence lists and join
// frames carry beside the user id, such as a display name or an avatar
// URL ({"name":"Alice"}). info must encode to a JSON object of at most
// MaxConnInfo bytes in valid UTF-8; the error wraps ErrInvalidData.
// Everyone allowed to see the topic's presence sees it.
func SetConnInfo(c *gin.Context, info any) error {
	raw, err := encodeData(info)
	if err != nil {
		return err
	}
	if err := checkInfo(raw); err != nil {
		return err
	}
	c.Set(connInfoKey, json.RawMessage(raw))
	return nil
}

func checkInfo(raw []byte) error {
	switch {
	case len(raw) > MaxConnInfo:
		return fmt.Errorf("%w: connection info of %d bytes, at most %d allowed", ErrInvalidData, len(raw), MaxConnInfo)
	case len(raw) == 0 || raw[0] != '{':
		return fmt.Errorf("%w: connection info must be a JSON object", ErrInvalidData)
	}
	return nil
}

// connInfo returns what SetConnInfo left on c.
func connInfo(c *gin.Context) json.RawMessage {
	v, _ := c.Get(connInfoKey)
	info, _ := v.(json.RawMessage)
	return info
}

// Info returns the connection's info, as SetConnInfo gave it (nil
// without). It must not be modified.
func (c *Conn) Info() json.RawMessage { return c.info }

// presenceClient is c's entry at the broker.
func (c *Conn) presenceClient() broker.PresenceClient {
	return broker.PresenceClient{Conn: c.id, User: c.userID, Info: c.info}
}

// Presence returns who is subscribed to topic across the cluster. The
// error wraps ErrInvalidTopic, ErrNoPresence or the broker's.
func (t *Tower) Presence(ctx context.Context, topic string) (Presence, error) {
	if err := ValidateTopic(topic); err != nil {
		return Presence{}, err
	}
	if _, ok := t.presenceOptions(topic); !ok || t.presencer == nil {
		return Presence{}, fmt.Errorf("%w: %q", ErrNoPresence, topic)
	}
	r, err := t.presencer.Presence(ctx, topic, MaxPresenceClients)
	if err != nil {
		t.stats.brokerErrors.Add(1)
		return Presence{}, fmt.Errorf("firetower: presence of %q: %w", topic, err)
	}
	clients := r.Clients[:0:0]
	for _, cl := range r.Clients {
		if cl, ok := validClient(cl); ok {
			clients = append(clients, cl)
		}
	}
	if clients == nil {
		clients = []PresenceClient{}
	}
	return Presence{Topic: topic, Users: r.Users, Connections: r.Connections, Clients: clients}, nil
}

// validClient checks an entry from the broker, which carries what other
// nodes (or anyone with access to Redis) wrote: only valid UTF-8 JSON
// reaches a client. An info that is not an object becomes {}.
func validClient(cl PresenceClient) (PresenceClient, bool) {
	if !utf8.ValidString(cl.Conn) || !utf8.ValidString(cl.User) {
		return cl, false
	}
	if len(cl.Info) > 0 && (checkInfo(cl.Info) != nil || !validData(cl.Info)) {
		cl.Info = nil
	}
	if len(cl.Info) == 0 {
		cl.Info = json.RawMessage("{}")
	}
	return cl, true
}

// appendPresence appends p's counts and clients to b, the fields after a
// presence answer's topic (and id): "users":2,"connections":3,"clients":[…]}.
func appendPresence(b []byte, p Presence) []byte {
	b = append(b, `"users":`...)
	b = appendInt(b, p.Users)
	b = append(b, `,"connections":`...)
	b = appendInt(b, p.Connections)
	b = append(b, `,"clients":[`...)
	for i, cl := range p.Clients {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"conn":`...)
		b = jsonstr.Append(b, cl.Conn)
		b = append(b, `,"user":`...)
		b = jsonstr.Append(b, cl.User)
		b = append(b, `,"info":`...)
		b = append(b, cl.Info...)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func appendInt(b []byte, n int) []byte { return fmt.Appendf(b, "%d", n) }

// presenceGroup is those of a call's topics that share presence options:
// one broker call.
type presenceGroup struct {
	topics []string
	opts   broker.PresenceOptions
}

// presenceGroups returns the topics with presence among topics, split by
// their options (with join and leave or without): at most two groups.
func (t *Tower) presenceGroups(topics []string) []presenceGroup {
	if t.cfg.TopicOptions == nil {
		return nil
	}
	var groups []presenceGroup
next:
	for _, topic := range topics {
		o, ok := t.presenceOptions(topic)
		if !ok {
			continue
		}
		for i := range groups {
			if groups[i].opts == o {
				groups[i].topics = append(groups[i].topics, topic)
				continue next
			}
		}
		groups = append(groups, presenceGroup{topics: []string{topic}, opts: o})
	}
	return groups
}

// addPresence records c in the presence of those of topics that have
// it. On an error none is left recorded.
func (t *Tower) addPresence(ctx context.Context, c *Conn, topics []string) error {
	groups := t.presenceGroups(topics)
	if len(groups) == 0 {
		return nil
	}
	if t.presencer == nil {
		return fmt.Errorf("%w: the broker, %T, keeps no presence (broker.Presencer)", ErrNoPresence, t.broker)
	}
	cl := c.presenceClient()
	for _, g := range groups {
		if err := t.presencer.AddPresence(ctx, cl, g.topics, g.opts); err != nil {
			t.removePresence(c, topics)
			return err
		}
	}
	return nil
}

// removePresence removes c from the presence of those of topics that have
// it, in a context of its own (a disconnect's may be gone): errors are
// logged, since the connection is gone from the topics either way, and
// the broker forgets the node's entries when the node dies.
func (t *Tower) removePresence(c *Conn, topics []string) {
	groups := t.presenceGroups(topics)
	if len(groups) == 0 || t.presencer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.BrokerTimeout)
	defer cancel()
	cl := c.presenceClient()
	for _, g := range groups {
		if err := t.presencer.RemovePresence(ctx, cl, g.topics, g.opts); err != nil {
			t.stats.brokerErrors.Add(1)
			t.log.Warn("firetower: broker presence removal failed", "conn", c.id, "user", c.userID, "topics", len(g.topics), "err", err)
		}
	}
}

// mayRead reports whether c may read topic's history or presence: where
// a subscribe to it would be allowed (it holds the topic, or
// BeforeSubscribeHandler allows it).
func (t *Tower) mayRead(c *Conn, topic string) bool {
	return c.holds(topic) || t.cfg.BeforeSubscribeHandler == nil || t.cfg.BeforeSubscribeHandler(c, []string{topic})
}

// presenceFrame answers a client's presence frame: allowed where a
// subscribe to the topic would be.
func (t *Tower) presenceFrame(c *Conn, f *Frame) {
	topic := f.Topics[0]
	if _, ok := t.presenceOptions(topic); !ok {
		c.reply(errorFrame(&protocolError{code: CodeBadRequest, message: "the topic has no presence", topic: topic}, f.ID))
		return
	}
	if !t.mayRead(c, topic) {
		c.reply(errorFrame(&protocolError{code: CodeForbidden, message: "presence refused", topic: topic}, f.ID))
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	p, err := t.Presence(ctx, topic)
	if err != nil {
		t.log.Warn("firetower: broker presence failed", "conn", c.id, "user", c.userID, "topic", topic, "err", err)
		c.reply(errorFrame(brokerError(err, f.Topics), f.ID))
		return
	}
	b := append(make([]byte, 0, 128+len(p.Clients)*96), `{"type":"presence","topic":`...)
	b = jsonstr.Append(b, topic)
	if f.ID != nil {
		b = append(b, `,"id":`...)
		b = append(b, f.ID...)
	}
	b = append(b, ',')
	c.reply(appendPresence(b, p))
}

// servePresence answers GET {prefix}/topics/:topic/presence, authorized
// like publish: {"topic":"a","users":2,"connections":3,"clients":[…]}.
func (t *Tower) servePresence(c *gin.Context, escaped string) {
	if !t.authorizeREST(c) {
		return
	}
	topic, ok := pathTopic(c, escaped, "presence")
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	p, err := t.Presence(ctx, topic)
	switch {
	case errors.Is(err, ErrNoPresence):
		jsonError(c, http.StatusNotFound, err.Error()+" (TopicOptions.Presence)")
		return
	case err != nil:
		jsonError(c, brokerErrorStatus(err), err.Error())
		return
	}
	b := append(make([]byte, 0, 64+len(p.Clients)*96), `{"topic":`...)
	b = jsonstr.Append(b, topic)
	b = append(b, ',')
	writeJSON(c, http.StatusOK, appendPresence(b, p))
}

// presenceUsers counts the distinct users of a presence topic, for the
// count route.
func (t *Tower) presenceUsers(topic string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.BrokerTimeout)
	defer cancel()
	r, err := t.presencer.Presence(ctx, topic, 0)
	return r.Users, err
}

// presenceEventFrame makes the join (or leave) frame of an event's data,
// {"user":"…","info":{…}}, or reports that the data is not an event's.
func presenceEventFrame(topic string, join bool, data []byte) ([]byte, bool) {
	var ev struct {
		User *string         `json:"user"`
		Info json.RawMessage `json:"info"`
	}
	if json.Unmarshal(data, &ev) != nil || ev.User == nil || *ev.User == "" || !utf8.ValidString(*ev.User) || !utf8.ValidString(topic) {
		return nil, false
	}
	b := make([]byte, 0, 64+len(topic)+len(*ev.User)+len(ev.Info))
	if join {
		b = append(b, `{"type":"join","topic":`...)
	} else {
		b = append(b, `{"type":"leave","topic":`...)
	}
	b = jsonstr.Append(b, topic)
	b = append(b, `,"user":`...)
	b = jsonstr.Append(b, *ev.User)
	if join {
		cl, _ := validClient(PresenceClient{Info: bytes.TrimSpace(ev.Info)})
		b = append(b, `,"info":`...)
		b = append(b, cl.Info...)
	}
	return append(b, '}'), true
}

// deliverPresence is hub.deliver for a join or leave event: it becomes a
// join or leave frame for the topic's local subscribers. The event's
// data is checked first, whichever node or backend made it.
func (h *hub) deliverPresence(m broker.Message) {
	if h.bare {
		return // a v0.x client knows no such frame
	}
	b, ok := presenceEventFrame(m.Topic, m.ID == broker.JoinID, m.Data)
	if !ok {
		h.stats.droppedInvalid.Add(1)
		h.invalid.note(h.log, m.Topic)
		return
	}
	s := h.shard(m.Topic)
	s.mu.RLock()
	defer s.mu.RUnlock()
	subs := s.topics[m.Topic]
	if subs == nil {
		return
	}
	now := time.Now()
	for _, c := range subs.conns {
		c.enqueueEvent(b, now)
	}
	h.stats.delivered.Add(int64(len(subs.conns)))
}
