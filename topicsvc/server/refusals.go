package server

import (
	"log/slog"
	"sync"
	"time"
)

// What the service refuses, as summarised in its log.
const (
	refusedNode       = "node_auth"       // a session without the node token
	refusedPush       = "push_auth"       // a push API call without a token
	refusedReflection = "reflection_auth" // a reflection call without a token
	refusedInvalid    = "invalid"         // an invalid operation or call
	refusedData       = "invalid_data"    // message data that is not JSON in UTF-8
	refusedLive       = "live_node"       // a session for a node id with a live session
	refusedLimit      = "limit"           // a node beyond its topic limit, or a count out of range
	refusedHello      = "no_hello"        // a session without a hello in time
)

// refusalLog writes refusals as a bounded summary: at most one line per
// interval, with how many of each kind and the last of each, so that a
// flood of bad calls costs a line, not a line per call.
type refusalLog struct {
	log      *slog.Logger
	interval time.Duration

	mu     sync.Mutex
	last   time.Time // when the last line was written
	counts map[string]int64
	sample map[string]string // kind -> "peer: error" of the last one
	timer  *time.Timer       // pending line, nil when none
	closed bool
}

func newRefusalLog(log *slog.Logger, interval time.Duration) *refusalLog {
	return &refusalLog{log: log, interval: interval, counts: map[string]int64{}, sample: map[string]string{}}
}

// note records one refusal of kind from peer.
func (r *refusalLog) note(kind, peer string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[kind]++
	r.sample[kind] = peer + ": " + err.Error()
	if r.timer != nil || r.closed {
		return
	}
	if wait := r.interval - time.Since(r.last); wait > 0 {
		r.timer = time.AfterFunc(wait, r.flush)
		return
	}
	r.writeLocked()
}

func (r *refusalLog) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.timer = nil
	r.writeLocked()
}

func (r *refusalLog) writeLocked() {
	if len(r.counts) == 0 {
		return
	}
	attrs := make([]any, 0, 4*len(r.counts)+2)
	for kind, n := range r.counts {
		attrs = append(attrs, kind, n, kind+"_last", r.sample[kind])
	}
	attrs = append(attrs, "interval", r.interval)
	r.log.Warn("topic service refused requests", attrs...)
	clear(r.counts)
	clear(r.sample)
	r.last = time.Now()
}

// close writes what is pending and stops the timer.
func (r *refusalLog) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.closed = true
	r.writeLocked()
}
