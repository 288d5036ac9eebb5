//go:build redis

package redis

// StreamKeys returns the keys of topic's stream and the topic's channel,
// for the tests that look at them in Redis.
func StreamKeys(b *Broker, topic string) (meta, stream, channel string) {
	return b.streamKeys(topic)
}
