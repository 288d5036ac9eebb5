package main

import (
	"encoding/json"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/OSMeteor/firetower"
)

// A room is the topic /chat/<name>.
const roomPrefix = "/chat/"

// allowSubscribe lets a page join rooms, and nothing else.
func allowSubscribe(_ *firetower.Conn, topics []string) bool {
	for _, t := range topics {
		if !strings.HasPrefix(t, roomPrefix) {
			return false
		}
	}
	return true
}

// The fields of a chat message and their limits.
const (
	maxText = 2000 // characters
	maxNick = 32   // characters
	maxCID  = 64   // bytes
	// at is a time in milliseconds since 1970: 2000-01-01 to 2100-01-01,
	// well inside what a browser's Date can show (±8.64e15).
	minAt = 946_684_800_000
	maxAt = 4_102_444_800_000
)

// chatMessage is every field a page may publish. The page's own shape is
// {"text":"hi","nick":"ann","at":<ms>,"cid":"<id>"} (text required, the
// others optional); the v0.x chat's is {"from":"1234","data":"hi","type":"publish"}.
type chatMessage struct {
	Text *string  `json:"text"`
	Nick *string  `json:"nick"`
	At   *float64 `json:"at"`
	CID  *string  `json:"cid"`
	From *string  `json:"from"`
	Data *string  `json:"data"`
	Type *string  `json:"type"`
}

var chatFields = map[string]bool{"text": true, "nick": true, "at": true, "cid": true, "from": true, "data": true, "type": true}

// allowChatMessage lets a page publish chat lines to a room: one JSON
// object of chatMessage's fields, each of its type and within its limits,
// and a non-empty text (or v0.x data). Anything else — another field, a
// nested object, a null, an out-of-range time, a "type" other than
// "publish", a topic outside /chat/ — is refused, so the room only ever
// sees what the page can show. A refused message is not kept either: the
// check runs before the publish, so a room's history (topicOptions) holds
// only what passed it, or what a backend holding the API token published.
func allowChatMessage(_ *firetower.Conn, f *firetower.Frame) bool {
	if f.Type != firetower.TypePublish || len(f.Topics) != 1 || !strings.HasPrefix(f.Topics[0], roomPrefix) {
		return false
	}
	// An object, each member present with a value: a null decodes as an
	// absent field, and the page would meet a null where it expects a
	// string.
	var members map[string]json.RawMessage
	if json.Unmarshal(f.Data, &members) != nil || members == nil {
		return false
	}
	for k, v := range members {
		// encoding/json matches names without regard to case; the
		// page does not, so a name must be exactly one of the fields.
		if !chatFields[k] || string(v) == "null" {
			return false
		}
	}
	var m chatMessage
	if json.Unmarshal(f.Data, &m) != nil {
		return false
	}
	text := ""
	switch {
	case m.Text != nil && m.Data == nil && m.From == nil && m.Type == nil:
		text = *m.Text
	case m.Data != nil && m.Text == nil && m.Nick == nil && m.At == nil && m.CID == nil:
		if m.Type != nil && *m.Type != "publish" {
			return false
		}
		text = *m.Data
		if m.From != nil && utf8.RuneCountInString(*m.From) > maxNick {
			return false
		}
	default:
		return false
	}
	if text == "" || utf8.RuneCountInString(text) > maxText {
		return false
	}
	if m.Nick != nil && utf8.RuneCountInString(*m.Nick) > maxNick {
		return false
	}
	if m.CID != nil && len(*m.CID) > maxCID {
		return false
	}
	if m.At != nil && (*m.At != math.Trunc(*m.At) || *m.At < minAt || *m.At > maxAt) {
		return false
	}
	return true
}
