//go:build redis

package redis_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	goredis "github.com/redis/go-redis/v9"
)

// process is a redis-server (or Sentinel) started with its own arguments
// on a free loopback port.
type process struct {
	addr, dir string
	cmd       *exec.Cmd
}

func startProcess(t *testing.T, args func(port, dir string) []string) *process {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	p := &process{addr: addr, dir: t.TempDir()}
	logf, err := os.Create(filepath.Join(p.dir, "redis.log"))
	must(t, err)
	defer logf.Close()
	p.cmd = exec.Command("redis-server", args(port, p.dir)...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	must(t, p.cmd.Start())
	t.Cleanup(p.kill)
	c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(p.dir, "redis.log"))
			t.Fatalf("redis-server %v did not start:\n%s", args(port, p.dir), logs)
		}
	}
	return p
}

func (p *process) kill() {
	if p.cmd != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

// TestSentinelFailover kills the master under two nodes connected through
// a Sentinel. The Sentinel promotes the replica; the nodes follow it,
// resubscribe and deliver again, without help, and the counts stay
// cluster-wide.
func TestSentinelFailover(t *testing.T) {
	server := func(extra ...string) func(port, dir string) []string {
		return func(port, dir string) []string {
			return append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, extra...)
		}
	}
	master := startProcess(t, server())
	mhost, mport, _ := net.SplitHostPort(master.addr)
	replica := startProcess(t, server("--replicaof", mhost, mport))
	sentinel := startProcess(t, func(port, dir string) []string {
		// A Sentinel rewrites its configuration file, so it needs one.
		conf := filepath.Join(dir, "sentinel.conf")
		must(t, os.WriteFile(conf, []byte(fmt.Sprintf(
			"port %s\nbind 127.0.0.1\ndir %s\n"+
				"sentinel monitor firetower %s %s 1\n"+
				"sentinel down-after-milliseconds firetower 1000\n"+
				"sentinel failover-timeout firetower 10000\n",
			port, dir, mhost, mport)), 0o644))
		return []string{conf, "--sentinel"}
	})
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: sentinel.addr})
	defer sc.Close()
	ctx := ctxFor(t, 2*time.Minute)
	// The Sentinel must know the replica before the master goes, or it has
	// nothing to promote.
	eventually(t, 30*time.Second, func() error {
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

	url := "redis+sentinel://" + sentinel.addr + "?master_name=firetower&prefix=" + uniquePrefix()
	open := func() broker.Broker {
		b, err := broker.Open(url, broker.Options{})
		must(t, err)
		return b
	}
	a, b := open(), open()
	rec := newRecorder(10000)
	start(t, a, func(broker.Message) {})
	start(t, b, rec.handle)
	must(t, b.Subscribe(ctx, "stream"))
	a.SetCount("stream", 1)
	b.SetCount("stream", 2)
	eventually(t, 5*time.Second, countIs(ctx, a, "stream", 3))
	for i := range 50 {
		must(t, a.Publish(ctx, broker.Message{Topic: "stream", ID: "before-" + strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}))
	}
	for i := range 50 {
		if m := rec.next(t, 5*time.Second); m.ID != "before-"+strconv.Itoa(i) {
			t.Fatalf("got %s, want before-%d", m.ID, i)
		}
	}

	master.kill()
	killed := time.Now()
	// The Sentinel notices after 1 s and promotes the replica; publish
	// until a message arrives through the new master.
	for deadline := killed.Add(60 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("delivery did not resume within 60 s of the master's death")
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		a.Publish(pctx, broker.Message{Topic: "stream", ID: "probe", Data: []byte("0")})
		cancel()
		select {
		case m := <-rec.got:
			if m.ID != "probe" {
				t.Fatalf("after the failover got %+v first", m)
			}
		case <-time.After(200 * time.Millisecond):
			continue
		}
		break
	}
	t.Logf("delivery resumed %v after the master was killed", time.Since(killed).Round(10*time.Millisecond))
	addr, err := sc.GetMasterAddrByName(ctx, "firetower").Result()
	must(t, err)
	if net.JoinHostPort(addr[0], addr[1]) != replica.addr {
		t.Fatalf("the Sentinel's master is %v, want the promoted replica %s", addr, replica.addr)
	}

	drainProbes(t, ctx, a, rec, "stream")
	for i := range 50 {
		must(t, a.Publish(ctx, broker.Message{Topic: "stream", ID: "after-" + strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}))
	}
	for i := range 50 {
		if m := rec.next(t, 5*time.Second); m.ID != "after-"+strconv.Itoa(i) {
			t.Fatalf("got %s, want after-%d", m.ID, i)
		}
	}
	// The counts live on in the promoted replica (or are written again by
	// the next flush); a new one reaches the other node.
	b.SetCount("stream", 5)
	eventually(t, 10*time.Second, countIs(ctx, a, "stream", 6))
}
