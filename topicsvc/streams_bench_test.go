package topicsvc_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// BenchmarkPublishStream is the Core's cost per publish of appending to a
// stream of 100 messages, next to a plain Publish of the same message, with
// 1 and 1,000 listening nodes whose deliver does nothing: the difference
// is the append (offset, ring slot, memory accounting, LRU), and allocs/op
// must not grow with the nodes.
//
//	go test ./topicsvc -run '^$' -bench PublishStream -benchmem
func BenchmarkPublishStream(b *testing.B) {
	opts := broker.StreamOptions{Size: 100, TTL: time.Hour}
	for _, nodes := range []int{1, 1000} {
		for _, kind := range []string{"plain", "stream"} {
			b.Run(fmt.Sprintf("%s/nodes=%d", kind, nodes), func(b *testing.B) {
				c := topicsvc.NewCore()
				for i := range nodes {
					c.AddNode(fmt.Sprint("node-", i), func(broker.Message) {}).Listen("/chat/room")
				}
				m := broker.Message{Topic: "/chat/room", ID: "0f8e7a52-5f64-4c7e-9d7e-0b8f5e3c2a11", Data: []byte(`{"text":"hello, world","n":42}`)}
				// Fill the ring first, so that the loop measures the
				// steady state: every append replaces the oldest message.
				for range 2 * opts.Size {
					c.PublishStream(m, opts)
				}
				b.ReportAllocs()
				b.ResetTimer()
				if kind == "plain" {
					for b.Loop() {
						c.Publish(m)
					}
				} else {
					for b.Loop() {
						c.PublishStream(m, opts)
					}
				}
				if s := c.StreamStats(); s.Messages != int64(opts.Size) {
					b.Fatalf("the stream holds %d messages, want %d", s.Messages, opts.Size)
				}
			})
		}
	}
}
