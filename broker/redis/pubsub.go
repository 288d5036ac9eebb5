//go:build redis

package redis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

// reader owns one pub/sub connection and the channels it carries: all of
// them on one server, one group of hash-tagged channels on Redis Cluster.
// Its goroutine reads the connection and calls the node's handler, so the
// handler sees one topic's messages in order.
type reader struct {
	b      *Broker
	prefix string // of the channels of this reader
	group  int    // the slot group of the channels, the index in b.readers

	// ctl serialises the commands that change the subscriptions, which are
	// network writes; a channel rather than a mutex so that a caller can
	// give up waiting.
	ctl  chan struct{}
	wake chan struct{} // ps became non-nil

	mu     sync.RWMutex
	ps     *goredis.PubSub // nil until the first subscription
	closed bool
	subs   map[string]*sub // channel -> the topic the node wants
	// unsubs counts the node's own unsubscribes not yet confirmed, to
	// tell them from the unsubscribes Redis Cluster sends when a slot
	// moves to another master.
	unsubs map[string]int

	lastRecv atomic.Int64 // Unix ns of the last frame read, pongs included
	down     atomic.Bool  // the connection failed and nothing was read since

	// pending decouples reading from the handler, so that a slow handler
	// never delays the subscription confirmations, which arrive on the
	// same connection. The broker bounds all readers' pending messages
	// together; see enqueue for the policy when full.
	pendingMu sync.Mutex
	pending   []delivery
	woken     chan struct{} // something was added to pending
}

type delivery struct {
	channel string
	msg     broker.Message
}

// sub is one wanted channel.
type sub struct {
	topic     string
	confirmed bool          // Redis acknowledged the subscription on the current connection
	ready     chan struct{} // closed when confirmed
	// epoch is the epoch of the last stream message read on the channel;
	// the reader's goroutine alone uses it.
	epoch string
}

// unconfirm marks the subscription as lost with its connection.
func (s *sub) unconfirm() {
	if s.confirmed {
		s.confirmed = false
		s.ready = make(chan struct{})
	}
}

func newReader(b *Broker, prefix string) *reader {
	return &reader{
		b:      b,
		prefix: prefix,
		ctl:    make(chan struct{}, 1),
		wake:   make(chan struct{}, 1),
		subs:   map[string]*sub{},
		unsubs: map[string]int{},
		woken:  make(chan struct{}, 1),
	}
}

func (r *reader) lock(ctx context.Context) error {
	select {
	case r.ctl <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.b.done:
		return broker.ErrClosed
	}
}

func (r *reader) unlock() { <-r.ctl }

func (b *Broker) newPubSub(ctx context.Context) *goredis.PubSub {
	// Without channels neither call connects: the connection is made by
	// the first subscribe, which on Redis Cluster picks the master of the
	// channel's slot.
	if b.sharded {
		return b.client.SSubscribe(ctx)
	}
	return b.client.Subscribe(ctx)
}

func (b *Broker) subscribeCmd(ctx context.Context, ps *goredis.PubSub, channels ...string) error {
	if b.sharded {
		return ps.SSubscribe(ctx, channels...)
	}
	return ps.Subscribe(ctx, channels...)
}

func (b *Broker) unsubscribeCmd(ctx context.Context, ps *goredis.PubSub, channels ...string) error {
	if b.sharded {
		return ps.SUnsubscribe(ctx, channels...)
	}
	return ps.Unsubscribe(ctx, channels...)
}

