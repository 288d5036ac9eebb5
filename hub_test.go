package firetower

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// BenchmarkHubFanout measures the node's part of a publish: encoding the
// frame once and queueing it to every local subscriber. Each connection's
// queue is drained by a goroutine that drops the frames, standing in for
// its writer. ns/op divided by subscribers is the cost per delivery;
// allocs/op must not grow with subscribers.
func BenchmarkHubFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			tower, err := New(Config{SendQueueSize: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer tower.broker.Close()
			conns := make([]*Conn, n)
			stop := make(chan struct{})
			done := make(chan struct{})
			for i := range conns {
				c := newConn(tower, httptest.NewRequest("GET", "/ws", nil), "")
				conns[i] = c
				if err := tower.hub.subscribe(b.Context(), c, "bench"); err != nil {
					b.Fatal(err)
				}
				go func() { // the stand-in writer
					defer func() { done <- struct{}{} }()
					for {
						select {
						case <-c.wake:
							c.qmu.Lock()
							batch := c.queue
							c.queue, c.spare = c.spare[:0], nil
							c.qmu.Unlock()
							clear(batch)
							c.qmu.Lock()
							c.spare = batch[:0]
							c.qmu.Unlock()
						case <-stop:
							return
						}
					}
				}()
			}
			m := broker.Message{Topic: "bench", ID: "5b3f8a4e-8c1d-4a53-9e0b-0d6f6f0e2c11", Data: []byte(`{"text":"a message of about a hundred bytes, as a chat line or a price tick would be"}`)}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tower.hub.deliver(m)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			close(stop)
			for range conns {
				<-done
			}
			for _, c := range conns {
				c.cancel()
			}
		})
	}
}

// BenchmarkPublishEmbedded is a whole Tower.Publish through the embedded
// topic service to 100 local subscribers.
func BenchmarkPublishEmbedded(b *testing.B) {
	tower, err := New(Config{Broker: topicsvc.NewEmbedded(), SendQueueSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer tower.broker.Close()
	for range 100 {
		c := newConn(tower, httptest.NewRequest("GET", "/ws", nil), "")
		c.shutdown(DisconnectServer, 0, "", false) // queued frames are dropped at once
		tower.hub.subscribe(b.Context(), c, "bench")
		defer c.cancel()
	}
	b.ReportAllocs()
	for range b.N {
		if _, err := tower.Publish(b.Context(), "bench", "hello"); err != nil {
			b.Fatal(err)
		}
	}
}
