package svctest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc/client"
)

// Recorder is a node's handler that keeps what it receives.
type Recorder struct {
	mu   sync.Mutex
	got  []broker.Message
	wake chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{wake: make(chan struct{}, 1)} }

// Handle is the broker.Handler that records m.
func (r *Recorder) Handle(m broker.Message) {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Messages returns the messages received so far, in order.
func (r *Recorder) Messages() []broker.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]broker.Message(nil), r.got...)
}

// Count returns how many messages were received so far.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// Reset forgets the messages received so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = nil
}

// WaitFor waits until pred holds for the messages received so far, and
// returns them; the test fails after within.
func (r *Recorder) WaitFor(t testing.TB, within time.Duration, what string, pred func([]broker.Message) bool) []broker.Message {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		if got := r.Messages(); pred(got) {
			return got
		}
		select {
		case <-r.wake:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			got := r.Messages()
			t.Fatalf("waiting %v for %s: got %d messages", within, what, len(got))
		}
	}
}

// WaitN waits until at least n messages were received, and returns them.
func (r *Recorder) WaitN(t testing.TB, n int, within time.Duration) []broker.Message {
	t.Helper()
	return r.WaitFor(t, within, fmt.Sprintf("%d messages", n), func(m []broker.Message) bool { return len(m) >= n })
}

// Node is a started client of a service, with the Recorder its handler
// fills.
type Node struct {
	*client.Client
	Rec *Recorder
}

// DialNode dials the service at addr (with Token unless opts has one),
// starts the client with a Recorder, and closes it at cleanup.
func DialNode(t testing.TB, addr string, opts client.Options) *Node {
	t.Helper()
	if opts.Token == "" {
		opts.Token = Token
	}
	c, err := client.Dial(addr, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	n := &Node{Client: c, Rec: NewRecorder()}
	if err := c.Start(n.Rec.Handle); err != nil {
		t.Fatal(err)
	}
	return n
}

// Ctx returns a context that ends with the test, or after 30s.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The test binary re-executes itself as a node process when this variable
// is set, so that tests can kill a node like a crashed gateway.
const helperEnv = "TOPICSVC_TEST_HELPER_NODE"

// StartHelperNode starts a node in a process of its own (the test binary,
// re-executed: see Main) that sets count subscribers of topic at the
// service addr, and returns once the node is ready. The process is killed
// when the test ends, if it has not been already.
func StartHelperNode(t testing.TB, addr, topic string, count int) *exec.Cmd {
	t.Helper()
	return startHelperNode(t, addr, topic, count, nil)
}

// StartLoggedHelperNode is StartHelperNode with the node's client logging
// (text, debug level) to logs.
func StartLoggedHelperNode(t testing.TB, addr, topic string, count int, logs io.Writer) *exec.Cmd {
	t.Helper()
	return startHelperNode(t, addr, topic, count, logs)
}

func startHelperNode(t testing.TB, addr, topic string, count int, logs io.Writer) *exec.Cmd {
	t.Helper()
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), helperEnv+"=1", "TOPICSVC_TEST_ADDR="+addr, "TOPICSVC_TEST_TOPIC="+topic, "TOPICSVC_TEST_COUNT="+strconv.Itoa(count))
	if logs != nil {
		helper.Env = append(helper.Env, "TOPICSVC_TEST_LOG=1")
		helper.Stderr = logs
	}
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { helper.Process.Kill(); helper.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper node: %q", line)
	}
	return helper
}

// helperNode runs in the process StartHelperNode starts: a node that
// subscribes, reports a count, says "ready" and waits to be killed.
func helperNode() {
	addr, topic := os.Getenv("TOPICSVC_TEST_ADDR"), os.Getenv("TOPICSVC_TEST_TOPIC")
	var count int
	fmt.Sscan(os.Getenv("TOPICSVC_TEST_COUNT"), &count)
	opts := client.Options{Token: Token}
	if os.Getenv("TOPICSVC_TEST_LOG") == "1" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := client.Dial(addr, opts)
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
	time.Sleep(2 * time.Minute) // killed long before
	os.Exit(2)
}
