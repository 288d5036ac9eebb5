//go:build redis

package redis_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/OSMeteor/firetower/internal/presencetest"
	goredis "github.com/redis/go-redis/v9"
)

// TestPresenceAcrossNodes: presence, join and leave frames, REST presence
// and a reload onto the other node, across two nodes on Redis
// (standalone and Cluster).
func TestPresenceAcrossNodes(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		prefix := uniquePrefix()
		presencetest.Run(t, func(t *testing.T, cfg firetower.Config) *firetower.Tower {
			cfg.Broker = newBroker(t, newClient(), fredis.Options{Prefix: prefix})
			tw, err := firetower.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tw.Shutdown(t.Context()) })
			return tw
		})
	})
}
