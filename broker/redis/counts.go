//go:build redis

package redis

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

// counts is the node's own subscriber counts, the truth that Redis mirrors.
type counts struct {
	mu     sync.Mutex
	local  map[string]int      // topic -> count, non-zero only
	total  int                 // sum of local
	dirty  map[string]struct{} // topics changed since the last flush
	resync bool                // Redis may not hold local: rewrite it whole
}

func (c *counts) init() {
	c.local = map[string]int{}
	c.dirty = map[string]struct{}{}
	c.resync = true
}

func (c *counts) markResync() {
	c.mu.Lock()
	c.resync = true
	c.mu.Unlock()
}

func (c *counts) get(topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.local[topic]
}

// SetCount implements broker.Broker. It only records the count; the
// maintenance goroutine writes changed counts every FlushInterval.
func (b *Broker) SetCount(topic string, n int) {
	if b.closed.Load() {
		return
	}
	c := &b.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 {
		n = 0
	}
	if c.local[topic] == n {
		return
	}
	c.total += n - c.local[topic]
	if n == 0 {
		delete(c.local, topic)
	} else {
		c.local[topic] = n
	}
	c.dirty[topic] = struct{}{}
}

// maintain heartbeats and flushes the counts until Close.
func (b *Broker) maintain() {
	defer b.wg.Done()
	flush := time.NewTicker(b.opts.FlushInterval)
	defer flush.Stop()
	beat := time.NewTicker(b.opts.NodeTTL / 5)
	defer beat.Stop()
	b.heartbeat()
	b.flush()
	for {
		select {
		case <-flush.C:
			b.flush()
		case <-beat.C:
			b.heartbeat()
			b.flush()
		case <-b.done:
			return
		}
	}
}

// flush writes the counts changed since the last flush, or all of them
// after a failure or a reconnection.
func (b *Broker) flush() {
	c := &b.counts
	c.mu.Lock()
	full := c.resync
	if !full && len(c.dirty) == 0 {
		c.mu.Unlock()
		return
	}
	var set []any
	var del []string
	if full {
		set = make([]any, 0, 2*len(c.local))
		for topic, n := range c.local {
			set = append(set, topic, n)
		}
	} else {
		for topic := range c.dirty {
			if n := c.local[topic]; n > 0 {
				set = append(set, topic, n)
			} else {
				del = append(del, topic)
			}
		}
	}
	clear(c.dirty)
	c.resync = false
	total := c.total
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	defer cancel()
	tx := b.client.TxPipeline()
	if full {
		tx.Del(ctx, b.countsKey)
	}
	const chunk = 1024 // field-value pairs per HSET
	for len(set) > 0 {
		n := min(len(set), 2*chunk)
		tx.HSet(ctx, b.countsKey, set[:n]...)
		set = set[n:]
	}
	if len(del) > 0 {
		tx.HDel(ctx, b.countsKey, del...)
	}
	tx.PExpire(ctx, b.countsKey, b.opts.NodeTTL)
	tx.Set(ctx, sumKey(b.opts.Prefix, b.opts.NodeID), total, b.opts.NodeTTL)
	if _, err := tx.Exec(ctx); err != nil {
		c.markResync()
		if !b.closed.Load() {
			b.log.Warn("writing the counts failed; retrying", "err", err)
		}
	}
}

// heartbeat keeps the node's keys alive and notices a Redis that lost them.
func (b *Broker) heartbeat() {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
	defer cancel()
	now := time.Now().UnixMilli()
	ttl := b.opts.NodeTTL
	b.counts.mu.Lock()
	total := b.counts.total
	b.counts.mu.Unlock()
	tx := b.client.TxPipeline()
	tx.Set(ctx, b.hbKey, now, ttl)
	tx.Set(ctx, sumKey(b.opts.Prefix, b.opts.NodeID), total, ttl)
	alive := tx.PExpire(ctx, b.countsKey, ttl)
	tx.ZAdd(ctx, b.nodesKey, goredis.Z{Score: float64(now), Member: b.opts.NodeID})
	// Forget the ids of nodes dead for long; their keys expired already.
	tx.ZRemRangeByScore(ctx, b.nodesKey, "-inf", strconv.FormatInt(now-10*ttl.Milliseconds(), 10))
	if _, err := tx.Exec(ctx); err != nil {
		b.counts.markResync()
		b.stats.heartbeatFailures.Add(1)
		b.stats.heartbeatFailing.Store(true)
		if !b.closed.Load() {
			b.log.Warn("heartbeat failed", "err", err)
		}
		return
	}
	b.stats.heartbeatFailing.Store(false)
	b.lastHB.Store(now)
	c := &b.counts
	c.mu.Lock()
	if !alive.Val() && len(c.local) > 0 {
		// The counts expired or Redis restarted empty.
		c.resync = true
	}
	c.mu.Unlock()
}

