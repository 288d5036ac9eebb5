package firetower

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/OSMeteor/firetower/topicsvc/client"
	svcserver "github.com/OSMeteor/firetower/topicsvc/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scraper serves a registry over HTTP, as Prometheus would scrape it.
type scraper struct {
	t   testing.TB
	srv *httptest.Server
}

func newScraper(t testing.TB, reg *prometheus.Registry) *scraper {
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(srv.Close)
	return &scraper{t: t, srv: srv}
}

func (s *scraper) scrape() map[string]*dto.MetricFamily {
	s.t.Helper()
	resp, err := http.Get(s.srv.URL)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		s.t.Fatalf("scrape: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("scrape: %v", err)
	}
	return fams
}

// value returns the value of a counter or gauge with the given labels
// (name=value pairs), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// expectMetrics checks exact values, retrying for a while: frames are
// counted once their write returned, which may be just after the client
// read them.
func expectMetrics(t *testing.T, s *scraper, want map[string]float64) map[string]*dto.MetricFamily {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	eventually(t, func() error {
		fams = s.scrape()
		var bad []string
		for key, v := range want {
			name, labels := key, []string(nil)
			if i := strings.IndexByte(key, '{'); i >= 0 {
				name = key[:i]
				for _, kv := range strings.Split(strings.TrimSuffix(key[i+1:], "}"), ",") {
					k, v, _ := strings.Cut(kv, "=")
					labels = append(labels, k, strings.Trim(v, `"`))
				}
			}
			got, ok := value(fams, name, labels...)
			if !ok || got != v {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", key, got, ok, v))
			}
		}
		if bad != nil {
			return fmt.Errorf("metrics:\n%s", strings.Join(bad, "\n"))
		}
		return nil
	})
	return fams
}

