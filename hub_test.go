package firetower

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// benchConn is a subscriber whose writer runs as usual but drops the
// frames instead of writing them to a socket.
func benchConn(b *testing.B, tower *Tower) *Conn {
	c := newConn(tower, httptest.NewRequest("GET", "/ws", nil), "")
	c.sink = func(batch [][]byte) (int, error) { return 1, nil }
	b.Cleanup(func() {
		c.shutdown(DisconnectServer, 0, "", false)
		c.writers.Wait()
		c.cancel()
	})
	return c
}

// BenchmarkHubFanout measures the node's part of a publish: encoding the
// frame once, queueing it to every local subscriber and running their
// writers (which drop the frames here). ns/delivery is the cost per
// subscriber; allocs/op must not grow with subscribers.
func BenchmarkHubFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			tower, err := New(Config{SendQueueSize: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { tower.Shutdown(context.Background()) })
			for range n {
				if err := tower.hub.subscribe(b.Context(), benchConn(b, tower), []string{"bench"}); err != nil {
					b.Fatal(err)
				}
			}
			m := broker.Message{Topic: "bench", ID: "5b3f8a4e-8c1d-4a53-9e0b-0d6f6f0e2c11", Data: []byte(`{"text":"a message of about a hundred bytes, as a chat line or a price tick would be"}`)}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				tower.hub.deliver(m)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
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
	b.Cleanup(func() { tower.Shutdown(context.Background()) })
	for range 100 {
		tower.hub.subscribe(b.Context(), benchConn(b, tower), []string{"bench"})
	}
	b.ReportAllocs()
	for range b.N {
		if _, err := tower.Publish(b.Context(), "bench", "hello"); err != nil {
			b.Fatal(err)
		}
	}
}
