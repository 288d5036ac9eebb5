package wire

import (
	"bytes"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
	"google.golang.org/protobuf/proto"
)

// TestBatchRoundTrip writes messages into the frames of one take, sends
// each frame's batch through protobuf and reads it back.
func TestBatchRoundTrip(t *testing.T) {
	msgs := []broker.Message{
		{Topic: "/chat/world", ID: "1", Data: []byte(`{"text":"hi"}`)},
		{Topic: "é/日本", ID: "", Data: []byte(`"ünï"`)},
		{Topic: "t", ID: "a-much-longer-message-id-0123456789", Data: nil},
		{Topic: "/chat/world", ID: "4", Data: bytes.Repeat([]byte("x"), 5000)},
		{Topic: "last", ID: "5", Data: []byte("5")},
	}
	var nt, ni, nd int
	for _, m := range msgs {
		nt, ni, nd = nt+len(m.Topic), ni+len(m.ID), nd+len(m.Data)
	}
	var w batchWriter
	w.reset(len(msgs), nt, ni, nd)
	if w.cut() != nil {
		t.Fatal("cut of an empty frame is not nil")
	}
	var batches []*pb.Batch
	for i, m := range msgs {
		w.add(m)
		if i == 1 || i == 3 { // frames of 2, 2 and 1 messages
			batches = append(batches, w.cut())
		}
	}
	batches = append(batches, w.cut())
	if w.len() != 0 || w.cut() != nil {
		t.Fatal("the writer holds messages after the last cut")
	}

	var got []broker.Message
	for _, b := range batches {
		wire, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var back pb.Batch
		if err := proto.Unmarshal(wire, &back); err != nil {
			t.Fatal(err)
		}
		if err := ReadBatch(&back, func(m broker.Message) { got = append(got, m) }); err != nil {
			t.Fatal(err)
		}
		wire[0] ^= 0xff // what was read is the reader's own
	}
	if len(got) != len(msgs) {
		t.Fatalf("read %d messages, wrote %d", len(got), len(msgs))
	}
	for i, m := range msgs {
		g := got[i]
		if g.Topic != m.Topic || g.ID != m.ID || !bytes.Equal(g.Data, m.Data) {
			t.Fatalf("message %d: got %q %q %q, want %q %q %q", i, g.Topic, g.ID, g.Data, m.Topic, m.ID, m.Data)
		}
		if cap(g.Data) != len(g.Data) {
			t.Fatalf("message %d: Data has room to grow into (%d > %d)", i, cap(g.Data), len(g.Data))
		}
	}
	// Appending to one message's data must not touch another's.
	_ = append(got[0].Data, 'X')
	if got[1].Topic != msgs[1].Topic {
		t.Fatalf("appending to a message's data changed the next message: %q", got[1].Topic)
	}
}

func TestReadBatchMalformed(t *testing.T) {
	ok := &pb.Batch{Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1}}
	if err := ReadBatch(ok, func(broker.Message) {}); err != nil {
		t.Fatalf("a well-formed batch: %v", err)
	}
	for name, b := range map[string]*pb.Batch{
		"fewer id lengths":  {Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("1"), IdLens: []uint32{1}, Data: []byte("xy"), DataLens: []uint32{1, 1}},
		"topics too short":  {Topics: []byte("a"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1}},
		"data too long":     {Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xyz"), DataLens: []uint32{1, 1}},
		"lengths overflow":  {Topics: []byte("ab"), TopicLens: []uint32{math.MaxUint32, 3}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1}},
		"lengths, no bytes": {TopicLens: []uint32{0, 1}, IdLens: []uint32{0, 0}, DataLens: []uint32{0, 0}},
	} {
		called := false
		if err := ReadBatch(b, func(broker.Message) { called = true }); err != ErrBadBatch || called {
			t.Errorf("%s: err %v, handler called %v; want ErrBadBatch before any message", name, err, called)
		}
	}
}

// FuzzReadBatch: whatever protobuf a peer sends as a batch, reading it
// never panics, and what it reads adds up to the columns.
func FuzzReadBatch(f *testing.F) {
	for _, b := range []*pb.Batch{
		{Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1}},
		{TopicLens: []uint32{0}, IdLens: []uint32{0}, DataLens: []uint32{0}},
		{Topics: []byte("a"), TopicLens: []uint32{math.MaxUint32}},
		{Topics: []byte("ab"), TopicLens: []uint32{1, 1}, Ids: []byte("12"), IdLens: []uint32{1, 1}, Data: []byte("xy"), DataLens: []uint32{1, 1},
			Offsets: []uint64{0, 5}, EpochRefs: []uint32{0, 1}, Epochs: []string{"e0", "e1"}},
	} {
		wire, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(wire)
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var b pb.Batch
		if proto.Unmarshal(wire, &b) != nil {
			return
		}
		var topics, ids, data []byte
		n := 0
		err := ReadBatch(&b, func(m broker.Message) {
			topics = append(topics, m.Topic...)
			ids = append(ids, m.ID...)
			data = append(data, m.Data...)
			if len(b.Offsets) == 0 && (m.Offset != 0 || m.Epoch != "") {
				t.Fatalf("message %d has a position %d %q in a batch without offsets", n, m.Offset, m.Epoch)
			}
			if len(b.Offsets) != 0 && (m.Offset != b.Offsets[n] || (m.Offset != 0 && m.Epoch != b.Epochs[b.EpochRefs[n]])) {
				t.Fatalf("message %d read at %d %q, the batch says %d", n, m.Offset, m.Epoch, b.Offsets[n])
			}
			n++
		})
		if err != nil {
			if n != 0 {
				t.Fatalf("%v after %d messages", err, n)
			}
			return
		}
		if n != len(b.TopicLens) || !bytes.Equal(topics, b.Topics) || !bytes.Equal(ids, b.Ids) || !bytes.Equal(data, b.Data) {
			t.Fatalf("read %d messages that do not add up to the batch", n)
		}
	})
}

func TestValidData(t *testing.T) {
	for data, ok := range map[string]bool{
		`{"text":"hi"}`: true, `"hi"`: true, `1`: true, "\"caf\u00e9\"": true,
		"{\"text\":\"\xff\"}": false, `{"text":"hi"},"topic":"x"`: false, ``: false, `{"a":`: false,
	} {
		if err := ValidData([]byte(data)); (err == nil) != ok {
			t.Errorf("ValidData(%q) = %v, want ok %v", data, err, ok)
		}
	}
}

// BenchmarkValidData is the service's cost per message of checking its
// data (JSON and UTF-8).
func BenchmarkValidData(b *testing.B) {
	for _, size := range []int{40, 1024, 16 << 10} {
		data := []byte(`{"text":"` + strings.Repeat("x", max(0, size-12)) + `"}`)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if ValidData(data) != nil {
					b.Fatal("invalid")
				}
			}
		})
	}
}
