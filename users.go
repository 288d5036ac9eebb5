package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/internal/jsonstr"
)

// Users (DESIGN §2, "Users"): every connection with a user id is
// subscribed by its node to the user's internal topic, UserTopic(id),
// which no client can name (it holds spaces, which ValidateTopic refuses).
// A message to a person is a publish to that topic; a disconnect is a
// control message on it that only the node's own path (or a push-API
// backend, which the topic service trusts) can make.

// InternalTopicPrefix starts every topic that firetower keeps for itself
// (the per-user topics, UserTopic). Such a topic holds a space, so no
// client, REST publish or Tower.Publish can name it, and listings
// (Tower.Topics, GET /topics, the dashboard) leave it out.
const InternalTopicPrefix = "firetower "

// UserTopicPrefix starts the internal topic of each user: UserTopic.
const UserTopicPrefix = InternalTopicPrefix + "user "

// MaxUserIDLen is the longest user id, in bytes, that Config.Authenticate
// may return: its user topic must fit in MaxTopicLen. A longer one (or
// one that is not valid UTF-8) is refused at the upgrade with 400.
const MaxUserIDLen = MaxTopicLen - len(UserTopicPrefix)

// CloseUserDisconnected is the WebSocket close code of a connection
// closed by Tower.DisconnectUser or POST {prefix}/disconnect; the close
// reason is the text given there. firetower.js does not reconnect after
// it.
const CloseUserDisconnected = 4001

// disconnectIDPrefix marks a message on a user topic as a disconnect: the
// node's user messages have uuid ids, so no REST or Go publish can make
// one. A push-API backend disconnects a user by publishing to
// UserTopic(id) with an id that starts with it and the reason, a JSON
// string, as data.
const disconnectIDPrefix = "firetower disconnect "

// maxCloseReason is the most bytes a WebSocket close reason may hold
// (RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of
// them the code).
const maxCloseReason = 123

// UserTopic returns the internal topic of a user's connections.
func UserTopic(userID string) string { return UserTopicPrefix + userID }

func isInternalTopic(topic string) bool { return strings.HasPrefix(topic, InternalTopicPrefix) }

// ValidateUserID reports whether userID can be addressed: 1..MaxUserIDLen
// bytes of UTF-8. The error wraps ErrInvalidUser.
func ValidateUserID(userID string) error {
	switch {
	case userID == "":
		return fmt.Errorf("%w: empty user id", ErrInvalidUser)
	case len(userID) > MaxUserIDLen:
		return fmt.Errorf("%w: user id of %d bytes, at most %d allowed", ErrInvalidUser, len(userID), MaxUserIDLen)
	case !utf8.ValidString(userID):
		return fmt.Errorf("%w: user id is not valid UTF-8", ErrInvalidUser)
	}
	return nil
}

// UsersPublished is what a publish to users did.
type UsersPublished struct {
	// ID is the message id, the "id" of the message frame.
	ID string
	// Users are the users published to, each once, in the order named.
	Users []string
	// Connections is how many connections of those users the cluster
	// counted just before the publish: exact on the embedded broker, up to
	// a second behind on a remote one (the counts other nodes report).
	Connections int
}

// PublishToUser sends data, encoded as JSON, to every connection of
// userID on every node, as {"type":"message","data":…,"id":"<id>"}, with
// no subscription needed, and returns the message id. A connection
// without a user id gets none.
func (t *Tower) PublishToUser(ctx context.Context, userID string, data any) (string, error) {
	raw, err := encodeData(data)
	if err != nil {
		return "", err
	}
	if err := ValidateUserID(userID); err != nil {
		return "", err
	}
	id := newID()
	return id, t.publishInternal(ctx, broker.Message{Topic: UserTopic(userID), ID: id, Data: raw})
}

// PublishToUsers sends one message, with one id, to every connection of
// each of users (at most MaxPublishTopics, a user named twice gets it
// once) and counts the connections it reached, as POST {prefix}/publish
// with "users" does. On an error, the users before it are already sent.
func (t *Tower) PublishToUsers(ctx context.Context, users []string, data any) (UsersPublished, error) {
	raw, err := encodeData(data)
	if err != nil {
		return UsersPublished{}, err
	}
	users, err = checkUsers(slices.Clone(users))
	if err != nil {
		return UsersPublished{}, err
	}
	return t.publishUsers(ctx, users, raw)
}

