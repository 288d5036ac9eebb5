package firetower

import (
	"log/slog"
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
// {prefix}/dashboard — and passes every other request on to the app
// untouched. Install it with r.Use before the app's routes so FromContext
// works in their handlers; firetower's own routes work wherever it is
// installed, since gin runs global middleware for unmatched paths too.
//
// A route the app registered itself with exactly the method and path of
// one of firetower's wins, and firetower logs once, at warn level, that
// its own is shadowed (Config.Prefix serves both). Only an exact, static
// match counts, so an app's catch-all route (GET /*any) never hides
// firetower's.
func (t *Tower) Middleware() gin.HandlerFunc {
	r := t.routes
	return func(c *gin.Context) {
		if !strings.HasPrefix(c.Request.URL.Path, r.prefix) {
			c.Set(towerKey, t)
			c.Next()
			return
		}
		rt, arg, ok := r.match(c.Request)
		if !ok || r.appOwns(c, rt, t.log) || (rt.passOthers && c.Request.Method != rt.method) {
			c.Set(towerKey, t)
			c.Next()
			return
		}
		if c.Request.Method != rt.method {
			c.Header("Allow", rt.method)
			jsonError(c, http.StatusMethodNotAllowed, "use "+rt.method)
			return
		}
		rt.serve(c, arg)
		c.Abort()
	}
}

// appOwns reports whether the app registered a static route of exactly
// this request's method and path, which is one of firetower's: the app's
// route wins. Where firetower serves that method too, firetower logs once
// that its own route is shadowed.
func (r *routes) appOwns(c *gin.Context, rt route, log *slog.Logger) bool {
	p := c.Request.URL.Path
	if full := c.FullPath(); full == "" || full != p {
		return false
	}
	if c.Request.Method != rt.method {
		return true // the app's route of another method: no collision
	}
	key := c.Request.Method + " " + p
	if _, warned := r.shadowed.LoadOrStore(key, true); !warned {
		log.Warn("firetower: the app's own route shadows firetower's; set Config.Prefix to serve both",
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
