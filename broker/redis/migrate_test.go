//go:build redis

package redis_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// TestClusterSlotMoved moves the slot of a subscribed topic's channel to
// the other master of a Redis Cluster of its own, as a resharding does.
// Redis unsubscribes the node from the moved slot; the node subscribes on
// the slot's new master and delivery resumes, without help.
func TestClusterSlotMoved(t *testing.T) {
	server := func(port, dir string) []string {
		return []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", dir + "/nodes.conf"}
	}
	procs := []*process{startProcess(t, server), startProcess(t, server)}
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
	eventually(t, 30*time.Second, func() error {
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
	for i := range 20 {
		must(t, a.Publish(ctx, broker.Message{Topic: "stream", ID: "before-" + strconv.Itoa(i), Data: []byte("1")}))
	}
	for i := range 20 {
		if m := rec.next(t, 5*time.Second); m.ID != "before-"+strconv.Itoa(i) {
			t.Fatalf("got %s, want before-%d", m.ID, i)
		}
	}

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
	moved := time.Now()

	for deadline := moved.Add(30 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("delivery did not resume within 30 s of the slot moving")
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		a.Publish(pctx, broker.Message{Topic: "stream", ID: "probe", Data: []byte("0")})
		cancel()
		select {
		case m := <-rec.got:
			if m.ID != "probe" {
				t.Fatalf("after the slot moved got %+v first", m)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	t.Logf("delivery resumed %v after the slot moved", time.Since(moved).Round(10*time.Millisecond))
	// The node now listens on the slot's new master, and no longer on the
	// old one.
	eventually(t, 10*time.Second, func() error {
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
	must(t, a.Publish(ctx, broker.Message{Topic: "stream", ID: "marker", Data: []byte("0")}))
	for m := rec.next(t, 5*time.Second); m.ID != "marker"; m = rec.next(t, 5*time.Second) {
		if m.ID != "probe" {
			t.Fatalf("got %+v among the probes", m)
		}
	}
	for i := range 20 {
		must(t, a.Publish(ctx, broker.Message{Topic: "stream", ID: "after-" + strconv.Itoa(i), Data: []byte("1")}))
	}
	for i := range 20 {
		if m := rec.next(t, 5*time.Second); m.ID != "after-"+strconv.Itoa(i) {
			t.Fatalf("got %s, want after-%d", m.ID, i)
		}
	}
}
