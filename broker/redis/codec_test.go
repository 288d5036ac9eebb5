//go:build redis

package redis

import (
	"encoding/binary"
	"testing"

	"github.com/OSMeteor/firetower/broker"
)

// v2 builds a version 2 message as the stream script does.
func v2(offset uint64, epoch string, m broker.Message) []byte {
	p := binary.AppendUvarint([]byte{codecStream}, offset)
	p = binary.AppendUvarint(p, uint64(len(epoch)))
	return append(append(p, epoch...), encodeBody(m)...)
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range []broker.Message{
		{ID: "", Data: nil},
		{ID: "id", Data: []byte(`{"a":1}`)},
		{ID: string(make([]byte, 300)), Data: make([]byte, 70000)},
	} {
		d, err := decode(string(encode(m)))
		if err != nil || d.id != m.ID || string(d.data) != string(m.Data) || d.offset != 0 || d.epoch != "" {
			t.Fatalf("version 1 of %q: %+v, %v", m.ID, d, err)
		}
		for _, off := range []uint64{1, 127, 128, 1 << 40} {
			d, err := decode(string(v2(off, "epoch", m)))
			if err != nil || d.id != m.ID || string(d.data) != string(m.Data) || d.offset != off || d.epoch != "epoch" {
				t.Fatalf("version 2 of %q at %d: %+v, %v", m.ID, off, d, err)
			}
		}
	}
}

// FuzzDecode: any payload decodes or fails, never panics, and what
// decodes encodes again to the same message.
func FuzzDecode(f *testing.F) {
	m := broker.Message{ID: "id", Data: []byte(`"x"`)}
	for _, seed := range [][]byte{nil, {1}, {2}, {3}, encode(m), v2(5, "e", m), {2, 1, 0x80}, {1, 0xff, 0xff}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		d, err := decode(string(payload))
		if err != nil {
			return
		}
		m := broker.Message{ID: d.id, Data: d.data}
		var again []byte
		if d.epoch == "" {
			again = encode(m)
		} else {
			again = v2(d.offset, d.epoch, m)
		}
		// A uvarint may be written with more bytes than needed; the
		// re-encoding is the shortest, so compare what was decoded.
		d2, err := decode(string(again))
		if err != nil || d2.id != d.id || string(d2.data) != string(d.data) || d2.offset != d.offset || d2.epoch != d.epoch {
			t.Fatalf("%q decoded to %+v, re-encoded to %+v, %v", payload, d, d2, err)
		}
	})
}