// checkUsers validates and dedupes users in place.
func checkUsers(users []string) ([]string, error) {
	if len(users) == 0 {
		return nil, fmt.Errorf("%w: no user", ErrInvalidUser)
	}
	if len(users) > MaxPublishTopics {
		return nil, fmt.Errorf("%w: %d users in one publish, at most %d allowed", ErrInvalidUser, len(users), MaxPublishTopics)
	}
	for _, u := range users {
		if err := ValidateUserID(u); err != nil {
			return nil, err
		}
	}
	return dedupeTopics(users), nil
}

// publishUsers publishes validated raw JSON to validated, distinct users.
func (t *Tower) publishUsers(ctx context.Context, users []string, raw []byte) (UsersPublished, error) {
	p := UsersPublished{ID: newID(), Users: users}
	for _, u := range users {
		topic := UserTopic(u)
		n, err := t.broker.Count(ctx, topic)
		if err != nil {
			t.stats.brokerErrors.Add(1)
			return p, fmt.Errorf("firetower: counting the connections of user %q: %w", u, err)
		}
		if err := t.publishInternal(ctx, broker.Message{Topic: topic, ID: p.ID, Data: raw}); err != nil {
			return p, err
		}
		p.Connections += n
	}
	return p, nil
}

// DisconnectUser closes every connection of userID in the cluster with
// status CloseUserDisconnected (4001) and reason (cut to the 123 bytes a
// close frame holds); their DisconnectReason is DisconnectKicked. It
// returns how many connections the cluster counted for the user just
// before: exact on the embedded broker, up to a second behind on a remote
// one. A connection that opens after the call is not closed.
func (t *Tower) DisconnectUser(ctx context.Context, userID, reason string) (int, error) {
	if err := ValidateUserID(userID); err != nil {
		return 0, err
	}
	if !utf8.ValidString(reason) {
		return 0, fmt.Errorf("%w: the reason is not valid UTF-8", ErrInvalidData)
	}
	topic := UserTopic(userID)
	n, err := t.broker.Count(ctx, topic)
	if err != nil {
		t.stats.brokerErrors.Add(1)
		return 0, fmt.Errorf("firetower: counting the connections of user %q: %w", userID, err)
	}
	data := jsonstr.Append(nil, closeReason(reason))
	if err := t.publishInternal(ctx, broker.Message{Topic: topic, ID: disconnectIDPrefix + newID(), Data: data}); err != nil {
		return 0, err
	}
	return n, nil
}

// publishInternal publishes m, to an internal topic, past TopicOptions:
// internal topics keep no history.
func (t *Tower) publishInternal(ctx context.Context, m broker.Message) error {
	if t.isClosing() {
		return ErrShutdown
	}
	if err := t.broker.Publish(ctx, m); err != nil {
		t.stats.brokerErrors.Add(1)
		if brokerErrorStatus(err) == 503 {
			t.counts.reset()
			t.users.reset()
		}
		return fmt.Errorf("firetower: publishing to user %q: %w", strings.TrimPrefix(m.Topic, UserTopicPrefix), err)
	}
	t.stats.published.Add(1)
	return nil
}

func encodeData(data any) ([]byte, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("%w: encoding it as JSON: %v", ErrInvalidData, err)
	}
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalidData)
	}
	return raw, nil
}

