package firetower

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// historyConfig gives topics under /h/ a history of size and /l/ the
// latest value.
func historyConfig(size int) Config {
	return Config{APIToken: testToken, TopicOptions: func(topic string) TopicOptions {
		switch {
		case strings.HasPrefix(topic, "/h/"):
			return TopicOptions{HistorySize: size, HistoryTTL: time.Minute}
		case strings.HasPrefix(topic, "/l/"):
			return TopicOptions{Latest: true}
		}
		return TopicOptions{}
	}}
}

func publishN(t *testing.T, s *server, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := s.tower.Publish(context.Background(), topic, i); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamWireShapes(t *testing.T) {
	s := newServer(t, historyConfig(10))
	c := dial(t, s, "", nil)
	c.send(`{"type":"subscribe","topic":["/h/a","plain"],"id":3}`)
	f := c.expect(TypeSubscribed)
	st, ok := f.Streams["/h/a"]
	if !ok || st.Epoch == "" || st.Offset != 0 || st.Recovered != nil || len(f.Streams) != 1 {
		t.Fatalf("subscribed reply %s: want a streams entry for /h/a only, top 0, no recovered", f.raw)
	}
	want := regexp.MustCompile(`^\{"type":"subscribed","topic":\["/h/a","plain"\],"id":3,"streams":\{"/h/a":\{"epoch":"[^"]+","offset":0\}\}\}$`)
	if !want.Match(f.raw) {
		t.Fatalf("subscribed reply %s", f.raw)
	}
	code, body := post(t, s, "/publish", testToken, `{"topics":["/h/a","plain"],"data":{"n":1}}`)
	if code != http.StatusOK || fmt.Sprint(body["offsets"]) != "map[/h/a:1]" {
		t.Fatalf("POST /publish: %d %v, want offsets {/h/a:1}", code, body)
	}
	m := c.expect(TypePublish)
	if !regexp.MustCompile(`^\{"type":"publish","topic":"/h/a","data":\{"n":1\},"id":"[0-9a-f-]{36}","offset":1\}$`).Match(m.raw) {
		t.Fatalf("publish frame %s", m.raw)
	}
	if p := c.expect(TypePublish); p.Offset != 0 || strings.Contains(string(p.raw), "offset") {
		t.Fatalf("a topic without history carries an offset: %s", p.raw)
	}
	publishN(t, s, "/h/a", 2, 3)
	c.expect(TypePublish)
	c.expect(TypePublish)
	c.send(`{"type":"history","topic":"/h/a","limit":2,"id":4}`)
	h := c.expect(TypeHistory)
	re := `^\{"type":"history","topic":"/h/a","id":4,"epoch":"` + st.Epoch + `","offset":3,"messages":\[\{"id":"[^"]+","offset":2,"data":2\},\{"id":"[^"]+","offset":3,"data":3\}\]\}$`
	if !regexp.MustCompile(re).Match(h.raw) {
		t.Fatalf("history frame %s", h.raw)
	}
	c.send(fmt.Sprintf(`{"type":"history","topic":"/h/a","since":{"epoch":%q,"offset":1},"id":5}`, st.Epoch))
	if h := c.expect(TypeHistory); len(h.Messages) != 2 || h.Messages[0].Offset != 2 {
		t.Fatalf("history since 1: %s", h.raw)
	}
	c.send(`{"type":"history","topic":"plain","id":6}`)
	if e := c.expectError(CodeBadRequest); string(e.ID) != "6" {
		t.Fatalf("history of a plain topic: %s", e.raw)
	}
	for _, bad := range []string{
		`{"type":"history","topic":"/h/a","limit":-1}`,
		`{"type":"history","topic":"/h/a","limit":"x"}`,
		`{"type":"history","topic":["/h/a","/h/b"]}`,
		`{"type":"history","topic":"/h/a","since":{"offset":1}}`,
		`{"type":"history","topic":"/h/a","since":{"epoch":"E","offset":-1}}`,
		`{"type":"subscribe","topic":"/h/b","since":{"/h/b":7}}`,
		`{"type":"subscribe","topic":"/h/b","since":[1]}`,
	} {
		c.send(bad)
		c.expectError(CodeBadRequest)
	}
	c.alive()

	// REST history, authorized like publish.
	code, body = get(t, s, "/topics/%2Fh%2Fa/history?limit=1")
	if code != http.StatusUnauthorized {
		t.Fatalf("history without a token: %d %v", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/topics/%2Fh%2Fa/history?since=1&epoch="+st.Epoch, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	code, body = do(t, req)
	msgs, _ := body["messages"].([]any)
	if code != http.StatusOK || body["topic"] != "/h/a" || body["epoch"] != st.Epoch || body["offset"] != 3.0 || len(msgs) != 2 {
		t.Fatalf("REST history: %d %v", code, body)
	}
	for path, status := range map[string]int{
		"/topics/plain/history":             http.StatusNotFound,
		"/topics/%2Fh%2Fa/history?limit=-1": http.StatusBadRequest,
		"/topics/%2Fh%2Fa/history?since=x":  http.StatusBadRequest,
		"/topics/%2Fh%2Fa/history?epoch=E":  http.StatusBadRequest,
		"/topics/a%2Cb/history":             http.StatusBadRequest,
	} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		if code, body := do(t, req); code != status || body["error"] == "" {
			t.Errorf("GET %s: %d %v, want %d with an error", path, code, body, status)
		}
	}
}

func TestRecoveryAfterReconnect(t *testing.T) {
	s := newServer(t, historyConfig(10))
	c := dial(t, s, "", nil)
	c.send(`{"type":"subscribe","topic":"/h/r"}`)
	epoch := c.expect(TypeSubscribed).Streams["/h/r"].Epoch
	publishN(t, s, "/h/r", 1, 2)
	last := c.expect(TypePublish)
	last = c.expect(TypePublish)
	c.ws.Close()
	publishN(t, s, "/h/r", 3, 7) // missed

	c = dial(t, s, "batch=1", nil)
	c.send(fmt.Sprintf(`{"type":"subscribe","topic":"/h/r","since":{"/h/r":{"epoch":%q,"offset":%d}},"id":1}`, epoch, last.Offset))
	f := c.expect(TypeSubscribed)
	if st := f.Streams["/h/r"]; st.Recovered == nil || !*st.Recovered || st.Offset != 7 || st.Epoch != epoch {
		t.Fatalf("reply %s: want recovered at 7", f.raw)
	}
	for want := uint64(3); want <= 7; want++ {
		if m := c.expect(TypePublish); m.Offset != want || string(m.Data) != fmt.Sprint(want) {
			t.Fatalf("recovered %s, want offset %d", m.raw, want)
		}
	}
	publishN(t, s, "/h/r", 8, 8)
	if m := c.expect(TypePublish); m.Offset != 8 {
		t.Fatalf("live after recovery: %s", m.raw)
	}
	if st := s.tower.Stats(); st.Recovered != 5 {
		t.Fatalf("Stats.Recovered %d, want 5", st.Recovered)
	}

	// A position the window no longer holds, or of another epoch: not
	// recovered, and nothing follows but live messages.
	publishN(t, s, "/h/r", 9, 20) // the window is 11..20
	for _, since := range []string{
		fmt.Sprintf(`{"epoch":%q,"offset":3}`, epoch),
		`{"epoch":"other","offset":19}`,
		fmt.Sprintf(`{"epoch":%q,"offset":99}`, epoch),
	} {
		d := dial(t, s, "", nil)
		d.send(`{"type":"subscribe","topic":"/h/r","since":{"/h/r":` + since + `}}`)
		f := d.expect(TypeSubscribed)
		if st := f.Streams["/h/r"]; st.Recovered == nil || *st.Recovered || st.Offset != 20 {
			t.Fatalf("since %s: reply %s, want recovered false at 20", since, f.raw)
		}
		d.quiet(100 * time.Millisecond)
	}
	// Recovering from the top: nothing missed, recovered, nothing follows.
	d := dial(t, s, "", nil)
	d.send(fmt.Sprintf(`{"type":"subscribe","topic":"/h/r","since":{"/h/r":{"epoch":%q,"offset":20}}}`, epoch))
	if st := d.expect(TypeSubscribed).Streams["/h/r"]; st.Recovered == nil || !*st.Recovered {
		t.Fatal("since the top: not recovered")
	}
	d.quiet(100 * time.Millisecond)
}

func TestHistoryAllowedLikeSubscribe(t *testing.T) {
	cfg := historyConfig(10)
	cfg.BeforeSubscribeHandler = func(c *Conn, topics []string) bool { return !strings.HasPrefix(topics[0], "/h/secret") }
	s := newServer(t, cfg)
	publishN(t, s, "/h/secret", 1, 1)
	c := dial(t, s, "", nil)
	c.send(`{"type":"history","topic":"/h/secret","id":1}`)
	c.expectError(CodeForbidden)
	c.send(`{"type":"history","topic":"/h/open","id":2}`)
	if h := c.expect(TypeHistory); h.Epoch == "" || len(h.Messages) != 0 {
		t.Fatalf("history of an empty stream: %s", h.raw)
	}
}

func TestPublishResultOffsets(t *testing.T) {
	s := newServer(t, historyConfig(10))
	for i := 1; i <= 3; i++ {
		p, err := s.tower.PublishResult(context.Background(), []string{"/h/x", "plain", "/h/y"}, json.RawMessage(`1`))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Offsets) != 2 || p.Offsets["/h/x"].Offset != uint64(i) || p.Offsets["/h/y"].Offset != uint64(i) || p.ID == "" {
			t.Fatalf("publish %d: %+v", i, p)
		}
	}
	h, err := s.tower.History(context.Background(), "/h/x", HistoryQuery{Limit: -1})
	if err != nil || len(h.Messages) != 3 || h.Offset != 3 {
		t.Fatalf("History: %+v %v", h, err)
	}
	if _, err := s.tower.History(context.Background(), "plain", HistoryQuery{}); err == nil {
		t.Fatal("History of a plain topic: no error")
	}
}
