package firetower

import (
	"bytes"
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
	c := newConn(tower, httptest.NewRequest("GET", "/ws", nil), "", nil)
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
// subscriber; allocs/op must not grow with subscribers. check=on is a
// node on a broker it does not control, which checks each message's data
// once before the loop (validData); check=off one on the embedded broker.
func BenchmarkHubFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, check := range []bool{false, true} {
			name := fmt.Sprintf("subscribers=%d/check=off", n)
			if check {
				name = fmt.Sprintf("subscribers=%d/check=on", n)
			}
			b.Run(name, func(b *testing.B) {
				tower, err := New(Config{SendQueueSize: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tower.Shutdown(context.Background()) })
				tower.hub.checkData = check
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
				if got := tower.Stats().DroppedInvalid; got != 0 {
					b.Fatalf("%d dropped", got)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			})
		}
	}
}

// BenchmarkValidData is the check of one message's data that a node on a
// broker it does not control makes before queueing it (and every publish
// entry makes once): a chat line of 100 B and a 4 KB document.
func BenchmarkValidData(b *testing.B) {
	chat := []byte(`{"text":"a message of about a hundred bytes, as a chat line or a price tick would be"}`)
	var doc bytes.Buffer
	doc.WriteString(`{"items":[`)
	for i := 0; doc.Len() < 4000; i++ {
		if i > 0 {
			doc.WriteByte(',')
		}
		fmt.Fprintf(&doc, `{"id":%d,"name":"item %d é","price":%d.25,"tags":["a","b"]}`, i, i, i)
	}
	doc.WriteString(`]}`)
	for _, tc := range []struct {
		name string
		data []byte
	}{{"size=100B", chat}, {"size=4KB", doc.Bytes()}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.data)))
			b.ReportAllocs()
			for range b.N {
				if !validData(tc.data) {
					b.Fatal("invalid")
				}
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

// BenchmarkPublishHistory is a whole publish on the embedded broker, to a
// topic with history 100 and to one without, side by side: the append to
// the stream, the encoding once, the queueing to every subscriber.
func BenchmarkPublishHistory(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		for _, history := range []int{0, 100} {
			b.Run(fmt.Sprintf("subscribers=%d/history=%d", n, history), func(b *testing.B) {
				tower, err := New(Config{SendQueueSize: 1 << 30, TopicOptions: func(string) TopicOptions {
					return TopicOptions{HistorySize: history}
				}})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tower.Shutdown(context.Background()) })
				for range n {
					if err := tower.hub.subscribe(b.Context(), benchConn(b, tower), []string{"bench"}); err != nil {
						b.Fatal(err)
					}
				}
				data := []byte(`{"text":"a message of about a hundred bytes, as a chat line or a price tick would be"}`)
				topics := []string{"bench"}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := tower.publish(b.Context(), topics, data, false); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			})
		}
	}
}
