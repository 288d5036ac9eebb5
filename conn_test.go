package firetower

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestFrameLengths: the writer frames messages itself; payloads that take
// each of the three header lengths (7-bit, 16-bit and 64-bit) reach a
// plain client and a batched one intact and in order.
func TestFrameLengths(t *testing.T) {
	sizes := []int{0, 1, 100, 125, 126, 1000, 65535, 65536, 200000}
	for _, query := range []string{"", "batch=1"} {
		t.Run("query="+query, func(t *testing.T) {
			s := newServer(t, Config{})
			c := dial(t, s, query, nil)
			c.subscribe("sizes")
			ctx := context.Background()
			for _, n := range sizes {
				if _, err := s.tower.Publish(ctx, "sizes", strings.Repeat("x", n)); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range sizes {
				f := c.expect(TypePublish)
				var got string
				if err := json.Unmarshal(f.Data, &got); err != nil || got != strings.Repeat("x", n) {
					t.Fatalf("want %d bytes of data, got %d (%v)", n, len(got), err)
				}
			}
		})
	}
}

func TestFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := appendFrameHeader(nil, tc.n); string(got) != string(tc.want) {
			t.Errorf("header for %d bytes: % x, want % x", tc.n, got, tc.want)
		}
	}
}
