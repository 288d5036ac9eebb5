package jsonstr

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestAppend(t *testing.T) {
	for _, s := range []string{"", "/chat/world", `q"b\s`, "ctl\x01\x1f\n\r\t", "世界🔥", "\u2028"} {
		var back string
		if err := json.Unmarshal(Append(nil, s), &back); err != nil || back != s {
			t.Errorf("Append(%q) = %s: %v", s, Append(nil, s), err)
		}
	}
}

// FuzzAppend: every valid UTF-8 string comes back from encoding/json as
// it went in.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00\x7f", "é\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		out := Append([]byte("x"), s)
		var back string
		if err := json.Unmarshal(out[1:], &back); err != nil || back != s {
			t.Fatalf("Append(%q) = %s: %v", s, out[1:], err)
		}
	})
}
