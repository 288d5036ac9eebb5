// Package wsframe writes the headers of the WebSocket frames a server
// sends: final, unmasked text frames (RFC 6455 §5.2).
package wsframe

import "encoding/binary"

// MaxHeader is the longest header of an unmasked frame, in bytes.
const MaxHeader = 10

// opText is the opcode of a text frame.
const opText = 1

// HeaderLen returns the length of the header of a frame of n payload bytes.
func HeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// PutHeader writes the header of a final text frame of n payload bytes at
// the start of b, which must hold HeaderLen(n) bytes.
func PutHeader(b []byte, n int) {
	b[0] = 0x80 | opText // FIN, text
	switch {
	case n <= 125:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
}

// AppendHeader appends the header of a final text frame of n payload bytes.
func AppendHeader(b []byte, n int) []byte {
	var h [MaxHeader]byte
	l := HeaderLen(n)
	PutHeader(h[:l], n)
	return append(b, h[:l]...)
}
