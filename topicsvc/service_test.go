package topicsvc_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

// TestSlowNodeIsCutOff: a node that stops reading is disconnected by the
// service, and the others keep receiving everything.
func TestSlowNodeIsCutOff(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-queue-size", "256", "-metrics-listen", "127.0.0.1:0")
	fast := svctest.DialNode(t, svc.Addr, client.Options{})
	pub := svctest.DialNode(t, svc.Addr, client.Options{})
	block := make(chan struct{})
	slowRec := svctest.NewRecorder()
	slow, err := client.Dial(svc.Addr, client.Options{Token: svctest.Token})
	must(t, err)
	blocked := false
	must(t, slow.Start(func(m broker.Message) {
		if !blocked {
			blocked = true
			<-block // stop reading, as a stuck node would
		}
		slowRec.Handle(m)
	}))
	defer slow.Close()
	defer close(block)
	ctx := svctest.Ctx(t)
	must(t, fast.Subscribe(ctx, "flood"))
	must(t, slow.Subscribe(ctx, "flood"))

	data := bytes.Repeat([]byte("x"), 16<<10)
	const window = 128 // keeps the fast node's queue short
	sent := 0
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(svc.Logs(), "too slow") {
		if time.Now().After(deadline) || sent >= 20000 {
			t.Fatalf("the slow node was not cut off after %d messages; service log:\n%s", sent, svc.Logs())
		}
		for sent-fast.Rec.Count() >= window {
			if time.Now().After(deadline) {
				t.Fatalf("the fast node stalled at %d of %d", fast.Rec.Count(), sent)
			}
			time.Sleep(time.Millisecond)
		}
		must(t, pub.Publish(ctx, broker.Message{Topic: "flood", ID: fmt.Sprint(sent), Data: data}))
		sent++
	}
	t.Logf("slow node cut off after %d messages of 16 KiB", sent)
	// The others go on: the fast node gets everything, in order.
	for i := range 100 {
		must(t, pub.Publish(ctx, broker.Message{Topic: "flood", ID: fmt.Sprint(sent + i), Data: data}))
	}
	sent += 100
	got := fast.Rec.WaitN(t, sent, 10*time.Second)
	for i, m := range got {
		if m.ID != fmt.Sprint(i) {
			t.Fatalf("fast node: message %d has id %s", i, m.ID)
		}
	}
	if !strings.Contains(svc.Logs(), "node disconnected") {
		t.Fatalf("no disconnect logged:\n%s", svc.Logs())
	}
	// The slow node reconnects and may be cut off again meanwhile.
	m := scrape(t, svc.MetricsURL(t))
	if n := m[`firetower_topicsvc_node_disconnects_total{reason="slow"}`]; n < 1 {
		t.Fatalf("slow disconnects counted: %v", n)
	}
	if n := m[`firetower_topicsvc_node_disconnects_total{reason="heartbeat_timeout"}`]; n != 0 {
		t.Fatalf("heartbeat timeouts counted: %v", n)
	}
}

// TestGarbageOnServicePort writes junk to the service's port: connected
// nodes do not notice.
func TestGarbageOnServicePort(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	a := svctest.DialNode(t, svc.Addr, client.Options{})
	b := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	must(t, a.Subscribe(ctx, "g"))
	must(t, b.Publish(ctx, broker.Message{Topic: "g", ID: "0", Data: []byte("0")}))
	a.Rec.WaitN(t, 1, 10*time.Second)

	rnd := rand.New(rand.NewPCG(5, 6))
	junk := make([]byte, 64<<10)
	for i := range junk {
		junk[i] = byte(rnd.UintN(256))
	}
	payloads := [][]byte{
		junk,
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		// A valid HTTP/2 preface, then a frame header announcing 16 MiB.
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), junk[:4096]...),
		{},
	}
	for _, p := range payloads {
		conn, err := net.Dial("tcp", svc.Addr)
		must(t, err)
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		conn.Write(p)
		conn.Read(make([]byte, 1024))
		conn.Close()
	}
	for i := 1; i <= 50; i++ {
		must(t, b.Publish(ctx, broker.Message{Topic: "g", ID: fmt.Sprint(i), Data: []byte("1")}))
	}
	got := a.Rec.WaitN(t, 51, 10*time.Second)
	for i, m := range got {
		if m.ID != fmt.Sprint(i) {
			t.Fatalf("message %d has id %s", i, m.ID)
		}
	}
	if strings.Contains(svc.Logs(), "node disconnected") {
		t.Fatalf("a node was disconnected:\n%s", svc.Logs())
	}
	if !a.Connected() || !b.Connected() {
		t.Fatal("a node lost its session")
	}
}

// TestBinary checks the command's own behaviour: a token is required, and
// SIGTERM stops it gracefully.
func TestBinary(t *testing.T) {
	out, err := exec.Command(svctest.Bin(), "-listen", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "token is required") {
		t.Fatalf("without a token: err %v, output %q", err, out)
	}
	svc := svctest.Start(t, "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "x"))
	must(t, svc.Cmd.Process.Signal(os.Interrupt))
	select {
	case <-svc.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not stop on SIGINT")
	}
	if code := svc.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGINT:\n%s", code, svc.Logs())
	}
	if !strings.Contains(svc.Logs(), "topic service stopped") {
		t.Fatalf("no stop logged:\n%s", svc.Logs())
	}
}

// TestSilentNodeForgotten: a node process that stops (SIGSTOP: its
// connection stays open, its heartbeats stop) is forgotten after the
// heartbeat timeout, and its count vanishes.
func TestSilentNodeForgotten(t *testing.T) {
	// The healthy node heartbeats every second: a 3 s timeout leaves it
	// 2 s of slack on a loaded machine.
	svc := svctest.Start(t, "127.0.0.1:0", "-heartbeat-timeout", "3s", "-metrics-listen", "127.0.0.1:0")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	const topic = "silent"
	nd.SetCount(topic, 1)
	helper := svctest.StartHelperNode(t, svc.Addr, topic, 6)
	brokertest.Eventually(t, 10*time.Second, brokertest.CountIs(ctx, nd, topic, 7))
	must(t, helper.Process.Signal(syscall.SIGSTOP))
	stopped := time.Now()
	brokertest.Eventually(t, 15*time.Second, brokertest.CountIs(ctx, nd, topic, 1))
	t.Logf("the silent node was forgotten %v after it stopped (heartbeat timeout 3s)", time.Since(stopped).Round(time.Millisecond))
	// The service logs the timeout, and drops the session from its
	// figures, just after it removed the node's counts.
	brokertest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(svc.Logs(), "no heartbeat") {
			return fmt.Errorf("no heartbeat timeout logged:\n%s", svc.Logs())
		}
		return nil
	})
	// The node in good health was not forgotten meanwhile.
	if !nd.Connected() || strings.Count(svc.Logs(), "node connected") != 2 {
		t.Fatalf("the healthy node lost its session:\n%s", svc.Logs())
	}
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, svc.MetricsURL(t), map[string]float64{
		`firetower_topicsvc_nodes`: 1,
		`firetower_topicsvc_node_disconnects_total{reason="heartbeat_timeout"}`: 1,
		`firetower_topicsvc_node_disconnects_total{reason="stream_error"}`:      0,
	}))
}
