package firetower

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/gin-gonic/gin"
)

// The operations routes: GET {prefix}/topics and {prefix}/stats (JSON),
// and with Config.Dashboard the page at {prefix}/dashboard with its live
// feed at {prefix}/dashboard/events.
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
	// topicsTTL is how long a listing of the cluster's topics is reused:
	// sorting 100,000 topics takes milliseconds, and a dashboard asks
	// every second.
	topicsTTL = time.Second
	// maxTopicsLimit bounds one page of GET /topics.
	maxTopicsLimit = 1000
	// topTopics is how many busiest topics /stats and the dashboard show.
	topTopics = 10
)

//go:embed dashboard/index.html dashboard/dashboard.js dashboard/dashboard.css
var dashboardFiles embed.FS

var dashboardAssets = embeddedAssets(dashboardFiles, "dashboard", "", map[string]string{
	"index.html":    "text/html; charset=utf-8",
	"dashboard.js":  "text/javascript; charset=utf-8",
	"dashboard.css": "text/css; charset=utf-8",
})

// ops is a Tower's operations state: the sampler behind the rates and the
// chart, the cached topic listing and the metrics collector.
type ops struct {
	t       *Tower
	started time.Time
	paths   opsPaths

	samplerOnce sync.Once
	stopOnce    sync.Once
	done        chan struct{} // closed by stopOps
	samplerDone chan struct{} // closed when the sampler returns

	mu      sync.Mutex
	history []sample // oldest first, at most historyLen

	// refresh serialises listing the broker's topics, so that concurrent
	// requests on a stale cache list them once.
	refresh sync.Mutex
	cmu     sync.Mutex
	cached  *topicList

	collector *collector
}

type opsPaths struct {
	topics, stats, dashboard, dashboardDir, events string
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
		dropped: s.DroppedQueueFull + s.RateLimited, slowClosed: s.SlowClosed, brokerEr: s.BrokerErrors,
	}
}

// startOps prepares the operations routes and registers the metrics; it
// runs once in New.
func (t *Tower) startOps() error {
	p := t.routes.prefix
	t.ops = &ops{
		t:       t,
		started: time.Now(),
		paths: opsPaths{
			topics: p + "/topics", stats: p + "/stats", dashboard: p + "/dashboard",
			dashboardDir: p + "/dashboard/", events: p + "/dashboard/events",
		},
		done:        make(chan struct{}),
		samplerDone: make(chan struct{}),
	}
	if t.cfg.Metrics != nil {
		t.ops.collector = newCollector(t)
		if err := t.cfg.Metrics.Register(t.ops.collector); err != nil {
			return fmt.Errorf("firetower: registering metrics: %w", err)
		}
	}
	if t.cfg.Dashboard {
		// The chart has a history from the start, not from the first look.
		t.ops.startSampler()
	}
	return nil
}

// stopOps stops the sampler, ends the live feeds and unregisters the
// metrics, so that a new Tower may register on the same Registerer.
func (t *Tower) stopOps() {
	o := t.ops
	o.stopOnce.Do(func() {
		close(o.done)
		// A sampler that never started must not start now.
		o.samplerOnce.Do(func() { close(o.samplerDone) })
		<-o.samplerDone
		if o.collector != nil {
			t.cfg.Metrics.Unregister(o.collector)
		}
	})
}

// startSampler records the node's counters once a second until stopOps.
// Without the dashboard it starts with the first GET /stats, so that an
// app that never looks runs no goroutine for it.
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
	s := sampleOf(o.t.Stats(), now)
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.history) == historyLen {
		copy(o.history, o.history[1:])
		o.history = o.history[:historyLen-1]
	}
	o.history = append(o.history, s)
}

