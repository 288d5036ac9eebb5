package server_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/broker/brokertest"
	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// TestSessionBatches speaks the session protocol directly, as a node
// would: publishes travel in NodeFrame.publishes, a malformed batch is
// refused whole, deliveries come in ServiceFrame.deliveries, after the
// frame's ops.
func TestSessionBatches(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	api := pushClient(t, svc.Addr)
	stream, err := api.Session(withToken(svctest.Ctx(t), svctest.Token))
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{
		{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "batched"}}},
		{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 1, Topic: "b"}}},
	}}))
	f, err := stream.Recv()
	must(t, err)
	if w := f.GetOps()[0].GetWelcome(); w == nil || w.GetMaxMessageSize() == 0 {
		t.Fatalf("first frame %v, want a welcome with the largest message size", f)
	}
	acked := false
	for _, o := range f.GetOps()[1:] { // the ack may come with the welcome
		acked = acked || o.GetAck().GetSeq() == 1
	}
	must(t, stream.Send(&pb.NodeFrame{Publishes: &pb.Batch{Topics: []byte("b"), TopicLens: []uint32{1, 1}}}))
	must(t, stream.Send(&pb.NodeFrame{Publishes: &pb.Batch{
		Topics: []byte("bbb"), TopicLens: []uint32{1, 1, 1},
		Ids: []byte("m1m2m3"), IdLens: []uint32{2, 2, 2},
		Data: []byte(`1"two"{"n":3}`), DataLens: []uint32{1, 5, 7},
	}}))
	var got []string
	var notices []string
	for len(got) < 3 {
		f, err := stream.Recv()
		must(t, err)
		for _, o := range f.GetOps() {
			if n := o.GetNotice(); n != nil {
				notices = append(notices, n.GetError())
			}
			if a := o.GetAck(); a != nil {
				acked = a.GetSeq() == 1 && a.GetError() == ""
			}
		}
		if b := f.GetDeliveries(); b != nil {
			if !acked {
				t.Fatal("a delivery before the subscribe's ack")
			}
			ids, data := string(b.GetIds()), string(b.GetData())
			for i := range b.GetTopicLens() {
				il, dl := b.GetIdLens()[i], b.GetDataLens()[i]
				got = append(got, ids[:il]+"="+data[:dl])
				ids, data = ids[il:], data[dl:]
			}
		}
	}
	if strings.Join(got, " ") != `m1=1 m2="two" m3={"n":3}` {
		t.Fatalf("delivered %q", got)
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "malformed batch") {
		t.Fatalf("notices %q, want one about the malformed batch", notices)
	}
}

// TestSessionRefusesBadOperations speaks the session protocol directly, as
// a buggy node might: bad operations are refused one by one, the session
// goes on.
func TestSessionRefusesBadOperations(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	api := pushClient(t, svc.Addr)
	ctx := withToken(svctest.Ctx(t), svctest.Token)
	stream, err := api.Session(ctx)
	must(t, err)
	op := func(o *pb.NodeOp) *pb.NodeOp { return o }
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{
		op(&pb.NodeOp{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "raw"}}}),
		op(&pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 1, Topic: ""}}}),
		op(&pb.NodeOp{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "again"}}}),
		{},
		op(&pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 2, Topic: "ok"}}}),
	}, Publishes: &pb.Batch{ // a topic too long, then a good message
		Topics: []byte(strings.Repeat("x", 300) + "ok"), TopicLens: []uint32{300, 2},
		Ids: []byte("1m"), IdLens: []uint32{1, 1},
		Data: []byte("1"), DataLens: []uint32{0, 1},
	}}))
	var acks, notices []string
	delivered := false
	for !delivered {
		f, err := stream.Recv()
		must(t, err)
		for _, o := range f.GetOps() {
			switch {
			case o.GetAck() != nil:
				acks = append(acks, o.GetAck().GetError())
			case o.GetNotice() != nil:
				notices = append(notices, o.GetNotice().GetError())
			}
		}
		if b := f.GetDeliveries(); b != nil {
			delivered = string(b.GetIds()) == "m"
		}
	}
	if len(acks) != 2 || !strings.Contains(acks[0], "empty topic") || acks[1] != "" {
		t.Fatalf("acks %q", acks)
	}
	if len(notices) != 3 {
		t.Fatalf("notices %q", notices)
	}
}

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

	data := []byte(`"` + strings.Repeat("x", 16<<10) + `"`)
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
	must(t, nd.Subscribe(ctx, topic))
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

