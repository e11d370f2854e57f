package envelope_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// Merge gives the same document as decoding both objects into maps,
// overlaying and encoding, or declines (and the caller does exactly that).
func TestMerge(t *testing.T) {
	tests := []struct {
		name, doc, patch string
		handled          bool
	}{
		{"disjoint", `{"a":1}`, `{"b":{"c":[1,"x}"]}}`, true},
		{"override", `{"a":1,"b":2}`, `{"b":"new","c":null}`, true},
		{"empty doc", `{}`, `{"a":true}`, true},
		{"empty patch", `{"a":1}`, `{}`, true},
		{"whitespace", " {\n \"a\" : [ 1 , 2 ] ,\"b\":\"q\\\"s\" }\n", ` { "a" : {"x":"]"} } `, true},
		{"repeated key in patch", `{"a":1}`, `{"b":1,"b":2}`, true},
		{"strings with braces", `{"s":"{[\"}"}`, `{"t":"]"}`, true},
		{"escaped key", `{"a\u0062":1}`, `{"ab":2}`, false},
		{"key not UTF-8", "{\"\xff\":1}", `{"ab":2}`, false},
		{"not an object", `[1]`, `{"a":1}`, false},
		{"patch not an object", `{"a":1}`, `"x"`, false},
		{"truncated", `{"a":1`, `{"b":1}`, false},
		{"trailing garbage", `{"a":1}x`, `{"b":1}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := envelope.Merge([]byte(tc.doc), []byte(tc.patch))
			if ok != tc.handled {
				t.Fatalf("Merge handled = %v, want %v (result %s)", ok, tc.handled, got)
			}
			if ok {
				checkMerged(t, []byte(tc.doc), []byte(tc.patch), got)
			}
		})
	}
}

// checkMerged fails unless got is what encoding/json gives for doc
// overlaid with patch.
func checkMerged(t *testing.T, doc, patch, got []byte) {
	t.Helper()
	want, err := decodeObject(doc)
	if err != nil {
		t.Fatalf("doc %q: %v", doc, err)
	}
	p, err := decodeObject(patch)
	if err != nil {
		t.Fatalf("patch %q: %v", patch, err)
	}
	maps.Copy(want, p)
	gotDoc, err := decodeObject(got)
	if err != nil {
		t.Fatalf("merged %q is not a JSON object: %v", got, err)
	}
	if !reflect.DeepEqual(gotDoc, want) {
		t.Errorf("Merge(%q, %q) = %q, want %v", doc, patch, got, want)
	}
}

func TestLookup(t *testing.T) {
	doc := []byte(`{"deal_context":{"deal_id":"D-1","user_id":42,"n":null,"o":{"x":1},"e":"","d":1,"d":2},"flag":true,"s":"caf\u00e9"}`)
	tests := []struct {
		path      string
		want      string
		wantFound bool
	}{
		{"deal_context.deal_id", `"D-1"`, true},
		{"deal_context.user_id", "42", true},
		{"deal_context.n", "null", true},
		{"deal_context.o", `{"x":1}`, true},
		{"deal_context.o.x", "1", true},
		{"deal_context.e", `""`, true},
		{"deal_context.d", "2", true}, // the last of a repeated key
		{"flag", "true", true},
		{"s", `"caf\u00e9"`, true},
		{"deal_context.missing", "", false},
		{"flag.deeper", "", false},
		{"nothing", "", false},
	}
	for _, tc := range tests {
		raw, found, ok := envelope.Lookup(doc, tc.path)
		if !ok {
			t.Fatalf("Lookup(%s): could not scan", tc.path)
		}
		if string(raw) != tc.want || found != tc.wantFound {
			t.Errorf("Lookup(%s) = %s (%v), want %s (%v)", tc.path, raw, found, tc.want, tc.wantFound)
		}
	}
	for _, bad := range []string{`[1]`, `{"a\u0062":1}`, `{"a":1`, "{\"\xfe\":1}"} {
		if _, _, ok := envelope.Lookup([]byte(bad), "a"); ok {
			t.Errorf("Lookup(%q) scanned it, want a refusal (the caller decodes it then)", bad)
		}
	}
}

// decodeObject decodes a JSON object with its numbers kept as text
// (decodeJSON): {"a":1e1000} is valid JSON that no float64 holds.
func decodeObject(b []byte) (map[string]any, error) {
	var v any
	if err := decodeJSON(b, &v); err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%T, not an object", v)
	}
	return obj, nil
}

// FuzzMerge checks Merge against encoding/json: for two valid JSON
// documents it either declines or gives the overlay json would; it
// declines only for what it documents (not objects, escaped or non-UTF-8
// keys).
func FuzzMerge(f *testing.F) {
	for _, s := range [][2]string{
		{`{"a":1}`, `{"b":{"c":[1,"x}"]}}`}, {`{"a":1,"b":2}`, `{"b":"new","c":null}`}, {`{}`, `{}`},
		{` {"a" : [ 1 ] } `, `{"a":{"x":"]"}}`}, {`{"a\u0062":1}`, `{"ab":2}`}, {`[1]`, `{}`}, {`{"a":1,"a":2}`, `{"a":3,"a":4}`},
		{`{"deal_context":{"deal_id":"D","status":"draft"}}`, `{"deal_context":{"deal_id":"D","status":"approved"},"x":1}`},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		if !json.Valid(doc) || !json.Valid(patch) {
			return // Merge's callers give it valid JSON only
		}
		got, ok := envelope.Merge(doc, patch)
		if !ok {
			if plainObject(doc) && plainObject(patch) {
				t.Fatalf("Merge(%q, %q) declined two plain objects", doc, patch)
			}
			return
		}
		checkMerged(t, doc, patch, got)
	})
}

// plainObject reports whether doc is a JSON object whose keys (at the top
// level) are written without escapes in valid UTF-8: what Merge handles.
func plainObject(doc []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	tok, err := dec.Token()
	if d, isDelim := tok.(json.Delim); err != nil || !isDelim || d != '{' {
		return false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(doc, &obj) != nil {
		return false
	}
	// Keys as written: a key with an escape or an invalid byte decodes to
	// something that does not appear, quoted, in doc.
	for k := range obj {
		if !bytes.Contains(doc, append(append([]byte{'"'}, k...), '"')) || strings.ContainsRune(k, '\\') || strings.ContainsRune(k, '\uFFFD') {
			return false
		}
	}
	return true
}

// FuzzLookup checks Lookup against following the path through
// encoding/json's maps, whenever Lookup can scan the document.
func FuzzLookup(f *testing.F) {
	for _, s := range [][2]string{
		{`{"deal_context":{"deal_id":"D-1","user_id":42}}`, "deal_context.deal_id"}, {`{"a":{"b":null}}`, "a.b.c"},
		{`{"a":[{"b":1}]}`, "a.b"}, {`{"a":1,"a":{"b":2}}`, "a.b"}, {`{"":{"":3}}`, "."}, {`{"a\u0062":1}`, "ab"},
	} {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, doc []byte, path string) {
		if !json.Valid(doc) {
			return
		}
		raw, found, ok := envelope.Lookup(doc, path)
		if !ok {
			return
		}
		want, wantFound := lookupDecoded(doc, path)
		if found != wantFound || !bytes.Equal(raw, want) {
			t.Fatalf("Lookup(%q, %q) = %q (%v), encoding/json finds %q (%v)", doc, path, raw, found, want, wantFound)
		}
	})
}

// lookupDecoded follows path through maps decoded by encoding/json.
func lookupDecoded(doc []byte, path string) (json.RawMessage, bool) {
	cur := json.RawMessage(doc)
	for _, seg := range strings.Split(path, ".") {
		var obj map[string]json.RawMessage
		if json.Unmarshal(cur, &obj) != nil {
			return nil, false
		}
		v, ok := obj[seg]
		if !ok {
			return nil, false
		}
		cur = v
	}
	return cur, true
}
