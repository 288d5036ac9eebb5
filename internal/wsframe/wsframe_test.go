package wsframe

import (
	"encoding/binary"
	"testing"
)

func TestAppendHeader(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		if got := AppendHeader(nil, tc.n); string(got) != string(tc.want) {
			t.Errorf("header for %d bytes: % x, want % x", tc.n, got, tc.want)
		}
	}
}

// TestHeaderBoundaries sweeps the lengths around every boundary of the
// three header forms through FuzzHeader's check.
func TestHeaderBoundaries(t *testing.T) {
	for _, edge := range []int{0, 125, 0xffff, 1 << 32} {
		for n := max(0, edge-300); n <= edge+300; n++ {
			checkHeader(t, n)
		}
	}
}

// FuzzHeader reads every header back as RFC 6455 §5.2 defines it: a final
// text frame, unmasked, of the length written, in the shortest form.
func FuzzHeader(f *testing.F) {
	for _, n := range []uint32{0, 1, 125, 126, 127, 65535, 65536, 1 << 30} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n32 uint32) { checkHeader(t, int(n32)) })
}

func checkHeader(t *testing.T, n int) {
	t.Helper()
	{
		h := AppendHeader(nil, n)
		if len(h) != HeaderLen(n) || len(h) > MaxHeader {
			t.Fatalf("%d: header of %d bytes, HeaderLen %d", n, len(h), HeaderLen(n))
		}
		if h[0] != 0x81 || h[1]&0x80 != 0 {
			t.Fatalf("%d: first bytes % x", n, h[:2])
		}
		got := int(h[1])
		switch got {
		case 126:
			got = int(binary.BigEndian.Uint16(h[2:]))
			if got <= 125 {
				t.Fatalf("%d: 16-bit length for a short payload", n)
			}
		case 127:
			got = int(binary.BigEndian.Uint64(h[2:]))
			if got <= 0xffff {
				t.Fatalf("%d: 64-bit length for a 16-bit payload", n)
			}
		}
		if got != n {
			t.Fatalf("header of %d bytes reads back as %d", n, got)
		}
	}
}
