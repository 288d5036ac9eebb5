package broker

// StatsReporter is implemented by brokers that report the health of their
// link to the cluster, so that the node can expose it (firetower's
// Prometheus collector turns each entry into firetower_broker_<name>).
//
// BrokerStats returns a new map on every call, keyed by snake_case names.
// A name ending in _total is a counter: it only grows while the broker
// lives. Any other name is a gauge: "connected" is 1 while the broker's
// session with its cluster is up and 0 while it reconnects; a name ending
// in _timestamp_seconds is a Unix time, 0 for never. It must be cheap and
// safe to call from any goroutine, at any time, also after Close.
type StatsReporter interface {
	BrokerStats() map[string]int64
}
