package firetower

import (
	"net/http"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
)

// The route table: every path firetower serves, its method and its
// handler, built once in New. The middleware (middleware.go) looks a
// request up here and nowhere else.

// route is one of firetower's routes.
type route struct {
	method string
	serve  func(c *gin.Context, arg string) // arg: the count route's escaped topic
	// passOthers hands requests of other methods to the app instead of
	// answering 405 (the client files, which an app may also serve).
	passOthers bool
}

// routes are a Tower's routes.
type routes struct {
	prefix string
	exact  map[string]route // by full path
	// count is GET {prefix}/topics/:topic/count, matched by countTopic.
	count     route
	topicsDir string // {prefix}/topics/
	// shadowed holds the "METHOD path" of firetower routes the app
	// registered itself, logged once each.
	shadowed sync.Map
}

func (t *Tower) newRoutes() *routes {
	p := t.cfg.Prefix
	get := func(serve func(c *gin.Context)) route {
		return route{method: http.MethodGet, serve: func(c *gin.Context, _ string) { serve(c) }}
	}
	r := &routes{
		prefix: p,
		exact: map[string]route{
			p + "/ws":      get(t.serveWS),
			p + "/publish": {method: http.MethodPost, serve: func(c *gin.Context, _ string) { t.servePublish(c) }},
			p + "/topics":  get(t.serveTopics),
			p + "/stats":   get(t.serveStats),
		},
		count:     route{method: http.MethodGet, serve: t.serveCount},
		topicsDir: p + "/topics/",
	}
	for name, a := range clientAssets {
		rt := get(a.serve)
		rt.passOthers = true
		r.exact[p+"/"+name] = rt
	}
	if t.cfg.Dashboard {
		r.exact[p+"/dashboard"] = get(dashboardAssets["index.html"].serve)
		// Relative links in the page resolve against {prefix}/dashboard.
		r.exact[p+"/dashboard/"] = get(func(c *gin.Context) { c.Redirect(http.StatusMovedPermanently, p+"/dashboard") })
		r.exact[p+"/dashboard/events"] = get(t.serveEvents)
		for name, a := range dashboardAssets {
			if name != "index.html" {
				r.exact[p+"/dashboard/"+name] = get(a.serve)
			}
		}
	}
	return r
}

// match returns the route of a request's path, and its argument.
func (r *routes) match(req *http.Request) (route, string, bool) {
	if rt, ok := r.exact[req.URL.Path]; ok {
		return rt, "", true
	}
	if topic, ok := r.countTopic(req.URL.EscapedPath()); ok {
		return r.count, topic, true
	}
	return route{}, "", false
}

// countTopic extracts the still percent-encoded topic of
// {prefix}/topics/<topic>/count from an escaped path. The topic may
// contain unencoded slashes: /topics//chat/world/count is /chat/world.
func (r *routes) countTopic(escapedPath string) (string, bool) {
	rest, ok := strings.CutPrefix(escapedPath, r.topicsDir)
	if !ok {
		return "", false
	}
	topic, ok := strings.CutSuffix(rest, "/count")
	return topic, ok && topic != ""
}
