package brokertest

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// BenchConfig shapes CrossNode.
type BenchConfig struct {
	// Publishers is the number of goroutines publishing; 1 if zero, and
	// then each Publish starts after the previous one returned.
	Publishers int
	// Measure, if set, runs as the timer starts and returns a function that
	// runs as it stops: a place to report figures of the measured part
	// alone, such as the CPU time of the processes involved.
	Measure func() (stop func())
}

// CrossNode is the cross-node throughput benchmark every broker runs: b.N
// messages published on pub reach the subscribed sub, with at most 4,096 in
// flight, below every broker's queue for a subscriber, so that it measures
// sustained throughput rather than drops. It reports deliveries/s and
// closes both brokers.
func CrossNode(b *testing.B, pub, sub broker.Broker, cfg BenchConfig) {
	defer pub.Close()
	defer sub.Close()
	publishers := max(cfg.Publishers, 1)
	var got atomic.Int64
	done := make(chan struct{})
	if err := pub.Start(func(broker.Message) {}); err != nil {
		b.Fatal(err)
	}
	if err := sub.Start(func(broker.Message) {
		if got.Add(1) == int64(b.N) {
			close(done)
		}
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := sub.Subscribe(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"text":"hello, cluster","n":1234567890}`)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = strconv.Itoa(i)
	}
	const window = 4096
	var sent atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	stop := func() {}
	if cfg.Measure != nil {
		stop = cfg.Measure()
	}
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
	stop()
}
