package firetower

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/OSMeteor/firetower/broker"
	"github.com/OSMeteor/firetower/internal/jsonstr"
)

// MaxTopicLen is the longest topic, in bytes: the longest every broker
// carries. A node's rule (ValidateTopic) is stricter than a broker's in
// what a topic may hold: the topic service also carries topics with
// spaces or commas, for push-API backends, and they never reach a node's
// clients.
const MaxTopicLen = broker.MaxTopicLen

// Frame types of wire protocol v1 (DESIGN §3).
const (
	TypeSubscribe    = "subscribe"
	TypeUnsubscribe  = "unSubscribe"
	TypePublish      = "publish"
	TypePing         = "ping"
	TypePong         = "pong"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribed = "unsubscribed"
	TypePublished    = "published"
	TypeError        = "error"
	TypeHistory      = "history"
	TypePresence     = "presence"
)

// Error codes of error frames.
const (
	CodeBadRequest    = "bad_request"
	CodeForbidden     = "forbidden"
	CodeTooManyTopics = "too_many_topics"
	CodeRateLimited   = "rate_limited"
	CodeUnavailable   = "unavailable"
)

// Frame is a client frame after parsing. ReadHandler receives it for client
// publishes and custom types.
type Frame struct {
	// Type is the frame's type; "unsubscribe" is normalised to
	// "unSubscribe".
	Type string
	// Topics are the frame's topics, validated, without duplicates.
	Topics []string
	// Data is the frame's data as raw JSON (nil if absent).
	Data json.RawMessage
	// ID is the client's id for the frame, raw JSON (a string or a
	// number), nil if absent. Replies carry it back.
	ID json.RawMessage
	// Raw is the whole frame as received.
	Raw []byte
	// Since holds the positions a subscribe frame asks to recover from,
	// by topic (its "since"), or a history frame's "since" under its
	// topic; nil if absent.
	Since map[string]StreamPosition
	// Limit is a history frame's "limit", -1 if absent.
	Limit int
}

// protocolError is a refused client frame: it becomes an error frame.
type protocolError struct {
	code    string
	message string
	topic   any // string or []string, omitted if nil
}

func (e *protocolError) Error() string { return e.code + ": " + e.message }

func badRequest(format string, args ...any) *protocolError {
	return &protocolError{code: CodeBadRequest, message: fmt.Sprintf(format, args...)}
}

// wireFrame is the JSON shape of a client frame.
type wireFrame struct {
	Type  *string         `json:"type"`
	Topic json.RawMessage `json:"topic"`
	Data  json.RawMessage `json:"data"`
	ID    json.RawMessage `json:"id"`
	Since json.RawMessage `json:"since"`
	Limit json.RawMessage `json:"limit"`
}

// parseFrame parses and validates one client frame. The returned Frame
// holds the id even when err is not nil, so the error reply can carry it.
func parseFrame(raw []byte) (*Frame, *protocolError) {
	if !utf8.Valid(raw) {
		// encoding/json would turn invalid bytes into U+FFFD silently.
		return &Frame{Raw: raw}, badRequest("a text frame must be valid UTF-8")
	}
	var w wireFrame
	if err := json.Unmarshal(raw, &w); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return &Frame{Raw: raw}, badRequest("field %q has the wrong type: want %s", ute.Field, wantType(ute.Field))
		}
		return &Frame{Raw: raw}, badRequest("malformed JSON: a frame is one JSON object like {\"type\":\"subscribe\",\"topic\":\"a\"}")
	}
	f := &Frame{Raw: raw, Data: w.Data, Limit: -1}
	if len(w.ID) > 0 && !bytes.Equal(w.ID, []byte("null")) {
		if c := w.ID[0]; c != '"' && c != '-' && (c < '0' || c > '9') {
			return f, badRequest("id must be a string or a number")
		}
		f.ID = w.ID
	}
	if w.Type == nil || *w.Type == "" {
		return f, badRequest("missing type")
	}
	f.Type = *w.Type
	if f.Type == "unsubscribe" {
		f.Type = TypeUnsubscribe
	}
	switch f.Type {
	case TypeSubscribe, TypeUnsubscribe, TypePublish:
		topics, perr := parseTopics(w.Topic)
		if perr != nil {
			return f, perr
		}
		f.Topics = topics
		if f.Type == TypePublish && len(w.Data) == 0 {
			return f, badRequest("publish needs data")
		}
		if f.Type == TypeSubscribe && isSet(w.Since) {
			var since map[string]wirePosition
			if err := json.Unmarshal(w.Since, &since); err != nil {
				return f, badRequest(`since must be an object of positions by topic, {"a":{"epoch":"E","offset":17}}`)
			}
			f.Since = make(map[string]StreamPosition, len(since))
			for topic, p := range since {
				pos, perr := p.position()
				if perr != nil {
					return f, perr
				}
				f.Since[topic] = pos
			}
		}
	case TypeHistory:
		topics, perr := parseOneTopic(w.Topic, "history reads one topic")
		if perr != nil {
			return f, perr
		}
		f.Topics = topics
		if isSet(w.Limit) {
			var limit int64
			if err := json.Unmarshal(w.Limit, &limit); err != nil || limit < 0 {
				return f, &protocolError{code: CodeBadRequest, message: "limit must be a whole number, 0 or more", topic: topics[0]}
			}
			f.Limit = int(min(limit, 1<<30))
		}
		if isSet(w.Since) {
			var p wirePosition
			if err := json.Unmarshal(w.Since, &p); err != nil {
				return f, &protocolError{code: CodeBadRequest, message: `since must be a position, {"epoch":"E","offset":17}`, topic: topics[0]}
			}
			pos, perr := p.position()
			if perr != nil {
				perr.topic = topics[0]
				return f, perr
			}
			f.Since = map[string]StreamPosition{topics[0]: pos}
		}
	case TypePresence:
		topics, perr := parseOneTopic(w.Topic, "presence asks for one topic")
		if perr != nil {
			return f, perr
		}
		f.Topics = topics
	case TypePing:
	default:
		// A custom type: its topic is optional and, if present, validated.
		if len(w.Topic) > 0 && !bytes.Equal(w.Topic, []byte("null")) {
			topics, perr := parseTopics(w.Topic)
			if perr != nil {
				return f, perr
			}
			f.Topics = topics
		}
	}
	return f, nil
}

