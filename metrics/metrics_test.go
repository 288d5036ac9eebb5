package metrics_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/metrics"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/server"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func init() { gin.SetMode(gin.TestMode) }

const token = "s3cret"

// node is a Tower over a real gin engine and HTTP server, with its
// metrics on a registry of its own and that registry served as
// Prometheus scrapes it.
type node struct {
	t      *testing.T
	tower  *firetower.Tower
	srv    *httptest.Server
	scrape *httptest.Server
}

func newNode(t *testing.T, cfg firetower.Config) *node {
	t.Helper()
	tower, err := firetower.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := metrics.Register(tower, reg); err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(tower.Middleware())
	n := &node{t: t, tower: tower, srv: httptest.NewServer(r),
		scrape: httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))}
	t.Cleanup(func() {
		n.srv.Close()
		n.scrape.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tower.Shutdown(ctx)
	})
	return n
}

// subscriber dials /ws and subscribes to topic, waiting for the reply.
func (n *node) subscriber(topic string) *websocket.Conn {
	n.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(n.srv.URL, "http")+"/ws", nil)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { ws.Close() })
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","topic":"`+topic+`"}`)); err != nil {
		n.t.Fatal(err)
	}
	n.expect(ws, `"type":"subscribed"`)
	return ws
}

// expect reads one frame and checks that it contains want.
func (n *node) expect(ws *websocket.Conn, want string) string {
	n.t.Helper()
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(b), want) {
		n.t.Fatalf("read %s (%v), want a frame with %s", b, err, want)
	}
	return string(b)
}

func (n *node) publish(body string) {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.srv.URL+"/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("publish %s: %d", body, resp.StatusCode)
	}
}

