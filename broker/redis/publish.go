//go:build redis

package redis

import (
	"context"
	"fmt"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

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
