package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
)

// Limits of what travels on a session stream, the same on both sides.
const (
	// MaxIDLen is the longest message id, in bytes.
	MaxIDLen = 256
	// MaxNodeIDLen is the longest node id, in bytes.
	MaxNodeIDLen = 128
	// MaxCount is the largest subscriber count a node may report for one
	// topic (16,777,216): far above what one node holds, far below what
	// would overflow a cluster's sum.
	MaxCount = 1 << 24
	// FrameOverhead is what a gRPC message may carry on top of its largest
	// data: the topic, the id and the protobuf framing of a batch.
	FrameOverhead = 64 << 10
	// BatchOps bounds the operations and messages of one stream message.
	BatchOps = 1024
	// batchBytes bounds the size of one stream message; a single larger
	// message travels alone. A stream message that fits in one HTTP/2
	// frame (16 KiB) reaches the receiver as one buffer, which gRPC
	// decodes in place; a larger one is first copied into a pooled buffer
	// that gRPC clears whole, 1 MiB of it for anything over 32 KiB. The
	// CPU profile of BenchmarkCrossNode showed that clearing as the largest
	// single cost with 1 MiB batches.
	batchBytes = 15 << 10
)

// ValidTopic reports why topic cannot travel through the service, or nil.
//
// The service carries any UTF-8 topic of 1..broker.MaxTopicLen (256) bytes,
// spaces, commas and control characters included, because the push API
// serves backends in any language, whose topics need not follow a node's
// rule. Nodes apply the stricter rule of DESIGN §3 (no comma, no
// whitespace or control characters) before a topic reaches their broker,
// so every topic a node sends passes here too.
func ValidTopic(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("topicsvc: empty topic")
	case len(topic) > broker.MaxTopicLen:
		return fmt.Errorf("topicsvc: topic of %d bytes, the limit is %d", len(topic), broker.MaxTopicLen)
	case !utf8.ValidString(topic):
		return fmt.Errorf("topicsvc: topic %q is not valid UTF-8", topic)
	}
	return nil
}

// ValidID reports why a message id cannot travel through the service, or
// nil: it is UTF-8 of at most MaxIDLen bytes, and may be empty.
func ValidID(id string) error {
	switch {
	case len(id) > MaxIDLen:
		return fmt.Errorf("topicsvc: message id of %d bytes, the limit is %d", len(id), MaxIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("topicsvc: message id %q is not valid UTF-8", id)
	}
	return nil
}

// ValidMessage reports why a message of topic and id with size bytes of
// data cannot travel through a service that accepts at most maxSize, or
// nil.
func ValidMessage(topic, id string, size, maxSize int) error {
	if err := ValidTopic(topic); err != nil {
		return err
	}
	if err := ValidID(id); err != nil {
		return err
	}
	if size > maxSize {
		return fmt.Errorf("topicsvc: message data of %d bytes, the limit is %d", size, maxSize)
	}
	return nil
}

// ValidData reports whether data is what a node may embed in a frame
// as raw JSON: a JSON text in valid UTF-8. json.Valid alone accepts
// invalid UTF-8 inside strings, which a browser refuses (it drops the
// whole connection); anything else, such as `1},"topic":"x"`, would let a
// publisher forge the fields around it. Outside strings JSON is ASCII, so
// one utf8.Valid over the whole text checks the strings.
func ValidData(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("topicsvc: data must be valid UTF-8")
	}
	if !json.Valid(data) {
		return errors.New("topicsvc: data must be a JSON text, such as {\"text\":\"hi\"} or \"hi\"")
	}
	return nil
}
