//go:build redis

package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

const codecVersion = 1

// encode lays a message out as one binary-safe Redis string: the version
// byte, the id's length as a uvarint, the id, then the data as published.
// The topic travels as the channel name.
func encode(m broker.Message) []byte {
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(m.ID)+len(m.Data))
	buf = append(buf, codecVersion)
	buf = binary.AppendUvarint(buf, uint64(len(m.ID)))
	buf = append(buf, m.ID...)
	return append(buf, m.Data...)
}

func decode(payload string) (id string, data []byte, err error) {
	if len(payload) == 0 || payload[0] != codecVersion {
		return "", nil, errors.New("unknown encoding")
	}
	n, k := binary.Uvarint([]byte(payload[1:min(len(payload), 1+binary.MaxVarintLen64)]))
	if k <= 0 || n > uint64(len(payload)-1-k) {
		return "", nil, errors.New("truncated message")
	}
	start := 1 + k
	return payload[start : start+int(n)], []byte(payload[start+int(n):]), nil
}

// pubReq is one publish waiting for the sender.
type pubReq struct {
	channel string
	payload []byte
	done    chan error // buffered: the sender never waits for the publisher
}

// Publish implements broker.Broker. It returns once Redis accepted the
// message. Publishes from all goroutines of the node queue for one sender,
// which sends whatever queued while its previous pipeline was in flight as
// the next pipeline, in queue order.
func (b *Broker) Publish(ctx context.Context, m broker.Message) error {
	if err := b.ready(); err != nil {
		return err
	}
	_, ch := b.route(m.Topic)
	req := &pubReq{channel: ch, payload: encode(m), done: make(chan error, 1)}
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	select {
	case b.queue <- req:
	case <-opCtx.Done():
		return b.fail(ctx, "publish", fmt.Errorf("queue full: %w", opCtx.Err()))
	case <-b.done:
		return broker.ErrClosed
	}
	select {
	case err := <-req.done:
		if err != nil {
			return b.fail(ctx, "publish", err)
		}
		return nil
	case <-opCtx.Done():
		return b.fail(ctx, "publish", opCtx.Err())
	case <-b.done:
		return broker.ErrClosed
	}
}

func (b *Broker) sender() {
	defer b.wg.Done()
	batch := make([]*pubReq, 0, maxBatch)
	cmds := make([]*goredis.IntCmd, 0, maxBatch)
	for {
		select {
		case req := <-b.queue:
			batch = append(batch, req)
		case <-b.done:
			return
		}
		size := len(batch[0].payload)
	fill:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case req := <-b.queue:
				batch = append(batch, req)
				size += len(req.payload)
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.Timeout)
		pipe := b.client.Pipeline()
		for _, req := range batch {
			if b.sharded {
				cmds = append(cmds, pipe.SPublish(ctx, req.channel, req.payload))
			} else {
				cmds = append(cmds, pipe.Publish(ctx, req.channel, req.payload))
			}
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		cancel()
		for i, req := range batch {
			err := cmds[i].Err()
			if err != nil {
				b.stats.publishErrors.Add(1)
			} else {
				b.stats.published.Add(1)
			}
			req.done <- err
		}
		clear(batch)
		clear(cmds)
		batch, cmds = batch[:0], cmds[:0]
	}
}
