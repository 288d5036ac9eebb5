//go:build redis

package redis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

// Streams (broker.Streamer). A topic's stream is two keys in the slot of
// the topic's channel: a hash with the epoch and the top offset, and a
// Redis Stream of the kept messages (see lua/stream.lua for the layout).
// One script assigns the offset, appends, trims, renews the TTL and
// publishes the message, so that offsets are one order for the whole
// cluster and a node subscribed before the append gets the message; on
// Redis Cluster the keys carry the channel's hash tag {N}, which is what
// lets the script SPUBLISH to the channel.

var (
	//go:embed lua/stream.lua
	streamLua string
	//go:embed lua/stream_publish.lua
	streamPublishLua string
	//go:embed lua/stream_history.lua
	streamHistoryLua string

	// go-redis runs them with EVALSHA, and with EVAL when Redis does not
	// know the script (after a restart, on a new master), which loads it.
	publishScript = goredis.NewScript(streamLua + streamPublishLua)
	historyScript = goredis.NewScript(streamLua + streamHistoryLua)
)

var _ broker.Streamer = (*Broker)(nil)

// streamKeys returns the keys of topic's stream, its hash and its Redis
// Stream, and the topic's channel, all in one slot.
func (b *Broker) streamKeys(topic string) (meta, stream, channel string) {
	r, ch := b.route(topic)
	tag := r.prefix[len(b.chanPrefix):] // "{N}:" on Redis Cluster, else ""
	return b.opts.Prefix + ":e:" + tag + topic, b.opts.Prefix + ":s:" + tag + topic, ch
}

// maxCount bounds sizes and limits: the scripts count in Lua's doubles,
// exact up to 2^53, and no stream holds more.
const maxCount = 1 << 50

// normalOptions applies the floors of broker.StreamOptions (at least one
// message, at least a millisecond), as every broker does, and maxCount.
func normalOptions(o broker.StreamOptions) (size, ttlMs int64) {
	size, ttlMs = min(max(int64(o.Size), 1), maxCount), max(o.TTL.Milliseconds(), 1)
	return size, ttlMs
}

func newEpoch() string { return strconv.FormatUint(rand.Uint64(), 36) }

// streamReq is the part of a pubReq for a stream publish.
type streamReq struct {
	keys []string
	args []any
	pos  broker.StreamPosition // set by the sender before it answers
}

// PublishStream implements broker.Streamer. It goes through the sender as
// Publish does, so that concurrent publishes share pipelines; it returns
// once the script ran. An error after the request reached Redis (a
// timeout) leaves it unknown whether the message was appended.
func (b *Broker) PublishStream(ctx context.Context, m broker.Message, opts broker.StreamOptions) (broker.StreamPosition, error) {
	if err := b.ready(); err != nil {
		return broker.StreamPosition{}, err
	}
	meta, stream, ch := b.streamKeys(m.Topic)
	size, ttl := normalOptions(opts)
	sharded := "0"
	if b.sharded {
		sharded = "1"
	}
	body := encodeBody(m)
	sr := &streamReq{
		keys: []string{meta, stream},
		args: []any{ch, body, size, ttl, newEpoch(), sharded},
	}
	req := &pubReq{channel: ch, payload: body, stream: sr, done: make(chan error, 1)}
	if err := b.send(ctx, "publish", req); err != nil {
		return broker.StreamPosition{}, err
	}
	return sr.pos, nil
}

// streamResult reads the answer of the publish script.
func streamResult(v any) (broker.StreamPosition, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return broker.StreamPosition{}, fmt.Errorf("stream script answered %v", v)
	}
	epoch, ok1 := a[0].(string)
	off, ok2 := a[1].(int64)
	if !ok1 || !ok2 || epoch == "" || off < 1 {
		return broker.StreamPosition{}, fmt.Errorf("stream script answered %v", v)
	}
	return broker.StreamPosition{Epoch: epoch, Offset: uint64(off)}, nil
}

// History implements broker.Streamer: one script, which drops the
// messages older than the stream's TTL before it reads, and starts the
// stream when there is none.
func (b *Broker) History(ctx context.Context, topic string, q broker.HistoryQuery) (broker.HistoryResult, error) {
	if err := b.ready(); err != nil {
		return broker.HistoryResult{}, err
	}
	meta, stream, _ := b.streamKeys(topic)
	size, ttl := normalOptions(q.Options)
	hasSince, sinceEpoch, since := "0", "", "0"
	if q.Since != nil {
		hasSince, sinceEpoch, since = "1", q.Since.Epoch, strconv.FormatUint(q.Since.Offset, 10)
	}
	limit := min(max(int64(q.Limit), 0), maxCount)
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	v, err := historyScript.Run(opCtx, b.client, []string{meta, stream}, ttl, size, newEpoch(), limit, hasSince, sinceEpoch, since).Result()
	if err != nil {
		return broker.HistoryResult{}, b.fail(ctx, "history", err)
	}
	r, err := historyResult(topic, v)
	if err != nil {
		return broker.HistoryResult{}, fmt.Errorf("firetower: redis broker: history of %q: %w", topic, err)
	}
	return r, nil
}

var errBadHistory = errors.New("malformed answer of the history script")

// historyResult reads the answer of the history script: epoch, top, then
// an entry id and a body per message.
func historyResult(topic string, v any) (broker.HistoryResult, error) {
	a, ok := v.([]any)
	if !ok || len(a) < 2 || len(a)%2 != 0 {
		return broker.HistoryResult{}, errBadHistory
	}
	epoch, ok1 := a[0].(string)
	top, ok2 := a[1].(int64)
	if !ok1 || !ok2 || epoch == "" || top < 0 {
		return broker.HistoryResult{}, errBadHistory
	}
	r := broker.HistoryResult{StreamPosition: broker.StreamPosition{Epoch: epoch, Offset: uint64(top)}}
	if len(a) == 2 {
		return r, nil
	}
	r.Messages = make([]broker.Message, 0, (len(a)-2)/2)
	for i := 2; i < len(a); i += 2 {
		entry, ok1 := a[i].(string)
		body, ok2 := a[i+1].(string)
		if !ok1 || !ok2 {
			return broker.HistoryResult{}, errBadHistory
		}
		ms, _, _ := strings.Cut(entry, "-")
		off, err := strconv.ParseUint(ms, 10, 64)
		if err != nil {
			return broker.HistoryResult{}, fmt.Errorf("%w: entry id %q", errBadHistory, entry)
		}
		id, data, err := decodeBody(body)
		if err != nil {
			return broker.HistoryResult{}, fmt.Errorf("%w: entry %s: %w", errBadHistory, entry, err)
		}
		// The id is a substring of the reply, which is the message's
		// alone; clone it all the same, so that a kept id holds no more.
		r.Messages = append(r.Messages, broker.Message{Topic: topic, ID: strings.Clone(id), Data: data, Offset: off, Epoch: epoch})
	}
	return r, nil
}

// isNoScript reports whether Redis did not know the script.
func isNoScript(err error) bool {
	return goredis.HasErrorPrefix(err, "NOSCRIPT")
}
