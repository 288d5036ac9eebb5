package main

import "bytes"

// A minimal JSON walker for the reconnect storm's checks: it finds a field
// of an object or the elements of an array without decoding anything else,
// so that checking 100,000 recovered messages costs the load generator far
// less than the servers it measures. It expects well-formed JSON (what the
// servers send) and reports nil for anything it cannot walk.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at b[i], or
// -1 if there is none.
func skipValue(b []byte, i int) int {
	i = skipSpace(b, i)
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i] ('"').
func skipString(b []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1
		}
		k := i + j
		// Escaped if preceded by an odd number of backslashes.
		n := 0
		for p := k - 1; p >= i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return k + 1
		}
		i = k + 1
	}
}

// fields sets out[i] to the raw value of the object's top-level key
// keys[i] (nil if absent), in one pass over the object.
func fields(obj []byte, keys []string, out [][]byte) {
	clear(out)
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return
		}
		if obj[i] == ',' {
			i++
			continue
		}
		if obj[i] != '"' {
			return
		}
		end := skipString(obj, i)
		if end < 0 {
			return
		}
		k := obj[i+1 : end-1]
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return
		}
		i = skipSpace(obj, i+1)
		vend := skipValue(obj, i)
		if vend < 0 {
			return
		}
		for j, key := range keys {
			if string(k) == key {
				out[j] = obj[i:vend]
			}
		}
		i = vend
	}
}

// field returns the raw value of the object's top-level key (compared
// byte for byte, no unescaping), or nil.
func field(obj []byte, key string) []byte {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil
	}
	i++
	for {
		i = skipSpace(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return nil
		}
		if obj[i] == ',' {
			i++
			continue
		}
		if obj[i] != '"' {
			return nil
		}
		end := skipString(obj, i)
		if end < 0 {
			return nil
		}
		k := obj[i+1 : end-1]
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return nil
		}
		i = skipSpace(obj, i+1)
		vend := skipValue(obj, i)
		if vend < 0 {
			return nil
		}
		if string(k) == key {
			return obj[i:vend]
		}
		i = vend
	}
}

// elements calls fn with each element of a JSON array.
func elements(arr []byte, fn func([]byte)) {
	i := skipSpace(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return
	}
	i++
	for {
		i = skipSpace(arr, i)
		if i >= len(arr) || arr[i] == ']' {
			return
		}
		if arr[i] == ',' {
			i++
			continue
		}
		end := skipValue(arr, i)
		if end < 0 {
			return
		}
		fn(arr[i:end])
		i = end
	}
}

// fieldInt is field parsed as an unsigned integer, -1 if absent or not one.
func fieldInt(obj []byte, key string) int64 {
	return toInt(field(obj, key))
}

// fieldString is field as a string without unescaping ("" if absent).
func fieldString(obj []byte, key string) string {
	v := field(obj, key)
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	return string(v[1 : len(v)-1])
}

// fieldIs reports whether the object's key holds exactly the raw JSON lit.
func fieldIs(obj []byte, key, lit string) bool {
	return bytes.Equal(field(obj, key), []byte(lit))
}

// toInt parses a raw JSON whole number, -1 if v is not one.
func toInt(v []byte) int64 {
	if len(v) == 0 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
