package firetower

import (
	"context"
	"sync"
	"time"
)

// countCacheTTL is how long GET {prefix}/topics/:topic/count reuses a
// topic's count, as the listing does (DESIGN §4). Tower.GetConnectNum is
// never cached: inside SubscribeHandler it counts the new subscriber.
const countCacheTTL = time.Second

// countCache coalesces the public count route's broker calls: concurrent
// requests for one topic share one call, and its answer serves the
// requests of the next countCacheTTL. Entries live in the generation they
// were made in, and a generation is dropped whole once it is countCacheTTL
// old, so the cache holds at most the topics asked for in the last
// second. An outage the node sees on a publish drops them all (reset).
type countCache struct {
	// connected, if set, says whether the broker is connected to its
	// cluster now (its broker.StatsReporter "connected" gauge): while it
	// is not, no answer is reused, so the route says the broker is down
	// rather than what it counted before.
	connected func() bool

	mu    sync.Mutex
	gen   map[string]*countEntry
	start time.Time // of gen
}

// countEntry is one broker call and its answer; done is closed once n
// and err are set.
type countEntry struct {
	done chan struct{}
	n    int
	err  error
}

// reset forgets every answer: the node saw the broker fail, so counts
// from before are not reused while it may be down.
func (cc *countCache) reset() {
	cc.mu.Lock()
	cc.gen = nil
	cc.mu.Unlock()
}

// count returns topic's count, asking ask at most once per countCacheTTL
// and once at a time. Errors are not reused: the next request asks again.
func (cc *countCache) count(ctx context.Context, topic string, ask func(string) (int, error)) (int, error) {
	now := time.Now()
	cc.mu.Lock()
	if cc.gen == nil || now.Sub(cc.start) >= countCacheTTL {
		cc.gen, cc.start = map[string]*countEntry{}, now
	}
	e, ok := cc.gen[topic]
	if ok && cc.connected != nil && !cc.connected() {
		ok = false
	}
	if !ok {
		e = &countEntry{done: make(chan struct{})}
		cc.gen[topic] = e
	}
	gen := cc.gen
	cc.mu.Unlock()
	if !ok {
		e.n, e.err = ask(topic)
		if e.err != nil {
			cc.mu.Lock()
			if gen[topic] == e {
				delete(gen, topic)
			}
			cc.mu.Unlock()
		}
		close(e.done)
	}
	select {
	case <-e.done:
		return e.n, e.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
