package client

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stats describes a Client's link to the topic service.
type Stats struct {
	// Connected is true while a session with the service is up.
	Connected bool
	// Sessions counts the sessions established, the first one included;
	// Reconnects those established after a session was lost.
	Sessions, Reconnects int64
	// ConnectFailures counts failed attempts to establish a session.
	ConnectFailures int64
	// SessionsLost counts sessions that ended other than by Close.
	SessionsLost int64
	// Published counts the messages sent to the service (stream
	// publishes once the service appended them); PublishErrors the
	// Publish and PublishStream calls that failed (the service
	// unreachable, the client closed, an invalid message, a stream
	// publish the service refused, the caller's context done).
	Published, PublishErrors int64
	// Received counts the messages delivered to the handler.
	Received int64
	// Refused counts the operations the service refused.
	Refused int64
	// Stalls counts the times this node itself went silent: its session
	// loop ran more than half of HeartbeatTimeout late (the process was
	// stopped, starved of CPU or paused).
	Stalls int64
	// LastConnect and LastDisconnect are when the last session was
	// established and lost; zero for never.
	LastConnect, LastDisconnect time.Time
	// LastError says why the last session was lost or the last attempt
	// failed; empty if none was.
	LastError string
}

// counters are a Client's figures: atomics on the message path, added
// once per stream frame.
type counters struct {
	sessions, reconnects, connectFailures, sessionsLost atomic.Int64
	published, publishErrors, received, refused, stalls atomic.Int64
	lastConnect, lastDisconnect                         atomic.Int64 // Unix nanoseconds, 0 for never

	mu      sync.Mutex
	lastErr string
}

func (st *counters) failed(err error) {
	st.mu.Lock()
	st.lastErr = err.Error()
	st.mu.Unlock()
}

// Stats returns the client's figures now. It is cheap and safe to call
// from any goroutine, also after Close.
func (c *Client) Stats() Stats {
	st := &c.stats
	at := func(ns int64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, ns)
	}
	st.mu.Lock()
	lastErr := st.lastErr
	st.mu.Unlock()
	return Stats{
		Connected:       c.Connected(),
		Sessions:        st.sessions.Load(),
		Reconnects:      st.reconnects.Load(),
		ConnectFailures: st.connectFailures.Load(),
		SessionsLost:    st.sessionsLost.Load(),
		Published:       st.published.Load(),
		PublishErrors:   st.publishErrors.Load(),
		Received:        st.received.Load(),
		Refused:         st.refused.Load(),
		Stalls:          st.stalls.Load(),
		LastConnect:     at(st.lastConnect.Load()),
		LastDisconnect:  at(st.lastDisconnect.Load()),
		LastError:       lastErr,
	}
}

// Reconnects returns how many times a lost session was re-established.
func (c *Client) Reconnects() int64 { return c.stats.reconnects.Load() }

// BrokerStats implements broker.StatsReporter with the figures of Stats:
// connected, sessions_total, reconnects_total, connect_failures_total,
// sessions_lost_total, messages_published_total, publish_errors_total,
// messages_received_total, refused_total, stalls_total, last_connect_timestamp_seconds
// and last_disconnect_timestamp_seconds.
func (c *Client) BrokerStats() map[string]int64 {
	s := c.Stats()
	up := int64(0)
	if s.Connected {
		up = 1
	}
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	return map[string]int64{
		"connected":                         up,
		"sessions_total":                    s.Sessions,
		"reconnects_total":                  s.Reconnects,
		"connect_failures_total":            s.ConnectFailures,
		"sessions_lost_total":               s.SessionsLost,
		"stalls_total":                      s.Stalls,
		"messages_published_total":          s.Published,
		"publish_errors_total":              s.PublishErrors,
		"messages_received_total":           s.Received,
		"refused_total":                     s.Refused,
		"last_connect_timestamp_seconds":    unix(s.LastConnect),
		"last_disconnect_timestamp_seconds": unix(s.LastDisconnect),
	}
}
