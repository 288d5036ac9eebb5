package client_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// lockedBuffer collects a process's output for reading while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStalledNodeBlamesItself: a node process that was stopped (SIGSTOP,
// as a starved or paused process would be) logs, once it runs again, that
// it was the silent side, and does not report the topic service as the
// one that went quiet; it reconnects and counts again.
func TestStalledNodeBlamesItself(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-heartbeat-timeout", "3s")
	var logs lockedBuffer
	helper := svctest.StartLoggedHelperNode(t, svc.Addr, "stall", 3, &logs)
	if err := helper.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(7 * time.Second) // past the service's and the node's heartbeat timeouts
	if err := helper.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 15*time.Second, func() error {
		l := logs.String()
		if !strings.Contains(l, "this node was stalled") || !strings.Contains(l, "topic service reconnected") {
			return fmt.Errorf("the node's log after the stall:\n%s", l)
		}
		return nil
	})
	if l := logs.String(); strings.Contains(l, "no heartbeat from the topic service") {
		t.Fatalf("the stalled node blamed the service:\n%s", l)
	}
}
