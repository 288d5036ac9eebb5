package firetower

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// decodePublish is the encoding/json reading of a publish body that
// parsePublish must agree with.
func decodePublish(b []byte) (topics []string, data []byte, ok bool) {
	var req publishRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		return nil, nil, false
	}
	topics = req.Topics
	if req.Topic != nil {
		topics = append([]string{*req.Topic}, topics...)
	}
	return topics, req.Data, true
}

var publishSeeds = []string{
	`{"topic":"a","data":1}`,
	` {"topic" : "/room/1" , "data" : {"ts":1,"p":"x"} } ` + "\n",
	`{"topics":["a","b"],"data":[1,"]",{"}":"\""}]}`,
	`{"data":"x","topics":[],"topic":"z"}`,
	`{"topics":[ "a" , "b" ],"topic":"c","data":null}`,
	`{"topic":"é","data":"\u00e9"}`,
	`{"topic":"a\u0062","data":1}`,
	`{"topic":"a","data":1} trailing`,
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

// FuzzParsePublish checks that every body parsePublish takes, encoding/json
// takes too, with the same topics and data.
func FuzzParsePublish(f *testing.F) {
	for _, s := range publishSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		topics, data, ok := parsePublish(b, nil)
		if !ok {
			return
		}
		want, wantData, wantOK := decodePublish(b)
		if !wantOK {
			t.Fatalf("%q: parsePublish takes what encoding/json refuses", b)
		}
		if !slices.Equal(topics, want) || !bytes.Equal(data, wantData) || (data == nil) != (wantData == nil) {
			t.Fatalf("%q: parsePublish %q %q, encoding/json %q %q", b, topics, data, want, wantData)
		}
	})
}

// TestParsePublishTakesTheUsualBodies keeps the short path in use: these
// bodies must not fall back to encoding/json.
func TestParsePublishTakesTheUsualBodies(t *testing.T) {
	for _, s := range publishSeeds[:6] {
		if _, _, ok := parsePublish([]byte(s), nil); !ok {
			t.Errorf("%q: not taken", s)
		}
	}
}