// serveOps serves the operations routes and reports whether p was one.
func (t *Tower) serveOps(c *gin.Context, p string) bool {
	o := t.ops
	switch p {
	case o.paths.topics:
		if allowMethod(c, http.MethodGet) {
			t.serveTopics(c)
		}
		return true
	case o.paths.stats:
		if allowMethod(c, http.MethodGet) {
			t.serveStats(c)
		}
		return true
	}
	if !t.cfg.Dashboard {
		return false
	}
	switch {
	case p == o.paths.dashboard:
		if allowMethod(c, http.MethodGet) {
			serveDashboardFile(c, dashboardAssets["index.html"])
		}
		return true
	case p == o.paths.dashboardDir:
		// Relative links in the page resolve against {prefix}/dashboard.
		c.Redirect(http.StatusMovedPermanently, o.paths.dashboard)
		return true
	case p == o.paths.events:
		if allowMethod(c, http.MethodGet) {
			t.serveEvents(c)
		}
		return true
	case strings.HasPrefix(p, o.paths.dashboardDir):
		name := p[len(o.paths.dashboardDir):]
		f, ok := dashboardAssets[name]
		if !ok || name == "index.html" {
			return false
		}
		if allowMethod(c, http.MethodGet) {
			serveDashboardFile(c, f)
		}
		return true
	}
	return false
}

// dashboardCSP allows only the page's own script, style and requests.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func serveDashboardFile(c *gin.Context, f clientFile) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("ETag", f.etag)
	h.Set("Cache-Control", "no-cache")
	if c.GetHeader("If-None-Match") == f.etag {
		c.AbortWithStatus(http.StatusNotModified)
		return
	}
	c.Data(http.StatusOK, f.contentType, f.body)
	c.Abort()
}

// topicList is the cluster's topics at one instant, sorted by count
// (descending, then by name), with a by-name order made on demand.
type topicList struct {
	at      time.Time
	scope   string // "cluster": the broker's counts; "node": this node's own
	byCount []broker.TopicCount

	nameOnce sync.Once
	byName   []broker.TopicCount
}

func (l *topicList) sortedByName() []broker.TopicCount {
	l.nameOnce.Do(func() {
		l.byName = slices.Clone(l.byCount)
		slices.SortFunc(l.byName, func(a, b broker.TopicCount) int { return strings.Compare(a.Topic, b.Topic) })
	})
	return l.byName
}

// topics returns the topic listing, at most topicsTTL old.
func (o *ops) topics(ctx context.Context) (*topicList, error) {
	if l := o.fresh(); l != nil {
		return l, nil
	}
	o.refresh.Lock()
	defer o.refresh.Unlock()
	if l := o.fresh(); l != nil {
		return l, nil
	}
	l := &topicList{at: time.Now(), scope: "cluster"}
	if tl, ok := o.t.broker.(broker.TopicLister); ok {
		list, err := tl.Topics(ctx)
		if err != nil {
			return nil, err
		}
		l.byCount = list
	} else {
		l.scope = "node"
		l.byCount = o.t.localTopics()
	}
	slices.SortFunc(l.byCount, func(a, b broker.TopicCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Topic, b.Topic)
	})
	o.cmu.Lock()
	o.cached = l
	o.cmu.Unlock()
	return l, nil
}

func (o *ops) fresh() *topicList {
	o.cmu.Lock()
	defer o.cmu.Unlock()
	if o.cached != nil && time.Since(o.cached.at) < topicsTTL {
		return o.cached
	}
	return nil
}

// localTopics lists this node's topics with their local counts, for a
// broker that cannot list the cluster's.
func (t *Tower) localTopics() []broker.TopicCount { return t.hub.topics() }

// TopicsPage is the answer of GET {prefix}/topics.
type TopicsPage struct {
	// Topics are the page's topics with their cluster-wide counts.
	Topics []broker.TopicCount `json:"topics"`
	// Total is how many topics match Query, on every page.
	Total int `json:"total"`
	// Offset and Limit are the page's bounds as applied.
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
	// NextOffset is the offset of the next page; absent on the last one.
	NextOffset *int `json:"nextOffset,omitempty"`
	// Sort is "count" (most subscribers first, then by name) or "name".
	Sort string `json:"sort"`
	// Query is the substring the topics were filtered by (case-sensitive).
	Query string `json:"q"`
	// Scope is "cluster" when the counts are the broker's cluster-wide
	// ones, "node" when the broker cannot list topics and they are this
	// node's.
	Scope string `json:"scope"`
	// AsOf is when the listing was taken (Unix milliseconds); it is
	// reused for up to a second.
	AsOf int64 `json:"asOf"`
}

