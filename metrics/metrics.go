// Package metrics exposes a firetower node's figures to Prometheus:
//
//	tower, err := firetower.New(cfg)
//	...
//	if err := metrics.Register(tower, reg); err != nil { ... }
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The collector reads Tower.Stats at scrape time, so the hot path pays
// nothing for metrics beyond the atomic counters the node keeps anyway.
// It lives in a package of its own so that an app without metrics does
// not link the Prometheus client.
package metrics

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/OSMeteor/firetower"
	"github.com/OSMeteor/firetower/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// Register registers a collector of t's figures (firetower_connections,
// firetower_messages_delivered_total, ...) on reg; t's Shutdown
// unregisters it, so that a new Tower may register on the same reg. Wrap
// reg with prometheus.WrapRegistererWith to label several nodes of one
// process. Nothing is registered globally.
func Register(t *firetower.Tower, reg prometheus.Registerer) error {
	c := newCollector(t)
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("firetower: registering metrics: %w", err)
	}
	t.RegisterOnShutdown(func() { reg.Unregister(c) })
	return nil
}

// collector exposes a Tower's figures to Prometheus.
type collector struct {
	t *firetower.Tower

	connections, connectionsOpened, subscriptions, topics       *prometheus.Desc
	framesIn, published, delivered, framesOut, writes, bytesOut *prometheus.Desc
	dropped, disconnects, latency, brokerErrors                 *prometheus.Desc
	recovered, recoveryFailed, duplicates, replacedLatest       *prometheus.Desc

	// The broker's own figures (broker.StatsReporter), one metric each,
	// firetower_broker_<name>.
	reporter    broker.StatsReporter
	bmu         sync.Mutex
	brokerDescs map[string]*prometheus.Desc
}

var _ prometheus.Collector = (*collector)(nil)

func newCollector(t *firetower.Tower) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("firetower_"+name, help, labels, nil)
	}
	m := &collector{
		t:                 t,
		connections:       d("connections", "WebSocket connections open now."),
		connectionsOpened: d("connections_opened_total", "WebSocket connections opened since the node started."),
		subscriptions:     d("subscriptions", "Subscriptions (connection and topic pairs) now."),
		topics:            d("topics", "Topics with at least one subscriber on this node now."),
		framesIn:          d("frames_received_total", "Client frames read."),
		published:         d("messages_published_total", "Messages published through this node (REST, client, Tower.Publish), one per topic."),
		delivered:         d("messages_delivered_total", "Messages queued to this node's subscribers, one per subscriber."),
		framesOut:         d("frames_sent_total", "Server frames written to connections, replies included."),
		writes:            d("websocket_writes_total", "WebSocket frames written (a batch of server frames counts once)."),
		bytesOut:          d("bytes_out_total", "Bytes of server frames written to connections."),
		dropped:           d("dropped_messages_total", "Frames dropped: queue_full (with a connection closed for reading too slowly), rate_limited (client frames over the inbound rate), invalid_data (messages from the broker whose data is not valid JSON in valid UTF-8).", "reason"),
		disconnects:       d("disconnects_total", "Connections ended, by reason: client, ping_timeout, too_large, protocol_error, slow, shutdown, server, write_error, rate_limited.", "reason"),
		latency:           d("delivery_latency_seconds", "Time from queueing a frame to finishing its write, observed once per write."),
		brokerErrors:      d("broker_errors_total", "Failed broker calls."),
		recovered:         d("stream_messages_recovered_total", "Stream messages sent to subscribers that recovered them after a reconnect."),
		recoveryFailed:    d("stream_recoveries_failed_total", "Subscribed topics asked with since that could not be recovered (the epoch changed or the window no longer held the position)."),
		duplicates:        d("stream_duplicates_dropped_total", "Live stream messages a subscriber already had from its recovery, dropped."),
		replacedLatest:    d("latest_replaced_total", "Queued frames of latest-value topics replaced by a newer value for a slow subscriber."),
		brokerDescs:       map[string]*prometheus.Desc{},
	}
	if r, ok := t.Broker().(broker.StatsReporter); ok {
		m.reporter = r
		// Described up front, so that a registry sees every name; the
		// names a broker reports do not change.
		for name := range r.BrokerStats() {
			m.brokerDesc(name)
		}
	}
	return m
}

// brokerDesc returns the description of one of the broker's figures.
func (m *collector) brokerDesc(name string) *prometheus.Desc {
	m.bmu.Lock()
	defer m.bmu.Unlock()
	d := m.brokerDescs[name]
	if d == nil {
		d = prometheus.NewDesc("firetower_broker_"+name, "The broker's "+strings.ReplaceAll(name, "_", " ")+", as it reports it.", nil, nil)
		m.brokerDescs[name] = d
	}
	return d
}

// Describe implements prometheus.Collector.
func (m *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		m.connections, m.connectionsOpened, m.subscriptions, m.topics,
		m.framesIn, m.published, m.delivered, m.framesOut, m.writes, m.bytesOut,
		m.dropped, m.disconnects, m.latency, m.brokerErrors,
		m.recovered, m.recoveryFailed, m.duplicates, m.replacedLatest,
	} {
		ch <- d
	}
	m.bmu.Lock()
	descs := slices.Collect(maps.Values(m.brokerDescs))
	m.bmu.Unlock()
	for _, d := range descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *collector) Collect(ch chan<- prometheus.Metric) {
	s := m.t.Stats()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(m.connections, s.Connections)
	counter(m.connectionsOpened, s.ConnectionsTotal)
	gauge(m.subscriptions, s.Subscriptions)
	gauge(m.topics, s.Topics)
	counter(m.framesIn, s.FramesIn)
	counter(m.published, s.Published)
	counter(m.delivered, s.Delivered)
	counter(m.framesOut, s.FramesOut)
	counter(m.writes, s.Writes)
	counter(m.bytesOut, s.BytesOut)
	counter(m.dropped, s.DroppedQueueFull, "queue_full")
	counter(m.dropped, s.RateLimited, "rate_limited")
	counter(m.dropped, s.DroppedInvalid, "invalid_data")
	for reason, n := range s.Disconnects {
		counter(m.disconnects, n, reason)
	}
	buckets := make(map[float64]uint64, len(s.Latency.Buckets))
	for i, b := range s.Latency.Buckets {
		buckets[b] = s.Latency.Counts[i]
	}
	ch <- prometheus.MustNewConstHistogram(m.latency, s.Latency.Count, s.Latency.Sum, buckets)
	counter(m.brokerErrors, s.BrokerErrors)
	counter(m.recovered, s.Recovered)
	counter(m.recoveryFailed, s.RecoveryFailed)
	counter(m.duplicates, s.Duplicates)
	counter(m.replacedLatest, s.ReplacedLatest)
	if m.reporter != nil {
		for name, v := range m.reporter.BrokerStats() {
			if strings.HasSuffix(name, "_total") {
				counter(m.brokerDesc(name), v)
			} else {
				gauge(m.brokerDesc(name), v)
			}
		}
	}
}
