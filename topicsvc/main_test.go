package topicsvc_test

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
)

// serviceBin is the firetower-topicsvc binary TestMain builds once.
var serviceBin string

const testToken = "test-token-0123456789"

// The test binary re-executes itself as a node process when this variable
// is set, so that tests can kill a node like a crashed gateway.
const helperEnv = "TOPICSVC_TEST_HELPER_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperNode()
		return
	}
	dir, err := os.MkdirTemp("", "topicsvc-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serviceBin = filepath.Join(dir, "firetower-topicsvc")
	build := exec.Command(goTool(), "build", "-o", serviceBin, "github.com/OSMeteor/firetower/cmd/firetower-topicsvc")
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

// helperNode runs in a child process: a node that subscribes, reports a
// count, says "ready" and waits to be killed. The parent checks that the
// service counts it.
func helperNode() {
	addr, topic := os.Getenv("TOPICSVC_TEST_ADDR"), os.Getenv("TOPICSVC_TEST_TOPIC")
	var count int
	fmt.Sscan(os.Getenv("TOPICSVC_TEST_COUNT"), &count)
	c, err := topicsvc.Dial(addr, topicsvc.ClientOptions{Token: testToken})
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	if err := c.Start(func(broker.Message) {}); err != nil {
		fmt.Println("start:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, topic); err != nil {
		fmt.Println("subscribe:", err)
		os.Exit(1)
	}
	c.SetCount(topic, count)
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed long before
	os.Exit(2)
}

// service is a firetower-topicsvc process.
type service struct {
	t    testing.TB
	cmd  *exec.Cmd
	addr string

	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

var addrRE = regexp.MustCompile(`msg="topic service listening" addr=(\S+)`)

// startService starts the binary on listen (127.0.0.1:0 picks a port) and
// waits for the address it bound. The process is killed at cleanup.
func startService(t testing.TB, listen string, args ...string) *service {
	t.Helper()
	s := &service{t: t, exited: make(chan struct{})}
	s.cmd = exec.Command(serviceBin, append([]string{"-listen", listen, "-token", testToken}, args...)...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", serviceBin, err)
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
		s.cmd.Wait()
	}()
	t.Cleanup(s.kill)
	select {
	case s.addr = <-addrc:
	case <-s.exited:
		t.Fatalf("firetower-topicsvc exited before listening:\n%s", s.logs())
	case <-time.After(10 * time.Second):
		t.Fatalf("firetower-topicsvc did not report its address within 10s:\n%s", s.logs())
	}
	return s
}

func (s *service) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// kill SIGKILLs the service and waits for it; it is idempotent.
func (s *service) kill() {
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// recorder is a node's handler that keeps what it receives.
type recorder struct {
	mu   sync.Mutex
	got  []broker.Message
	wake chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) handle(m broker.Message) {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *recorder) messages() []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Message(nil), r.got...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// waitFor waits until pred holds for the messages received so far.
func (r *recorder) waitFor(t testing.TB, within time.Duration, what string, pred func([]broker.Message) bool) []broker.Message {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		if got := r.messages(); pred(got) {
			return got
		}
		select {
		case <-r.wake:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			got := r.messages()
			t.Fatalf("waiting %v for %s: got %d messages", within, what, len(got))
		}
	}
}

func (r *recorder) waitN(t testing.TB, n int, within time.Duration) []broker.Message {
	t.Helper()
	return r.waitFor(t, within, fmt.Sprintf("%d messages", n), func(m []broker.Message) bool { return len(m) >= n })
}

// node is a started client with its recorder.
type node struct {
	*topicsvc.Client
	rec *recorder
}

func dialNode(t testing.TB, addr string, opts topicsvc.ClientOptions) *node {
	t.Helper()
	if opts.Token == "" {
		opts.Token = testToken
	}
	c, err := topicsvc.Dial(addr, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	n := &node{Client: c, rec: newRecorder()}
	if err := c.Start(n.rec.handle); err != nil {
		t.Fatal(err)
	}
	return n
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
