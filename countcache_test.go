package firetower

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	"github.com/gin-gonic/gin"
)

// TestCountRouteCoalesces: concurrent GET /topics/:topic/count of one
// topic make one broker call, and its answer serves the next second's
// requests; an error is not reused.
func TestCountRouteCoalesces(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	var fail atomic.Bool
	b := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	b.count = func(ctx context.Context, topic string) (int, error) {
		calls.Add(1)
		<-release
		if fail.Load() {
			return 0, broker.ErrUnavailable
		}
		return 7, nil
	}
	s := newServer(t, Config{Broker: b})
	const n = 20
	var wg sync.WaitGroup
	codes := make(chan float64, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, body := get(t, s, "/topics/a/count")
			codes <- body["count"].(float64)
		}()
	}
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the other requests are waiting on the call
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 7 {
			t.Fatalf("count %v, want 7", c)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d concurrent requests made %d broker calls, want 1", n, got)
	}
	if _, body := get(t, s, "/topics/a/count"); body["count"] != float64(7) || calls.Load() != 1 {
		t.Fatalf("a request within the second: %v, %d calls", body, calls.Load())
	}
	if _, body := get(t, s, "/topics/b/count"); body["count"] != float64(7) || calls.Load() != 2 {
		t.Fatalf("another topic: %v, %d calls", body, calls.Load())
	}
	time.Sleep(countCacheTTL + 50*time.Millisecond)
	fail.Store(true)
	if code, _ := get(t, s, "/topics/a/count"); code != http.StatusServiceUnavailable || calls.Load() != 3 {
		t.Fatalf("after the TTL, broker down: %d, %d calls", code, calls.Load())
	}
	fail.Store(false)
	if _, body := get(t, s, "/topics/a/count"); body["count"] != float64(7) || calls.Load() != 4 {
		t.Fatalf("the error was reused: %v, %d calls", body, calls.Load())
	}
}

// TestCountReadYourWrites: a count the route cached does not hide a new
// subscriber from GetConnectNum inside SubscribeHandler.
func TestCountReadYourWrites(t *testing.T) {
	seen := make(chan int, 1)
	var s *server
	s = newServer(t, Config{SubscribeHandler: func(c *Conn, topics []string) {
		n, err := s.tower.GetConnectNum(c.Context(), topics[0])
		if err != nil {
			t.Error(err)
		}
		seen <- n
	}})
	if _, body := get(t, s, "/topics/a/count"); body["count"] != float64(0) {
		t.Fatalf("before: %v", body)
	}
	c := dial(t, s, "", nil)
	c.subscribe("a")
	if n := <-seen; n != 1 {
		t.Fatalf("GetConnectNum in SubscribeHandler = %d, want 1", n)
	}
}

// BenchmarkCountRoute is GET /topics/:topic/count through the gin engine
// from concurrent requests for 4 topics, on a broker whose count costs the
// node about 50 µs of CPU (what a round trip to a remote topic service
// costs it, about). ns/op is the node's CPU per request (both cores busy);
// broker-calls/op how many requests still reach the broker.
func BenchmarkCountRoute(b *testing.B) {
	var calls atomic.Int64
	fb := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	fb.count = func(ctx context.Context, topic string) (int, error) {
		calls.Add(1)
		for end := time.Now().Add(50 * time.Microsecond); time.Now().Before(end); {
		}
		return 3, nil
	}
	tower, err := New(Config{Broker: fb})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tower.Shutdown(context.Background()) })
	r := gin.New()
	r.Use(tower.Middleware())
	paths := []string{"/topics/%2Froom%2F1/count", "/topics/%2Froom%2F2/count", "/topics/%2Froom%2F3/count", "/topics/%2Froom%2F4/count"}
	var i atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, paths[i.Add(1)%int64(len(paths))], nil))
			if w.Code != 200 {
				b.Error(w.Code)
				return
			}
		}
	})
	b.ReportMetric(float64(calls.Load())/float64(b.N), "broker-calls/op")
}

// statsBroker reports its link to the cluster as up or down.
type statsBroker struct {
	*fakeBroker
	up *atomic.Bool
}

func (s statsBroker) BrokerStats() map[string]int64 {
	if s.up.Load() {
		return map[string]int64{"connected": 1}
	}
	return map[string]int64{"connected": 0}
}

// TestCountRouteNotReusedWhileDisconnected: while the broker reports it
// is not connected, the route asks it again rather than reuse a count.
func TestCountRouteNotReusedWhileDisconnected(t *testing.T) {
	var calls atomic.Int64
	up := &atomic.Bool{}
	up.Store(true)
	fb := &fakeBroker{Embedded: topicsvc.NewEmbedded()}
	fb.count = func(ctx context.Context, topic string) (int, error) {
		calls.Add(1)
		if !up.Load() {
			return 0, broker.ErrUnavailable
		}
		return 2, nil
	}
	s := newServer(t, Config{Broker: statsBroker{fb, up}})
	get(t, s, "/topics/a/count")
	get(t, s, "/topics/a/count")
	if calls.Load() != 1 {
		t.Fatalf("%d calls while connected, want 1", calls.Load())
	}
	up.Store(false)
	if code, _ := get(t, s, "/topics/a/count"); code != http.StatusServiceUnavailable || calls.Load() != 2 {
		t.Fatalf("disconnected: %d, %d calls", code, calls.Load())
	}
}
