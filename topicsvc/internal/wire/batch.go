// Package wire is what the topic service's client and server share on a
// session stream: the column batches that carry messages (batch.go), the
// bounded queue in front of each stream's sender (queue.go), and the limits
// and validators of what travels (limits.go).
package wire

import (
	"errors"
	"unsafe"

	"github.com/OSMeteor/firetower/broker"
	pb "github.com/OSMeteor/firetower/topicsvc/topicsvcpb"
)

// batchWriter lays out the messages of consecutive frames as pb.Batch
// columns in buffers sized once for everything a sender took from its
// queue: a handful of allocations per take instead of several per message
// (the largest cost in the CPU profile of cross-node delivery).
type batchWriter struct {
	topics, ids, data           []byte
	topicLens, idLens, dataLens []uint32
	from, fromT, fromI, fromD   int // where the current frame starts
	frameBytes, frameDataBytes  int // of the current frame

	// The current frame's stream columns: nil until one of its messages
	// has an offset, so that frames of plain messages never pay for them.
	offsets []uint64
	refs    []uint32
	epochs  []string
	lastRef int // the index in epochs of the last stream message's epoch
}

// reset sizes the buffers for n messages with the given total lengths.
func (w *batchWriter) reset(n, topicBytes, idBytes, dataBytes int) {
	*w = batchWriter{
		topics:    make([]byte, 0, topicBytes),
		ids:       make([]byte, 0, idBytes),
		data:      make([]byte, 0, dataBytes),
		topicLens: make([]uint32, 0, n),
		idLens:    make([]uint32, 0, n),
		dataLens:  make([]uint32, 0, n),
	}
}

// add appends m to the current frame.
func (w *batchWriter) add(m broker.Message) {
	if m.Offset != 0 && w.offsets == nil {
		// The frame's first stream message: the plain ones before it get
		// offset 0.
		n := w.len()
		w.offsets = make([]uint64, n, n+64)
		w.refs = make([]uint32, n, n+64)
	}
	if w.offsets != nil {
		var ref uint32
		if m.Offset != 0 {
			ref = w.epochRef(m.Epoch)
		}
		w.offsets = append(w.offsets, m.Offset)
		w.refs = append(w.refs, ref)
	}
	w.topics = append(w.topics, m.Topic...)
	w.ids = append(w.ids, m.ID...)
	w.data = append(w.data, m.Data...)
	w.topicLens = append(w.topicLens, uint32(len(m.Topic)))
	w.idLens = append(w.idLens, uint32(len(m.ID)))
	w.dataLens = append(w.dataLens, uint32(len(m.Data)))
	w.frameBytes += messageSize(m)
	w.frameDataBytes += len(m.Data)
}

// epochRef returns the index of epoch in the frame's epochs, adding it if
// it is not among the last few: a frame mostly carries the messages of
// few streams, and a repeated entry costs less than a long search.
func (w *batchWriter) epochRef(epoch string) uint32 {
	if w.lastRef < len(w.epochs) && w.epochs[w.lastRef] == epoch {
		return uint32(w.lastRef)
	}
	for i := len(w.epochs) - 1; i >= max(0, len(w.epochs)-8); i-- {
		if w.epochs[i] == epoch {
			w.lastRef = i
			return uint32(i)
		}
	}
	w.epochs = append(w.epochs, epoch)
	w.lastRef = len(w.epochs) - 1
	return uint32(w.lastRef)
}

// messageSize approximates the bytes m takes in a frame.
func messageSize(m broker.Message) int {
	n := len(m.Topic) + len(m.ID) + len(m.Data) + 8
	if m.Offset != 0 {
		n += 16 // its offset and epoch index; the epoch itself, once
	}
	return n
}

// len is the number of messages in the current frame.
func (w *batchWriter) len() int { return len(w.topicLens) - w.from }

// cut returns the current frame's batch (nil if it has no message) and
// starts the next frame. The batch shares the writer's buffers, each
// capped at its end, so later frames never write into it.
func (w *batchWriter) cut() *pb.Batch {
	if w.len() == 0 {
		return nil
	}
	b := &pb.Batch{
		Topics:    w.topics[w.fromT:len(w.topics):len(w.topics)],
		TopicLens: w.topicLens[w.from:len(w.topicLens):len(w.topicLens)],
		Ids:       w.ids[w.fromI:len(w.ids):len(w.ids)],
		IdLens:    w.idLens[w.from:len(w.idLens):len(w.idLens)],
		Data:      w.data[w.fromD:len(w.data):len(w.data)],
		DataLens:  w.dataLens[w.from:len(w.dataLens):len(w.dataLens)],
		Offsets:   w.offsets,
		Epochs:    w.epochs,
		EpochRefs: w.refs,
	}
	w.from, w.fromT, w.fromI, w.fromD = len(w.topicLens), len(w.topics), len(w.ids), len(w.data)
	w.frameBytes, w.frameDataBytes = 0, 0
	w.offsets, w.refs, w.epochs, w.lastRef = nil, nil, nil, 0
	return b
}

