// Package publishbody parses the usual body of a REST publish,
// {"topic":"a","data":<JSON>} or {"topics":["a","b"],"data":<JSON>},
// without encoding/json's Decoder: the path every backend publish takes.
// Bodies it does not take are left to encoding/json, which has the last
// word and gives the error messages.
package publishbody

import (
	"encoding/json"
	"unicode/utf8"
)

// maxDepth bounds the nesting Parse follows inside data; deeper data is
// left to encoding/json, whose nesting limit counts the enclosing object
// too.
const maxDepth = 1000

// Parse parses one object whose keys are "topic", "topics" and "data",
// each at most once and spelt exactly so, whose topics are strings
// without escapes, and after which comes only whitespace. It appends the
// topics to topics ("topic" first) and returns data as a slice of b. For
// any other body it returns ok false; for every body it takes,
// encoding/json decodes the same topics and data.
func Parse(b []byte, topics []string) (_ []string, data []byte, ok bool) {
	var topic string
	var hasTopic, hasTopics bool
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return topics, nil, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			key, j, ok := plainString(b, i)
			if !ok {
				return topics, nil, false
			}
			i = skipSpace(b, j)
			if i == len(b) || b[i] != ':' {
				return topics, nil, false
			}
			i = skipSpace(b, i+1)
			switch string(key) {
			case "topic":
				s, j, ok := plainString(b, i)
				if !ok || hasTopic {
					return topics, nil, false
				}
				topic, hasTopic, i = string(s), true, j
			case "topics":
				if hasTopics || i == len(b) || b[i] != '[' {
					return topics, nil, false
				}
				hasTopics = true
				i = skipSpace(b, i+1)
				if i < len(b) && b[i] == ']' {
					i++
					break
				}
				for {
					s, j, ok := plainString(b, i)
					if !ok {
						return topics, nil, false
					}
					topics = append(topics, string(s))
					i = skipSpace(b, j)
					if i < len(b) && b[i] == ',' {
						i = skipSpace(b, i+1)
						continue
					}
					if i == len(b) || b[i] != ']' {
						return topics, nil, false
					}
					i++
					break
				}
			case "data":
				j := skipValue(b, i)
				if data != nil || j == i || !json.Valid(b[i:j]) {
					return topics, nil, false
				}
				data, i = b[i:j], j
			default:
				return topics, nil, false
			}
			i = skipSpace(b, i)
			if i == len(b) {
				return topics, nil, false
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return topics, nil, false
			}
			i = skipSpace(b, i+1)
		}
	}
	if skipSpace(b, i) != len(b) {
		return topics, nil, false
	}
	if hasTopic {
		topics = append(topics, "")
		copy(topics[1:], topics)
		topics[0] = topic
	}
	return topics, data, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the contents of the JSON string at b[i:] and the
// index after it, if it has no escape, no control character and is valid
// UTF-8: encoding/json decodes such a string to its bytes unchanged.
func plainString(b []byte, i int) (_ []byte, end int, ok bool) {
	if i == len(b) || b[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			s := b[i+1 : j]
			return s, j + 1, utf8.Valid(s)
		case c == '\\' || c < ' ':
			return nil, i, false
		}
	}
	return nil, i, false
}

// skipValue returns the end of the JSON value that starts at b[i], for a
// valid value; the caller checks validity. A value nested deeper than
// maxDepth ends at i, and so is left to encoding/json.
func skipValue(b []byte, i int) int {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			for j++; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if depth == 0 {
				return min(j+1, len(b))
			}
		case '{', '[':
			if depth++; depth > maxDepth {
				return i
			}
		case '}', ']':
			if depth == 0 {
				return j
			}
			if depth--; depth == 0 {
				return j + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return j
			}
		}
	}
	return len(b)
}