// Subscribe implements broker.Broker. It returns once Redis confirmed the
// subscription, so a message published anywhere afterwards reaches the
// node.
func (b *Broker) Subscribe(ctx context.Context, topic string) error {
	if err := b.ready(); err != nil {
		return err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	r, ch := b.route(topic)
	if err := r.subscribe(opCtx, topic, ch); err != nil {
		return b.fail(ctx, "subscribe", err)
	}
	return nil
}

func (r *reader) subscribe(ctx context.Context, topic, ch string) error {
	return r.subscribeMany(ctx, []string{topic}, []string{ch})
}

// subscribeMany subscribes to chs (the channels of topics) with one
// command and waits for every confirmation; on an error it takes back the
// subscriptions it added, so that it is all or nothing.
func (r *reader) subscribeMany(ctx context.Context, topics, chs []string) error {
	if err := r.lock(ctx); err != nil {
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.unlock()
		return broker.ErrClosed
	}
	var added []string
	var addedSubs []*sub
	ready := make([]chan struct{}, 0, len(chs))
	for i, ch := range chs {
		s, existed := r.subs[ch]
		if !existed {
			s = &sub{topic: topics[i], ready: make(chan struct{})}
			r.subs[ch] = s
			added = append(added, ch)
			addedSubs = append(addedSubs, s)
		}
		ready = append(ready, s.ready)
	}
	ps, fresh := r.ps, r.ps == nil
	if fresh {
		ps = r.b.newPubSub(ctx)
		r.ps = ps
		r.lastRecv.Store(time.Now().UnixNano())
	}
	r.mu.Unlock()
	var err error
	if len(added) > 0 {
		err = r.b.subscribeCmd(ctx, ps, added...)
	}
	if fresh {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	r.unlock()

	for _, ch := range ready {
		if err != nil {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		case <-r.b.done:
			return broker.ErrClosed
		}
	}
	if err != nil && len(added) > 0 {
		// The interests were never confirmed, so they are not the node's:
		// take them back, or the next connection would subscribe again.
		rb, cancel := context.WithTimeout(context.Background(), r.b.opts.Timeout)
		r.unsubscribeMany(rb, added, addedSubs)
		cancel()
	}
	return err
}

// SubscribeTopics implements broker.BatchSubscriber: one SUBSCRIBE (one
// SSUBSCRIBE per slot group on Redis Cluster) for all of topics; it
// returns once Redis confirmed every one, and on an error none of the
// topics it added stays subscribed.
func (b *Broker) SubscribeTopics(ctx context.Context, topics []string) error {
	if err := b.ready(); err != nil {
		return err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	groups := b.group(topics)
	for i, g := range groups {
		if err := g.r.subscribeMany(opCtx, g.topics, g.chs); err != nil {
			rb, cancel := b.opCtx(context.Background())
			for _, done := range groups[:i] {
				_ = done.r.unsubscribeMany(rb, done.chs, nil)
			}
			cancel()
			return b.fail(ctx, "subscribe", err)
		}
	}
	return nil
}

// UnsubscribeTopics implements broker.BatchUnsubscriber: one UNSUBSCRIBE
// per reader. As for Unsubscribe, the interests are withdrawn on the node
// at once.
func (b *Broker) UnsubscribeTopics(ctx context.Context, topics []string) error {
	if err := b.ready(); err != nil {
		return err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	var first error
	for _, g := range b.group(topics) {
		if err := g.r.unsubscribeMany(opCtx, g.chs, nil); err != nil && first == nil {
			first = b.fail(ctx, "unsubscribe", err)
		}
	}
	return first
}

// topicGroup is the topics of one call that one reader carries.
type topicGroup struct {
	r           *reader
	topics, chs []string
}

// group sorts topics by the reader that carries them, in reader order.
func (b *Broker) group(topics []string) []topicGroup {
	var groups []topicGroup
	idx := make(map[*reader]int, len(b.readers))
	for _, topic := range topics {
		r, ch := b.route(topic)
		i, ok := idx[r]
		if !ok {
			i = len(groups)
			idx[r] = i
			groups = append(groups, topicGroup{r: r})
		}
		groups[i].topics = append(groups[i].topics, topic)
		groups[i].chs = append(groups[i].chs, ch)
	}
	return groups
}

// Unsubscribe implements broker.Broker. The interest is withdrawn at once
// on the node, which drops any message of the topic still in flight, even if
// Redis cannot be told now (it forgets the subscription with the
// connection anyway).
func (b *Broker) Unsubscribe(ctx context.Context, topic string) error {
	if err := b.ready(); err != nil {
		return err
	}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	r, ch := b.route(topic)
	if err := r.unsubscribe(opCtx, ch, nil); err != nil {
		return b.fail(ctx, "unsubscribe", err)
	}
	return nil
}

// unsubscribe withdraws the interest in ch, or only the subscription only if
// that is not nil.
func (r *reader) unsubscribe(ctx context.Context, ch string, only *sub) error {
	if only == nil {
		return r.unsubscribeMany(ctx, []string{ch}, nil)
	}
	return r.unsubscribeMany(ctx, []string{ch}, []*sub{only})
}

// unsubscribeMany withdraws the interests in chs with one command; with
// only, chs[i] only if its subscription is still only[i].
func (r *reader) unsubscribeMany(ctx context.Context, chs []string, only []*sub) error {
	if err := r.lock(ctx); err != nil {
		return err
	}
	defer r.unlock()
	r.mu.Lock()
	gone := make([]string, 0, len(chs))
	for i, ch := range chs {
		s, ok := r.subs[ch]
		if !ok || (only != nil && s != only[i]) {
			continue
		}
		delete(r.subs, ch)
		gone = append(gone, ch)
	}
	ps := r.ps
	if ps != nil {
		for _, ch := range gone {
			r.unsubs[ch]++
		}
	}
	r.mu.Unlock()
	if ps == nil || len(gone) == 0 {
		return nil
	}
	if err := r.b.unsubscribeCmd(ctx, ps, gone...); err != nil {
		// go-redis dropped the channels from its list already and replaces
		// a connection that failed a write; no confirmation will come.
		r.mu.Lock()
		for _, ch := range gone {
			if r.unsubs[ch]--; r.unsubs[ch] <= 0 {
				delete(r.unsubs, ch)
			}
		}
		r.mu.Unlock()
		r.b.log.Debug("unsubscribe not sent; the connection forgets it", "channels", len(gone), "err", err)
	}
	return nil
}

// current returns the connection to read, waiting for the first
// subscription; nil after Close.
func (r *reader) current() *goredis.PubSub {
	for {
		r.mu.RLock()
		ps, closed := r.ps, r.closed
		r.mu.RUnlock()
		if closed {
			return nil
		}
		if ps != nil {
			return ps
		}
		select {
		case <-r.wake:
		case <-r.b.done:
			return nil
		}
	}
}

func (r *reader) run() {
	defer r.b.wg.Done()
	const minBackoff, maxBackoff = 20 * time.Millisecond, time.Second
	backoff := minBackoff
	for {
		ps := r.current()
		if ps == nil {
			return
		}
		// Receive reconnects a failed connection and subscribes it again
		// to every channel go-redis knows, which are the wanted ones.
		msg, err := ps.Receive(r.b.ctx)
		if err != nil {
			if r.b.closed.Load() {
				return
			}
			r.mu.RLock()
			replaced := r.ps != ps
			r.mu.RUnlock()
			if replaced {
				continue
			}
			r.lost(err)
			var rerr goredis.Error
			if errors.As(err, &rerr) {
				// A refusal such as MOVED: the connection reached a master
				// that does not serve the channels' slot any more.
				if to := movedTo(err); to != "" {
					r.followSlot(to)
				}
				r.reset(ps, "redis refused: "+err.Error())
			}
			if !r.b.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		r.lastRecv.Store(time.Now().UnixNano())
		if r.down.Load() && r.down.CompareAndSwap(true, false) {
			r.b.stats.reconnects.Add(1)
			r.b.stats.readersDown.Add(-1)
			r.b.log.Info("pub/sub connection restored")
		}
		switch m := msg.(type) {
		case *goredis.Message:
			r.deliver(m)
		case *goredis.Subscription:
			r.confirm(ps, m)
		}
	}
}

// lost records that the connection failed: every subscription waits for
// the reconnection's confirmation again, and the counts are written again
// in full in case Redis restarted without them.
func (r *reader) lost(err error) {
	r.mu.Lock()
	for _, s := range r.subs {
		s.unconfirm()
	}
	clear(r.unsubs)
	r.mu.Unlock()
	r.b.counts.markResync()
	// Redis may have restarted: add the presence of the group's topics
	// again (the heartbeats find it out too, connection or not).
	r.b.presence.markResync(r.group)
	if !r.down.Swap(true) {
		r.b.stats.lost.Add(1)
		r.b.stats.readersDown.Add(1)
		r.b.log.Warn("pub/sub connection lost; reconnecting", "err", err)
	}
}

func (r *reader) deliver(m *goredis.Message) {
	r.mu.RLock()
	s := r.subs[m.Channel]
	r.mu.RUnlock()
	if s == nil {
		return // withdrawn while the message was in flight
	}
	d, err := decode(m.Payload)
	if err != nil {
		r.b.log.Warn("dropped a message that is not firetower's", "channel", m.Channel, "err", err)
		return
	}
	r.b.stats.received.Add(1)
	msg := broker.Message{Topic: s.topic, ID: d.id, Data: d.data}
	if d.epoch != "" {
		// Messages of one epoch share one string, which keeps no payload
		// alive. Only this goroutine touches s.epoch.
		if d.epoch != s.epoch {
			s.epoch = strings.Clone(d.epoch)
		}
		msg.Offset, msg.Epoch = d.offset, s.epoch
	}
	// One connection carries a channel's messages in the order Redis
	// published them, which for a stream is offset order (the stream
	// script appends and publishes in one step); the queue keeps that
	// order, and drops only the newest, so what the handler gets of a
	// stream is in offset order, with a gap where a message was dropped.
	r.enqueue(delivery{channel: m.Channel, msg: msg})
}

// enqueue hands a message to the delivery goroutine. When the handler is so
// far behind that the broker holds DeliveryQueue messages or
// DeliveryQueueBytes bytes for it, the message is dropped and counted
// (delivery is at most once): the reader must keep reading, or Redis would
// disconnect the node anyway once its output buffer for the node overflows.
func (r *reader) enqueue(d delivery) {
	b := r.b
	n := int64(len(d.msg.Data))
	msgs, bytes := b.pendingMsgs.Add(1), b.pendingBytes.Add(n)
	if msgs > int64(b.opts.DeliveryQueue) || bytes > b.opts.DeliveryQueueBytes {
		b.pendingMsgs.Add(-1)
		b.pendingBytes.Add(-n)
		b.dropped()
		return
	}
	r.pendingMu.Lock()
	r.pending = append(r.pending, d)
	r.pendingMu.Unlock()
	select {
	case r.woken <- struct{}{}:
	default:
	}
}

// deliverLoop calls the handler, one message at a time, in the order read.
func (r *reader) deliverLoop() {
	defer r.b.wg.Done()
	var batch []delivery
	for {
		select {
		case <-r.woken:
		case <-r.b.done:
			return
		}
		r.pendingMu.Lock()
		batch, r.pending = r.pending, batch[:0]
		r.pendingMu.Unlock()
		var bytes int64
		for i, d := range batch {
			bytes += int64(len(d.msg.Data))
			r.mu.RLock()
			_, wanted := r.subs[d.channel]
			r.mu.RUnlock()
			if wanted && !r.b.closed.Load() {
				r.b.handler(d.msg)
			}
			batch[i] = delivery{} // let the data go
		}
		r.b.pendingMsgs.Add(-int64(len(batch)))
		r.b.pendingBytes.Add(-bytes)
	}
}

func (r *reader) confirm(ps *goredis.PubSub, m *goredis.Subscription) {
	migrated := false
	r.mu.Lock()
	switch m.Kind {
	case "subscribe", "ssubscribe":
		if s := r.subs[m.Channel]; s != nil && !s.confirmed {
			s.confirmed = true
			close(s.ready)
		}
	case "unsubscribe", "sunsubscribe":
		if r.unsubs[m.Channel] > 0 {
			if r.unsubs[m.Channel]--; r.unsubs[m.Channel] == 0 {
				delete(r.unsubs, m.Channel)
			}
		} else if _, wanted := r.subs[m.Channel]; wanted {
			migrated = true
		}
	}
	r.mu.Unlock()
	if migrated {
		// Redis Cluster unsubscribes a connection from a slot that moved
		// to another master: reconnect to the slot's new master.
		r.followSlot("")
		r.reset(ps, "slot moved: "+m.Channel)
	}
}

// reset replaces the connection old with a new one subscribed to every
// wanted channel, for failures go-redis does not repair by itself.
func (r *reader) reset(old *goredis.PubSub, why string) {
	ctx, cancel := context.WithTimeout(r.b.ctx, r.b.opts.Timeout)
	defer cancel()
	if r.lock(ctx) != nil {
		return
	}
	defer r.unlock()
	r.mu.Lock()
	if r.closed || r.ps != old {
		r.mu.Unlock()
		return
	}
	channels := make([]string, 0, len(r.subs))
	for ch, s := range r.subs {
		channels = append(channels, ch)
		s.unconfirm()
	}
	clear(r.unsubs)
	var ps *goredis.PubSub
	if len(channels) > 0 {
		ps = r.b.newPubSub(ctx)
		r.lastRecv.Store(time.Now().UnixNano())
	}
	r.ps = ps
	r.mu.Unlock()
	r.b.log.Warn("pub/sub connection replaced", "reason", why, "channels", len(channels))
	_ = old.Close()
	if ps == nil {
		return
	}
	if err := r.b.subscribeCmd(ctx, ps, channels...); err != nil {
		// The reader retries when it next receives.
		r.b.log.Debug("subscribing the new connection failed", "err", err)
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// check pings the connection, and replaces it when nothing, not even a
// pong, came back for a while: a connection can die without an error, for
// example behind a failed network path.
func (r *reader) check(interval time.Duration) {
	r.mu.RLock()
	ps := r.ps
	r.mu.RUnlock()
	if ps == nil {
		return
	}
	if time.Since(time.Unix(0, r.lastRecv.Load())) > 3*interval {
		r.reset(ps, "no answer to pings")
		return
	}
	ctx, cancel := context.WithTimeout(r.b.ctx, r.b.opts.Timeout)
	defer cancel()
	_ = ps.Ping(ctx)
}

// watchReaders checks the pub/sub connections at every heartbeat.
func (b *Broker) watchReaders() {
	defer b.wg.Done()
	interval := b.opts.NodeTTL / 5
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, r := range b.readers {
				r.check(interval)
			}
		case <-b.done:
			return
		}
	}
}

// close stops the reader for Close.
func (r *reader) close() {
	r.mu.Lock()
	r.closed = true
	ps := r.ps
	r.ps = nil
	r.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
	}
}

// movedTo returns the address of a MOVED reply ("MOVED 3999 host:port"),
// or "" for any other error.
func movedTo(err error) string {
	f := strings.Fields(err.Error())
	if len(f) == 3 && f[0] == "MOVED" {
		return f[2]
	}
	return ""
}

// followSlot, after Redis Cluster moved the reader's slot (a MOVED reply
// naming movedTo, or Redis unsubscribing the connection), makes the cluster
// client learn the slot's new master, so that reset connects there. go-redis
// refreshes its slot map by itself when a command is redirected, but not
// for a pub/sub connection: without this, every new connection would go to
// the old master and be refused again. It waits, within the broker's
// Timeout and at most a second, until the map names movedTo, or, when that
// is unknown, until it names another master than before.
func (r *reader) followSlot(movedTo string) {
	cc, ok := r.b.client.(*goredis.ClusterClient)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.b.ctx, min(r.b.opts.Timeout, time.Second))
	defer cancel()
	master := func() string {
		m, err := cc.MasterForKey(ctx, r.prefix)
		if err != nil {
			return ""
		}
		return m.Options().Addr
	}
	before := master()
	for {
		// ReloadState only starts a reload in the background; calls while
		// one runs ask for another after it.
		cc.ReloadState(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		now := master()
		if now != "" && (now == movedTo || movedTo == "" && now != before) {
			return
		}
	}
}
