package main

import "testing"

func TestField(t *testing.T) {
	obj := []byte(` {"type":"subscribed","topic":["s0"],"id":3,"streams":{"s0":{"epoch":"E\"x","offset":25,"recovered":true}},"data":{"seq":7,"s":"}]"}} `)
	if got := fieldString(obj, "type"); got != "subscribed" {
		t.Fatalf("type = %q", got)
	}
	s := field(field(obj, "streams"), "s0")
	if got := fieldString(s, "epoch"); got != `E\"x` {
		t.Fatalf("epoch = %q", got)
	}
	if got := fieldInt(s, "offset"); got != 25 {
		t.Fatalf("offset = %d", got)
	}
	if !fieldIs(s, "recovered", "true") {
		t.Fatal("recovered")
	}
	if got := fieldInt(field(obj, "data"), "seq"); got != 7 {
		t.Fatalf("seq = %d", got)
	}
	if field(obj, "missing") != nil || fieldInt(obj, "type") != -1 {
		t.Fatal("absent or non-numeric fields")
	}
}

func TestElements(t *testing.T) {
	var got []string
	elements([]byte(`[ {"a":[1,2]}, "x,]", 3 ,{"b":"}"}, "a\"\\", "\\"]`), func(e []byte) { got = append(got, string(e)) })
	want := []string{`{"a":[1,2]}`, `"x,]"`, `3`, `{"b":"}"}`, `"a\"\\"`, `"\\"`}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("element %d = %q, want %q", i, got[i], want[i])
		}
	}
}
