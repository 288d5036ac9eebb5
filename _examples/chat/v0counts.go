package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// v0Counts tells each room how many are in it, the way the firetower v0.x
// chat did: {"type":"onSubscribe","data":N} published in the room itself.
// Only a node with bare data (v0.x pages) runs it; pages of this version
// take who is in a room from firetower's own presence (topicOptions), and
// a v0.x page knows nothing of presence frames.
//
// It works off the connections' read paths. The join and leave callbacks
// only mark a room as changed (a map insert under a mutex: they never wait
// for the broker), and one goroutine
// per node, at most once per interval, counts every room that changed since
// its last round and publishes the counts. A room that changes a thousand
// times within an interval costs one count and one publish; a room that
// changes while its round is running is marked again and counted in the
// next one, so the last change is always announced.
//
// Its memory is bounded: the set holds each room once, and at most
// maxPending rooms (past that a change is dropped and logged; the room is
// counted again at its next change).
type v0Counts struct {
	interval time.Duration
	timeout  time.Duration // for one round's counts and publishes
	count    func(ctx context.Context, room string) (int, error)
	announce func(ctx context.Context, room, kind string, n int) error
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]string // room -> kind of its last change
	dropped int
	wake    chan struct{} // 1 slot: a round is wanted
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// maxPending bounds the rooms waiting for a round.
const maxPending = 100_000

// roundWorkers is how many rooms one round counts at a time: a round of many
// rooms over a remote broker is not one round trip after another.
const roundWorkers = 8

func newV0Counts(interval, timeout time.Duration, log *slog.Logger,
	count func(ctx context.Context, room string) (int, error),
	announce func(ctx context.Context, room, kind string, n int) error) *v0Counts {
	p := &v0Counts{
		interval: interval,
		timeout:  timeout,
		count:    count,
		announce: announce,
		log:      log,
		pending:  make(map[string]string),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go p.run()
	return p
}

// changed marks rooms as changed by a join or a leave (kind is
// "onSubscribe" or "onUnsubscribe", for the v0.x announcements). It never
// blocks, so callbacks may call it.
func (p *v0Counts) changed(kind string, rooms []string) {
	p.mu.Lock()
	for _, r := range rooms {
		if _, ok := p.pending[r]; !ok && len(p.pending) >= maxPending {
			p.dropped++
			continue
		}
		p.pending[r] = kind
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close stops the goroutine, abandoning a round under way, and waits for
// it. It is idempotent, and does nothing on a nil v0Counts (a node
// without bare data has none).
func (p *v0Counts) Close() {
	if p == nil {
		return
	}
	p.once.Do(func() { close(p.stop) })
	<-p.done
}

func (p *v0Counts) run() {
	defer close(p.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-p.done:
		}
	}()
	last := time.Time{}
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		}
		// At most one round per interval: changes that arrive meanwhile
		// join this round.
		if wait := p.interval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-p.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		p.round(ctx)
	}
}

// round counts and announces the rooms marked so far.
func (p *v0Counts) round(ctx context.Context) {
	p.mu.Lock()
	rooms, dropped := p.pending, p.dropped
	p.pending, p.dropped = make(map[string]string, len(rooms)), 0
	p.mu.Unlock()
	if dropped > 0 {
		p.log.Warn("v0 counts: too many rooms waiting; some changes were not announced", "dropped", dropped, "limit", maxPending)
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(roundWorkers, len(rooms)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for room := range work {
				n, err := p.count(ctx, room)
				if err != nil {
					p.log.Warn("counting a room", "room", room, "err", err)
					continue
				}
				if err := p.announce(ctx, room, rooms[room], n); err != nil {
					p.log.Warn("announcing a room's count", "room", room, "err", err)
				}
			}
		}()
	}
	for room := range rooms {
		work <- room
	}
	close(work)
	wg.Wait()
}