// ErrBadBatch reports a batch whose lengths do not add up to its columns.
var ErrBadBatch = errors.New("topicsvc: malformed batch: its lengths do not match its columns")

// ReadBatch calls each with the messages of b, in order. Every message
// gets one buffer of its own that holds its topic, id and data (so a
// message kept by a receiver keeps nothing else alive); its Topic and ID
// are strings over that buffer, which nothing writes to afterwards. A
// stream message gets its Offset, and its Epoch as a string the batch's
// other messages of that epoch share. A malformed batch is refused whole,
// before any message is handed on.
func ReadBatch(b *pb.Batch, each func(broker.Message)) error {
	tl, il, dl := b.GetTopicLens(), b.GetIdLens(), b.GetDataLens()
	if len(il) != len(tl) || len(dl) != len(tl) {
		return ErrBadBatch
	}
	offsets, refs, epochs := b.GetOffsets(), b.GetEpochRefs(), b.GetEpochs()
	if len(offsets) != len(refs) || (len(offsets) != 0 && len(offsets) != len(tl)) {
		return ErrBadBatch
	}
	for i, o := range offsets {
		if o != 0 && uint64(refs[i]) >= uint64(len(epochs)) {
			return ErrBadBatch
		}
	}
	var st, si, sd uint64
	for i := range tl {
		st += uint64(tl[i])
		si += uint64(il[i])
		sd += uint64(dl[i])
	}
	topics, ids, data := b.GetTopics(), b.GetIds(), b.GetData()
	if st != uint64(len(topics)) || si != uint64(len(ids)) || sd != uint64(len(data)) {
		return ErrBadBatch
	}
	for i := range tl {
		nt, ni, nd := int(tl[i]), int(il[i]), int(dl[i])
		buf := make([]byte, nt+ni+nd)
		copy(buf, topics[:nt])
		copy(buf[nt:], ids[:ni])
		copy(buf[nt+ni:], data[:nd])
		topics, ids, data = topics[nt:], ids[ni:], data[nd:]
		m := broker.Message{
			Topic: bytesString(buf[:nt]),
			ID:    bytesString(buf[nt : nt+ni]),
			Data:  buf[nt+ni : nt+ni+nd : nt+ni+nd],
		}
		if len(offsets) != 0 && offsets[i] != 0 {
			m.Offset, m.Epoch = offsets[i], epochs[refs[i]]
		}
		each(m)
	}
	return nil
}

// bytesString returns b as a string without copying; b must never change
// afterwards.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Outgoing is one item of a stream's send queue: an operation when Op is
// not nil, a message (a node's publish, the service's delivery) otherwise.
// Messages are queued by value and become protobuf only when a frame is
// cut, a few allocations per frame.
type Outgoing[O any] struct {
	Msg broker.Message
	Op  *O
	// Size is, for an op that carries messages of its own (a history
	// answer), about the bytes it takes in a frame; 0 for a small op.
	Size int
}

// opSize is what an op is counted for in a frame.
func opSize(size int) int { return max(size, 16) }

// CutFrames sends first (if not nil) and items, in order, in as few stream
// frames as BatchOps and batchBytes allow; an item larger than batchBytes
// travels in a frame with nothing after it. A frame carries its ops before
// its messages, so a frame ends where an op follows a message. send gets
// each frame's ops, its messages as one batch (nil if none), how many
// messages and data bytes the batch holds, and the Size of its ops; false
// from it stops the cutting and is returned.
func CutFrames[O any](first *O, items []Outgoing[O], send func(ops []*O, b *pb.Batch, count, dataBytes, opBytes int) bool) bool {
	var w batchWriter
	var n, nt, ni, nd int
	for i := range items {
		if m := &items[i].Msg; items[i].Op == nil {
			n, nt, ni, nd = n+1, nt+len(m.Topic), ni+len(m.ID), nd+len(m.Data)
		}
	}
	w.reset(n, nt, ni, nd)
	var ops []*O
	if first != nil {
		ops = append(ops, first)
	}
	size, count, bytes, opBytes := 0, 0, 0, 0 // of the frame: its size, messages, their data, its ops' Size
	flush := func() bool {
		b := w.cut()
		if len(ops) == 0 && b == nil {
			return true
		}
		if !send(ops, b, count, bytes, opBytes) {
			return false
		}
		ops, size, count, bytes, opBytes = nil, 0, 0, 0, 0
		return true
	}
	for i := range items {
		it := &items[i]
		if it.Op != nil {
			on := opSize(it.Size)
			if inFrame := len(ops) + w.len(); inFrame > 0 && (w.len() > 0 || inFrame >= BatchOps || size+on > batchBytes) && !flush() {
				return false
			}
			ops = append(ops, it.Op)
			size += on
			opBytes += it.Size
			continue
		}
		m := it.Msg
		mn := messageSize(m)
		if inFrame := len(ops) + w.len(); inFrame > 0 && (inFrame >= BatchOps || size+mn > batchBytes) && !flush() {
			return false
		}
		w.add(m)
		size += mn
		count++
		bytes += len(m.Data)
	}
	return flush()
}
