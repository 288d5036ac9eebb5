//go:build redis

package redis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	fredis "github.com/OSMeteor/firetower/broker/redis"
	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
)

// The tests need a standalone Redis and a Redis Cluster; scripts/redis-up.sh
// starts both and prints these variables.
const (
	envAddr         = "FIRETOWER_TEST_REDIS_ADDR"
	envClusterAddrs = "FIRETOWER_TEST_REDIS_CLUSTER_ADDRS"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helperNode())
	}
	// The fault tests stop Redis on purpose; go-redis would log every failed
	// dial of the outage. The tests check the broker's own errors instead.
	goredis.SetLogger(quietLogger{})
	code := m.Run()
	if code == 0 {
		if err := checkLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// checkLeaks fails when goroutines of the broker outlive the tests: every
// broker was closed, so none may remain.
func checkLeaks() error {
	var stacks string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "broker/redis.(*") {
			return nil
		}
	}
	var leaked []string
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "broker/redis.(*") {
			leaked = append(leaked, g)
		}
	}
	return fmt.Errorf("leaked goroutines of the Redis broker:\n%s", strings.Join(leaked, "\n\n"))
}

func needEnv(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: start Redis with eval \"$(scripts/redis-up.sh DIR)\" before go test -tags redis", name)
	}
	return v
}

func standaloneAddr(t testing.TB) string { return needEnv(t, envAddr) }

func clusterAddrs(t testing.TB) []string {
	return strings.Split(needEnv(t, envClusterAddrs), ",")
}

// newClient returns a client of the standalone Redis, closed when the test
// ends (after the brokers, whose cleanups run first).
func newClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, DialerRetries: 1, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

func newClusterClient(t testing.TB) *goredis.ClusterClient {
	t.Helper()
	return newNamedClusterClient(t, "")
}

// newNamedClusterClient is newClusterClient whose connections carry name
// (CLIENT SETNAME), so that a test can find them among those of the other
// tests and processes that share the Cluster.
func newNamedClusterClient(t testing.TB, name string) *goredis.ClusterClient {
	t.Helper()
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: clusterAddrs(t), ClientName: name, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, DialerRetries: 1, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	return c
}

// uniquePrefix isolates one test's keys and channels from every other's.
func uniquePrefix() string { return "ftt-" + uuid.NewString()[:8] }

