//go:build redis

package redis_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	goredis "github.com/redis/go-redis/v9"
)

// TestSentinelFailover kills the master under two nodes connected through
// a Sentinel. The Sentinel promotes the replica; the nodes follow it,
// resubscribe and deliver again, without help, the counts stay
// cluster-wide, and a stream the replica had received goes on: the same
// history, the next offset in the same epoch.
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

	const topic = "/chat/kept"
	var before broker.StreamPosition
	for i := range 30 {
		var err error
		before, err = a.(broker.Streamer).PublishStream(ctx, broker.Message{Topic: topic, ID: strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}, keep)
		must(t, err)
	}
	// Replication is asynchronous: what the master had not sent is lost
	// with it. Wait until the replica has it all.
	mc := goredis.NewClient(&goredis.Options{Addr: master.addr})
	defer mc.Close()
	if n, err := mc.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	master.kill()
	// The Sentinel notices after 1 s and promotes the replica.
	awaitResumed(t, ctx, a, rec, "stream", time.Now(), 60*time.Second, "the master's death")
	addr, err := sc.GetMasterAddrByName(ctx, "firetower").Result()
	must(t, err)
	if net.JoinHostPort(addr[0], addr[1]) != replica.addr {
		t.Fatalf("the Sentinel's master is %v, want the promoted replica %s", addr, replica.addr)
	}

	inOrder(t, ctx, a, rec, "stream", "after", 50)

	// The stream lives on in the promoted replica.
	r, err := b.(broker.Streamer).History(ctx, topic, broker.HistoryQuery{Limit: 100, Options: keep})
	must(t, err)
	if r.StreamPosition != before || len(r.Messages) != 30 {
		t.Fatalf("after the failover the stream is at %+v with %d messages, was at %+v with 30", r.StreamPosition, len(r.Messages), before)
	}
	for i, m := range r.Messages {
		if m.Offset != uint64(i+1) || m.ID != strconv.Itoa(i) || m.Epoch != before.Epoch {
			t.Fatalf("history message %d after the failover: %+v", i, m)
		}
	}
	must(t, b.Subscribe(ctx, topic))
	next, err := a.(broker.Streamer).PublishStream(ctx, broker.Message{Topic: topic, ID: "next", Data: []byte("1")}, keep)
	must(t, err)
	if next.Epoch != before.Epoch || next.Offset != 31 {
		t.Fatalf("the first publish after the failover got %+v, want offset 31 in %q", next, before.Epoch)
	}
	if m := rec.next(t, 5*time.Second); m.ID != "next" || m.Offset != 31 || m.Epoch != before.Epoch {
		t.Fatalf("delivered %+v after the failover", m)
	}
	// The counts live on in the promoted replica (or are written again by
	// the next flush); a new one reaches the other node.
	b.SetCount("stream", 5)
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, a, "stream", 6))
}
