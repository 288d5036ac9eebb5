package firetower

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseFrame(f *testing.F) {
	for _, seed := range []string{
		`{"type":"subscribe","topic":"a,b","data":""}`,
		`{"type":"subscribe","topic":["/chat/world"],"id":1}`,
		`{"type":"unsubscribe","topic":"a"}`,
		`{"type":"publish","topic":"a","data":{"x":[1,2,{"y":null}]},"id":"p"}`,
		`{"type":"ping","id":-1.5e3}`,
		`{"type":"custom","topic":null}`,
		`{"type":"subscribe","topic":"a\u0000"}`,
		`{"type":"subscribe","topic":["\udc00","a"]}`,
		`{"type":"subscribe","topic":"\ud83d\ude00"}`,
		`{"type":"subscribe","topic":["a","b"],"since":{"a":{"epoch":"E","offset":17}},"id":3}`,
		`{"type":"subscribe","topic":"a","since":{"a":{"epoch":"","offset":1e3}}}`,
		`{"type":"history","topic":"a","limit":50,"since":{"epoch":"E","offset":0},"id":4}`,
		`{"type":"history","topic":"a","limit":1e40}`,
		`[]`, `null`, `{`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fr, perr := parseFrame(raw)
		if fr == nil {
			t.Fatal("nil frame")
		}
		if perr != nil {
			if perr.code != CodeBadRequest || perr.message == "" {
				t.Fatalf("error %+v", perr)
			}
			// The error frame is always valid JSON, whatever the input.
			if !json.Valid(errorFrame(perr, fr.ID)) {
				t.Fatalf("invalid error frame for %q", raw)
			}
			return
		}
		if fr.Type == "" || !utf8.Valid(raw) {
			t.Fatalf("accepted %q as %+v", raw, fr)
		}
		seen := map[string]bool{}
		for _, topic := range fr.Topics {
			if ValidateTopic(topic) != nil || strings.Contains(topic, ",") || seen[topic] {
				t.Fatalf("accepted topic %q of %q", topic, raw)
			}
			// A U+FFFD in a topic was sent as one, never made by decoding.
			if strings.ContainsRune(topic, utf8.RuneError) && !strings.Contains(string(raw), "\uFFFD") &&
				!strings.Contains(strings.ToLower(string(raw)), `\ufffd`) {
				t.Fatalf("topic %q of %q holds a U+FFFD the client did not send", topic, raw)
			}
			seen[topic] = true
		}
		if fr.ID != nil && !json.Valid(fr.ID) {
			t.Fatalf("id %q is not JSON", fr.ID)
		}
		switch fr.Type {
		case TypeSubscribe, TypeUnsubscribe:
			if len(fr.Topics) == 0 {
				t.Fatalf("%s without topics accepted: %q", fr.Type, raw)
			}
		case TypePublish:
			if len(fr.Topics) == 0 || !json.Valid(fr.Data) {
				t.Fatalf("publish accepted: %q", raw)
			}
			// The frame the node sends for it is valid JSON.
			if out := appendPublishFrame(nil, fr.Topics[0], "id", fr.Data, 7); !json.Valid(out) {
				t.Fatalf("publish frame %q is not JSON", out)
			}
		case TypeHistory:
			if len(fr.Topics) != 1 || fr.Limit < -1 || len(fr.Since) > 1 {
				t.Fatalf("history accepted: %q as %+v", raw, fr)
			}
		}
		for _, p := range fr.Since {
			if p.Epoch == "" {
				t.Fatalf("a position without an epoch accepted: %q", raw)
			}
			if b, _ := json.Marshal(p); !json.Valid(b) {
				t.Fatalf("position %+v", p)
			}
		}
	})
}
