package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
)

// Eventually polls check every 10ms until it returns nil, and returns how
// long that took. If check still fails after within, the test fails with
// check's last error.
func Eventually(t testing.TB, within time.Duration, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := check()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CountIs returns a check for Eventually: b counts want subscribers of
// topic.
func CountIs(ctx context.Context, b broker.Broker, topic string, want int) func() error {
	return func() error {
		got, err := b.Count(ctx, topic)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("Count(%q) = %d, want %d", topic, got, want)
		}
		return nil
	}
}
