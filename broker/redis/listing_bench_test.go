//go:build redis

package redis_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/server"
	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
)

// listingTopics and listingNodes shape the cluster of BenchmarkTopicsPage:
// a million uuid-sized topics over ten other nodes.
const listingTopics, listingNodes = 1_000_000, 10

// BenchmarkTopicsPage measures one GET /topics page (limit 100, by count)
// on a node whose cluster holds a million topics, through the topic
// service and through Redis. Each iteration lists the cluster: the node
// reuses a listing for a second, so each waits that second out, outside
// the timer.
//
//	eval "$(scripts/redis-up.sh /tmp/ft-redis)"
//	go test -tags redis ./broker/redis -run '^$' -bench TopicsPage -benchtime 5x -timeout 15m
func BenchmarkTopicsPage(b *testing.B) {
	b.Run("topicsvc", func(b *testing.B) {
		const token = "bench-token"
		srv, err := server.New(server.Config{Token: token})
		must(b, err)
		for n := range listingNodes {
			// The core's own API: the benchmark is the listing, not a
			// million subscribes.
			nd := srv.Core().AddNode(fmt.Sprint("bulk-", n), func(broker.Message) {})
			for range listingTopics / listingNodes {
				topic := "/room/" + uuid.NewString()
				nd.Listen(topic)
				nd.SetCount(topic, 1+n)
			}
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(b, err)
		go srv.Serve(l)
		defer srv.Stop()
		c, err := client.Dial(l.Addr().String(), client.Options{Token: token})
		must(b, err)
		benchTopicsPage(b, c)
	})
	b.Run("redis", func(b *testing.B) {
		addr := standaloneAddr(b)
		prefix := uniquePrefix()
		rc := newClient(b, addr)
		ctx := context.Background()
		now := time.Now().UnixMilli()
		for n := range listingNodes {
			id := fmt.Sprint("bulk-", n)
			hash := "{" + prefix + "}:n:" + id
			pipe := rc.Pipeline()
			for i := 0; i < listingTopics/listingNodes; i += 1000 {
				kv := make([]any, 0, 2000)
				for range 1000 {
					kv = append(kv, "/room/"+uuid.NewString(), 1+n)
				}
				pipe.HSet(ctx, hash, kv...)
			}
			pipe.Set(ctx, "{"+prefix+"}:hb:"+id, now, 0)
			pipe.ZAdd(ctx, "{"+prefix+"}:nodes", goredis.Z{Score: float64(now), Member: id})
			_, err := pipe.Exec(ctx)
			must(b, err)
			b.Cleanup(func() { rc.Del(context.Background(), hash, "{"+prefix+"}:hb:"+id) })
		}
		b.Cleanup(func() { rc.Del(context.Background(), "{"+prefix+"}:nodes") })
		benchTopicsPage(b, newBroker(b, newClient(b, addr), fredis.Options{Prefix: prefix}))
	})
}

func benchTopicsPage(b *testing.B, br broker.Broker) {
	gin.SetMode(gin.TestMode)
	tower, err := firetower.New(firetower.Config{Broker: br, APIToken: "t"})
	must(b, err)
	defer tower.Shutdown(context.Background())
	r := gin.New()
	r.Use(tower.Middleware())
	hs := httptest.NewServer(r)
	defer hs.Close()
	get := func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/topics?limit=100", nil)
		req.Header.Set("Authorization", "Bearer t")
		resp, err := http.DefaultClient.Do(req)
		must(b, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET /topics: %s", resp.Status)
		}
	}
	page, err := tower.Topics(context.Background(), firetower.TopicsQuery{Limit: 1})
	must(b, err)
	if page.Total != listingTopics {
		b.Fatalf("the cluster lists %d topics, want %d", page.Total, listingTopics)
	}
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			time.Sleep(1100 * time.Millisecond) // the node's listing expires
			b.StartTimer()
			get(b)
		}
	})
}