// TestMetricsAfterWorkload: 100 subscribers, 10 publishes, one client over
// its rate limit, then everyone leaves; the scraped figures are exact.
func TestMetricsAfterWorkload(t *testing.T) {
	reg := prometheus.NewRegistry()
	scr := newScraper(t, reg)
	// One frame a second at most after a burst of one: each subscriber
	// sends one frame, the noisy client more.
	s := newServer(t, Config{APIToken: testToken, Metrics: reg, InboundRate: 0.01, InboundBurst: 1})

	const subscribers, publishes = 100, 10
	clients := make([]*client, subscribers)
	for i := range clients {
		clients[i] = dial(t, s, "", nil)
		clients[i].subscribe("/metrics/feed")
	}
	noisy := dial(t, s, "", nil)
	for range 6 {
		noisy.send(`{"type":"ping"}`)
	}
	noisy.expect(TypePong)
	for range 5 {
		noisy.expectError(CodeRateLimited)
	}
	for i := range publishes {
		if code, body := post(t, s, "/publish", testToken, fmt.Sprintf(`{"topic":"/metrics/feed","data":{"i":%d}}`, i)); code != 200 {
			t.Fatalf("publish: %d %v", code, body)
		}
	}
	// Bytes as the clients received them: without batching, one WebSocket
	// frame per server frame.
	bytesIn := len(`{"type":"pong"}`)
	for range 5 {
		bytesIn += len(errorFrame(&protocolError{code: CodeRateLimited, message: "frame dropped: more than the allowed frames per second"}, nil))
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := len(`{"type":"subscribed","topic":["/metrics/feed"]}`)
			for i := range publishes {
				f := c.next()
				if f.Type != TypePublish || string(f.Data) != fmt.Sprintf(`{"i":%d}`, i) {
					t.Errorf("message %d arrived as %s", i, f.raw)
					return
				}
				n += len(f.raw)
			}
			mu.Lock()
			bytesIn += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	fams := expectMetrics(t, scr, map[string]float64{
		"firetower_connections":                                   subscribers + 1,
		"firetower_connections_opened_total":                      subscribers + 1,
		"firetower_subscriptions":                                 subscribers,
		"firetower_topics":                                        1,
		"firetower_frames_received_total":                         subscribers + 6,
		"firetower_messages_published_total":                      publishes,
		"firetower_messages_delivered_total":                      subscribers * publishes, // 1,000
		"firetower_frames_sent_total":                             subscribers*(1+publishes) + 6,
		"firetower_websocket_writes_total":                        subscribers*(1+publishes) + 6,
		"firetower_bytes_out_total":                               float64(bytesIn),
		`firetower_dropped_messages_total{reason="rate_limited"}`: 5,
		`firetower_dropped_messages_total{reason="queue_full"}`:   0,
		`firetower_disconnects_total{reason="client"}`:            0,
		"firetower_broker_errors_total":                           0,
	})
	for name := range fams {
		if strings.HasPrefix(name, "firetower_broker_") && name != "firetower_broker_errors_total" {
			t.Errorf("the embedded broker reports no figures of its own, yet %s is exported", name)
		}
	}
	h := fams["firetower_delivery_latency_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() == 0 || h.GetSampleCount() > uint64(subscribers*(1+publishes)+6) || h.GetSampleSum() <= 0 {
		t.Errorf("latency histogram: count %d, sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	var prev uint64
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() < prev || b.GetCumulativeCount() > h.GetSampleCount() {
			t.Errorf("bucket %v: %d after %d, of %d", b.GetUpperBound(), b.GetCumulativeCount(), prev, h.GetSampleCount())
		}
		prev = b.GetCumulativeCount()
	}
	if b := h.GetBucket(); len(b) < len(latencyBuckets) || b[len(latencyBuckets)-1].GetUpperBound() != 5 || b[0].GetUpperBound() != 0.00005 {
		t.Errorf("buckets %v, want the Stats buckets from 50µs to 5s", b)
	}

	for _, c := range append(clients, noisy) {
		c.ws.Close()
	}
	expectMetrics(t, scr, map[string]float64{
		"firetower_connections":                        0,
		"firetower_subscriptions":                      0,
		"firetower_topics":                             0,
		`firetower_disconnects_total{reason="client"}`: subscribers + 1,
		`firetower_disconnects_total{reason="slow"}`:   0,
	})
}

// TestMetricsRegistration: a Registerer takes one Tower's collector at a
// time; Shutdown gives it back.
func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	node := func(id string) prometheus.Registerer {
		return prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg)
	}
	first, err := New(Config{Metrics: node("a")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Metrics: node("a")}); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Fatalf("a second Tower with the same labels: %v", err)
	}
	// Labelled per node, two Towers share a registry.
	second, err := New(Config{Metrics: node("b")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	third, err := New(Config{Metrics: node("a")})
	if err != nil {
		t.Fatalf("after Shutdown the labels are free again: %v", err)
	}
	if fams, _ := reg.Gather(); len(fams) == 0 || len(fams[0].GetMetric()) != 2 {
		t.Fatalf("two nodes registered, gathered %v", fams)
	}
	third.Shutdown(ctx)
	second.Shutdown(ctx)
	if fams, _ := reg.Gather(); len(fams) != 0 {
		t.Fatalf("%d metric families left after every Shutdown", len(fams))
	}
}

// TestMetricsRemoteBroker: with a topic service, the broker's own
// figures are exported: its session going down and coming back.
func TestMetricsRemoteBroker(t *testing.T) {
	serve := func(addr string) *svcserver.Server {
		t.Helper()
		srv, err := svcserver.New(svcserver.Config{Token: "svc"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		t.Cleanup(srv.Stop)
		return srv
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := serve(addr)
	reg := prometheus.NewRegistry()
	scr := newScraper(t, reg)
	s := newServer(t, Config{APIToken: testToken, Metrics: reg, BrokerURL: "topicsvc://" + addr, BrokerToken: "svc"})
	dial(t, s, "", nil).subscribe("remote")
	expectMetrics(t, scr, map[string]float64{
		"firetower_broker_connected":        1,
		"firetower_broker_reconnects_total": 0,
		"firetower_subscriptions":           1,
	})
	// The node sends its counts to the service within a second.
	eventually(t, func() error {
		var st OpsStats
		getAuth(t, s, "/stats", testToken, &st)
		if len(st.Nodes) != 1 || st.Nodes[0].Connections != 1 || st.Topics.Scope != "cluster" || st.Topics.Total != 1 || st.Broker["connected"] != 1 {
			return fmt.Errorf("stats through the service: nodes %+v topics %+v broker %v", st.Nodes, st.Topics, st.Broker)
		}
		return nil
	})
	srv.Stop()
	expectMetrics(t, scr, map[string]float64{"firetower_broker_connected": 0})
	serve(addr)
	expectMetrics(t, scr, map[string]float64{"firetower_broker_connected": 1, "firetower_broker_reconnects_total": 1})
}