// others returns the ids of the other nodes Redis knows, live or recently
// dead (a dead node's count keys are gone).
func (b *Broker) others(ctx context.Context) ([]string, error) {
	ids, err := b.client.ZRange(ctx, b.nodesKey, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	out := ids[:0]
	for _, id := range ids {
		if id != b.opts.NodeID {
			out = append(out, id)
		}
	}
	return out, nil
}

// Count implements broker.Broker: this node's count as set, plus the other
// nodes' counts as they last wrote them.
func (b *Broker) Count(ctx context.Context, topic string) (int, error) {
	if err := b.ready(); err != nil {
		return 0, err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	ids, err := b.others(opCtx)
	if err != nil {
		return 0, b.fail(ctx, "count", err)
	}
	sum := b.counts.get(topic)
	if len(ids) == 0 {
		return sum, nil
	}
	pipe := b.client.Pipeline()
	cmds := make([]*goredis.StringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGet(opCtx, countsKey(b.opts.Prefix, id), topic)
	}
	if _, err := pipe.Exec(opCtx); err != nil && !errors.Is(err, goredis.Nil) {
		return 0, b.fail(ctx, "count", err)
	}
	for _, cmd := range cmds {
		n, err := cmd.Int()
		if err == nil && n > 0 {
			sum += n
		}
	}
	return sum, nil
}

// scanCount is the fields one HSCAN asks Redis for: a listing reads a
// node's counts a few thousand at a time, so that a hash of a million
// topics never blocks Redis (or makes one reply) for all of them at once.
const scanCount = 4096

// Topics implements broker.TopicLister: this node's counts, plus every
// other node's hash read with HSCAN, scanCount fields a round trip.
func (b *Broker) Topics(ctx context.Context) ([]broker.TopicCount, error) {
	if err := b.ready(); err != nil {
		return nil, err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	ids, err := b.others(opCtx)
	if err != nil {
		return nil, b.fail(ctx, "topics", err)
	}
	b.counts.mu.Lock()
	sums := make(map[string]int, len(b.counts.local))
	for topic, n := range b.counts.local {
		sums[topic] = n
	}
	b.counts.mu.Unlock()
	for _, id := range ids {
		key := countsKey(b.opts.Prefix, id)
		var cursor uint64
		for {
			kv, next, err := b.client.HScan(opCtx, key, cursor, "", scanCount).Result()
			if err != nil {
				return nil, b.fail(ctx, "topics", err)
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if n, err := strconv.Atoi(kv[i+1]); err == nil && n > 0 {
					sums[kv[i]] += n
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	out := make([]broker.TopicCount, 0, len(sums))
	for topic, n := range sums {
		out = append(out, broker.TopicCount{Topic: topic, Count: n})
	}
	return out, nil
}

// Nodes implements broker.NodeLister: the nodes whose heartbeat has not
// expired, this one included. Connections is the sum of a node's topic
// counts as of its last flush (the summary key each flush and heartbeat
// write) and Topics the number of topics it counts subscribers of (HLEN),
// so that listing nodes costs a few commands per node, whatever their
// topics.
func (b *Broker) Nodes(ctx context.Context) ([]broker.NodeInfo, error) {
	if err := b.ready(); err != nil {
		return nil, err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	ids, err := b.others(opCtx)
	if err != nil {
		return nil, b.fail(ctx, "nodes", err)
	}
	pipe := b.client.Pipeline()
	beats := make([]*goredis.StringCmd, len(ids))
	sums := make([]*goredis.StringCmd, len(ids))
	lens := make([]*goredis.IntCmd, len(ids))
	for i, id := range ids {
		beats[i] = pipe.Get(opCtx, hbKey(b.opts.Prefix, id))
		sums[i] = pipe.Get(opCtx, sumKey(b.opts.Prefix, id))
		lens[i] = pipe.HLen(opCtx, countsKey(b.opts.Prefix, id))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(opCtx); err != nil && !errors.Is(err, goredis.Nil) {
			return nil, b.fail(ctx, "nodes", err)
		}
	}
	b.counts.mu.Lock()
	self := broker.NodeInfo{ID: b.opts.NodeID, Connections: b.counts.total, Topics: len(b.counts.local), LastHeartbeat: b.lastHB.Load()}
	b.counts.mu.Unlock()
	out := []broker.NodeInfo{self}
	for i, id := range ids {
		last, err := beats[i].Int64()
		if err != nil {
			continue // expired: the node is dead
		}
		conns, _ := sums[i].Int()
		out = append(out, broker.NodeInfo{ID: id, LastHeartbeat: last, Connections: conns, Topics: int(lens[i].Val())})
	}
	return out, nil
}
