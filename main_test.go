package firetower

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines started by the tests are still
// alive once they all finished: every connection, writer and broker must
// be gone after Shutdown.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := waitForGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// waitForGoroutines waits until only the runtime's and the test
// framework's goroutines remain and returns the stacks of the others.
func waitForGoroutines(within time.Duration) string {
	deadline := time.Now().Add(within)
	for {
		leaked := strayGoroutines()
		if leaked == "" || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func strayGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var stray []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "firetower.strayGoroutines"), // this goroutine
			strings.Contains(g, "testing.(*M).Run"),
			strings.Contains(g, "testing.tRunner"),
			strings.Contains(g, "runtime.goexit") && strings.Contains(g, "created by runtime"),
			strings.Contains(g, "os/signal.signal_recv"),
			strings.Contains(g, "runtime.ensureSigM"),
			strings.Contains(g, "internal/poll.runtime_pollWait") && strings.Contains(g, "net/http.(*persistConn)"),
			strings.Contains(g, "net/http.(*persistConn).writeLoop"),
			strings.TrimSpace(g) == "":
			continue
		}
		stray = append(stray, g)
	}
	return strings.Join(stray, "\n\n")
}
