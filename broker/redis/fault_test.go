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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	goredis "github.com/redis/go-redis/v9"
)

// redisServer is a redis-server (or Sentinel) process the test owns, on
// a free loopback port, so that it can kill it and start it again at the
// same address.
type redisServer struct {
	t         *testing.T
	addr, dir string
	args      func(port, dir string) []string
	cmd       *exec.Cmd
}

// plainServer is the arguments of a Redis without persistence (a
// restarted server is empty, as after losing its data, the hardest case for
// the counts), plus extra.
func plainServer(extra ...string) func(port, dir string) []string {
	return func(port, dir string) []string {
		return append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, extra...)
	}
}

func newRedisServer(t *testing.T) *redisServer { return startRedis(t, plainServer()) }

// newSentinel starts a Sentinel that watches master under the name
// "firetower", and declares it down after downAfter.
func newSentinel(t *testing.T, master string, downAfter time.Duration) *redisServer {
	return startRedis(t, func(port, dir string) []string {
		// A Sentinel rewrites its configuration file, so it needs one.
		host, mport, _ := net.SplitHostPort(master)
		conf := filepath.Join(dir, "sentinel.conf")
		must(t, os.WriteFile(conf, []byte(fmt.Sprintf(
			"port %s\nbind 127.0.0.1\ndir %s\n"+
				"sentinel monitor firetower %s %s 1\n"+
				"sentinel down-after-milliseconds firetower %d\n"+
				"sentinel failover-timeout firetower 10000\n",
			port, dir, host, mport, downAfter.Milliseconds())), 0o644))
		return []string{conf, "--sentinel"}
	})
}

func startRedis(t *testing.T, args func(port, dir string) []string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is not installed (apt-get install redis-server; scripts/redis-up.sh needs it too): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	s := &redisServer{t: t, addr: addr, dir: t.TempDir(), args: args}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	log, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(s.t, err)
	defer log.Close()
	s.cmd = exec.Command("redis-server", s.args(port, s.dir)...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	must(s.t, s.cmd.Start())
	c := goredis.NewClient(&goredis.Options{Addr: s.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server did not start on %s:\n%s", s.addr, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *redisServer) kill() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// TestRedisRestart kills Redis under two nodes and starts it again: while
// it is down the nodes answer ErrUnavailable quickly and nothing blocks;
// once it is back, the nodes resubscribe, delivery resumes in order and the
// counts are written again, without help.
func TestRedisRestart(t *testing.T) {
	srv := newRedisServer(t)
	a, b, rec := openPair(t, "redis://"+srv.addr+"/0?prefix="+uniquePrefix())
	ctx := ctxFor(t, 2*time.Minute)
	must(t, b.Subscribe(ctx, "stream"))
	a.SetCount("stream", 1)
	b.SetCount("stream", 2)
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, a, "stream", 3))

	inOrder(t, ctx, a, rec, "stream", "before", 100)

	brokertest.Eventually(t, 10*time.Second, statIs(b, "connected", 1))

	srv.kill()
	brokertest.Eventually(t, 10*time.Second, statIs(b, "connected", 0))
	// Down: every call fails with ErrUnavailable within the broker's
	// Timeout (2 s), even many at once; none blocks.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for p := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				began := time.Now()
				err := a.Publish(ctx, broker.Message{Topic: "stream", ID: fmt.Sprintf("down-%d-%d", p, i), Data: []byte("0")})
				if !isUnavailable(err) {
					errs <- fmt.Errorf("Publish while Redis is down: %v, want ErrUnavailable", err)
				} else if d := time.Since(began); d > 3*time.Second {
					errs <- fmt.Errorf("Publish while Redis is down took %v", d)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := a.Count(ctx, "stream"); !isUnavailable(err) {
		t.Errorf("Count while Redis is down: %v, want ErrUnavailable", err)
	}
	if err := b.Subscribe(ctx, "other"); !isUnavailable(err) {
		t.Errorf("Subscribe while Redis is down: %v, want ErrUnavailable", err)
	}
	a.SetCount("stream", 4) // recorded now, written once Redis is back
	if t.Failed() {
		t.FailNow()
	}

	srv.start()
	// Delivery resumes by itself.
	awaitResumed(t, ctx, a, rec, "stream", time.Now(), 15*time.Second, "Redis restarting")
	inOrder(t, ctx, a, rec, "stream", "after", 100)
	// The restarted Redis was empty: the nodes wrote their counts again,
	// including the one set while it was down.
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, b, "stream", 6))
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, a, "stream", 6))
	must(t, b.Subscribe(ctx, "other"))

	brokertest.Eventually(t, 5*time.Second, statIs(b, "connected", 1))
	sb, sa := b.(broker.StatsReporter).BrokerStats(), a.(broker.StatsReporter).BrokerStats()
	if sb["pubsub_connections_lost_total"] < 1 || sb["pubsub_reconnects_total"] < 1 || sb["messages_received_total"] < 201 {
		t.Errorf("subscriber's stats %v: want a lost and restored connection and 201+ messages", sb)
	}
	if sa["publish_errors_total"] < 1 || sa["messages_published_total"] < 201 || sa["last_heartbeat_timestamp_seconds"] < time.Now().Unix()-10 {
		t.Errorf("publisher's stats %v: want failed and successful publishes and a recent heartbeat", sa)
	}
}