func (n *node) families() (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(n.scrape.URL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("scrape: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// value returns the value of a counter or gauge with the given labels
// (name=value pairs), and whether it exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
next:
	for _, m := range fams[name].GetMetric() {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
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

// expect checks exact values (name or name{label="value"}), retrying for
// a while: frames are counted once their write returned, which may be
// just after the client read them.
func (n *node) expectMetrics(want map[string]float64) map[string]*dto.MetricFamily {
	n.t.Helper()
	var fams map[string]*dto.MetricFamily
	brokertest.Eventually(n.t, 10*time.Second, func() (err error) {
		if fams, err = n.families(); err != nil {
			return err
		}
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
			if got, ok := value(fams, name, labels...); !ok || got != v {
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
// its rate limit, then everyone leaves; the scraped figures are exact and
// agree with Tower.Stats.
func TestMetricsAfterWorkload(t *testing.T) {
	// One frame a second at most after a burst of one: each subscriber
	// sends one frame, the noisy client more.
	n := newNode(t, firetower.Config{APIToken: token, InboundRate: 0.01, InboundBurst: 1})
	const subscribers, publishes = 100, 10
	clients := make([]*websocket.Conn, subscribers)
	for i := range clients {
		clients[i] = n.subscriber("/metrics/feed")
	}
	noisy := n.subscriber("/metrics/noisy")
	for range 5 {
		noisy.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`))
	}
	for range 5 {
		n.expect(noisy, `"code":"rate_limited"`)
	}
	for i := range publishes {
		n.publish(fmt.Sprintf(`{"topic":"/metrics/feed","data":{"i":%d}}`, i))
	}
	for _, ws := range clients {
		for i := range publishes {
			n.expect(ws, fmt.Sprintf(`"data":{"i":%d}`, i))
		}
	}
	fams := n.expectMetrics(map[string]float64{
		"firetower_connections":                                   subscribers + 1,
		"firetower_connections_opened_total":                      subscribers + 1,
		"firetower_subscriptions":                                 subscribers + 1,
		"firetower_topics":                                        2,
		"firetower_frames_received_total":                         subscribers + 6,
		"firetower_messages_published_total":                      publishes,
		"firetower_messages_delivered_total":                      subscribers * publishes, // 1,000
		"firetower_frames_sent_total":                             subscribers*(1+publishes) + 6,
		"firetower_websocket_writes_total":                        subscribers*(1+publishes) + 6,
		`firetower_dropped_messages_total{reason="rate_limited"}`: 5,
		`firetower_dropped_messages_total{reason="queue_full"}`:   0,
		`firetower_disconnects_total{reason="client"}`:            0,
		"firetower_broker_errors_total":                           0,
	})
	if got, _ := value(fams, "firetower_bytes_out_total"); int64(got) != n.tower.Stats().BytesOut || got == 0 {
		t.Errorf("firetower_bytes_out_total %v, Stats().BytesOut %d", got, n.tower.Stats().BytesOut)
	}
	// The embedded broker reports only its streams' figures: no topic
	// here keeps history.
	for name := range fams {
		if strings.HasPrefix(name, "firetower_broker_") && name != "firetower_broker_errors_total" && !strings.Contains(name, "stream") {
			t.Errorf("the embedded broker reports figures besides its streams': %s", name)
		}
	}
	if v, ok := value(fams, "firetower_broker_streams"); !ok || v != 0 {
		t.Errorf("firetower_broker_streams %v (exported %v), want 0", v, ok)
	}
	if v, _ := value(fams, "firetower_broker_stream_max_bytes"); v <= 0 {
		t.Errorf("firetower_broker_stream_max_bytes %v", v)
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
	if b, want := h.GetBucket(), n.tower.Stats().Latency.Buckets; len(b) < len(want) || b[len(want)-1].GetUpperBound() != 5 || b[0].GetUpperBound() != 0.00005 {
		t.Errorf("buckets %v, want the Stats buckets from 50µs to 5s", b)
	}

	for _, ws := range append(clients, noisy) {
		ws.Close()
	}
	n.expectMetrics(map[string]float64{
		"firetower_connections":                        0,
		"firetower_subscriptions":                      0,
		"firetower_topics":                             0,
		`firetower_disconnects_total{reason="client"}`: subscribers + 1,
		`firetower_disconnects_total{reason="slow"}`:   0,
	})
}

// TestRegisterAndShutdown: a Registerer takes one Tower's collector at a
// time; Shutdown gives it back.
func TestRegisterAndShutdown(t *testing.T) {
	reg := prometheus.NewRegistry()
	labelled := func(id string) prometheus.Registerer {
		return prometheus.WrapRegistererWith(prometheus.Labels{"node": id}, reg)
	}
	tower := func(id string) (*firetower.Tower, error) {
		tw, err := firetower.New(firetower.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := metrics.Register(tw, labelled(id)); err != nil {
			tw.Shutdown(context.Background())
			return nil, err
		}
		return tw, nil
	}
	first, err := tower("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tower("a"); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Fatalf("a second Tower with the same labels: %v", err)
	}
	// Labelled per node, two Towers share a registry.
	second, err := tower("b")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	third, err := tower("a")
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
	// Registering on a Tower already shut down leaves nothing behind.
	fresh := prometheus.NewRegistry()
	if err := metrics.Register(second, fresh); err != nil {
		t.Fatal(err)
	}
	if fams, _ := fresh.Gather(); len(fams) != 0 {
		t.Fatalf("%d metric families registered for a Tower already shut down", len(fams))
	}
}

// TestRemoteBroker: with a topic service, the broker's own figures are
// exported: its session going down and coming back.
func TestRemoteBroker(t *testing.T) {
	serve := func(addr string) *server.Server {
		t.Helper()
		srv, err := server.New(server.Config{Token: "svc"})
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
	b, err := client.Dial(addr, client.Options{Token: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, firetower.Config{APIToken: token, Broker: b})
	n.subscriber("remote")
	n.expectMetrics(map[string]float64{
		"firetower_broker_connected":        1,
		"firetower_broker_reconnects_total": 0,
		"firetower_subscriptions":           1,
	})
	srv.Stop()
	n.expectMetrics(map[string]float64{"firetower_broker_connected": 0})
	serve(addr)
	n.expectMetrics(map[string]float64{"firetower_broker_connected": 1, "firetower_broker_reconnects_total": 1})
}
