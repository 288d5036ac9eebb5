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
	// count is GET {prefix}/topics/:topic/count, history GET
	// {prefix}/topics/:topic/history and presence GET
	// {prefix}/topics/:topic/presence, matched by topicPath.
	count     route
	history   route
	presence  route
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
			p + "/ws":         get(t.serveWS),
			p + "/publish":    {method: http.MethodPost, serve: func(c *gin.Context, _ string) { t.servePublish(c) }},
			p + "/disconnect": {method: http.MethodPost, serve: func(c *gin.Context, _ string) { t.serveDisconnect(c) }},
			p + "/topics":     get(t.serveTopics),
			p + "/stats":      get(t.serveStats),
		},
		count:     route{method: http.MethodGet, serve: t.serveCount},
		history:   route{method: http.MethodGet, serve: t.serveHistory},
		presence:  route{method: http.MethodGet, serve: t.servePresence},
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

// match returns the route of a request's path, and its argument: for
// {prefix}/topics/<topic>/count and .../history, the still percent-encoded
// topic. The topic may contain unencoded slashes: /topics//chat/world/count
// is /chat/world.
func (r *routes) match(req *http.Request) (route, string, bool) {
	if rt, ok := r.exact[req.URL.Path]; ok {
		return rt, "", true
	}
	rest, ok := strings.CutPrefix(req.URL.EscapedPath(), r.topicsDir)
	if !ok {
		return route{}, "", false
	}
	if topic, ok := strings.CutSuffix(rest, "/count"); ok && topic != "" {
		return r.count, topic, true
	}
	if topic, ok := strings.CutSuffix(rest, "/history"); ok && topic != "" {
		return r.history, topic, true
	}
	if topic, ok := strings.CutSuffix(rest, "/presence"); ok && topic != "" {
		return r.presence, topic, true
	}
	return route{}, "", false
}