func newBroker(t testing.TB, client goredis.UniversalClient, opts fredis.Options) *fredis.Broker {
	t.Helper()
	b, err := fredis.New(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The conformance runs on brokers made with New use a short NodeTTL, so
// that a killed node's presence is gone in about testNodeTTL plus a sweep
// interval; those opened from URLs have the default NodeTTL (10 s), and
// the documented bound of 15 s.
const (
	testNodeTTL      = time.Second
	testNodeDeath    = 3 * time.Second
	defaultNodeDeath = 15 * time.Second
)

// kill is brokertest.Config.Kill: the node stops as if it crashed.
func kill(t *testing.T, b broker.Broker) {
	fb, ok := b.(*fredis.Broker)
	if !ok {
		t.Fatalf("Kill: broker %T", b)
	}
	fredis.Kill(fb)
}

func TestConformanceStandalone(t *testing.T) {
	addr := standaloneAddr(t)
	p := newPrefixes(func(t *testing.T) goredis.UniversalClient { return newClient(t, addr) })
	brokertest.Run(t, brokertest.Config{Streams: true, LoseStreams: p.loseStreams, Presence: true, Kill: kill, NodeDeath: testNodeDeath, NewCluster: func(t *testing.T, n int) []broker.Broker {
		prefix := p.new(t)
		bs := make([]broker.Broker, n)
		for i := range bs {
			bs[i] = newBroker(t, newClient(t, addr), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
		}
		return bs
	}})
}

func TestConformanceCluster(t *testing.T) {
	clusterAddrs(t)
	p := newPrefixes(func(t *testing.T) goredis.UniversalClient { return newClusterClient(t) })
	brokertest.Run(t, brokertest.Config{Streams: true, LoseStreams: p.loseStreams, Presence: true, Kill: kill, NodeDeath: testNodeDeath, NewCluster: func(t *testing.T, n int) []broker.Broker {
		prefix := p.new(t)
		bs := make([]broker.Broker, n)
		for i := range bs {
			bs[i] = newBroker(t, newClusterClient(t), fredis.Options{Prefix: prefix, NodeTTL: testNodeTTL})
		}
		return bs
	}})
}

// TestConformanceURL runs the suite on brokers opened the way
// FIRETOWER_BROKER opens them.
func TestConformanceURL(t *testing.T) {
	addr := standaloneAddr(t)
	addrs := clusterAddrs(t)
	for name, url := range map[string]string{
		"redis":         "redis://" + addr + "/0",
		"redis+cluster": "redis+cluster://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr="),
	} {
		t.Run(name, func(t *testing.T) {
			p := newPrefixes(func(t *testing.T) goredis.UniversalClient {
				if strings.Contains(url, "+cluster") {
					return newClusterClient(t)
				}
				return newClient(t, addr)
			})
			brokertest.Run(t, brokertest.Config{Streams: true, LoseStreams: p.loseStreams, Presence: true, Kill: kill, NodeDeath: defaultNodeDeath, NewCluster: func(t *testing.T, n int) []broker.Broker {
				u := url + sep(url) + "prefix=" + p.new(t)
				bs := make([]broker.Broker, n)
				for i := range bs {
					b, err := broker.Open(u, broker.Options{})
					if err != nil {
						t.Fatalf("Open(%q): %v", u, err)
					}
					bs[i] = b
				}
				return bs
			}})
		})
	}
}

// TestConformanceSentinel runs the suite through a Sentinel, on a master
// and a Sentinel the test starts.
func TestConformanceSentinel(t *testing.T) {
	master := newRedisServer(t)
	sentinel := newSentinel(t, master.addr, 30*time.Second)
	url := "redis+sentinel://" + sentinel.addr + "?master_name=firetower"
	p := newPrefixes(func(t *testing.T) goredis.UniversalClient { return newClient(t, master.addr) })
	brokertest.Run(t, brokertest.Config{Streams: true, LoseStreams: p.loseStreams, Presence: true, Kill: kill, NodeDeath: defaultNodeDeath, NewCluster: func(t *testing.T, n int) []broker.Broker {
		u := url + "&prefix=" + p.new(t)
		bs := make([]broker.Broker, n)
		for i := range bs {
			b, err := broker.Open(u, broker.Options{})
			if err != nil {
				t.Fatalf("Open(%q): %v", u, err)
			}
			bs[i] = b
		}
		return bs
	}})
}

func sep(url string) string {
	if strings.Contains(url, "?") {
		return "&"
	}
	return "?"
}

func TestOpenURLErrors(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:6379/notanumber",
		"redis://127.0.0.1:6379/0?no_such_option=1",
		"redis://127.0.0.1:6379/0?prefix=has{brace}",
		"redis+cluster://127.0.0.1:7000?bogus=1",
	} {
		b, err := broker.Open(u, broker.Options{})
		if err == nil {
			b.Close()
			t.Errorf("Open(%q) succeeded, want an error", u)
		}
	}
}

// TestOpenTLSSchemes: rediss URLs open clients that speak TLS; against the
// plain test servers every call fails, as unavailable.
func TestOpenTLSSchemes(t *testing.T) {
	addr := standaloneAddr(t)
	addrs := clusterAddrs(t)
	for _, u := range []string{
		"rediss://" + addr + "/0?dial_timeout=300ms",
		"rediss+cluster://" + addrs[0] + "?dial_timeout=300ms&addr=" + addrs[1],
	} {
		b, err := broker.Open(u, broker.Options{})
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		start(t, b, func(broker.Message) {})
		err = b.Publish(ctxFor(t, 10*time.Second), broker.Message{Topic: "x", ID: "1", Data: []byte("1")})
		if !isUnavailable(err) {
			t.Errorf("%s: Publish over TLS to a plain server: %v, want ErrUnavailable", u, err)
		}
	}
}

func TestOptionsValidated(t *testing.T) {
	c := newClient(t, "127.0.0.1:1")
	for _, o := range []fredis.Options{
		{Prefix: "a{b"},
		{Prefix: "a b"},
		{NodeTTL: 16 * time.Second},
		{NodeTTL: time.Millisecond},
		{FlushInterval: 2 * time.Second},
		{Shards: -1},
	} {
		if _, err := fredis.New(c, o); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", o)
		}
	}
	if _, err := fredis.New(nil, fredis.Options{}); err == nil {
		t.Error("New(nil client) succeeded")
	}
}

// recorder is a node's handler that keeps what it received.
type recorder struct {
	got  chan broker.Message
	seen atomic.Int64
}

func newRecorder(size int) *recorder { return &recorder{got: make(chan broker.Message, size)} }

func (r *recorder) handle(m broker.Message) {
	r.seen.Add(1)
	select {
	case r.got <- m:
	default:
		panic("recorder overflow")
	}
}

// next returns the next message received within d.
func (r *recorder) next(t testing.TB, d time.Duration) broker.Message {
	t.Helper()
	select {
	case m := <-r.got:
		return m
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
		return broker.Message{}
	}
}

func start(t testing.TB, b broker.Broker, h broker.Handler) {
	t.Helper()
	if err := b.Start(h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testLogger logs through t, so that a failing test shows what the broker
// saw.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func isUnavailable(err error) bool { return errors.Is(err, broker.ErrUnavailable) }
