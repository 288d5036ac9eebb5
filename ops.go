package firetower

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/gin-gonic/gin"
)

// The operations routes: GET {prefix}/stats (JSON) and, with
// Config.Dashboard, the page at {prefix}/dashboard (assets.go) with its
// live feed at {prefix}/dashboard/events; GET {prefix}/topics is in
// listing.go.
//
// Authorization. All data goes through authorizeREST, exactly like
// POST /publish. A browser cannot attach a bearer header to a navigation,
// so the page is split: its HTML, script and style are public and hold
// no data, and the script fetches the feed with the header. It asks for
// the token once and keeps it in sessionStorage (this tab only, gone when
// the tab closes); a link may carry it in the fragment (/dashboard#token=…),
// which browsers never send to a server or put in a Referer, and the page
// moves it to sessionStorage and strips it from the address bar. No
// cookie is ever set, so no other site can make a visitor's browser read
// or act with the dashboard's authority (no CSRF), and a strict
// Content-Security-Policy keeps scripts to the page's own. When the app
// sets AuthorizeREST (for example to check its own session cookie), the
// page first asks without a token and uses the app's answer.

const (
	// historyLen is how many one-second samples the connection chart keeps.
	historyLen = 300
	// topTopics is how many busiest topics /stats and the dashboard show.
	topTopics = 10
	// nodesTTL is how long the broker's node list is reused: every open
	// dashboard asks each second, the broker once a second per node.
	nodesTTL = time.Second
)

// ops is a node's operations state: the sampler behind the rates and the
// chart, the cached topic listing and node list. It takes what it reads
// from the node as functions and the broker, not the Tower.
type ops struct {
	stats   func() Stats               // the node's figures
	local   func() []broker.TopicCount // this node's topics and counts
	broker  broker.Broker
	started time.Time

	samplerOnce sync.Once
	stopOnce    sync.Once
	done        chan struct{} // closed by stop
	samplerDone chan struct{} // closed when the sampler returns

	mu      sync.Mutex
	history []sample // oldest first, at most historyLen

	listing listingCache
	nodes   nodesCache
}

func newOps(t *Tower) *ops {
	o := &ops{
		stats:       t.Stats,
		local:       t.hub.topics,
		broker:      t.broker,
		started:     time.Now(),
		done:        make(chan struct{}),
		samplerDone: make(chan struct{}),
	}
	if t.cfg.Dashboard {
		// The chart has a history from the start, not from the first look.
		o.startSampler()
	}
	return o
}

// stop stops the sampler and ends the live feeds.
func (o *ops) stop() {
	o.stopOnce.Do(func() {
		close(o.done)
		// A sampler that never started must not start now.
		o.samplerOnce.Do(func() { close(o.samplerDone) })
		<-o.samplerDone
	})
}

// sample is the node's counters at one instant.
type sample struct {
	at                                                 time.Time
	connections, framesIn, published, delivered        int64
	framesOut, bytesOut, dropped, slowClosed, brokerEr int64
}

func sampleOf(s Stats, at time.Time) sample {
	return sample{
		at: at, connections: s.Connections, framesIn: s.FramesIn, published: s.Published,
		delivered: s.Delivered, framesOut: s.FramesOut, bytesOut: s.BytesOut,
		dropped: s.DroppedQueueFull + s.RateLimited + s.DroppedInvalid, slowClosed: s.SlowClosed, brokerEr: s.BrokerErrors,
	}
}

// startSampler records the node's counters once a second until stop.
// Without the dashboard it starts with the first look at the figures, so
// that an app that never looks runs no goroutine for it.
func (o *ops) startSampler() {
	o.samplerOnce.Do(func() {
		o.record(time.Now())
		go func() {
			defer close(o.samplerDone)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-o.done:
					return
				case now := <-tick.C:
					o.record(now)
				}
			}
		}()
	})
}

func (o *ops) record(now time.Time) {
	s := sampleOf(o.stats(), now)
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.history) == historyLen {
		copy(o.history, o.history[1:])
		o.history = o.history[:historyLen-1]
	}
	o.history = append(o.history, s)
}

// nodesCache is the broker's node list, reused for nodesTTL.
type nodesCache struct {
	mu    sync.Mutex // held while the broker is asked: concurrent feeds ask once
	at    time.Time
	nodes []broker.NodeInfo
	err   error
}

func (o *ops) clusterNodes(ctx context.Context, nl broker.NodeLister) ([]broker.NodeInfo, error) {
	c := &o.nodes
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= nodesTTL {
		c.nodes, c.err = nl.Nodes(ctx)
		c.at = time.Now()
	}
	return c.nodes, c.err
}

// OpsStats is the answer of GET {prefix}/stats and each event of the
// dashboard's feed.
type OpsStats struct {
	// Time is when the figures were read (Unix milliseconds).
	Time int64 `json:"time"`
	// StartedAt is when the node started (Unix milliseconds).
	StartedAt int64 `json:"startedAt"`
	// Node is this node's figures since it started.
	Node Stats `json:"node"`
	// Rates are per-second rates of the node's counters over the last
	// sample interval (one second); all zero until two samples exist.
	Rates Rates `json:"rates"`
	// History is the node's recent samples, one a second, oldest first.
	History History `json:"history"`
	// Topics summarises the cluster's topics.
	Topics TopicsSummary `json:"topics"`
	// Nodes are the cluster's nodes as the broker sees them (at most a
	// second old); absent when the broker cannot list them.
	Nodes []broker.NodeInfo `json:"nodes,omitempty"`
	// NodesError says why the nodes could not be listed.
	NodesError string `json:"nodesError,omitempty"`
	// Broker is the broker's report on its link to the cluster
	// (broker.StatsReporter: "connected", "reconnects_total", ...);
	// absent when it makes none.
	Broker map[string]int64 `json:"broker,omitempty"`
}

