//go:build redis

package redis_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// benchKinds runs a benchmark on the standalone Redis and on the Cluster.
func benchKinds(b *testing.B, bench func(b *testing.B, newClient func() goredis.UniversalClient)) {
	addr := standaloneAddr(b)
	clusterAddrs(b)
	b.Run("redis", func(b *testing.B) {
		bench(b, func() goredis.UniversalClient { return newClient(b, addr) })
	})
	b.Run("redis-cluster", func(b *testing.B) {
		bench(b, func() goredis.UniversalClient { return newClusterClient(b) })
	})
}

// BenchmarkPresence10k measures Presence of a topic with 10,000 entries
// (10,000 users), answering 1,000 clients or the counts only.
//
//	eval "$(scripts/redis-up.sh /tmp/ft-redis)"
//	go test -tags redis ./broker/redis -run '^$' -bench Presence10k
func BenchmarkPresence10k(b *testing.B) {
	benchKinds(b, func(b *testing.B, newClient func() goredis.UniversalClient) {
		const entries = 10000
		br := newBroker(b, newClient(), fredis.Options{Prefix: uniquePrefix()})
		start(b, br, func(broker.Message) {})
		ctx := ctxFor(b, 5*time.Minute)
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < entries; i += 64 {
					c := broker.PresenceClient{Conn: fmt.Sprintf("conn-%05d", i), User: fmt.Sprintf("user-%05d", i), Info: []byte(`{"name":"someone","avatar":"/a/b.png"}`)}
					if err := br.AddPresence(ctx, c, []string{"room"}, broker.PresenceOptions{}); err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		for _, limit := range []int{1000, 0} {
			b.Run(fmt.Sprintf("limit%d", limit), func(b *testing.B) {
				for b.Loop() {
					r, err := br.Presence(ctx, "room", limit)
					if err != nil {
						b.Fatal(err)
					}
					if r.Connections != entries || r.Users != entries || len(r.Clients) != limit {
						b.Fatalf("Presence: %d users, %d connections, %d clients", r.Users, r.Connections, len(r.Clients))
					}
				}
			})
		}
	})
}

// BenchmarkJoinStorm measures AddPresence followed by RemovePresence of a
// new user's connection, with JoinLeave (no grace: the leave is published
// by the removal), from one goroutine (seq) or 64 (par64). A second node
// subscribed to the topic must receive every join and leave; the figure
// events/op says it did (2).
//
//	go test -tags redis ./broker/redis -run '^$' -bench JoinStorm
func BenchmarkJoinStorm(b *testing.B) {
	benchKinds(b, func(b *testing.B, newClient func() goredis.UniversalClient) {
		for _, par := range []int{1, 64} {
			name := "seq"
			if par > 1 {
				name = fmt.Sprintf("par%d", par)
			}
			b.Run(name, func(b *testing.B) {
				prefix := uniquePrefix()
				node := newBroker(b, newClient(), fredis.Options{Prefix: prefix})
				watcher := newBroker(b, newClient(), fredis.Options{Prefix: prefix})
				var events atomic.Int64
				start(b, node, func(broker.Message) {})
				start(b, watcher, func(m broker.Message) {
					if m.ID == broker.JoinID || m.ID == broker.LeaveID {
						events.Add(1)
					}
				})
				ctx := ctxFor(b, 5*time.Minute)
				if err := watcher.Subscribe(ctx, "storm"); err != nil {
					b.Fatal(err)
				}
				opts := broker.PresenceOptions{JoinLeave: true}
				var next atomic.Int64
				var failed atomic.Value
				work := make(chan struct{}, 1024)
				var wg sync.WaitGroup
				for range par {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range work {
							i := next.Add(1)
							c := broker.PresenceClient{Conn: fmt.Sprintf("c%d", i), User: fmt.Sprintf("u%d", i)}
							if err := node.AddPresence(ctx, c, []string{"storm"}, opts); err != nil {
								failed.Store(err)
								continue
							}
							if err := node.RemovePresence(ctx, c, []string{"storm"}, opts); err != nil {
								failed.Store(err)
							}
						}
					}()
				}
				b.ResetTimer()
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				b.StopTimer()
				if err, _ := failed.Load().(error); err != nil {
					b.Fatal(err)
				}
				want := int64(2 * b.N)
				deadline := time.Now().Add(30 * time.Second)
				for events.Load() < want && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				b.ReportMetric(float64(events.Load())/float64(b.N), "events/op")
				if got := events.Load(); got != want {
					b.Fatalf("the watcher received %d events, want %d", got, want)
				}
			})
		}
	})
}
