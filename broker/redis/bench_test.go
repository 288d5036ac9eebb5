//go:build redis

package redis_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/OSMeteor/firetower/topicsvc"
)

// BenchmarkCrossNode measures deliveries per second from a publishing node
// to a subscribed node, through each broker, in one run so that the figures
// compare: the embedded topic service (one process), the topic service over
// loopback gRPC (1 service + 2 nodes), Redis (1 server + 2 nodes) and Redis
// Cluster (3 masters + 2 nodes). "seq" publishes from one goroutine, each
// Publish after the previous returned; "par64" from 64 goroutines.
//
//	eval "$(scripts/redis-up.sh /tmp/ft-redis)"
//	go test -tags redis ./broker/redis -run '^$' -bench CrossNode -benchtime 100000x
func BenchmarkCrossNode(b *testing.B) {
	for _, shape := range []struct {
		name       string
		publishers int
	}{{"seq", 1}, {"par64", 64}} {
		b.Run("embedded/"+shape.name, func(b *testing.B) {
			core := topicsvc.NewCore()
			benchPair(b, shape.publishers, core.Embedded(), core.Embedded())
		})
		b.Run("topicsvc/"+shape.name, func(b *testing.B) {
			const token = "bench-token"
			srv, err := topicsvc.NewServer(topicsvc.ServerConfig{Token: token})
			must(b, err)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			must(b, err)
			go srv.Serve(l)
			defer srv.Stop()
			dial := func() broker.Broker {
				c, err := topicsvc.Dial(l.Addr().String(), topicsvc.ClientOptions{Token: token})
				must(b, err)
				return c
			}
			benchPair(b, shape.publishers, dial(), dial())
		})
		b.Run("redis/"+shape.name, func(b *testing.B) {
			addr := standaloneAddr(b)
			prefix := uniquePrefix()
			benchPair(b, shape.publishers,
				newBroker(b, newClient(b, addr), fredis.Options{Prefix: prefix}),
				newBroker(b, newClient(b, addr), fredis.Options{Prefix: prefix}))
		})
		b.Run("redis-cluster/"+shape.name, func(b *testing.B) {
			prefix := uniquePrefix()
			benchPair(b, shape.publishers,
				newBroker(b, newClusterClient(b), fredis.Options{Prefix: prefix}),
				newBroker(b, newClusterClient(b), fredis.Options{Prefix: prefix}))
		})
	}
}

func benchPair(b *testing.B, publishers int, pub, sub broker.Broker) {
	defer pub.Close()
	defer sub.Close()
	var got atomic.Int64
	done := make(chan struct{})
	must(b, pub.Start(func(broker.Message) {}))
	must(b, sub.Start(func(broker.Message) {
		if got.Add(1) == int64(b.N) {
			close(done)
		}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	must(b, sub.Subscribe(ctx, "bench"))
	data := []byte(`{"text":"hello, cluster","n":1234567890}`)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	// At most window messages in flight, below every broker's queue for a
	// subscriber: this measures sustained throughput, not drops.
	const window = 4096
	var sent atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := sent.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				for i-got.Load() >= window {
					time.Sleep(50 * time.Microsecond)
				}
				if err := pub.Publish(ctx, broker.Message{Topic: "bench", ID: ids[i%int64(len(ids))], Data: data}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "deliveries/s")
}