// Rates are per-second rates.
type Rates struct {
	FramesIn   float64 `json:"framesIn"`
	Published  float64 `json:"published"`
	Delivered  float64 `json:"delivered"`
	FramesOut  float64 `json:"framesOut"`
	BytesOut   float64 `json:"bytesOut"`
	Dropped    float64 `json:"dropped"`
	SlowClosed float64 `json:"slowClosed"`
}

// History is the node's samples, Step milliseconds apart, ending at End.
type History struct {
	End         int64     `json:"end"`  // Unix milliseconds of the last sample
	Step        int64     `json:"step"` // milliseconds
	Connections []int64   `json:"connections"`
	Published   []float64 `json:"published"` // per second
	Delivered   []float64 `json:"delivered"` // per second
}

// TopicsSummary is the cluster's topic count and its busiest topics.
type TopicsSummary struct {
	Total int                 `json:"total"`
	Scope string              `json:"scope"`
	Top   []broker.TopicCount `json:"top"` // never null: [] when there are none
	Error string              `json:"error,omitempty"`
}

func rate(a, b int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(b-a) / d.Seconds()
}

// OpsStats returns the figures of GET {prefix}/stats: the node's own, its
// recent rates and history (sampled once a second from the first call
// on, or from the start with Config.Dashboard), and the cluster's topics
// and nodes as the broker reports them. Broker failures are reported in
// the answer, not as an error: the node's own figures are worth showing
// while the broker is down.
func (t *Tower) OpsStats(ctx context.Context) OpsStats {
	o := t.ops
	o.startSampler()
	now := time.Now()
	out := OpsStats{Time: now.UnixMilli(), StartedAt: o.started.UnixMilli(), Node: o.stats()}

	o.mu.Lock()
	h := slices.Clone(o.history)
	o.mu.Unlock()
	out.History = History{Step: 1000, Connections: make([]int64, 0, len(h)), Published: []float64{}, Delivered: []float64{}}
	for i, s := range h {
		out.History.Connections = append(out.History.Connections, s.connections)
		if i > 0 {
			d := s.at.Sub(h[i-1].at)
			out.History.Published = append(out.History.Published, rate(h[i-1].published, s.published, d))
			out.History.Delivered = append(out.History.Delivered, rate(h[i-1].delivered, s.delivered, d))
		}
	}
	if n := len(h); n > 0 {
		out.History.End = h[n-1].at.UnixMilli()
	}
	if n := len(h); n >= 2 {
		a, b := h[n-2], h[n-1]
		d := b.at.Sub(a.at)
		out.Rates = Rates{
			FramesIn: rate(a.framesIn, b.framesIn, d), Published: rate(a.published, b.published, d),
			Delivered: rate(a.delivered, b.delivered, d), FramesOut: rate(a.framesOut, b.framesOut, d),
			BytesOut: rate(a.bytesOut, b.bytesOut, d), Dropped: rate(a.dropped, b.dropped, d),
			SlowClosed: rate(a.slowClosed, b.slowClosed, d),
		}
	}

	out.Topics = TopicsSummary{Top: []broker.TopicCount{}}
	if l, err := o.topics(ctx); err != nil {
		out.Topics.Error = err.Error()
	} else {
		out.Topics.Total, out.Topics.Scope = len(l.byCount), l.scope
		out.Topics.Top = append(out.Topics.Top, l.byCount[:min(topTopics, len(l.byCount))]...)
	}
	if r, ok := o.broker.(broker.StatsReporter); ok {
		out.Broker = r.BrokerStats()
	}
	if nl, ok := o.broker.(broker.NodeLister); ok {
		nodes, err := o.clusterNodes(ctx, nl)
		if err != nil {
			out.NodesError = err.Error()
		} else {
			out.Nodes = nodes
		}
	}
	return out
}

func (t *Tower) serveStats(c *gin.Context) {
	if !t.authorizeREST(c) {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, t.OpsStats(ctx))
}

// serveEvents streams the figures of /stats as server-sent events, one a
// second, until the client leaves or the Tower shuts down.
func (t *Tower) serveEvents(c *gin.Context) {
	if !t.authorizeREST(c) {
		return
	}
	o := t.ops
	o.startSampler()
	h := c.Writer.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would otherwise hold the stream
	c.Status(http.StatusOK)
	c.Abort()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ctx := c.Request.Context()
	for {
		sctx, cancel := context.WithTimeout(ctx, t.cfg.BrokerTimeout)
		b, err := json.Marshal(t.OpsStats(sctx))
		cancel()
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(c.Writer, "data: %s\n\n", b); err != nil {
			return
		}
		c.Writer.Flush()
		select {
		case <-ctx.Done():
			return
		case <-o.done:
			return
		case <-tick.C:
			if t.isClosing() {
				return
			}
		}
	}
}
