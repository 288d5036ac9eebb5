package firetower

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
)

// TestStats checks the node's figures after a known workload: 10
// publishes to 100 subscribers are 1,000 deliveries.
func TestStats(t *testing.T) {
	s := newServer(t, Config{})
	clients := make([]*client, 100)
	for i := range clients {
		clients[i] = dial(t, s, "", nil)
		clients[i].subscribe("/stats")
	}
	clients[0].subscribe("/other")
	ctx := context.Background()
	for i := range 10 {
		s.tower.Publish(ctx, "/stats", i)
	}
	for _, c := range clients {
		for range 10 {
			c.expect(TypePublish)
		}
	}
	st := s.tower.Stats()
	if st.Connections != 100 || st.Subscriptions != 101 || st.Topics != 2 || st.Published != 10 || st.Delivered != 1000 || st.FramesIn != 101 {
		t.Fatalf("stats %+v", st)
	}
	// Replies are frames too: 101 subscribed + 1,000 messages. A frame is
	// counted once its write returned, which may be just after the client
	// read it.
	brokertest.Eventually(t, 5*time.Second, func() error {
		st := s.tower.Stats()
		if st.FramesOut != 1101 || st.BytesOut < 1000*50 || st.Latency.Count == 0 || int64(st.Latency.Count) > st.Writes {
			return fmt.Errorf("output stats %+v", st)
		}
		return nil
	})
	for _, c := range clients[:10] {
		c.ws.Close()
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		st := s.tower.Stats()
		if st.Connections != 90 || st.Disconnects["client"] != 10 || st.Subscriptions != 90 || st.Topics != 1 {
			return fmt.Errorf("after 10 left: %+v", st)
		}
		return nil
	})
}
