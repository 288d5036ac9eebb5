// Package ratelimit is a token bucket: rate tokens a second, up to burst
// at once. It is not safe for concurrent use; a connection's read path
// owns its bucket.
package ratelimit

import "time"

// Bucket allows events at rate per second on average, burst at once.
type Bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// New returns a full bucket, as of now.
func New(rate float64, burst int, now time.Time) Bucket {
	return Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// Allow takes one token at now and reports whether there was one.
func (b *Bucket) Allow(now time.Time) bool { return b.AllowN(now, 1) }

// AllowN takes n tokens at now and reports whether there were that many;
// if not, none is taken.
func (b *Bucket) AllowN(now time.Time, n float64) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}
