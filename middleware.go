package firetower

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

const towerKey = "firetower.tower"

// Middleware returns gin middleware that mounts firetower on an app, as
// New(cfg) followed by (*Tower).Middleware. It panics if cfg is invalid or
// its broker cannot be opened, as gin-contrib middlewares do; use New to
// handle the error (and to call Shutdown).
func Middleware(cfg Config) gin.HandlerFunc {
	t, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return t.Middleware()
}

// Middleware returns gin middleware that serves the Tower's routes —
// GET {prefix}/ws, POST {prefix}/publish, GET {prefix}/topics/:topic/count,
// GET {prefix}/firetower.js (and .mjs, .d.ts), the operations routes
// GET {prefix}/topics and {prefix}/stats, and with Config.Dashboard
// {prefix}/dashboard (ops.go explains how the page is authorized) —
// and passes every other request on to the app untouched. Install it with
// r.Use before the app's routes so FromContext works in their handlers;
// firetower's own routes work wherever it is installed, since gin runs
// global middleware for unmatched paths too.
func (t *Tower) Middleware() gin.HandlerFunc {
	return func(c *gin.Context) {
		p := c.Request.URL.Path
		if !strings.HasPrefix(p, t.routes.prefix) || t.appOwns(c, p) {
			c.Set(towerKey, t)
			c.Next()
			return
		}
		switch p {
		case t.routes.ws:
			if !allowMethod(c, http.MethodGet) {
				return
			}
			t.serveWS(c)
			c.Abort()
			return
		case t.routes.publish:
			if !allowMethod(c, http.MethodPost) {
				return
			}
			t.servePublish(c)
			c.Abort()
			return
		}
		if f, ok := clientAssets[p[len(t.routes.prefix):]]; ok && c.Request.Method == http.MethodGet {
			serveClient(c, f)
			return
		}
		if t.serveOps(c, p) {
			c.Abort()
			return
		}
		if topic, ok := t.routes.countTopic(c.Request.URL.EscapedPath()); ok {
			if !allowMethod(c, http.MethodGet) {
				return
			}
			t.serveCount(c, topic)
			c.Abort()
			return
		}
		c.Set(towerKey, t)
		c.Next()
	}
}

// appOwns reports whether the app registered a route of exactly this
// method and path (GET /stats, say, with an empty prefix): the app's route
// wins over firetower's, and firetower logs once that its own is shadowed.
// Only an exact, static match counts, so an app's catch-all route
// (GET /*any) never hides firetower's.
func (t *Tower) appOwns(c *gin.Context, p string) bool {
	if full := c.FullPath(); full == "" || full != p {
		return false
	}
	key := c.Request.Method + " " + p
	if _, warned := t.shadowed.LoadOrStore(key, true); !warned {
		t.log.Warn("firetower: the app's own route shadows firetower's; set Config.Prefix to serve both",
			"route", key)
	}
	return true
}

// FromContext returns the Tower whose middleware handled this request, or
// nil if none did.
func FromContext(c *gin.Context) *Tower {
	v, _ := c.Get(towerKey)
	t, _ := v.(*Tower)
	return t
}

func allowMethod(c *gin.Context, method string) bool {
	if c.Request.Method == method {
		return true
	}
	c.Header("Allow", method)
	jsonError(c, http.StatusMethodNotAllowed, "use "+method)
	return false
}

// routes are the Tower's paths, computed once.
type routes struct {
	prefix, ws, publish, topics string
}

func newRoutes(prefix string) routes {
	return routes{prefix: prefix, ws: prefix + "/ws", publish: prefix + "/publish", topics: prefix + "/topics/"}
}

// countTopic extracts the still percent-encoded topic of
// {prefix}/topics/<topic>/count from an escaped path. The topic may
// contain unencoded slashes: /topics//chat/world/count is /chat/world.
func (r routes) countTopic(escapedPath string) (string, bool) {
	rest, ok := strings.CutPrefix(escapedPath, r.topics)
	if !ok {
		return "", false
	}
	topic, ok := strings.CutSuffix(rest, "/count")
	return topic, ok && topic != ""
}
