// Package svctest runs the topic service for tests as the nodes of a
// cluster meet it: a real firetower-topicsvc process, and nodes that dial
// it, record what they receive, or run in a process of their own to be
// killed like a crashed gateway.
//
// A test package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { svctest.Main(m) }
package svctest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker/brokertest"
)

// Token is the shared secret of the services and nodes Start and DialNode
// make.
const Token = "test-token-0123456789"

// bin is the firetower-topicsvc binary Main builds once.
var bin string

// Bin returns the path of the firetower-topicsvc binary, for tests that
// run it with arguments of their own.
func Bin() string { return bin }

// Main builds firetower-topicsvc, runs the tests, and fails them if
// goroutines outlive them. When the test binary is re-executed as a node
// process (StartHelperNode), it runs that node instead.
func Main(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperNode()
		return
	}
	dir, err := os.MkdirTemp("", "topicsvc-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "firetower-topicsvc")
	build := exec.Command(goTool(), "build", "-o", bin, "github.com/OSMeteor/firetower/cmd/firetower-topicsvc")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building firetower-topicsvc:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// goTool is the go command that runs the tests: go test puts its
// GOROOT/bin first in the PATH of the test binary.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// leakedGoroutines waits up to within for the goroutines the tests started
// to end, and describes those that did not.
func leakedGoroutines(within time.Duration) string {
	deadline := time.Now().Add(within)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !benign(g) {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benign reports whether a goroutine's stack belongs to the runtime or
// the test framework rather than to code under test.
func benign(stack string) bool {
	for _, s := range []string{
		"main.main()",
		"testing.(*M).",
		"testing.tRunner",
		"leakedGoroutines",
		"runtime.goexit0",
		"os/signal.signal_recv",
		"runtime.ensureSigM",
		"created by runtime.gc",
		"runtime.forcegchelper",
		"runtime.bgsweep",
		"runtime.bgscavenge",
		"runtime.runfinq",
	} {
		if strings.Contains(stack, s) {
			return true
		}
	}
	return strings.TrimSpace(stack) == ""
}

// Service is a firetower-topicsvc process.
type Service struct {
	// Cmd is the running process.
	Cmd *exec.Cmd
	// Addr is the address the service bound, host:port.
	Addr string

	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

var addrRE = regexp.MustCompile(`msg="topic service listening" addr=(\S+)`)

// Start starts the binary on listen (127.0.0.1:0 picks a port) with the
// token and args, and waits for the address it bound. The process is
// killed at cleanup.
func Start(t testing.TB, listen string, args ...string) *Service {
	t.Helper()
	s := &Service{exited: make(chan struct{})}
	s.Cmd = exec.Command(bin, append([]string{"-listen", listen, "-token", Token}, args...)...)
	stderr, err := s.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	addrc := make(chan string, 1)
	go func() {
		defer close(s.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			if m := addrRE.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
		s.Cmd.Wait()
	}()
	t.Cleanup(s.Kill)
	select {
	case s.Addr = <-addrc:
	case <-s.exited:
		t.Fatalf("firetower-topicsvc exited before listening:\n%s", s.Logs())
	case <-time.After(10 * time.Second):
		t.Fatalf("firetower-topicsvc did not report its address within 10s:\n%s", s.Logs())
	}
	return s
}

// Logs returns what the service logged so far.
func (s *Service) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// Exited is closed once the process has exited and its logs are read.
func (s *Service) Exited() <-chan struct{} { return s.exited }

// Kill SIGKILLs the service and waits for it; it is idempotent.
func (s *Service) Kill() {
	s.Cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

var metricsAddrRE = regexp.MustCompile(`msg="metrics listening" addr=(\S+)`)

// MetricsURL waits for a service started with -metrics-listen to log its
// metrics address, and returns the URL of its /metrics.
func (s *Service) MetricsURL(t testing.TB) string {
	t.Helper()
	var url string
	brokertest.Eventually(t, 5*time.Second, func() error {
		m := metricsAddrRE.FindStringSubmatch(s.Logs())
		if m == nil {
			return fmt.Errorf("no metrics address logged:\n%s", s.Logs())
		}
		url = "http://" + m[1] + "/metrics"
		return nil
	})
	return url
}
