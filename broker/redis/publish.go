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
	payload []byte     // the encoded message, or the body for a stream publish
	stream  *streamReq // nil for Publish
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
	return b.send(ctx, "publish", &pubReq{channel: ch, payload: encode(m), done: make(chan error, 1)})
}

// send queues req for the sender and waits for its answer, within the
// broker's Timeout.
func (b *Broker) send(ctx context.Context, op string, req *pubReq) error {
	opCtx, cancel := b.opCtx(ctx)
	defer cancel()
	select {
	case b.queue <- req:
	case <-opCtx.Done():
		return b.fail(ctx, op, fmt.Errorf("queue full: %w", opCtx.Err()))
	case <-b.done:
		return broker.ErrClosed
	}
	select {
	case err := <-req.done:
		if err != nil {
			return b.fail(ctx, op, err)
		}
		return nil
	case <-opCtx.Done():
		return b.fail(ctx, op, opCtx.Err())
	case <-b.done:
		return broker.ErrClosed
	}
}

func (b *Broker) sender() {
	defer b.wg.Done()
	batch := make([]*pubReq, 0, maxBatch)
	cmds := make([]goredis.Cmder, 0, maxBatch)
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
			switch {
			case req.stream != nil:
				cmds = append(cmds, pipe.EvalSha(ctx, publishScript.Hash(), req.stream.keys, req.stream.args...))
			case b.sharded:
				cmds = append(cmds, pipe.SPublish(ctx, req.channel, req.payload))
			default:
				cmds = append(cmds, pipe.Publish(ctx, req.channel, req.payload))
			}
		}
		_, _ = pipe.Exec(ctx) // each command carries its own error
		for i, req := range batch {
			err := cmds[i].Err()
			if req.stream != nil {
				err = b.streamAnswer(ctx, req.stream, cmds[i].(*goredis.Cmd))
			}
			if err != nil {
				b.stats.publishErrors.Add(1)
			} else {
				b.stats.published.Add(1)
			}
			req.done <- err
		}
		cancel()
		clear(batch)
		clear(cmds)
		batch, cmds = batch[:0], cmds[:0]
	}
}

// streamAnswer reads the answer of a stream publish into sr. A script that
// Redis did not know did nothing: it is run again with EVAL, which loads
// it. Its publisher is still waiting, so the offset it gets, later than
// those of the batch, is still one order for everyone.
func (b *Broker) streamAnswer(ctx context.Context, sr *streamReq, cmd *goredis.Cmd) error {
	v, err := cmd.Result()
	if isNoScript(err) {
		v, err = publishScript.Eval(ctx, b.client, sr.keys, sr.args...).Result()
	}
	if err != nil {
		return err
	}
	sr.pos, err = streamResult(v)
	return err
}
