package topicsvc_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// BenchmarkCrossNode measures deliveries per second from a publishing node
// to a subscribed node: through the embedded core (one process, the
// single-node figure) and through a service process over loopback gRPC
// (1 service + 2 nodes).
//
//	go test ./topicsvc -run '^$' -bench CrossNode -benchtime 200000x
func BenchmarkCrossNode(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		core := topicsvc.NewCore()
		benchPair(b, core.Embedded(), core.Embedded())
	})
	b.Run("topicsvc", func(b *testing.B) {
		svc := startService(b, "127.0.0.1:0")
		dial := func() broker.Broker {
			c, err := topicsvc.Dial(svc.addr, topicsvc.ClientOptions{Token: testToken})
			if err != nil {
				b.Fatal(err)
			}
			return c
		}
		benchPair(b, dial(), dial())
	})
}

func benchPair(b *testing.B, pub, sub broker.Broker) {
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
	// At most window messages in flight, so that the service's queue for
	// the subscriber never overflows: this measures sustained throughput.
	const window = 4096
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for int64(i)-got.Load() >= window {
			time.Sleep(50 * time.Microsecond)
		}
		if err := pub.Publish(ctx, broker.Message{Topic: "bench", ID: ids[i%len(ids)], Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("received %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
