//go:build redis

package redis

import (
	"encoding/binary"
	"errors"

	"github.com/OSMeteor/firetower/broker"
)

// The message encodings on a channel. Both are one binary-safe Redis
// string; the topic travels as the channel name.
//
//	version 1 (Publish):       1, body
//	version 2 (PublishStream): 2, uvarint offset, uvarint len(epoch), epoch, body
//	body:                      uvarint len(id), id, data as published
//
// A stream's entries keep the body alone (their offset is the entry's id,
// the epoch is the stream's), so one decoder reads both. Version 2 is
// built by the stream script, in Redis, which alone knows the offset.
const (
	codecPlain  = 1
	codecStream = 2
)

// appendBody appends m's body: the id's length as a uvarint, the id, the
// data.
func appendBody(buf []byte, m broker.Message) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(m.ID)))
	buf = append(buf, m.ID...)
	return append(buf, m.Data...)
}

// encode lays m out as version 1.
func encode(m broker.Message) []byte {
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(m.ID)+len(m.Data))
	return appendBody(append(buf, codecPlain), m)
}

// encodeBody lays m out as a body, for the stream script.
func encodeBody(m broker.Message) []byte {
	return appendBody(make([]byte, 0, binary.MaxVarintLen64+len(m.ID)+len(m.Data)), m)
}

var (
	errUnknownEncoding = errors.New("unknown encoding")
	errTruncated       = errors.New("truncated message")
)

// uvarint reads a uvarint at the start of s; k is its length, 0 if s does
// not start with one.
func uvarint(s string) (v uint64, k int) {
	var b [binary.MaxVarintLen64]byte
	n := copy(b[:], s)
	v, k = binary.Uvarint(b[:n])
	return v, max(k, 0)
}

// decodeBody splits a body into the id (a substring of s) and a copy of the
// data.
func decodeBody(s string) (id string, data []byte, err error) {
	n, k := uvarint(s)
	if k == 0 || n > uint64(len(s)-k) {
		return "", nil, errTruncated
	}
	return s[k : k+int(n)], []byte(s[k+int(n):]), nil
}

// decoded is a message read from a channel.
type decoded struct {
	id     string
	data   []byte
	offset uint64 // 0 for version 1
	epoch  string // a substring of the payload; "" for version 1
}

// decode reads either version.
func decode(payload string) (decoded, error) {
	if len(payload) == 0 {
		return decoded{}, errUnknownEncoding
	}
	var d decoded
	rest := payload[1:]
	switch payload[0] {
	case codecPlain:
	case codecStream:
		off, k := uvarint(rest)
		if k == 0 {
			return decoded{}, errTruncated
		}
		rest = rest[k:]
		n, k := uvarint(rest)
		if k == 0 || n > uint64(len(rest)-k) {
			return decoded{}, errTruncated
		}
		d.offset, d.epoch, rest = off, rest[k:k+int(n)], rest[k+int(n):]
		if d.offset == 0 || d.epoch == "" {
			return decoded{}, errors.New("stream message without offset or epoch")
		}
	default:
		return decoded{}, errUnknownEncoding
	}
	var err error
	d.id, d.data, err = decodeBody(rest)
	return d, err
}
