package firetower

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// Only valid JSON in valid UTF-8 ever reaches a subscriber: each entry of
// data into a node refuses the rest, and a node drops what a broker it
// does not control delivers.

// TestRESTRefusesInvalidUTF8 publishes invalid UTF-8 between two valid
// messages to a batched subscriber: the REST answer is 400, and the
// subscriber gets the other two messages on a connection that stays open.
func TestRESTRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, Config{APIToken: testToken})
	c := dial(t, s, "batch=1", nil)
	c.subscribe("/chat/u")
	if code, body := post(t, s, "/publish", testToken, `{"topic":"/chat/u","data":{"text":"one"}}`); code != 200 {
		t.Fatalf("valid publish: %d %v", code, body)
	}
	for _, body := range []string{
		`{"topic":"/chat/u","data":{"text":"` + "\xff" + `"}}`,         // the short parser's path
		`{"topic":"/chat/u","data":{"text":"` + "\xc3" + `"} }`,        // cut in a character
		`{"data":{"text":"` + "\xed\xa0\x80" + `"},"topic":"/chat/u"}`, // an encoded surrogate
		` {"topic" : "/chat/u", "data":"` + "\xff" + `", "topics":[]}`,
		`{"topic":"/chat/u\u0041","data":"` + "\xff" + `"}`, // an escape: encoding/json's path
		`{"topic":"` + "/chat/\xff" + `","data":1}`,         // encoding/json would make it U+FFFD
		`{"topic":"\udc00","data":1}`,                       // so would it this
		`{"topics":["\ud800x"],"data":1}`,
	} {
		if code, answer := post(t, s, "/publish", testToken, body); code != http.StatusBadRequest || answer["error"] == "" {
			t.Errorf("%q: %d %v, want 400 with an error", body, code, answer)
		}
	}
	if code, body := post(t, s, "/publish", testToken, `{"topic":"/chat/u","data":{"text":"two \ud83d\ude00"}}`); code != 200 {
		t.Fatalf("valid publish: %d %v", code, body)
	}
	for _, want := range []string{`{"text":"one"}`, `{"text":"two \ud83d\ude00"}`} {
		if f := c.expect(TypePublish); string(f.Data) != want {
			t.Fatalf("got %s, want data %s", f.raw, want)
		}
	}
	c.alive()
	if code, body := get(t, s, "/topics/%2Fchat%2F%FF/count"); code != http.StatusBadRequest {
		t.Errorf("count of a percent-encoded invalid topic: %d %v", code, body)
	}
}

func TestPublishRefusesInvalidData(t *testing.T) {
	s := newServer(t, Config{})
	c := dial(t, s, "", nil)
	c.subscribe("t")
	for _, data := range []any{
		json.RawMessage(`{"text":"` + "\xff" + `"}`),
		json.RawMessage(`{"text":"hi"},"topic":"/chat/other","type":"subscribed"`),
		json.RawMessage(``),
		rawMarshaler(`"` + "\xfe" + `"`),
	} {
		if _, err := s.tower.Publish(context.Background(), "t", data); !errors.Is(err, ErrInvalidData) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidData", data, err)
		}
	}
	if _, err := s.tower.PublishTopics(context.Background(), []string{"t", "u"}, json.RawMessage(`"`+"\xff"+`"`)); !errors.Is(err, ErrInvalidData) {
		t.Errorf("PublishTopics: %v, want ErrInvalidData", err)
	}
	if _, err := s.tower.Publish(context.Background(), "t", json.RawMessage(`{"ok":"é"}`)); err != nil {
		t.Fatal(err)
	}
	if f := c.expect(TypePublish); string(f.Data) != `{"ok":"é"}` {
		t.Fatalf("got %s", f.raw)
	}
}

type rawMarshaler string

func (r rawMarshaler) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// TestClientPublishRefusesInvalidUTF8: a client's publish frame holding
// invalid UTF-8 is an error frame, and nothing reaches the subscribers.
func TestClientPublishRefusesInvalidUTF8(t *testing.T) {
	s := newServer(t, Config{ReadHandler: func(*Conn, *Frame) bool { return true }})
	sub := dial(t, s, "batch=1", nil)
	sub.subscribe("t")
	pub := dial(t, s, "", nil)
	pub.send(`{"type":"publish","topic":"t","data":"` + "\xff" + `","id":1}`)
	pub.expectError(CodeBadRequest)
	pub.send(`{"type":"publish","topic":"t","data":"ok"}`)
	if f := sub.expect(TypePublish); string(f.Data) != `"ok"` {
		t.Fatalf("got %s", f.raw)
	}
}

// remoteBroker is the embedded topic service posing as a broker the node
// does not control (Redis, a remote service): InProcess is false, and
// messages published on it directly reach the node as from another node.
type remoteBroker struct{ *topicsvc.Embedded }

func (remoteBroker) InProcess() bool { return false }

// TestDeliverDropsInvalidData: a node on a broker it does not control
// drops, counts and logs (once a second at most) the messages whose data
// is not valid JSON in valid UTF-8; its batched subscriber gets the rest.
func TestDeliverDropsInvalidData(t *testing.T) {
	b := remoteBroker{topicsvc.NewEmbedded()}
	logs := &recordLogs{}
	s := newServer(t, Config{Broker: b, Logger: slog.New(logs)})
	c := dial(t, s, "batch=1", nil)
	c.subscribe("t")
	bad := []broker.Message{
		{Topic: "t", ID: "1", Data: []byte(`{"text":"` + "\xff" + `"}`)},
		{Topic: "t", ID: "2", Data: []byte(`{"text":"hi"},"topic":"/chat/other","type":"subscribed"`)},
		{Topic: "t", ID: "3", Data: []byte(`1 2`)},
		{Topic: "t", ID: "4", Data: nil},
		{Topic: "t", ID: "\xff", Data: []byte(`1`)},
	}
	for _, m := range bad {
		if err := b.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(context.Background(), broker.Message{Topic: "t", ID: "ok", Data: []byte(`{"text":"fine"}`)}); err != nil {
		t.Fatal(err)
	}
	if f := c.expect(TypePublish); string(f.ID) != `"ok"` || string(f.Data) != `{"text":"fine"}` {
		t.Fatalf("got %s", f.raw)
	}
	c.alive()
	if n := s.tower.Stats().DroppedInvalid; n != int64(len(bad)) {
		t.Errorf("Stats.DroppedInvalid = %d, want %d", n, len(bad))
	}
	if lines := logs.count("dropped messages from the broker"); lines != 1 {
		t.Errorf("%d log lines for %d drops within a second, want 1", lines, len(bad))
	}
}

// recordLogs is a slog.Handler that keeps the messages.
type recordLogs struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordLogs) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLogs) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *recordLogs) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLogs) WithGroup(string) slog.Handler      { return h }

func (h *recordLogs) count(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}
