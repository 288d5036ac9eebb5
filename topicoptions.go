package firetower

import (
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// TopicOptions are one topic's options, from Config.TopicOptions. The zero
// value is a plain topic: delivered at most once, nothing kept.
type TopicOptions struct {
	// HistorySize is how many of the topic's newest messages the broker
	// keeps, cluster-wide. Above 0, every message of the topic gets an
	// offset (1, 2, 3, … in the stream's epoch), a client that reconnects
	// recovers what it missed by subscribing with "since", and the
	// history can be read (a history frame, GET .../history,
	// Tower.History). Default: 0 (no history).
	HistorySize int
	// HistoryTTL is how long a message is kept after its publish; a topic
	// with no publish for that long forgets its stream, and its next
	// message starts a new epoch. Default: DefaultHistoryTTL, when
	// HistorySize is above 0.
	HistoryTTL time.Duration
	// Latest makes the topic a latest-value topic (prices, scores,
	// dashboards): a new subscriber gets its current value right after
	// the subscribed reply, and a subscriber too slow for it has the
	// older of its queued frames replaced by the newest instead of being
	// disconnected, so that it always ends with the latest value at the
	// rate it can read. It keeps at least the newest message (HistorySize
	// 1 if 0). Default: false.
	Latest bool
	// Presence makes the cluster keep who is subscribed to the topic:
	// Tower.Presence, a presence frame and GET .../presence list its
	// connections with their users and info, and GET .../count adds the
	// number of distinct users. Default: false.
	Presence bool
	// JoinLeave sends the topic's subscribers a join frame when a user's
	// first connection in the cluster subscribes and a leave frame
	// Config.PresenceGrace after their last one has gone (none if one of
	// theirs subscribes in between: a reload, a reconnect). Connections
	// without a user id make none. It implies Presence. Default: false.
	JoinLeave bool
}

// DefaultHistoryTTL is how long a topic with history keeps a message when
// its TopicOptions set no HistoryTTL.
const DefaultHistoryTTL = time.Hour

// DefaultPresenceGrace is how long a leave waits, when Config.PresenceGrace
// is 0, for the user to come back.
const DefaultPresenceGrace = 3 * time.Second

// maxPresenceGrace bounds Config.PresenceGrace: a leave within the
// node-death bounds (5 s with the topic service) needs a short grace.
const maxPresenceGrace = time.Minute

// presenceOptions returns topic's presence options and whether the topic
// has presence.
func (t *Tower) presenceOptions(topic string) (broker.PresenceOptions, bool) {
	if t.cfg.TopicOptions == nil || isInternalTopic(topic) {
		return broker.PresenceOptions{}, false
	}
	o := t.cfg.TopicOptions(topic)
	if !o.Presence && !o.JoinLeave {
		return broker.PresenceOptions{}, false
	}
	return broker.PresenceOptions{JoinLeave: o.JoinLeave, Grace: t.cfg.PresenceGrace}, true
}

// streamOptions returns topic's options and whether the topic has a
// stream, with the defaults filled in.
func (t *Tower) streamOptions(topic string) (TopicOptions, bool) {
	if t.cfg.TopicOptions == nil {
		return TopicOptions{}, false
	}
	o := t.cfg.TopicOptions(topic)
	if o.Latest && o.HistorySize < 1 {
		o.HistorySize = 1
	}
	if o.HistorySize < 1 {
		return TopicOptions{}, false
	}
	if o.HistoryTTL <= 0 {
		o.HistoryTTL = DefaultHistoryTTL
	}
	return o, true
}

func (o TopicOptions) broker() broker.StreamOptions {
	return broker.StreamOptions{Size: o.HistorySize, TTL: o.HistoryTTL}
}

// StreamPosition is a place in a topic's stream: an epoch and an offset
// (broker.StreamPosition).
type StreamPosition = broker.StreamPosition
