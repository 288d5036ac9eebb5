package firetower

import (
	"errors"

	"github.com/OSMeteor/firetower/broker"
)

var (
	// ErrInvalidTopic reports a topic that breaks DESIGN §3's rule: 1..256
	// bytes of UTF-8, no comma, no whitespace or control characters.
	ErrInvalidTopic = errors.New("firetower: invalid topic")
	// ErrInvalidUser reports a user id that cannot be addressed: empty,
	// longer than MaxUserIDLen or not valid UTF-8.
	ErrInvalidUser = errors.New("firetower: invalid user id")
	// ErrTooManyTopics reports a server-side Conn.Subscribe that would take
	// the connection over MaxTopicsPerConn.
	ErrTooManyTopics = errors.New("firetower: too many topics")
	// ErrInvalidData reports published data that is not valid JSON in
	// valid UTF-8: no subscriber ever gets it (DESIGN §3).
	ErrInvalidData = errors.New("firetower: invalid data")
	// ErrInvalidQuery reports a TopicsQuery that Tower.Topics refuses.
	ErrInvalidQuery = errors.New("firetower: invalid query")
	// ErrInvalidConfig reports a Config that New refuses.
	ErrInvalidConfig = errors.New("firetower: invalid config")
	// ErrShutdown reports a call on a Tower after Shutdown.
	ErrShutdown = errors.New("firetower: tower shut down")
	// ErrConnClosed reports a send on a closed connection.
	ErrConnClosed = errors.New("firetower: connection closed")
	// ErrUnavailable reports that the broker cannot reach the cluster now.
	// It is broker.ErrUnavailable, so errors.Is matches either.
	ErrUnavailable = broker.ErrUnavailable
)
