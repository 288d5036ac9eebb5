package publishbody

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// request is the body as encoding/json reads it.
type request struct {
	Topic  *string         `json:"topic"`
	Topics []string        `json:"topics"`
	Data   json.RawMessage `json:"data"`
}

// decode is the encoding/json reading of a publish body that Parse must
// agree with: one object with nothing after it but whitespace, as
// json.Unmarshal takes it (dec.More alone would take a '}' or ']').
func decode(b []byte) (topics []string, data []byte, ok bool) {
	var req request
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(bytes.TrimLeft(b[dec.InputOffset():], " \t\r\n")) != 0 {
		return nil, nil, false
	}
	topics = req.Topics
	if req.Topic != nil {
		topics = append([]string{*req.Topic}, topics...)
	}
	return topics, req.Data, true
}

var seeds = []string{
	`{"topic":"a","data":1}`,
	` {"topic" : "/room/1" , "data" : {"ts":1,"p":"x"} } ` + "\n",
	`{"topics":["a","b"],"data":[1,"]",{"}":"\""}]}`,
	`{"data":"x","topics":[],"topic":"z"}`,
	`{"topics":[ "a" , "b" ],"topic":"c","data":null}`,
	`{"topic":"é","data":"\u00e9"}`,
	`{"topic":"a\u0062","data":1}`,
	`{"topic":"a","topics":["a","a"],"data":1}`,
	`{"topic":"a","data":1} trailing`,
	`{"topic":"a","data":1} } not json`,
	`{"topic":"a","data":1}{}`,
	`{"topic":"a","data":1} }`,
	`{"topic":"a","data":1}]`,
	`{"topic":"a"}`,
	`{"data":1}`,
	`{}`,
	`{"TOPIC":"a","data":1}`,
	`{"topic":"a","topic":"b","data":1}`,
	`{"topic":"a","data":1,"data":2}`,
	`{"topic":null,"data":1}`,
	`{"topics":null,"data":1}`,
	`{"topic":"a","data":1,"extra":true}`,
	`{"topic":"a","data":{"broken":}`,
	`{"topic":"a","data":1 2}`,
	`{"topic":"a","data":tru}`,
	`{"topic":"a","data":"unterminated}`,
	`{"topic":"a","data":1,}`,
	`{"topic":"a" "data":1}`,
	`{"topic":"\xff","data":1}`,
	`{"topic":"a\tb","data":1}`,
	`[{"topic":"a","data":1}]`,
	"\ufeff" + `{"topic":"a","data":1}`,
	`{"topic":"a","data":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"topic":"a","data":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
	`{"topic":"a","data":` + strings.Repeat("[", 999) + strings.Repeat("]", 999) + `}`,
}

// FuzzParse checks that every body Parse takes, encoding/json
// takes too, with the same topics and data.
func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		topics, data, ok := Parse(b, nil)
		if !ok {
			return
		}
		want, wantData, wantOK := decode(b)
		if !wantOK {
			t.Fatalf("%q: Parse takes what encoding/json refuses", b)
		}
		if !slices.Equal(topics, want) || !bytes.Equal(data, wantData) || (data == nil) != (wantData == nil) {
			t.Fatalf("%q: Parse %q %q, encoding/json %q %q", b, topics, data, want, wantData)
		}
	})
}

// TestParseTakesTheUsualBodies keeps the short path in use: these
// bodies must not fall back to encoding/json.
func TestParseTakesTheUsualBodies(t *testing.T) {
	for _, s := range seeds[:6] {
		if _, _, ok := Parse([]byte(s), nil); !ok {
			t.Errorf("%q: not taken", s)
		}
	}
}
