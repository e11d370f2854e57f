package engine

import (
	"encoding/json"
	"maps"
	"reflect"
	"testing"
)

// mergeObjects gives the same document as decoding both objects into maps,
// overlaying and encoding, or declines (and the caller does exactly that).
func TestMergeObjects(t *testing.T) {
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
		{"not an object", `[1]`, `{"a":1}`, false},
		{"patch not an object", `{"a":1}`, `"x"`, false},
		{"truncated", `{"a":1`, `{"b":1}`, false},
		{"trailing garbage", `{"a":1}x`, `{"b":1}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := mergeObjects([]byte(tc.doc), []byte(tc.patch))
			if ok != tc.handled {
				t.Fatalf("mergeObjects handled = %v, want %v (result %s)", ok, tc.handled, got)
			}
			if !ok {
				return
			}
			want := map[string]any{}
			var patch map[string]any
			if err := json.Unmarshal([]byte(tc.doc), &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.patch), &patch); err != nil {
				t.Fatal(err)
			}
			maps.Copy(want, patch)
			var gotDoc map[string]any
			if err := json.Unmarshal(got, &gotDoc); err != nil {
				t.Fatalf("merged %s is not JSON: %v", got, err)
			}
			if !reflect.DeepEqual(gotDoc, want) {
				t.Errorf("merged = %s, want %v", got, want)
			}
		})
	}
}

func TestLookupRaw(t *testing.T) {
	doc := []byte(`{"deal_context":{"deal_id":"D-1","user_id":42,"n":null,"o":{"x":1},"e":""},"flag":true,"s":"caf\u00e9"}`)
	tests := []struct {
		path      string
		want      string
		wantFound bool
	}{
		{"deal_context.deal_id", "D-1", true},
		{"deal_context.user_id", "42", true},
		{"flag", "true", true},
		{"s", "café", true},
		{"deal_context.n", "", false},
		{"deal_context.o", "", false},
		{"deal_context.e", "", false},
		{"deal_context.missing", "", false},
		{"flag.deeper", "", false},
		{"nothing", "", false},
	}
	for _, tc := range tests {
		raw, found, ok := lookupRaw(doc, tc.path)
		if !ok {
			t.Fatalf("lookupRaw(%s): could not scan", tc.path)
		}
		v, isValue := "", false
		if found {
			v, isValue = keyValue(raw)
		}
		if v != tc.want || isValue != tc.wantFound {
			t.Errorf("key at %s = %q (%v), want %q (%v)", tc.path, v, isValue, tc.want, tc.wantFound)
		}
	}
}
