// Package broker defines how a firetower node exchanges messages and counts
// with the rest of its cluster.
//
// A Broker is used by exactly one node (one *firetower.Tower). The node
// declares interest in a topic when its first local subscriber arrives
// (Subscribe) and withdraws it when the last one leaves (Unsubscribe); it
// reports its local subscriber counts (SetCount); and it receives the
// messages of the topics it is interested in through the Handler it passes to
// Start. Implementations: the firetower topic service, embedded (package
// topicsvc) or remote (package topicsvc/client), and Redis (package
// broker/redis, built with -tags redis). Package brokertest holds the conformance suite every
// implementation passes.
package broker

import (
	"context"
	"errors"
)

// Message is one publish travelling through the cluster.
type Message struct {
	// Topic is the topic the message was published to.
	Topic string
	// ID is the message id the publisher got back.
	ID string
	// Data is the published JSON, carried as raw bytes. Brokers deliver it
	// byte for byte and never modify it; receivers must not modify it either.
	// It must be a JSON text in valid UTF-8: the topic service drops any
	// other message a node publishes.
	Data []byte
	// Offset is the message's place in the topic's stream (1, 2, 3, …),
	// and Epoch the stream's epoch, for a message published with
	// Streamer.PublishStream; 0 and "" for any other.
	Offset uint64
	Epoch  string
}

// MaxTopicLen is the longest topic, in bytes, that every broker carries.
const MaxTopicLen = 256

// Handler receives the messages of the topics the node subscribed to.
//
// A broker calls it from its own goroutines, one message at a time per
// topic, in the order each publisher published them. It must not block: the
// node only copies the message into its connections' queues.
type Handler func(Message)

// Broker connects one node to its cluster. All methods are safe for
// concurrent use.
type Broker interface {
	// Start registers the node's message handler and starts delivery. It is
	// called once, before any other method.
	Start(h Handler) error

	// Publish sends m to every node subscribed to m.Topic, this one
	// included. Messages one goroutine publishes to one topic arrive in
	// order. An error wrapping ErrUnavailable means the cluster cannot be
	// reached now.
	Publish(ctx context.Context, m Message) error

	// Subscribe declares the node's interest in topic. When it returns
	// nil, a message published anywhere in the cluster afterwards reaches
	// the node's Handler. Subscribing twice is the same as once.
	Subscribe(ctx context.Context, topic string) error

	// Unsubscribe withdraws the node's interest in topic.
	Unsubscribe(ctx context.Context, topic string) error

	// SetCount records that the node has n local connections subscribed to
	// topic (0 forgets it). It never blocks on the network: remote
	// implementations propagate counts within one second. Count on the
	// same node reflects it at once.
	SetCount(topic string, n int)

	// Count returns the number of connections subscribed to topic across
	// the cluster. An unknown topic counts 0.
	Count(ctx context.Context, topic string) (int, error)

	// Close stops delivery and releases the broker's resources. It is
	// idempotent. Other methods return an error wrapping ErrClosed after it.
	Close() error
}

// TopicCount is a topic with its cluster-wide subscriber count.
type TopicCount struct {
	Topic string `json:"topic"`
	Count int    `json:"count"`
}

// TopicLister is implemented by brokers that can list the cluster's topics.
type TopicLister interface {
	// Topics returns every topic with at least one subscriber in the
	// cluster, with its count, in no particular order.
	Topics(ctx context.Context) ([]TopicCount, error)
}

// NodeInfo describes one node of the cluster as its broker sees it.
type NodeInfo struct {
	ID string `json:"id"`
	// Connections is the node's subscriber counts summed over its topics
	// (what SetCount reported): a connection subscribed to two topics
	// counts twice. Brokers see subscriptions, not sockets.
	Connections   int   `json:"connections"`
	Topics        int   `json:"topics"`        // topics the node listens to
	LastHeartbeat int64 `json:"lastHeartbeat"` // Unix milliseconds
}

// NodeLister is implemented by brokers that know the nodes of the cluster.
type NodeLister interface {
	Nodes(ctx context.Context) ([]NodeInfo, error)
}

// BatchSubscriber is implemented by brokers that can declare the node's
// interest in many topics in one round trip to the cluster. The node
// subscribes a client frame's topics with one call (SubscribeTopics in this
// package uses it, or falls back to one Subscribe per topic).
//
// SubscribeTopics is all or nothing: when it returns nil, a message
// published anywhere afterwards to any of topics reaches the node's
// Handler; when it returns an error, none of topics that the node did not
// already hold is left subscribed.
type BatchSubscriber interface {
	SubscribeTopics(ctx context.Context, topics []string) error
}

// BatchUnsubscriber is implemented by brokers that can withdraw the node's
// interest in many topics in one round trip. UnsubscribeTopics withdraws
// every one of topics as far as the node is concerned, even when it
// returns an error (which then says the cluster may not know yet, as for
// Unsubscribe).
type BatchUnsubscriber interface {
	UnsubscribeTopics(ctx context.Context, topics []string) error
}

// SubscribeTopics subscribes b to every one of topics, in one call when b
// is a BatchSubscriber, else one Subscribe after another. Either way it is
// all or nothing: on an error, the topics subscribed by this call are
// unsubscribed again. The caller passes topics the node does not hold.
func SubscribeTopics(ctx context.Context, b Broker, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	if bs, ok := b.(BatchSubscriber); ok {
		return bs.SubscribeTopics(ctx, topics)
	}
	for i, topic := range topics {
		if err := b.Subscribe(ctx, topic); err != nil {
			for _, done := range topics[:i] {
				_ = b.Unsubscribe(ctx, done)
			}
			return err
		}
	}
	return nil
}

// UnsubscribeTopics withdraws b's interest in every one of topics, in one
// call when b is a BatchUnsubscriber; it returns the first error.
func UnsubscribeTopics(ctx context.Context, b Broker, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	if bu, ok := b.(BatchUnsubscriber); ok {
		return bu.UnsubscribeTopics(ctx, topics)
	}
	var first error
	for _, topic := range topics {
		if err := b.Unsubscribe(ctx, topic); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// InProcess is implemented by a broker whose calls run to completion in the
// calling goroutine, never waiting on a network or another process (the
// embedded topic service). A node bounds such calls by the caller's context
// alone, with no BrokerTimeout timer. A broker that embeds another (a
// wrapper that adds behaviour) must answer for itself, since the embedded
// method would otherwise vouch for calls it does not make.
type InProcess interface{ InProcess() bool }

var (
	// ErrUnavailable reports that the cluster cannot be reached now; the
	// operation may succeed later. firetower answers REST publishes that
	// fail with it with 503.
	ErrUnavailable = errors.New("firetower: broker unavailable")
	// ErrClosed reports a call after Close.
	ErrClosed = errors.New("firetower: broker closed")
)