// drainProbes reads the probes still in flight after the first one came
// through: it publishes a marker after them and reads up to it. One
// publisher's messages arrive in order, so nothing but probes may come
// first; a probe published before the subscription was back is lost, which
// is fine.
// openPair opens two started brokers from url: a publishes, and b
// delivers what it receives to rec.
func openPair(t *testing.T, url string) (a, b broker.Broker, rec *recorder) {
	t.Helper()
	open := func() broker.Broker {
		b, err := broker.Open(url, broker.Options{})
		must(t, err)
		return b
	}
	a, b = open(), open()
	rec = newRecorder(10000)
	start(t, a, func(broker.Message) {})
	start(t, b, rec.handle)
	return a, b, rec
}

// awaitResumed publishes probes on topic until one reaches rec, within
// bound of since (the moment of the fault), logs how long that took after
// the fault, and drains the other probes.
func awaitResumed(t *testing.T, ctx context.Context, pub broker.Broker, rec *recorder, topic string, since time.Time, bound time.Duration, fault string) {
	t.Helper()
	for deadline := since.Add(bound); ; {
		if time.Now().After(deadline) {
			t.Fatalf("delivery did not resume within %v of %s", bound, fault)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		pub.Publish(pctx, broker.Message{Topic: topic, ID: "probe", Data: []byte("0")})
		cancel()
		select {
		case m := <-rec.got:
			if m.ID != "probe" {
				t.Fatalf("after %s got %+v first", fault, m)
			}
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	t.Logf("delivery resumed %v after %s", time.Since(since).Round(10*time.Millisecond), fault)
	drainProbes(t, ctx, pub, rec, topic)
}

// inOrder publishes n messages with ids tag-0 … on topic and checks that
// rec receives exactly those, in order.
func inOrder(t *testing.T, ctx context.Context, pub broker.Broker, rec *recorder, topic, tag string, n int) {
	t.Helper()
	for i := range n {
		must(t, pub.Publish(ctx, broker.Message{Topic: topic, ID: tag + "-" + strconv.Itoa(i), Data: []byte(strconv.Itoa(i))}))
	}
	for i := range n {
		if m := rec.next(t, 5*time.Second); m.ID != tag+"-"+strconv.Itoa(i) {
			t.Fatalf("got %s, want %s-%d", m.ID, tag, i)
		}
	}
}

func drainProbes(t *testing.T, ctx context.Context, pub broker.Broker, rec *recorder, topic string) {
	t.Helper()
	must(t, pub.Publish(ctx, broker.Message{Topic: topic, ID: "drained", Data: []byte("0")}))
	for {
		switch m := rec.next(t, 10*time.Second); m.ID {
		case "drained":
			return
		case "probe":
		default:
			t.Fatalf("got %+v among the probes", m)
		}
	}
}

func statIs(b broker.Broker, name string, want int64) func() error {
	return func() error {
		if got := b.(broker.StatsReporter).BrokerStats()[name]; got != want {
			return fmt.Errorf("BrokerStats()[%q] = %d, want %d", name, got, want)
		}
		return nil
	}
}

// TestOpenedClientTimeouts: a broker opened from a URL whose server is
// not there fails fast with ErrUnavailable.
func TestNoServerIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	b, err := broker.Open("redis://"+addr+"/0", broker.Options{})
	must(t, err)
	start(t, b, func(broker.Message) {})
	ctx := ctxFor(t, 30*time.Second)
	for name, call := range map[string]func() error{
		"Publish":   func() error { return b.Publish(ctx, broker.Message{Topic: "x", ID: "1", Data: []byte("1")}) },
		"Subscribe": func() error { return b.Subscribe(ctx, "x") },
		"Count":     func() error { _, err := b.Count(ctx, "x"); return err },
	} {
		began := time.Now()
		err := call()
		if !isUnavailable(err) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
		if !strings.Contains(fmt.Sprint(err), "firetower") {
			t.Errorf("%s: %v does not say whose error it is", name, err)
		}
		d := time.Since(began)
		if d > 3*time.Second {
			t.Errorf("%s took %v", name, d)
		}
		t.Logf("%s failed after %v: %v", name, d.Round(time.Millisecond), err)
	}
}

// TestClusterConnectionsKilled cuts every client connection of the Cluster
// masters. A node that still wants its channels reconnects to their slots'
// masters and delivery resumes; a node whose pub/sub connections had no
// channels left reconnects them to any master, and must still get its
// next subscriptions confirmed by the right one (it replaces a connection
// that Redis answers with MOVED).
func TestClusterConnectionsKilled(t *testing.T) {
	admin := newClusterClient(t)
	prefix := uniquePrefix()
	// The nodes' connections are named after the prefix: the test kills
	// those only, not the connections of other tests or processes that
	// use the same Cluster at the same time.
	a := newBroker(t, newNamedClusterClient(t, prefix), fredis.Options{Prefix: prefix})
	kept := newBroker(t, newNamedClusterClient(t, prefix), fredis.Options{Prefix: prefix})
	emptied := newBroker(t, newNamedClusterClient(t, prefix), fredis.Options{Prefix: prefix, Logger: testLogger(t)})
	recKept, recEmptied := newRecorder(10000), newRecorder(10000)
	start(t, a, func(broker.Message) {})
	start(t, kept, recKept.handle)
	start(t, emptied, recEmptied.handle)
	ctx := ctxFor(t, time.Minute)

	// 64 topics cover the 16 shard groups several times over.
	topic := func(set string, i int) string { return fmt.Sprintf("/%s/%d", set, i) }
	for i := range 64 {
		must(t, kept.Subscribe(ctx, topic("kept", i)))
		must(t, emptied.Subscribe(ctx, topic("gone", i)))
	}
	for i := range 64 {
		must(t, emptied.Unsubscribe(ctx, topic("gone", i)))
	}

	var killed atomic.Int64 // ForEachMaster runs on every master at once
	must(t, admin.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(list, "\n") {
			var id, name string
			for _, field := range strings.Fields(line) {
				k, v, _ := strings.Cut(field, "=")
				switch k {
				case "id":
					id = v
				case "name":
					name = v
				}
			}
			if name != prefix || id == "" {
				continue
			}
			n, err := c.ClientKillByFilter(ctx, "ID", id).Result()
			if err != nil {
				return err
			}
			killed.Add(n)
		}
		return nil
	}))
	if killed.Load() == 0 {
		t.Fatal("no client connection was killed")
	}

	// Delivery to the kept subscriptions resumes by itself.
	pending := map[string]bool{}
	for i := range 64 {
		pending[topic("kept", i)] = true
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 64 topics never delivered again after the connections were killed", len(pending))
		}
		for tp := range pending {
			a.Publish(ctx, broker.Message{Topic: tp, ID: "probe", Data: []byte("0")})
		}
		wait := time.After(200 * time.Millisecond)
	drain:
		for {
			select {
			case m := <-recKept.got:
				delete(pending, m.Topic)
			case <-wait:
				break drain
			}
		}
	}

	// New subscriptions on the emptied node are confirmed and delivered.
	for i := range 64 {
		must(t, emptied.Subscribe(ctx, topic("new", i)))
	}
	for i := range 64 {
		must(t, a.Publish(ctx, broker.Message{Topic: topic("new", i), ID: strconv.Itoa(i), Data: []byte("1")}))
	}
	got := map[string]bool{}
	for range 64 {
		got[recEmptied.next(t, 5*time.Second).Topic] = true
	}
	if len(got) != 64 {
		t.Fatalf("got messages of %d distinct new topics, want 64", len(got))
	}
}
