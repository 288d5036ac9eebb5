//go:build redis

package redis

// StreamKeys returns the keys of topic's stream and the topic's channel,
// for the tests that look at them in Redis.
func StreamKeys(b *Broker, topic string) (meta, stream, channel string) {
	return b.streamKeys(topic)
}

// Kill stops b as a crashed node stops: no more heartbeats, sweeps or
// calls, and nothing withdrawn from Redis. Close afterwards does nothing.
func Kill(b *Broker) { b.shutdown(false) }

// PresenceKeys returns the keys of topic's presence (its entries and
// users, the node's set, the group's pending leaves and registry) and the
// topic's channel.
func PresenceKeys(b *Broker, topic string) (keys []string, channel string) {
	k := b.pkeys[b.groupOf(topic)]
	return []string{k.entries + topic, k.users + topic, k.nodeSet, k.pending, k.registry}, k.channels + topic
}

// SweepBatch is how many entries one sweep script removes at most.
const SweepBatch = sweepBatch

// Sweep runs one sweep of every slot group now, as the node does every
// sweep interval.
func Sweep(b *Broker) { b.sweep() }
