//go:build redis

package redis_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// BenchmarkStream compares the round trip of PublishStream (the stream
// script: offset, append, trim, expiry, publish) with Publish's on the
// same topic, one node publishing and another subscribed, on one Redis
// and on Redis Cluster; and History of the newest 100 messages. "seq"
// publishes from one goroutine, each call after the previous returned;
// "par64" from 64 goroutines, whose calls share the sender's pipelines.
// ns/op is the round trip for seq, the cost per message for par64.
//
//	eval "$(scripts/redis-up.sh /tmp/ft-redis)"
//	go test -tags redis ./broker/redis -run '^$' -bench Stream -benchtime 20000x
func BenchmarkStream(b *testing.B) {
	kinds := []struct {
		name      string
		newClient func(b *testing.B) goredis.UniversalClient
	}{
		{"redis", func(b *testing.B) goredis.UniversalClient { return newClient(b, standaloneAddr(b)) }},
		{"redis-cluster", func(b *testing.B) goredis.UniversalClient { return newClusterClient(b) }},
	}
	opts := broker.StreamOptions{Size: 100, TTL: time.Minute}
	data := []byte(`{"text":"hello, cluster","n":1234567890}`)
	for _, kind := range kinds {
		for _, call := range []string{"Publish", "PublishStream"} {
			for _, publishers := range []int{1, 64} {
				shape := "seq"
				if publishers > 1 {
					shape = "par64"
				}
				b.Run(kind.name+"/"+call+"/"+shape, func(b *testing.B) {
					pub, _, got := benchPair(b, kind.newClient)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
					defer cancel()
					var next atomic.Int64
					var wg sync.WaitGroup
					b.ReportAllocs()
					b.ResetTimer()
					for range publishers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								i := next.Add(1) - 1
								if i >= int64(b.N) {
									return
								}
								m := broker.Message{Topic: "bench", ID: strconv.FormatInt(i, 10), Data: data}
								var err error
								if call == "Publish" {
									err = pub.Publish(ctx, m)
								} else {
									_, err = pub.PublishStream(ctx, m, opts)
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.StopTimer()
					// Every message reached the subscriber: none was lost
					// to the measure.
					for deadline := time.Now().Add(30 * time.Second); got.Load() < int64(b.N); time.Sleep(time.Millisecond) {
						if time.Now().After(deadline) {
							b.Fatalf("the subscriber got %d of %d messages", got.Load(), b.N)
						}
					}
				})
			}
		}
		b.Run(kind.name+"/History100", func(b *testing.B) {
			pub, _, _ := benchPair(b, kind.newClient)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for i := range 100 {
				if _, err := pub.PublishStream(ctx, broker.Message{Topic: "bench", ID: strconv.Itoa(i), Data: data}, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r, err := pub.History(ctx, "bench", broker.HistoryQuery{Limit: 100, Options: opts})
				if err != nil || len(r.Messages) != 100 {
					b.Fatalf("History: %d messages, %v", len(r.Messages), err)
				}
			}
		})
	}
}

// benchPair starts a publishing node and a node subscribed to "bench",
// which counts what it gets; both close when the benchmark ends.
func benchPair(b *testing.B, newClient func(b *testing.B) goredis.UniversalClient) (pub, sub *fredis.Broker, got *atomic.Int64) {
	b.Helper()
	prefix := uniquePrefix()
	pub = newBroker(b, newClient(b), fredis.Options{Prefix: prefix})
	sub = newBroker(b, newClient(b), fredis.Options{Prefix: prefix})
	got = new(atomic.Int64)
	start(b, pub, func(broker.Message) {})
	start(b, sub, func(broker.Message) { got.Add(1) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	return pub, sub, got
}
