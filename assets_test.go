package firetower

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestServesTheJSClient(t *testing.T) {
	s := newServer(t, Config{Prefix: "/rt"})
	for name, want := range map[string]string{"/rt/firetower.js": "globalThis.firetower", "/rt/firetower.mjs": "export", "/rt/firetower.d.ts": "connect"} {
		resp, err := http.Get(s.URL + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) || !strings.Contains(resp.Header.Get("Content-Type"), "script") {
			t.Fatalf("%s: %d %s %.60q", name, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		req, _ := http.NewRequest("GET", s.URL+name, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("%s revalidated: %d", name, resp.StatusCode)
		}
	}
}