// TestBusyNodeLastHeartbeat: a node that sends data and no heartbeat
// message for seconds (a busy node) shows a fresh lastHeartbeat: any
// frame is a sign of life.
func TestBusyNodeLastHeartbeat(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	api := pushClient(t, svc.Addr)
	ctx := withToken(svctest.Ctx(t), svctest.Token)
	stream, err := api.Session(ctx)
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "busy"}}}}}))
	_, err = stream.Recv()
	must(t, err)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		must(t, stream.Send(&pb.NodeFrame{Publishes: &pb.Batch{Topics: []byte("/busy"), TopicLens: []uint32{5}, Ids: []byte("m"), IdLens: []uint32{1}, Data: []byte("1"), DataLens: []uint32{1}}}))
		time.Sleep(20 * time.Millisecond)
	}
	nodes, err := listNodes(ctx, api)
	must(t, err)
	if len(nodes) != 1 {
		t.Fatalf("Nodes = %v", nodes)
	}
	if age := time.Since(time.UnixMilli(nodes[0].GetLastHeartbeat())); age > time.Second {
		t.Fatalf("the busy node's lastHeartbeat is %v old, want under 1s", age.Round(time.Millisecond))
	}
}

// TestSessionDropsInvalidData: a node session's messages whose data is
// not JSON in valid UTF-8 (which would break a browser's connection, or
// forge the fields of a frame) are dropped and counted; the valid ones
// around them are delivered.
func TestSessionDropsInvalidData(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-log-interval", "1s")
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	must(t, nd.Subscribe(svctest.Ctx(t), "/v"))
	api := pushClient(t, svc.Addr)
	stream, err := api.Session(withToken(svctest.Ctx(t), svctest.Token))
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "forger"}}}}}))
	_, err = stream.Recv()
	must(t, err)
	data := []string{`{"text":"ok1"}`, "{\"text\":\"\xff\"}", `{"text":"hi"},"topic":"/chat/other","type":"subscribed"`, `"ok2"`}
	var b pb.Batch
	for i, d := range data {
		id := fmt.Sprint(i)
		b.Topics = append(b.Topics, "/v"...)
		b.TopicLens = append(b.TopicLens, 2)
		b.Ids = append(b.Ids, id...)
		b.IdLens = append(b.IdLens, uint32(len(id)))
		b.Data = append(b.Data, d...)
		b.DataLens = append(b.DataLens, uint32(len(d)))
	}
	must(t, stream.Send(&pb.NodeFrame{Publishes: &b}))
	f, err := stream.Recv()
	must(t, err)
	if n := f.GetOps()[0].GetNotice(); n == nil || !strings.Contains(n.GetError(), "2 messages dropped") {
		t.Fatalf("the node was told %v, want a notice of 2 dropped messages", f)
	}
	got := nd.Rec.WaitN(t, 2, 5*time.Second)
	if got[0].ID != "0" || got[1].ID != "3" {
		t.Fatalf("delivered %+v, want messages 0 and 3", got)
	}
	brokertest.Eventually(t, 5*time.Second, metricsAre(t, svc.MetricsURL(t), map[string]float64{
		`firetower_topicsvc_refused_total{reason="invalid"}`: 2,
	}))
	brokertest.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(svc.Logs(), "invalid_data=1") {
			return fmt.Errorf("no summary of the invalid data:\n%s", svc.Logs())
		}
		return nil
	})
}