// closeReason cuts reason to what a close frame holds, at a character
// boundary.
func closeReason(reason string) string {
	if len(reason) <= maxCloseReason {
		return reason
	}
	cut := maxCloseReason
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

// appendMessageFrame appends the frame of a user message:
// {"type":"message","data":...,"id":...}.
func appendMessageFrame(b []byte, id string, data []byte) []byte {
	b = append(b, `{"type":"message","data":`...)
	b = append(b, data...)
	b = append(b, `,"id":`...)
	b = jsonstr.Append(b, id)
	return append(b, '}')
}

// deliverUser is hub.deliver for an internal topic: a user message goes
// to the user's local connections as a message frame; a disconnect closes
// them.
func (h *hub) deliverUser(m broker.Message) {
	s := h.shard(m.Topic)
	if strings.HasPrefix(m.ID, disconnectIDPrefix) {
		var reason string
		if json.Unmarshal(m.Data, &reason) != nil {
			reason = ""
		}
		reason = closeReason(reason)
		s.mu.RLock()
		var conns []*Conn
		if subs := s.topics[m.Topic]; subs != nil {
			conns = slices.Clone(subs.conns)
		}
		s.mu.RUnlock()
		for _, c := range conns {
			c.shutdown(DisconnectKicked, CloseUserDisconnected, reason, true)
		}
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	subs := s.topics[m.Topic]
	if subs == nil {
		return
	}
	var frame []byte
	if h.bare {
		frame = m.Data
	} else {
		frame = appendMessageFrame(make([]byte, 0, len(m.Data)+len(m.ID)+40), m.ID, m.Data)
	}
	now := time.Now()
	for _, c := range subs.conns {
		c.enqueue(frame, now)
	}
	h.stats.delivered.Add(int64(len(subs.conns)))
}

// subscribeUser subscribes a new connection with a user id to its user
// topic, before OnConnect runs. On a broker error the connection is
// closed (1013, try again later).
func (t *Tower) subscribeUser(c *Conn) {
	if c.userID == "" {
		return
	}
	ctx, cancel := t.brokerContext(c)
	defer cancel()
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if err := t.hub.subscribe(ctx, c, []string{c.userTopic()}); err != nil {
		t.stats.brokerErrors.Add(1)
		t.log.Warn("firetower: broker subscribe of a user topic failed; closing the connection", "conn", c.id, "user", c.userID, "err", err)
		c.shutdown(DisconnectServer, 1013, "firetower: the broker is unavailable, retry later", false)
		return
	}
	c.userSubscribed = true
}

// userConnsAllowed applies Config.MaxConnsPerUser at the upgrade: the
// cluster-wide count of the user's topic must be under it.
func (t *Tower) userConnsAllowed(ctx context.Context, userID string) (ok bool, n int, err error) {
	if t.cfg.MaxConnsPerUser <= 0 || userID == "" {
		return true, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.BrokerTimeout)
	defer cancel()
	n, err = t.broker.Count(ctx, UserTopic(userID))
	if err != nil {
		return false, 0, err
	}
	return n < t.cfg.MaxConnsPerUser, n, nil
}

// Subscribe subscribes the connection to topics on the server's behalf,
// from OnConnect or any goroutine: the client is told with a subscribed
// frame, as if it had asked. BeforeSubscribeHandler is not asked;
// SubscribeHandler runs for the topics it did not hold; MaxTopicsPerConn
// applies (ErrTooManyTopics); topics with history get their position in
// the reply, as a client subscribe does. It is all or nothing, and safe
// alongside the connection's own frames, which are handled one at a time
// with it. It must not be called from BeforeSubscribeHandler. An error
// wraps ErrInvalidTopic, ErrTooManyTopics, ErrConnClosed or the broker's.
func (c *Conn) Subscribe(topics ...string) error {
	topics, err := serverTopics(topics)
	if err != nil {
		return err
	}
	t := c.tower
	f := &Frame{Type: TypeSubscribe, Topics: topics, Limit: -1}
	fresh, perr, err := t.subscribeTopics(c, f, true)
	if perr != nil {
		return err
	}
	if len(fresh) > 0 && t.cfg.SubscribeHandler != nil {
		defer t.recoverCallback(c)
		t.cfg.SubscribeHandler(c, fresh)
	}
	return nil
}

// Unsubscribe unsubscribes the connection from topics on the server's
// behalf, from any goroutine: the client is told with an unsubscribed
// frame; UnSubscribeHandler runs for the topics it held. An error wraps
// ErrInvalidTopic or ErrConnClosed; a broker error is logged, and the
// connection is unsubscribed either way.
func (c *Conn) Unsubscribe(topics ...string) error {
	topics, err := serverTopics(topics)
	if err != nil {
		return err
	}
	t := c.tower
	held, closed := t.unsubscribeTopics(c, &Frame{Type: TypeUnsubscribe, Topics: topics, Limit: -1}, true)
	if closed {
		return ErrConnClosed
	}
	if len(held) > 0 && t.cfg.UnSubscribeHandler != nil {
		defer t.recoverCallback(c)
		t.cfg.UnSubscribeHandler(c, held)
	}
	return nil
}

// serverTopics validates and dedupes the topics of a server-side call.
func serverTopics(topics []string) ([]string, error) {
	if len(topics) == 0 {
		return nil, fmt.Errorf("%w: no topic", ErrInvalidTopic)
	}
	for _, topic := range topics {
		if err := ValidateTopic(topic); err != nil {
			return nil, err
		}
	}
	return dedupeTopics(slices.Clone(topics)), nil
}

// serverSubscribeError is the Go error of a server-side subscribe that
// failed with perr.
func serverSubscribeError(perr *protocolError, cause error) error {
	switch {
	case perr.code == CodeTooManyTopics:
		return fmt.Errorf("%w: %s", ErrTooManyTopics, perr.message)
	case cause != nil:
		return cause
	}
	return errors.New("firetower: " + perr.message)
}
