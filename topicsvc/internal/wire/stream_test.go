package wire

import (
	"fmt"
	"strings"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/protobuf/proto"
)

// roundTrip cuts msgs into frames as a sender does, sends each batch
// through protobuf, and reads the messages back.
func roundTrip(t *testing.T, msgs []broker.Message) ([]broker.Message, []*pb.Batch) {
	t.Helper()
	items := make([]Outgoing[pb.ServiceOp], len(msgs))
	for i, m := range msgs {
		items[i] = Outgoing[pb.ServiceOp]{Msg: m}
	}
	var batches []*pb.Batch
	CutFrames(nil, items, func(_ []*pb.ServiceOp, b *pb.Batch, _, _, _ int) bool {
		raw, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var back pb.Batch
		if err := proto.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		batches = append(batches, &back)
		return true
	})
	var got []broker.Message
	for _, b := range batches {
		if err := ReadBatch(b, func(m broker.Message) { got = append(got, m) }); err != nil {
			t.Fatal(err)
		}
	}
	return got, batches
}

func TestBatchStreamColumns(t *testing.T) {
	msgs := []broker.Message{
		{Topic: "plain", ID: "p1", Data: []byte("1")},
		{Topic: "a", ID: "a1", Data: []byte("2"), Offset: 7, Epoch: "ea"},
		{Topic: "b", ID: "b1", Data: []byte("3"), Offset: 1, Epoch: "eb"},
		{Topic: "plain", ID: "p2", Data: []byte("4")},
		{Topic: "a", ID: "a2", Data: []byte("5"), Offset: 8, Epoch: "ea"},
	}
	got, batches := roundTrip(t, msgs)
	if len(batches) != 1 {
		t.Fatalf("%d frames for 5 small messages", len(batches))
	}
	if b := batches[0]; len(b.GetOffsets()) != 5 || len(b.GetEpochRefs()) != 5 || strings.Join(b.GetEpochs(), ",") != "ea,eb" {
		t.Fatalf("stream columns: offsets %v refs %v epochs %q; want 5, 5 and the two distinct epochs", b.GetOffsets(), b.GetEpochRefs(), b.GetEpochs())
	}
	for i, m := range msgs {
		g := got[i]
		if g.Topic != m.Topic || g.ID != m.ID || string(g.Data) != string(m.Data) || g.Offset != m.Offset || g.Epoch != m.Epoch {
			t.Fatalf("message %d: got %+v, want %+v", i, g, m)
		}
	}
	// A batch of plain messages carries no stream column at all.
	_, batches = roundTrip(t, []broker.Message{{Topic: "x", ID: "1", Data: []byte("1")}, {Topic: "y", ID: "2", Data: []byte("2")}})
	if b := batches[0]; b.Offsets != nil || b.Epochs != nil || b.EpochRefs != nil {
		t.Fatalf("a plain batch has stream columns: %v", b)
	}
	// Many streams in one frame: each message still reads its own epoch.
	msgs = nil
	for i := range 300 {
		msgs = append(msgs, broker.Message{Topic: fmt.Sprint("t", i%40), ID: "x", Data: []byte("1"), Offset: uint64(i + 1), Epoch: fmt.Sprint("e", i%40)})
	}
	got, batches = roundTrip(t, msgs)
	for i, g := range got {
		if g.Offset != uint64(i+1) || g.Epoch != fmt.Sprint("e", i%40) {
			t.Fatalf("message %d of 40 streams: offset %d epoch %q", i, g.Offset, g.Epoch)
		}
	}
	if n := len(batches[0].GetEpochs()); n > 300 || n < 40 {
		t.Fatalf("%d epochs listed for 40 streams", n)
	}
}

func TestReadBatchMalformedStreamColumns(t *testing.T) {
	base := func() *pb.Batch {
		return &pb.Batch{Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1}}
	}
	ok := base()
	ok.Offsets, ok.EpochRefs, ok.Epochs = []uint64{0, 3}, []uint32{9, 0}, []string{"e"} // a plain message's ref is not read
	if err := ReadBatch(ok, func(broker.Message) {}); err != nil {
		t.Fatalf("a well-formed stream batch: %v", err)
	}
	for name, edit := range map[string]func(b *pb.Batch){
		"fewer offsets":         func(b *pb.Batch) { b.Offsets, b.EpochRefs, b.Epochs = []uint64{1}, []uint32{0}, []string{"e"} },
		"offsets without refs":  func(b *pb.Batch) { b.Offsets, b.Epochs = []uint64{1, 2}, []string{"e"} },
		"refs without offsets":  func(b *pb.Batch) { b.EpochRefs, b.Epochs = []uint32{0, 0}, []string{"e"} },
		"ref beyond the epochs": func(b *pb.Batch) { b.Offsets, b.EpochRefs, b.Epochs = []uint64{1, 2}, []uint32{0, 1}, []string{"e"} },
		"an offset, no epoch":   func(b *pb.Batch) { b.Offsets, b.EpochRefs = []uint64{1, 0}, []uint32{0, 0} },
		"more offsets than msgs": func(b *pb.Batch) {
			b.Offsets, b.EpochRefs, b.Epochs = []uint64{1, 2, 3}, []uint32{0, 0, 0}, []string{"e"}
		},
	} {
		b := base()
		edit(b)
		called := false
		if err := ReadBatch(b, func(broker.Message) { called = true }); err != ErrBadBatch || called {
			t.Errorf("%s: err %v, handler called %v; want ErrBadBatch before any message", name, err, called)
		}
	}
}

// TestCutFramesLargeOps: an op with a Size of its own (a history answer)
// is counted as that many bytes, so it never shares a frame beyond
// batchBytes; small ops are bounded by the same budget, and by BatchOps.
func TestCutFramesLargeOps(t *testing.T) {
	ack := func(seq uint64) *pb.ServiceOp { return &pb.ServiceOp{Op: &pb.ServiceOp_Ack{Ack: &pb.Ack{Seq: seq}}} }
	items := []Outgoing[pb.ServiceOp]{
		{Op: ack(1)},
		{Msg: broker.Message{Topic: "t", ID: "1", Data: []byte("1")}},
		{Op: ack(2), Size: 1 << 20},
		{Op: ack(3)},
		{Op: ack(4), Size: batchBytes / 2},
		{Op: ack(5), Size: batchBytes / 2},
	}
	for i := range 2*BatchOps + 1 {
		items = append(items, Outgoing[pb.ServiceOp]{Op: ack(uint64(100 + i))})
	}
	type frame struct{ ops, msgs, opBytes int }
	var frames []frame
	var seqs []uint64
	CutFrames(nil, items, func(ops []*pb.ServiceOp, b *pb.Batch, count, _, opBytes int) bool {
		frames = append(frames, frame{len(ops), count, opBytes})
		for _, o := range ops {
			seqs = append(seqs, o.GetAck().GetSeq())
		}
		return true
	})
	// Small ops count 16 bytes each: per of them fill a frame.
	per := batchBytes / 16
	half := (batchBytes / 2) / 16 // small ops that fit beside ack 5
	want := []frame{{1, 1, 0}, {1, 0, 1 << 20}, {2, 0, batchBytes / 2}, {1 + half, 0, batchBytes / 2}, {per, 0, 0}, {2*BatchOps + 1 - half - per, 0, 0}}
	if fmt.Sprint(frames) != fmt.Sprint(want) {
		t.Fatalf("frames (ops, messages, op bytes) %v, want %v", frames, want)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("ops out of order: %v", seqs[:i+1])
		}
	}
}
