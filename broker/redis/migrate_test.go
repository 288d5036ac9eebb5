//go:build redis

package redis_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// TestClusterSlotMoved moves the slot of a subscribed topic's channel to
// the other master of a Redis Cluster of its own, as a resharding does.
// Redis unsubscribes the node from the moved slot; the node subscribes on
// the slot's new master and delivery resumes, without help.
func TestClusterSlotMoved(t *testing.T) {
	server := plainServer("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	procs := []*redisServer{startRedis(t, server), startRedis(t, server)}
	ctx := ctxFor(t, 2*time.Minute)
	direct := make([]*goredis.Client, len(procs))
	ids := make([]string, len(procs))
	for i, p := range procs {
		direct[i] = goredis.NewClient(&goredis.Options{Addr: p.addr})
		defer direct[i].Close()
		id, err := direct[i].ClusterMyID(ctx).Result()
		must(t, err)
		ids[i] = id
	}
	// Two masters, half of the slots each.
	must(t, direct[0].ClusterAddSlotsRange(ctx, 0, 8191).Err())
	must(t, direct[1].ClusterAddSlotsRange(ctx, 8192, 16383).Err())
	host, port, _ := strings.Cut(procs[1].addr, ":")
	p, _ := strconv.Atoi(port)
	must(t, direct[0].ClusterMeet(ctx, host, strconv.Itoa(p)).Err())
	brokertest.Eventually(t, 30*time.Second, func() error {
		for i, c := range direct {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:2") {
				return fmt.Errorf("node %d: cluster not ready:\n%s", i, info)
			}
		}
		return nil
	})

	newCluster := func() *goredis.ClusterClient {
		c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: []string{procs[0].addr, procs[1].addr}, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, DialerRetries: 1, MaxRetries: -1, ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		return c
	}
	// One shard group: every channel is in the slot of the hash tag {0}.
	opts := fredis.Options{Prefix: uniquePrefix(), Shards: 1}
	a := newBroker(t, newCluster(), opts)
	b := newBroker(t, newCluster(), opts)
	rec := newRecorder(10000)
	start(t, a, func(broker.Message) {})
	start(t, b, rec.handle)
	must(t, b.Subscribe(ctx, "stream"))
	inOrder(t, ctx, a, rec, "stream", "before", 20)

	slot, err := direct[0].ClusterKeySlot(ctx, "{0}").Result()
	must(t, err)
	from, to := 0, 1
	if slot >= 8192 {
		from, to = 1, 0
	}
	// The slot holds no keys (only channels), so it moves by assignment:
	// first on the importing master, then on the one that loses it.
	must(t, direct[to].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]).Err())
	must(t, direct[from].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[to]).Err())
	awaitResumed(t, ctx, a, rec, "stream", time.Now(), 30*time.Second, "the slot moving")
	// The node now listens on the slot's new master, and no longer on the
	// old one.
	brokertest.Eventually(t, 10*time.Second, func() error {
		for i, c := range direct {
			chans, err := c.PubSubShardChannels(ctx, opts.Prefix+"*").Result()
			if err != nil {
				return err
			}
			if want := i == to; (len(chans) > 0) != want {
				return fmt.Errorf("master %d has shard channels %v; want them only on master %d", i, chans, to)
			}
		}
		return nil
	})
	inOrder(t, ctx, a, rec, "stream", "after", 20)
}
