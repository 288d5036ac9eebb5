package firetower

import (
	"sync/atomic"
	"time"
)

// stats are the node's live figures: plain atomic counters bumped on the
// paths where things happen (never once per subscriber of a publish), read
// by Stats and by metrics collectors at scrape time.
type stats struct {
	connections      atomic.Int64 // open now
	connectionsTotal atomic.Int64
	subscriptions    atomic.Int64 // (connection, topic) pairs now
	topics           atomic.Int64 // topics with local subscribers now
	framesIn         atomic.Int64 // client frames read
	published        atomic.Int64 // messages this node published (REST, client, Tower.Publish), per topic
	delivered        atomic.Int64 // frames queued to subscribers
	framesOut        atomic.Int64 // server frames written (replies included)
	writes           atomic.Int64 // WebSocket frames written (a batch is one)
	bytesOut         atomic.Int64 // payload bytes written
	slowClosed       atomic.Int64 // connections closed because their queue was full
	droppedQueueFull atomic.Int64 // frames lost with them
	rateLimited      atomic.Int64 // client frames dropped by the inbound rate limit
	droppedInvalid   atomic.Int64 // messages from the broker dropped as not valid JSON in UTF-8
	brokerErrors     atomic.Int64
	recovered        atomic.Int64 // stream messages sent to recovering subscribers
	recoveryFailed   atomic.Int64 // subscribes with since that could not recover
	duplicates       atomic.Int64 // live stream frames a connection already had, dropped
	replacedLatest   atomic.Int64 // queued latest-value frames replaced by a newer one

	disconnects [numDisconnectReasons]atomic.Int64
	latency     histogram // from a frame's queueing to its write, per batch
}

// Stats is a snapshot of a node's figures since it started. Counters only
// grow; the "now" figures are gauges.
type Stats struct {
	Connections      int64 `json:"connections"`      // open now
	ConnectionsTotal int64 `json:"connectionsTotal"` // opened since start
	Subscriptions    int64 `json:"subscriptions"`    // connection-topic pairs now
	Topics           int64 `json:"topics"`           // topics with local subscribers now
	FramesIn         int64 `json:"framesIn"`         // client frames read
	Published        int64 `json:"published"`        // messages published through this node, one per topic
	Delivered        int64 `json:"delivered"`        // messages queued to local subscribers
	FramesOut        int64 `json:"framesOut"`        // server frames written, replies included
	Writes           int64 `json:"writes"`           // WebSocket frames written (a batch counts once)
	BytesOut         int64 `json:"bytesOut"`         // bytes of server frames written
	SlowClosed       int64 `json:"slowClosed"`       // connections closed for a full send queue
	DroppedQueueFull int64 `json:"droppedQueueFull"` // frames dropped with them
	RateLimited      int64 `json:"rateLimited"`      // client frames dropped by the rate limit
	DroppedInvalid   int64 `json:"droppedInvalid"`   // messages from the broker dropped: data not valid JSON in valid UTF-8
	BrokerErrors     int64 `json:"brokerErrors"`     // failed broker calls
	Recovered        int64 `json:"recovered"`        // stream messages sent to subscribers that recovered them
	RecoveryFailed   int64 `json:"recoveryFailed"`   // subscribe topics asked with since that could not be recovered
	Duplicates       int64 `json:"duplicates"`       // live stream messages a subscriber already had from its recovery, dropped
	ReplacedLatest   int64 `json:"replacedLatest"`   // queued frames of latest-value topics replaced by a newer value

	Disconnects map[string]int64 `json:"disconnects"` // by reason

	// Latency is the time from queueing a frame to finishing its write,
	// observed once per write.
	Latency Latency `json:"latency"`
}

// Latency is a fixed-bucket histogram of durations.
type Latency struct {
	Buckets []float64 `json:"buckets"` // upper bounds, in seconds
	Counts  []uint64  `json:"counts"`  // cumulative: observations up to each bound
	Count   uint64    `json:"count"`   // all observations, those over the last bound too
	Sum     float64   `json:"sum"`     // of all observations, in seconds
}

// Stats returns the node's figures now.
func (t *Tower) Stats() Stats {
	s := &t.stats
	out := Stats{
		Connections:      s.connections.Load(),
		ConnectionsTotal: s.connectionsTotal.Load(),
		Subscriptions:    s.subscriptions.Load(),
		Topics:           s.topics.Load(),
		FramesIn:         s.framesIn.Load(),
		Published:        s.published.Load(),
		Delivered:        s.delivered.Load(),
		FramesOut:        s.framesOut.Load(),
		Writes:           s.writes.Load(),
		BytesOut:         s.bytesOut.Load(),
		SlowClosed:       s.slowClosed.Load(),
		DroppedQueueFull: s.droppedQueueFull.Load(),
		RateLimited:      s.rateLimited.Load(),
		DroppedInvalid:   s.droppedInvalid.Load(),
		BrokerErrors:     s.brokerErrors.Load(),
		Recovered:        s.recovered.Load(),
		RecoveryFailed:   s.recoveryFailed.Load(),
		Duplicates:       s.duplicates.Load(),
		ReplacedLatest:   s.replacedLatest.Load(),
		Disconnects:      map[string]int64{},
	}
	for r := DisconnectClient; r < numDisconnectReasons; r++ {
		out.Disconnects[r.String()] = s.disconnects[r].Load()
	}
	out.Latency = s.latency.snapshot()
	return out
}

// latencyBuckets are upper bounds in seconds, from 50µs to 5s.
var latencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// histogram is a fixed-bucket histogram safe for concurrent use.
type histogram struct {
	counts [17]atomic.Uint64 // one per bucket, and +Inf
	sumNs  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	sec := d.Seconds()
	i := 0
	for i < len(latencyBuckets) && sec > latencyBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// snapshot returns the histogram's figures now.
func (h *histogram) snapshot() Latency {
	cumulative := make([]uint64, len(latencyBuckets))
	var running uint64
	for i := range latencyBuckets {
		running += h.counts[i].Load()
		cumulative[i] = running
	}
	return Latency{
		Buckets: append([]float64(nil), latencyBuckets...),
		Counts:  cumulative,
		Count:   running + h.counts[len(latencyBuckets)].Load(),
		Sum:     float64(h.sumNs.Load()) / 1e9,
	}
}
