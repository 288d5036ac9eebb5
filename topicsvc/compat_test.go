package topicsvc_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/topicsvc"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/grpc"
)

// TestSessionBatches speaks the session protocol directly, as a node that
// says it reads batches: publishes travel in NodeFrame.publishes, a
// malformed batch is refused whole, deliveries come in
// ServiceFrame.deliveries, after the frame's ops.
func TestSessionBatches(t *testing.T) {
	svc := startService(t, "127.0.0.1:0")
	api := pushClient(t, svc.addr)
	stream, err := api.Session(withToken(testCtx(t), testToken))
	must(t, err)
	must(t, stream.Send(&pb.NodeFrame{Ops: []*pb.NodeOp{
		{Op: &pb.NodeOp_Hello{Hello: &pb.Hello{NodeId: "batched", Packed: true}}},
		{Op: &pb.NodeOp_Subscribe{Subscribe: &pb.Subscribe{Seq: 1, Topic: "b"}}},
	}}))
	f, err := stream.Recv()
	must(t, err)
	if w := f.GetOps()[0].GetWelcome(); w == nil || !w.GetPacked() {
		t.Fatalf("first frame %v, want a welcome that says the service reads batches", f)
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
			if o.GetDeliver() != nil {
				t.Fatalf("a delivery as an op to a node that reads batches: %v", o)
			}
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

// earlierService is a topic service of an earlier release, as far as a
// node can tell: its Welcome does not say that it reads batches, and it
// delivers one op per message.
type earlierService struct {
	pb.UnimplementedTopicServiceServer
	got chan *pb.NodeFrame
}

func (e *earlierService) Session(stream pb.TopicService_SessionServer) error {
	f, err := stream.Recv()
	if err != nil {
		return err
	}
	e.got <- f
	if err := stream.Send(&pb.ServiceFrame{Ops: []*pb.ServiceOp{{Op: &pb.ServiceOp_Welcome{Welcome: &pb.Welcome{MaxMessageSize: 1 << 20}}}}}); err != nil {
		return err
	}
	for {
		f, err := stream.Recv()
		if err != nil {
			return nil
		}
		for _, o := range f.GetOps() {
			if p := o.GetPublish(); p != nil {
				// Echo it back, the way it used to deliver.
				if err := stream.Send(&pb.ServiceFrame{Ops: []*pb.ServiceOp{{Op: &pb.ServiceOp_Deliver{Deliver: p}}}}); err != nil {
					return err
				}
			}
		}
		e.got <- f
	}
}

// TestClientWithEarlierService: a node keeps working with a service that
// does not read batches, publishing one op per message.
func TestClientWithEarlierService(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	e := &earlierService{got: make(chan *pb.NodeFrame, 100)}
	gs := grpc.NewServer()
	pb.RegisterTopicServiceServer(gs, e)
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(l)
	}()
	defer func() {
		gs.Stop()
		<-served
	}()
	nd := dialNode(t, l.Addr().String(), topicsvc.ClientOptions{HeartbeatInterval: time.Hour, CountFlushInterval: time.Hour})
	defer nd.Close()
	hello := <-e.got
	if h := hello.GetOps()[0].GetHello(); h == nil || !h.GetPacked() {
		t.Fatalf("hello %v, want one that says the node reads batches", hello)
	}
	ctx := testCtx(t)
	for _, id := range []string{"a", "b", "c"} {
		must(t, nd.Publish(ctx, broker.Message{Topic: "old", ID: id, Data: []byte(`"` + id + `"`)}))
	}
	var ids []string
	deadline := time.After(5 * time.Second)
	for len(ids) < 3 {
		select {
		case f := <-e.got:
			if f.GetPublishes() != nil {
				t.Fatalf("a batch sent to a service that does not read them: %v", f)
			}
			for _, o := range f.GetOps() {
				if p := o.GetPublish(); p != nil {
					ids = append(ids, p.GetId())
				}
			}
		case <-deadline:
			t.Fatalf("the service got %q of 3 publishes", ids)
		}
	}
	if strings.Join(ids, "") != "abc" {
		t.Fatalf("publishes in the order %q", ids)
	}
	got := nd.rec.waitN(t, 3, 5*time.Second)
	for i, m := range got {
		if want := []string{"a", "b", "c"}[i]; m.ID != want || string(m.Data) != `"`+want+`"` || m.Topic != "old" {
			t.Fatalf("delivery %d: %+v", i, m)
		}
	}
}
