package firetower

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"

	"github.com/gin-gonic/gin"
)

// The browser client, served at {prefix}/firetower.js (a plain script that
// defines globalThis.firetower), {prefix}/firetower.mjs (the ES module
// form) and {prefix}/firetower.d.ts (its TypeScript declarations), so a
// page needs no build step.
//
//go:embed js/firetower.js js/firetower.mjs js/firetower.d.ts
var clientFiles embed.FS

type clientFile struct {
	body        []byte
	contentType string
	etag        string
}

var clientAssets = embeddedAssets(clientFiles, "js", "/", map[string]string{
	"firetower.js":   "text/javascript; charset=utf-8",
	"firetower.mjs":  "text/javascript; charset=utf-8",
	"firetower.d.ts": "application/typescript; charset=utf-8",
})

// embeddedAssets reads the named files of dir in fsys, keyed by keyPrefix
// and the file name, with their content types and ETags.
func embeddedAssets(fsys embed.FS, dir, keyPrefix string, types map[string]string) map[string]clientFile {
	out := map[string]clientFile{}
	for name, ct := range types {
		b, err := fsys.ReadFile(path.Join(dir, name))
		if err != nil {
			panic(err) // embedded by the caller: cannot happen
		}
		sum := sha256.Sum256(b)
		out[keyPrefix+name] = clientFile{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}

// serveClient serves one of the client files, with an ETag so browsers
// revalidate cheaply.
func serveClient(c *gin.Context, f clientFile) {
	c.Header("ETag", f.etag)
	c.Header("Cache-Control", "no-cache")
	if c.GetHeader("If-None-Match") == f.etag {
		c.AbortWithStatus(http.StatusNotModified)
		return
	}
	c.Data(http.StatusOK, f.contentType, f.body)
	c.Abort()
}
