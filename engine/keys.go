package engine

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// keyValue turns the raw value of a business key (found in the saga
// context with envelope.Lookup) into its text: a string as it is, a number
// or boolean as its JSON text; other values and empty strings are no value.
// A plain string is taken without decoding; one with escapes goes through
// encoding/json (FuzzKeyValue checks the two agree).
func keyValue(raw []byte) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		if len(raw) >= 2 && raw[len(raw)-1] == '"' {
			if body := raw[1 : len(raw)-1]; bytes.IndexByte(body, '\\') < 0 && bytes.IndexByte(body, '"') < 0 && utf8.Valid(body) {
				return string(body), len(body) > 0
			}
		}
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	case '{', '[', 'n':
		return "", false
	}
	return string(raw), true
}
