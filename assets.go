package firetower

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"

	"github.com/gin-gonic/gin"
)

// The files firetower serves from the binary: the browser client at
// {prefix}/firetower.js (a plain script that defines globalThis.firetower),
// {prefix}/firetower.mjs (the ES module form) and {prefix}/firetower.d.ts
// (its TypeScript declarations), so a page needs no build step; and the
// dashboard's page, script and style under {prefix}/dashboard.

//go:embed js/firetower.js js/firetower.mjs js/firetower.d.ts
var clientFiles embed.FS

//go:embed dashboard/index.html dashboard/dashboard.js dashboard/dashboard.css
var dashboardFiles embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
	// page: served with the dashboard's security headers.
	page bool
}

var clientAssets = embeddedAssets(clientFiles, "js", false, map[string]string{
	"firetower.js":   "text/javascript; charset=utf-8",
	"firetower.mjs":  "text/javascript; charset=utf-8",
	"firetower.d.ts": "application/typescript; charset=utf-8",
})

var dashboardAssets = embeddedAssets(dashboardFiles, "dashboard", true, map[string]string{
	"index.html":    "text/html; charset=utf-8",
	"dashboard.js":  "text/javascript; charset=utf-8",
	"dashboard.css": "text/css; charset=utf-8",
})

// embeddedAssets reads the named files of dir in fsys, keyed by file
// name, with their content types and ETags.
func embeddedAssets(fsys embed.FS, dir string, page bool, types map[string]string) map[string]asset {
	out := map[string]asset{}
	for name, ct := range types {
		b, err := fsys.ReadFile(path.Join(dir, name))
		if err != nil {
			panic(err) // embedded above: cannot happen
		}
		sum := sha256.Sum256(b)
		out[name] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, page: page}
	}
	return out
}

// dashboardCSP allows only the page's own script, style and requests.
const dashboardCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serve answers with the file, with an ETag so that browsers revalidate
// cheaply (304 when it matches).
func (a asset) serve(c *gin.Context) {
	h := c.Writer.Header()
	if a.page {
		h.Set("Content-Security-Policy", dashboardCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
	}
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	if c.GetHeader("If-None-Match") == a.etag {
		c.AbortWithStatus(http.StatusNotModified)
		return
	}
	c.Data(http.StatusOK, a.contentType, a.body)
}
