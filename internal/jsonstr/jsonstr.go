// Package jsonstr appends Go strings as JSON strings, without reflection
// or allocation: the encoder of the topics and ids that go into every
// server frame.
package jsonstr

const hexDigits = "0123456789abcdef"

// Append appends s as a JSON string. s must be valid UTF-8 (topics are
// validated, ids are generated): only quotes, backslashes and control
// characters are escaped.
func Append(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
