package firetower

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
)

// mountWith starts a gin app with firetower's middleware (empty prefix,
// logging into buf) and the app's own routes added by routes.
func mountWith(t *testing.T, buf *syncBuffer, routes func(r *gin.Engine)) *server {
	t.Helper()
	tower, err := New(Config{APIToken: testToken, Logger: slog.New(slog.NewTextHandler(buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(tower.Middleware())
	routes(r)
	s := &server{Server: httptest.NewServer(r), tower: tower}
	t.Cleanup(func() {
		tower.Shutdown(t.Context())
		s.Close()
	})
	return s
}

func getBody(t *testing.T, s *server, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAppRouteWins: an app's own GET /stats is served by the app, not
// shadowed by firetower's; firetower says so once in its log; its other
// routes, and its /stats for other methods, are unaffected.
func TestAppRouteWins(t *testing.T) {
	var logs syncBuffer
	s := mountWith(t, &logs, func(r *gin.Engine) {
		r.GET("/stats", func(c *gin.Context) { c.String(http.StatusOK, "the app's stats") })
	})
	for range 3 {
		if code, body := getBody(t, s, http.MethodGet, "/stats"); code != 200 || body != "the app's stats" {
			t.Fatalf("GET /stats: %d %q, want the app's handler", code, body)
		}
	}
	if n := strings.Count(logs.String(), "shadows firetower's"); n != 1 {
		t.Errorf("logged the shadowed route %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `route="GET /stats"`) {
		t.Errorf("log does not name the route:\n%s", logs.String())
	}
	if code, body := getBody(t, s, http.MethodGet, "/topics"); code != 200 || !strings.Contains(body, `"topics"`) {
		t.Errorf("GET /topics: %d %q, want firetower's JSON", code, body)
	}
	// firetower still answers the method it does not serve on /stats.
	if code, _ := getBody(t, s, http.MethodPost, "/stats"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /stats: %d, want firetower's 405", code)
	}
	c := dial(t, s, "", nil)
	c.subscribe("a")
}

// TestCatchAllRouteDoesNotHideFiretower: an app serving everything else
// with GET /*any (a single-page app, say) keeps firetower's routes working.
func TestCatchAllRouteDoesNotHideFiretower(t *testing.T) {
	var logs syncBuffer
	s := mountWith(t, &logs, func(r *gin.Engine) {
		r.GET("/*any", func(c *gin.Context) { c.String(http.StatusOK, "spa") })
	})
	if code, body := getBody(t, s, http.MethodGet, "/stats"); code != 200 || !strings.Contains(body, `"connections"`) {
		t.Errorf("GET /stats: %d %q, want firetower's JSON", code, body)
	}
	if code, body := getBody(t, s, http.MethodGet, "/somewhere"); code != 200 || body != "spa" {
		t.Errorf("GET /somewhere: %d %q, want the app's catch-all", code, body)
	}
	c := dial(t, s, "", nil)
	c.subscribe("a")
	if strings.Contains(logs.String(), "shadows") {
		t.Errorf("a catch-all route was reported as shadowing:\n%s", logs.String())
	}
}

// TestOnlyCollisionsWarn: the app's static routes that are not
// firetower's, or are firetower's paths under another method, are served
// by the app without a word; only a route of firetower's own method and
// path is reported, once.
func TestOnlyCollisionsWarn(t *testing.T) {
	var logs syncBuffer
	s := mountWith(t, &logs, func(r *gin.Engine) {
		for _, p := range []string{"/", "/chat.js", "/hello", "/stats"} {
			r.GET(p, func(c *gin.Context) { c.String(http.StatusOK, "app "+p) })
		}
		r.POST("/ws", func(c *gin.Context) { c.String(http.StatusOK, "app POST /ws") })
	})
	for _, req := range []struct{ method, path, want string }{
		{http.MethodGet, "/", "app /"},
		{http.MethodGet, "/chat.js", "app /chat.js"},
		{http.MethodGet, "/hello", "app /hello"},
		{http.MethodPost, "/ws", "app POST /ws"},
		{http.MethodGet, "/stats", "app /stats"},
	} {
		for range 2 {
			if code, body := getBody(t, s, req.method, req.path); code != 200 || body != req.want {
				t.Errorf("%s %s: %d %q, want the app's %q", req.method, req.path, code, body, req.want)
			}
		}
	}
	if n := strings.Count(logs.String(), "shadows firetower's"); n != 1 || !strings.Contains(logs.String(), `route="GET /stats"`) {
		t.Errorf("want exactly one warning, for GET /stats; the log:\n%s", logs.String())
	}
	// firetower's own /ws still upgrades.
	dial(t, s, "", nil).subscribe("a")
}

// TestUpgradeStatusLogged: gin's logger shows a successful upgrade as 101
// and a refused one with its own status.
func TestUpgradeStatusLogged(t *testing.T) {
	var logs syncBuffer
	tower, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := gin.New()
	r.Use(gin.LoggerWithConfig(gin.LoggerConfig{Output: &logs}))
	r.Use(tower.Middleware())
	s := &server{Server: httptest.NewServer(r), tower: tower}
	t.Cleanup(func() {
		tower.Shutdown(t.Context())
		s.Close()
	})
	dial(t, s, "", nil).subscribe("a")
	brokertest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "| 101 |") {
			return fmt.Errorf("no 101 in gin's log:\n%s", logs.String())
		}
		return nil
	})
	if strings.Contains(logs.String(), "| 404 |") {
		t.Errorf("a successful upgrade logged as 404:\n%s", logs.String())
	}
	h := http.Header{"Origin": {"https://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial(s.wsURL(""), h); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign origin: %v %v, want 403", err, resp)
	}
	// Not a WebSocket request at all: the upgrader's own 400.
	if code, _ := getBody(t, s, http.MethodGet, "/ws"); code != http.StatusBadRequest {
		t.Fatalf("GET /ws without an upgrade: %d, want 400", code)
	}
	brokertest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "| 403 |") || !strings.Contains(logs.String(), "| 400 |") {
			return fmt.Errorf("no 403 and 400 in gin's log:\n%s", logs.String())
		}
		return nil
	})
}

func TestRESTPassesOtherRequestsThrough(t *testing.T) {
	s := newServer(t, Config{Prefix: "/rt"})
	resp, err := http.Get(s.URL + "/app")
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 64)
	n, _ := resp.Body.Read(body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body[:n]) != "app:true" {
		t.Fatalf("app route: %d %q", resp.StatusCode, body[:n])
	}
	for _, p := range []string{"/nope", "/ws", "/publish", "/rt/other", "/rt/topics/a"} {
		resp, err := http.Get(s.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want the app's 404", p, resp.StatusCode)
		}
	}
	if code, body := get(t, s, "/topics/a/count"); code != 200 || body["count"] != float64(0) {
		t.Fatalf("count under the prefix: %d %v", code, body)
	}
}
