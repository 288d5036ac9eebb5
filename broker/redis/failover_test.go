//go:build redis

package redis_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	goredis "github.com/redis/go-redis/v9"
)

// TestSentinelFailover kills the master under two nodes connected through
// a Sentinel. The Sentinel promotes the replica; the nodes follow it,
// resubscribe and deliver again, without help, and the counts stay
// cluster-wide.
func TestSentinelFailover(t *testing.T) {
	master := newRedisServer(t)
	mhost, mport, _ := net.SplitHostPort(master.addr)
	replica := startRedis(t, plainServer("--replicaof", mhost, mport))
	sentinel := newSentinel(t, master.addr, time.Second)
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: sentinel.addr})
	defer sc.Close()
	ctx := ctxFor(t, 2*time.Minute)
	// The Sentinel must know the replica before the master goes, or it has
	// nothing to promote.
	brokertest.Eventually(t, 30*time.Second, func() error {
		rs, err := sc.Replicas(ctx, "firetower").Result()
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r["port"] == strings.Split(replica.addr, ":")[1] && !strings.Contains(r["flags"], "down") && r["master-link-status"] == "ok" {
				return nil
			}
		}
		return fmt.Errorf("the Sentinel does not see a healthy replica yet: %v", rs)
	})

	a, b, rec := openPair(t, "redis+sentinel://"+sentinel.addr+"?master_name=firetower&prefix="+uniquePrefix())
	must(t, b.Subscribe(ctx, "stream"))
	a.SetCount("stream", 1)
	b.SetCount("stream", 2)
	brokertest.Eventually(t, 5*time.Second, brokertest.CountIs(ctx, a, "stream", 3))
	inOrder(t, ctx, a, rec, "stream", "before", 50)

	master.kill()
	// The Sentinel notices after 1 s and promotes the replica.
	awaitResumed(t, ctx, a, rec, "stream", time.Now(), 60*time.Second, "the master's death")
	addr, err := sc.GetMasterAddrByName(ctx, "firetower").Result()
	must(t, err)
	if net.JoinHostPort(addr[0], addr[1]) != replica.addr {
		t.Fatalf("the Sentinel's master is %v, want the promoted replica %s", addr, replica.addr)
	}

	inOrder(t, ctx, a, rec, "stream", "after", 50)
	// The counts live on in the promoted replica (or are written again by
	// the next flush); a new one reaches the other node.
	b.SetCount("stream", 5)
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, a, "stream", 6))
}
