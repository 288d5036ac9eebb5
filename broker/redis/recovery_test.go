//go:build redis

package redis_test

import (
	"testing"

	"github.com/OSMeteor/firetower"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/OSMeteor/firetower/internal/recoverytest"
	goredis "github.com/redis/go-redis/v9"
)

// TestRecoveryGapless: three nodes on Redis (standalone and Cluster),
// publishers on each, clients recovering again and again on any node.
func TestRecoveryGapless(t *testing.T) {
	clusterKinds(t, func(t *testing.T, newClient func() goredis.UniversalClient) {
		prefix := uniquePrefix()
		var towers []*firetower.Tower
		for range 3 {
			tw, err := firetower.New(firetower.Config{
				Broker:       newBroker(t, newClient(), fredis.Options{Prefix: prefix}),
				TopicOptions: func(string) firetower.TopicOptions { return firetower.TopicOptions{HistorySize: 5000} },
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tw.Shutdown(t.Context()) })
			towers = append(towers, tw)
		}
		recoverytest.Run(t, recoverytest.Config{Towers: towers, Topic: "/room"})
	})
}
