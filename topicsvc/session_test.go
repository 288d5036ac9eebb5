package topicsvc_test

import (
	"strings"
	"testing"

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
