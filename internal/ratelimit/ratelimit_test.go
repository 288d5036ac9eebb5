package ratelimit

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := New(10, 3, now)
	for i := range 3 {
		if !b.Allow(now) {
			t.Fatalf("burst: event %d refused", i)
		}
	}
	if b.Allow(now) {
		t.Fatal("a fourth event at once was allowed with a burst of 3")
	}
	now = now.Add(100 * time.Millisecond) // one token at 10/s
	if !b.Allow(now) || b.Allow(now) {
		t.Fatal("after 100 ms at 10/s exactly one event is allowed")
	}
	now = now.Add(time.Hour)
	if !b.AllowN(now, 3) || b.Allow(now) {
		t.Fatal("a long pause refills to the burst, not beyond")
	}
	now = now.Add(time.Second)
	if b.AllowN(now, 4) {
		t.Fatal("AllowN above the burst was allowed")
	}
	if !b.AllowN(now, 3) {
		t.Fatal("a refused AllowN took tokens")
	}
}

// FuzzBucket: over any sequence of events, no more are allowed than the
// burst plus rate times the time elapsed.
func FuzzBucket(f *testing.F) {
	f.Add([]byte{0, 1, 2, 200, 0, 0, 0, 7})
	f.Fuzz(func(t *testing.T, gaps []byte) {
		start := time.Unix(0, 0)
		now := start
		b := New(100, 20, now)
		allowed := 0
		for _, g := range gaps {
			now = now.Add(time.Duration(g) * time.Millisecond)
			if b.Allow(now) {
				allowed++
			}
		}
		if limit := 20 + 100*now.Sub(start).Seconds(); float64(allowed) > limit+1e-9 {
			t.Fatalf("%d events allowed in %v, limit %.1f", allowed, now.Sub(start), limit)
		}
	})
}
