package firetower

import (
	"context"
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

// The topic listing: GET {prefix}/topics and Tower.Topics, a page of the
// cluster's topics with their counts, searched and sorted, from a listing
// of the broker reused for a second.

const (
	// topicsTTL is how long a listing of the cluster's topics is reused:
	// sorting 100,000 topics takes milliseconds, and a dashboard asks
	// every second.
	topicsTTL = time.Second
	// MaxTopicsLimit bounds TopicsQuery.Limit, the length of one page.
	MaxTopicsLimit = 1000
	// defaultTopicsLimit is the length of a page when none is asked.
	defaultTopicsLimit = 100
)

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

// listingCache holds the last listing.
type listingCache struct {
	// refresh serialises listing the broker's topics, so that concurrent
	// requests on a stale cache list them once.
	refresh sync.Mutex
	mu      sync.Mutex
	cached  *topicList
}

func (lc *listingCache) fresh() *topicList {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.cached != nil && time.Since(lc.cached.at) < topicsTTL {
		return lc.cached
	}
	return nil
}

// topics returns the topic listing, at most topicsTTL old.
func (o *ops) topics(ctx context.Context) (*topicList, error) {
	lc := &o.listing
	if l := lc.fresh(); l != nil {
		return l, nil
	}
	lc.refresh.Lock()
	defer lc.refresh.Unlock()
	if l := lc.fresh(); l != nil {
		return l, nil
	}
	l := &topicList{at: time.Now(), scope: "cluster"}
	if tl, ok := o.broker.(broker.TopicLister); ok {
		list, err := tl.Topics(ctx)
		if err != nil {
			return nil, err
		}
		// Internal topics (users.go) are the node's own, never listed.
		l.byCount = slices.DeleteFunc(list, func(tc broker.TopicCount) bool { return isInternalTopic(tc.Topic) })
	} else {
		l.scope = "node"
		l.byCount = o.local()
	}
	slices.SortFunc(l.byCount, func(a, b broker.TopicCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		return strings.Compare(a.Topic, b.Topic)
	})
	lc.mu.Lock()
	lc.cached = l
	lc.mu.Unlock()
	return l, nil
}

// TopicsQuery asks Tower.Topics for one page of the cluster's topics.
type TopicsQuery struct {
	// Limit is the most topics on the page, at most MaxTopicsLimit.
	// Default: 100.
	Limit int
	// Offset is how many matching topics to skip. Default: 0.
	Offset int
	// Sort is "count" (most subscribers first, then by name) or "name".
	// Default: "count".
	Sort string
	// Query keeps only the topics that contain it (case-sensitive).
	// Default: "" (every topic).
	Query string
}

// TopicsPage is one page of the cluster's topics: the answer of
// GET {prefix}/topics and of Tower.Topics.
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

// Topics returns one page of the cluster's topics with their counts, from
// a listing of the broker's that is at most a second old (this node's
// topics, Scope "node", for a broker that cannot list the cluster's). An
// invalid query (a negative Limit or Offset, an unknown Sort) wraps
// ErrInvalidQuery.
func (t *Tower) Topics(ctx context.Context, q TopicsQuery) (TopicsPage, error) {
	switch {
	case q.Limit < 0 || q.Offset < 0:
		return TopicsPage{}, fmt.Errorf("%w: Limit and Offset must not be negative", ErrInvalidQuery)
	case q.Sort != "" && q.Sort != "count" && q.Sort != "name":
		return TopicsPage{}, fmt.Errorf(`%w: Sort must be "count" or "name"`, ErrInvalidQuery)
	}
	if q.Limit == 0 {
		q.Limit = defaultTopicsLimit
	}
	q.Limit = min(q.Limit, MaxTopicsLimit)
	if q.Sort == "" {
		q.Sort = "count"
	}
	l, err := t.ops.topics(ctx)
	if err != nil {
		return TopicsPage{}, fmt.Errorf("firetower: listing topics: %w", err)
	}
	return l.page(q), nil
}

// parseTopicsQuery reads the query of GET {prefix}/topics.
func parseTopicsQuery(c *gin.Context) (TopicsQuery, error) {
	q := TopicsQuery{Limit: defaultTopicsLimit, Sort: "count", Query: c.Query("q")}
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
	if err := num("limit", &q.Limit, 1, MaxTopicsLimit); err != nil {
		return q, err
	}
	if err := num("offset", &q.Offset, 0, int(^uint(0)>>1)); err != nil {
		return q, err
	}
	if s, ok := c.GetQuery("sort"); ok {
		if s != "count" && s != "name" {
			return q, fmt.Errorf(`sort must be "count" or "name"`)
		}
		q.Sort = s
	}
	return q, nil
}

// page applies a query to a listing: a slice of it, or one pass over it
// to filter; no copy of the topics beyond the page.
func (l *topicList) page(q TopicsQuery) TopicsPage {
	list := l.byCount
	if q.Sort == "name" {
		list = l.sortedByName()
	}
	out := TopicsPage{Topics: []broker.TopicCount{}, Offset: q.Offset, Limit: q.Limit, Sort: q.Sort, Query: q.Query, Scope: l.scope, AsOf: l.at.UnixMilli()}
	if q.Query == "" {
		out.Total = len(list)
		if q.Offset < len(list) {
			out.Topics = append(out.Topics, list[q.Offset:min(len(list), q.Offset+q.Limit)]...)
		}
		list = nil
	}
	for _, tc := range list {
		if q.Query != "" && !strings.Contains(tc.Topic, q.Query) {
			continue
		}
		if out.Total >= q.Offset && len(out.Topics) < q.Limit {
			out.Topics = append(out.Topics, tc)
		}
		out.Total++
	}
	if next := q.Offset + len(out.Topics); next < out.Total {
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
}
