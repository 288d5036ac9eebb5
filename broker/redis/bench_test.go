//go:build redis

package redis_test

import (
	"net"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/server"
)

// BenchmarkCrossNode measures deliveries per second from a publishing node
// to a subscribed node, through each broker, in one run so that the figures
// compare: the embedded topic service (one process), the topic service over
// loopback gRPC (1 service + 2 nodes), Redis (1 server + 2 nodes) and Redis
// Cluster (3 masters + 2 nodes). "seq" publishes from one goroutine, each
// Publish after the previous returned; "par64" from 64 goroutines.
//
//	eval "$(scripts/redis-up.sh /tmp/ft-redis)"
//	go test -tags redis ./broker/redis -run '^$' -bench CrossNode -benchtime 100000x
func BenchmarkCrossNode(b *testing.B) {
	for _, shape := range []struct {
		name       string
		publishers int
	}{{"seq", 1}, {"par64", 64}} {
		b.Run("embedded/"+shape.name, func(b *testing.B) {
			core := topicsvc.NewCore()
			brokertest.CrossNode(b, core.Embedded(), core.Embedded(), brokertest.BenchConfig{Publishers: shape.publishers})
		})
		b.Run("topicsvc/"+shape.name, func(b *testing.B) {
			const token = "bench-token"
			srv, err := server.New(server.Config{Token: token})
			must(b, err)
			l, err := net.Listen("tcp", "127.0.0.1:0")
			must(b, err)
			go srv.Serve(l)
			defer srv.Stop()
			dial := func() broker.Broker {
				c, err := client.Dial(l.Addr().String(), client.Options{Token: token})
				must(b, err)
				return c
			}
			brokertest.CrossNode(b, dial(), dial(), brokertest.BenchConfig{Publishers: shape.publishers})
		})
		b.Run("redis/"+shape.name, func(b *testing.B) {
			addr := standaloneAddr(b)
			prefix := uniquePrefix()
			brokertest.CrossNode(b, newBroker(b, newClient(b, addr), fredis.Options{Prefix: prefix}),
				newBroker(b, newClient(b, addr), fredis.Options{Prefix: prefix}), brokertest.BenchConfig{Publishers: shape.publishers})
		})
		b.Run("redis-cluster/"+shape.name, func(b *testing.B) {
			prefix := uniquePrefix()
			brokertest.CrossNode(b, newBroker(b, newClusterClient(b), fredis.Options{Prefix: prefix}),
				newBroker(b, newClusterClient(b), fredis.Options{Prefix: prefix}), brokertest.BenchConfig{Publishers: shape.publishers})
		})
	}
}
