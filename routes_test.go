package firetower

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
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
