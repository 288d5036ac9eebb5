//go:build redis

package redis_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// prefixes hands out the prefixes of a conformance run and remembers which
// test has which, so that LoseStreams wipes that test's streams alone.
type prefixes struct {
	admin  func(t *testing.T) goredis.UniversalClient
	mu     sync.Mutex
	byTest map[string]string
}

func newPrefixes(admin func(t *testing.T) goredis.UniversalClient) *prefixes {
	return &prefixes{admin: admin, byTest: map[string]string{}}
}

func (p *prefixes) new(t *testing.T) string {
	prefix := uniquePrefix()
	p.mu.Lock()
	p.byTest[t.Name()] = prefix
	p.mu.Unlock()
	return prefix
}

// loseStreams is brokertest.Config.LoseStreams: it deletes every stream
// key of the test's prefix, as a Redis that lost its data has none.
func (p *prefixes) loseStreams(t *testing.T) {
	p.mu.Lock()
	prefix, ok := p.byTest[t.Name()]
	p.mu.Unlock()
	if !ok {
		t.Fatalf("LoseStreams: no cluster was made for %s", t.Name())
	}
	// The stream keys are PREFIX:e:… and PREFIX:s:…; the counts live
	// under {PREFIX}, which the pattern does not match.
	if n := deleteKeys(t, p.admin(t), prefix+":*"); n == 0 {
		t.Fatalf("LoseStreams: no stream key of prefix %s to delete", prefix)
	}
}

// deleteKeys deletes the keys that match pattern, on every master of a
// Cluster, and returns how many it deleted.
func deleteKeys(t *testing.T, c goredis.UniversalClient, pattern string) int64 {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	var deleted atomic.Int64
	del := func(ctx context.Context, c *goredis.Client) error {
		keys, err := scanKeys(ctx, c, pattern)
		if err != nil {
			return err
		}
		for _, key := range keys {
			n, err := c.Del(ctx, key).Result()
			if err != nil {
				return err
			}
			deleted.Add(n)
		}
		return nil
	}
	switch c := c.(type) {
	case *goredis.ClusterClient:
		must(t, c.ForEachMaster(ctx, del))
	case *goredis.Client:
		must(t, del(ctx, c))
	default:
		t.Fatalf("deleteKeys: client %T", c)
	}
	return deleted.Load()
}

// allKeys returns the keys that match pattern, on every master of a
// Cluster.
func allKeys(t *testing.T, c goredis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	var mu sync.Mutex
	var all []string
	collect := func(ctx context.Context, c *goredis.Client) error {
		keys, err := scanKeys(ctx, c, pattern)
		mu.Lock()
		all = append(all, keys...)
		mu.Unlock()
		return err
	}
	switch c := c.(type) {
	case *goredis.ClusterClient:
		must(t, c.ForEachMaster(ctx, collect))
	case *goredis.Client:
		must(t, collect(ctx, c))
	default:
		t.Fatalf("allKeys: client %T", c)
	}
	return all
}

// scanKeys returns the keys of one server that match pattern. It runs on
// ForEachMaster's goroutines too, so it returns its error.
func scanKeys(ctx context.Context, c *goredis.Client, pattern string) ([]string, error) {
	var keys []string
	var cursor uint64
	// Bounded: the test servers hold far fewer keys than this many pages.
	for range 100000 {
		page, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("SCAN %s: %w", pattern, err)
		}
		keys = append(keys, page...)
		if cursor = next; cursor == 0 {
			return keys, nil
		}
	}
	return nil, fmt.Errorf("SCAN %s did not end", pattern)
}
