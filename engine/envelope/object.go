package envelope

import (
	"bytes"
	"unicode/utf8"
)

// The saga context is a JSON object that grows with every accepted event:
// merging a payload into it by decoding both into maps and encoding the
// result again was the orchestrator's largest cost per event. These helpers
// work on the bytes instead: scanObject walks the top-level members of a
// JSON object without decoding the values, Merge splices two objects and
// Lookup follows a dotted path. Each reports false for input it does not
// handle (not an object, a key with escapes, malformed JSON), and the
// callers then fall back to encoding/json, which also names the error.

// member is one top-level member of a JSON object: the key as written
// (without quotes, no escapes) and the raw value.
type member struct {
	key, val []byte
}

// scanObject appends the top-level members of the JSON object doc to dst.
// It reports false when doc is not a well-formed object or a key contains
// an escape sequence or is not valid UTF-8.
func scanObject(dst []member, doc []byte) ([]member, bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return dst, false
	}
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return dst, skipSpace(doc, i+1) == len(doc)
	}
	for {
		if i >= len(doc) || doc[i] != '"' {
			return dst, false
		}
		end, escaped := scanString(doc, i)
		if end < 0 || escaped {
			return dst, false
		}
		key := doc[i+1 : end-1]
		if !asciiOrUTF8(key) {
			return dst, false // encoding/json would read it as U+FFFD
		}
		i = skipSpace(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return dst, false
		}
		i = skipSpace(doc, i+1)
		vEnd := skipValue(doc, i)
		if vEnd < 0 {
			return dst, false
		}
		dst = append(dst, member{key: key, val: doc[i:vEnd]})
		i = skipSpace(doc, vEnd)
		if i >= len(doc) {
			return dst, false
		}
		switch doc[i] {
		case ',':
			i = skipSpace(doc, i+1)
		case '}':
			return dst, skipSpace(doc, i+1) == len(doc)
		default:
			return dst, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string starting at b[i] == '"'
// (-1 if it does not end) and whether it contains escapes.
func scanString(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// skipValue returns the index after the JSON value starting at b[i], or -1.
// Nested values are only matched for brackets, not validated: the
// documents come from encoding/json or the database, which checked them.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := scanString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if j == i {
				return -1
			}
			return j
		}
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// Merge returns the JSON object doc with the top-level members of patch
// set: doc's other members in their order, then patch's (the last of a
// repeated key wins); it is how an event's payload is merged into the saga
// context. It reports false when either is not an object it can scan (a
// key with an escape, malformed input): decode both with encoding/json
// then. Nested values are copied, not validated: doc and patch must be
// valid JSON (the engine checks payloads with json.Valid on intake).
func Merge(doc, patch []byte) ([]byte, bool) {
	var buf [32]member
	dm, ok := scanObject(buf[:0], doc)
	if !ok {
		return nil, false
	}
	n := len(dm)
	all, ok := scanObject(dm, patch)
	if !ok {
		return nil, false
	}
	pm := all[n:]
	if len(pm) == 0 {
		return doc, true
	}
	in := func(list []member, key []byte) bool {
		for _, m := range list {
			if bytes.Equal(m.key, key) {
				return true
			}
		}
		return false
	}
	size := 2
	for _, m := range all {
		size += len(m.key) + len(m.val) + 4
	}
	out := make([]byte, 0, size)
	out = append(out, '{')
	add := func(m member) {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, m.key...)
		out = append(out, '"', ':')
		out = append(out, m.val...)
	}
	for _, m := range all[:n] {
		if !in(pm, m.key) {
			add(m)
		}
	}
	for i, m := range pm {
		if !in(pm[i+1:], m.key) {
			add(m)
		}
	}
	return append(out, '}'), true
}

// Lookup returns the raw value at a dotted path (e.g.
// "deal_context.deal_id") in the JSON object doc; found is false when it is
// missing, and ok is false when doc (or an object on the way) cannot be
// scanned (decode it with encoding/json then). The last of a repeated key
// wins, as with encoding/json.
func Lookup(doc []byte, path string) (val []byte, found, ok bool) {
	var buf [32]member
	for {
		seg, rest, deep := cut(path)
		ms, scanned := scanObject(buf[:0], doc)
		if !scanned {
			return nil, false, false
		}
		val, found = nil, false
		for _, m := range ms {
			if string(m.key) == seg {
				val, found = m.val, true // the last of a repeated key wins
			}
		}
		if !found || !deep {
			return val, found, true
		}
		if len(val) == 0 || val[0] != '{' {
			return nil, false, true
		}
		doc, path = val, rest
	}
}

func cut(path string) (seg, rest string, deep bool) {
	for i := 0; i < len(path); i++ {
		if path[i] == '.' {
			return path[:i], path[i+1:], true
		}
	}
	return path, "", false
}

// asciiOrUTF8 reports whether b is valid UTF-8, checking only when it has
// a byte above ASCII.
func asciiOrUTF8(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return utf8.Valid(b)
		}
	}
	return true
}
