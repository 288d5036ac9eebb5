package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// rawNode opens a session as a node would, subscribes to topics and sets
// each one's count to count, in frames of 1,024 operations, and returns
// once the service acked the last subscribe. The session lasts as long
// as the test, sending a heartbeat every second.
func rawNode(t *testing.T, addr, id string, topics []string, count int64) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+svctest.Token))
	t.Cleanup(cancel)
	stream, err := pb.NewTopicServiceClient(conn).Session(ctx)
	must(t, err)
	// Read all along, as a node does: acks come while we send.
	last := uint64(len(topics) + 1)
	done := make(chan string, 1)
	go func() {
		for {
			f, err := stream.Recv()
			if err != nil {
				done <- err.Error()
				return
			}
			for _, o := range f.GetOps() {
				if a := o.GetAck(); a != nil && a.GetError() != "" {
					done <- "refused: " + a.GetError()
				} else if a.GetSeq() == last {
					done <- ""
				}
			}
		}
	}()
	ops := []*pb.NodeOp{{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: id}}}}
	for i, topic := range topics {
		ops = append(ops, &pb.NodeOp{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: uint64(i + 1), Topic: topic}}})
		if len(ops) == 1024 || i == len(topics)-1 {
			must(t, stream.Send(&pb.NodeFrame{Ops: ops}))
			ops = ops[:0]
		}
	}
	var counts []*pb.TopicCount
	for i, topic := range topics {
		counts = append(counts, &pb.TopicCount{Topic: topic, Count: count})
		if len(counts) == 1024 || i == len(topics)-1 {
			must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Count{Count: &pb.CountUpdate{Counts: counts}}}}}))
			counts = nil
		}
	}
	// A count query after the counts: its ack says they were applied.
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_CountQuery{CountQuery: &pb.CountQuery{Seq: last, Topic: topics[0]}}}}}))
	// From here on, heartbeats, as a node sends them: a session silent for
	// the heartbeat timeout is forgotten, and the test outlasts it on a
	// loaded machine. This goroutine is the stream's only sender now.
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{{Op: &pb.NodeOp_Heartbeat{Heartbeat: &pb.Heartbeat{}}}}}) != nil {
					return
				}
			}
		}
	}()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatalf("node %s: %s", id, msg)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("node %s: no ack of its last operation", id)
	}
}

// TestTopicsListingScales: a cluster whose listing is far beyond one gRPC
// message (4 MiB: about 90,000 topics of uuid-sized names) lists whole
// through a node, and so do its nodes.
func TestTopicsListingScales(t *testing.T) {
	svc := svctest.Start(t, "127.0.0.1:0")
	const perNode, nodes = 60_000, 2
	for n := range nodes {
		topics := make([]string, perNode)
		for i := range topics {
			topics[i] = "/room/" + uuid.NewString()
		}
		rawNode(t, svc.Addr, fmt.Sprintf("bulk-%d", n), topics, int64(n+1))
	}
	nd := svctest.DialNode(t, svc.Addr, client.Options{})
	ctx := svctest.Ctx(t)
	start := time.Now()
	list, err := nd.Topics(ctx)
	must(t, err)
	if len(list) != perNode*nodes {
		t.Fatalf("Topics listed %d topics, want %d", len(list), perNode*nodes)
	}
	sum := 0
	for _, tc := range list {
		sum += tc.Count
	}
	if want := perNode * (1 + 2); sum != want {
		t.Fatalf("the counts add up to %d, want %d", sum, want)
	}
	t.Logf("listed %d topics in %v", len(list), time.Since(start).Round(time.Millisecond))
	ns, err := nd.Nodes(ctx)
	must(t, err)
	byID := map[string]int{}
	for i, n := range ns {
		byID[n.ID] = i
	}
	b0, ok0 := byID["bulk-0"]
	b1, ok1 := byID["bulk-1"]
	if len(ns) != nodes+1 || !ok0 || !ok1 || ns[b0].Topics != perNode || ns[b1].Connections != 2*perNode {
		t.Fatalf("Nodes = %+v", ns)
	}
}
