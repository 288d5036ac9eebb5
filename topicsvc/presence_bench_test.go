package topicsvc_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// BenchmarkPresence10k is the Core's cost of a Presence read of a topic
// with 10,000 connections (of 5,000 users, each with a small info): with
// a limit of 1,000 clients, and with limit 0 (the counts only).
//
//	go test ./topicsvc -run '^$' -bench 'Presence10k|JoinStorm' -benchmem
func BenchmarkPresence10k(b *testing.B) {
	c := topicsvc.NewCore()
	n := c.AddNode("owner", func(broker.Message) {})
	for i := range 10_000 {
		cl := broker.PresenceClient{Conn: fmt.Sprintf("conn-%05d", i), User: fmt.Sprintf("user-%04d", i%5000), Info: json.RawMessage(`{"name":"someone"}`)}
		if err := n.AddPresence(cl, []string{"/chat/room"}, broker.PresenceOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for _, limit := range []int{1000, 0} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := c.Presence("/chat/room", limit)
				if err != nil || r.Connections != 10_000 || len(r.Clients) != limit {
					b.Fatalf("Presence: %d connections, %d clients, %v", r.Connections, len(r.Clients), err)
				}
			}
		})
	}
}

// BenchmarkJoinStorm is the Core's cost of a connection coming and going
// with join and leave events: an AddPresence that publishes a join, then
// a RemovePresence that publishes the leave (grace 0), with one node
// listening to the topic (its deliver does nothing), each op on a user of
// its own; and the same with a grace, where the leave waits on a timer
// that the next add of the user cancels (a reload storm).
func BenchmarkJoinStorm(b *testing.B) {
	for _, grace := range []time.Duration{0, time.Minute} {
		b.Run(fmt.Sprintf("grace=%v", grace), func(b *testing.B) {
			c := topicsvc.NewCore()
			c.AddNode("listener", func(broker.Message) {}).Listen("/chat/room")
			n := c.AddNode("owner", func(broker.Message) {})
			opts := broker.PresenceOptions{JoinLeave: true, Grace: grace}
			topics := []string{"/chat/room"}
			users := make([]broker.PresenceClient, 1024)
			for i := range users {
				users[i] = broker.PresenceClient{Conn: fmt.Sprint("conn-", i), User: fmt.Sprint("user-", i), Info: json.RawMessage(`{"name":"someone"}`)}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cl := users[i%len(users)]
				i++
				if err := n.AddPresence(cl, topics, opts); err != nil {
					b.Fatal(err)
				}
				if err := n.RemovePresence(cl, topics, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			s := c.PresenceStats()
			if grace == 0 && (s.Joins != s.Leaves || s.Entries != 0) {
				b.Fatalf("figures %+v: want a leave per join, no entry left", s)
			}
			n.RemoveSilent()
		})
	}
}