// parseOneTopic parses the topic of a frame that names exactly one,
// refusing another number with message.
func parseOneTopic(raw json.RawMessage, message string) ([]string, *protocolError) {
	topics, perr := parseTopics(raw)
	if perr != nil {
		return nil, perr
	}
	if len(topics) != 1 {
		return nil, &protocolError{code: CodeBadRequest, message: message, topic: topics}
	}
	return topics, nil
}

func isSet(raw json.RawMessage) bool { return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) }

// wirePosition is the JSON shape of a stream position a client sends.
type wirePosition struct {
	Epoch  *string         `json:"epoch"`
	Offset json.RawMessage `json:"offset"`
}

func (p wirePosition) position() (StreamPosition, *protocolError) {
	var offset uint64
	if p.Epoch == nil || *p.Epoch == "" || !isSet(p.Offset) || json.Unmarshal(p.Offset, &offset) != nil {
		return StreamPosition{}, badRequest(`a position is {"epoch":"<epoch>","offset":<whole number>}, as the subscribed reply gave it`)
	}
	return StreamPosition{Epoch: *p.Epoch, Offset: offset}, nil
}

func wantType(field string) string {
	switch field {
	case "type":
		return "a string"
	default:
		return "another JSON type"
	}
}

// parseTopics accepts a comma-separated string or an array of strings.
// Empty pieces of a string ("a,,b", a trailing comma) are skipped.
func parseTopics(raw json.RawMessage) ([]string, *protocolError) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badRequest("missing topic")
	}
	if hasLoneSurrogate(raw) {
		// encoding/json would decode it to U+FFFD: refused, not changed.
		return nil, badRequest("topic holds an escaped lone surrogate (\\ud800-\\udfff unpaired), which is not a character")
	}
	var pieces []string
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("topic: %v", err)
		}
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				pieces = append(pieces, p)
			}
		}
	case '[':
		if err := json.Unmarshal(raw, &pieces); err != nil {
			return nil, badRequest("topic must be a string or an array of strings")
		}
	default:
		return nil, badRequest("topic must be a string or an array of strings")
	}
	if len(pieces) == 0 {
		return nil, badRequest("missing topic")
	}
	out := pieces[:0]
	seen := make(map[string]struct{}, len(pieces))
	for _, t := range pieces {
		if err := ValidateTopic(t); err != nil {
			return nil, &protocolError{code: CodeBadRequest, message: err.Error(), topic: t}
		}
		if _, dup := seen[t]; !dup {
			seen[t] = struct{}{}
			out = append(out, t)
		}
	}
	return out, nil
}

// ValidateTopic reports whether topic is valid: 1..256 bytes of UTF-8, no
// comma, no whitespace or control characters. The error wraps
// ErrInvalidTopic.
func ValidateTopic(topic string) error {
	if topic == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTopic)
	}
	if len(topic) > MaxTopicLen {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidTopic, len(topic), MaxTopicLen)
	}
	if !utf8.ValidString(topic) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidTopic)
	}
	for _, r := range topic {
		switch {
		case r == ',':
			return fmt.Errorf("%w: %q contains a comma", ErrInvalidTopic, topic)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("%w: %q contains whitespace or a control character", ErrInvalidTopic, topic)
		}
	}
	return nil
}

// validData reports whether data may be published: one JSON value in
// valid UTF-8. json.Valid alone is not enough: it takes invalid UTF-8
// inside strings, which a browser refuses in a text frame by closing the
// whole connection. Its cost is linear in len(data) and allocates nothing
// (BenchmarkValidData).
func validData(data []byte) bool { return utf8.Valid(data) && json.Valid(data) }

// appendPublishFrame appends the server frame of a publish:
// {"type":"publish","topic":...,"data":...,"id":...}, with
// ,"offset":N before the closing brace for a stream message (offset > 0).
func appendPublishFrame(b []byte, topic, id string, data []byte, offset uint64) []byte {
	b = append(b, `{"type":"publish","topic":`...)
	b = jsonstr.Append(b, topic)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"id":`...)
	b = jsonstr.Append(b, id)
	if offset > 0 {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, offset, 10)
	}
	return append(b, '}')
}

// replyFrame is the JSON shape of the node's replies.
type replyFrame struct {
	Type      string          `json:"type"`
	Code      string          `json:"code,omitempty"`
	Message   string          `json:"message,omitempty"`
	Topic     any             `json:"topic,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
	MessageID string          `json:"messageId,omitempty"`
	// Streams is a subscribed reply's positions of its topics with history.
	Streams map[string]streamReply `json:"streams,omitempty"`
}

func encodeReply(r replyFrame) []byte {
	b, err := json.Marshal(r)
	if err != nil { // only strings and validated raw JSON go in
		panic("firetower: encoding a reply: " + err.Error())
	}
	return b
}

func errorFrame(e *protocolError, id json.RawMessage) []byte {
	return encodeReply(replyFrame{Type: TypeError, Code: e.code, Message: e.message, Topic: e.topic, ID: id})
}