// topicsQuery is a parsed GET {prefix}/topics query.
type topicsQuery struct {
	limit, offset int
	sort, q       string
}

func parseTopicsQuery(c *gin.Context) (topicsQuery, error) {
	q := topicsQuery{limit: 100, sort: "count", q: c.Query("q")}
	num := func(name string, v *int, lo, hi int) error {
		s, ok := c.GetQuery(name)
		if !ok {
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo {
			return fmt.Errorf("%s must be an integer of at least %d", name, lo)
		}
		*v = min(n, hi)
		return nil
	}
	if err := num("limit", &q.limit, 1, maxTopicsLimit); err != nil {
		return q, err
	}
	if err := num("offset", &q.offset, 0, int(^uint(0)>>1)); err != nil {
		return q, err
	}
	if s, ok := c.GetQuery("sort"); ok {
		if s != "count" && s != "name" {
			return q, fmt.Errorf(`sort must be "count" or "name"`)
		}
		q.sort = s
	}
	return q, nil
}

// page applies a query to a listing: a slice of it, or one pass over it
// to filter; no copy of the topics beyond the page.
func (l *topicList) page(q topicsQuery) TopicsPage {
	list := l.byCount
	if q.sort == "name" {
		list = l.sortedByName()
	}
	out := TopicsPage{Topics: []broker.TopicCount{}, Offset: q.offset, Limit: q.limit, Sort: q.sort, Query: q.q, Scope: l.scope, AsOf: l.at.UnixMilli()}
	if q.q == "" {
		out.Total = len(list)
		if q.offset < len(list) {
			out.Topics = append(out.Topics, list[q.offset:min(len(list), q.offset+q.limit)]...)
		}
		list = nil
	}
	for _, tc := range list {
		if q.q != "" && !strings.Contains(tc.Topic, q.q) {
			continue
		}
		if out.Total >= q.offset && len(out.Topics) < q.limit {
			out.Topics = append(out.Topics, tc)
		}
		out.Total++
	}
	if next := q.offset + len(out.Topics); next < out.Total {
		out.NextOffset = &next
	}
	return out
}

func (t *Tower) serveTopics(c *gin.Context) {
	if !t.authorizeREST(c) {
		return
	}
	q, err := parseTopicsQuery(c)
	if err != nil {
		jsonError(c, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	l, err := t.ops.topics(ctx)
	if err != nil {
		jsonError(c, http.StatusServiceUnavailable, "listing topics: "+err.Error())
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, l.page(q))
	c.Abort()
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
	// Nodes are the cluster's nodes as the broker sees them; absent when
	// the broker cannot list them.
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
	Top   []broker.TopicCount `json:"top"`
	Error string              `json:"error,omitempty"`
}

func rate(a, b int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(b-a) / d.Seconds()
}

// snapshot gathers the figures of /stats and of the dashboard's feed.
// Broker failures are reported in the answer, not as an error: the node's
// own figures are worth showing while the broker is down.
func (t *Tower) opsSnapshot(ctx context.Context) OpsStats {
	o := t.ops
	now := time.Now()
	out := OpsStats{Time: now.UnixMilli(), StartedAt: o.started.UnixMilli(), Node: t.Stats()}

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

	if l, err := o.topics(ctx); err != nil {
		out.Topics = TopicsSummary{Top: []broker.TopicCount{}, Error: err.Error()}
	} else {
		out.Topics = TopicsSummary{Total: len(l.byCount), Scope: l.scope, Top: l.byCount[:min(topTopics, len(l.byCount))]}
	}
	if r, ok := t.broker.(broker.StatsReporter); ok {
		out.Broker = r.BrokerStats()
	}
	if nl, ok := t.broker.(broker.NodeLister); ok {
		nodes, err := nl.Nodes(ctx)
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
	t.ops.startSampler()
	ctx, cancel := context.WithTimeout(c.Request.Context(), t.cfg.BrokerTimeout)
	defer cancel()
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, t.opsSnapshot(ctx))
	c.Abort()
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
		b, err := json.Marshal(t.opsSnapshot(sctx))
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
