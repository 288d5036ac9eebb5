//go:build redis

package redis

import "sync/atomic"

// stats are the broker's own figures, for BrokerStats.
type stats struct {
	published, publishErrors, received, dropped atomic.Int64
	lost, reconnects                            atomic.Int64
	readersDown                                 atomic.Int64 // pub/sub connections lost and not yet restored
	heartbeatFailures                           atomic.Int64
	heartbeatFailing                            atomic.Bool
	// presence leaves published and dead nodes' entries removed by this
	// node's sweeps
	presenceLeaves, presenceSwept atomic.Int64
}

// BrokerStats implements broker.StatsReporter: connected (1 while the last
// heartbeat succeeded and every pub/sub connection is up),
// messages_published_total, publish_errors_total, messages_received_total,
// dropped_messages_total (for a handler too slow, see
// Options.DeliveryQueue), pubsub_connections_lost_total,
// pubsub_reconnects_total, heartbeat_failures_total,
// last_heartbeat_timestamp_seconds, presence_leaves_swept_total (the
// leaves this node's sweeps published: pending ones that came due and
// those of dead nodes' users) and presence_dead_entries_removed_total (the
// dead nodes' entries its sweeps removed).
func (b *Broker) BrokerStats() map[string]int64 {
	s := &b.stats
	up := int64(0)
	if !b.closed.Load() && b.lastHB.Load() != 0 && !s.heartbeatFailing.Load() && s.readersDown.Load() == 0 {
		up = 1
	}
	return map[string]int64{
		"connected":                           up,
		"messages_published_total":            s.published.Load(),
		"publish_errors_total":                s.publishErrors.Load(),
		"messages_received_total":             s.received.Load(),
		"dropped_messages_total":              s.dropped.Load(),
		"pubsub_connections_lost_total":       s.lost.Load(),
		"pubsub_reconnects_total":             s.reconnects.Load(),
		"heartbeat_failures_total":            s.heartbeatFailures.Load(),
		"last_heartbeat_timestamp_seconds":    b.lastHB.Load() / 1000,
		"presence_leaves_swept_total":         s.presenceLeaves.Load(),
		"presence_dead_entries_removed_total": s.presenceSwept.Load(),
	}
}
