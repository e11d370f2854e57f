package engine

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

func TestKeyValue(t *testing.T) {
	doc := []byte(`{"deal_context":{"deal_id":"D-1","user_id":42,"n":null,"o":{"x":1},"e":"","q":"a\"b"},"flag":true,"s":"caf\u00e9"}`)
	tests := []struct {
		path      string
		want      string
		wantFound bool
	}{
		{"deal_context.deal_id", "D-1", true},
		{"deal_context.user_id", "42", true},
		{"deal_context.q", `a"b`, true},
		{"flag", "true", true},
		{"s", "café", true},
		{"deal_context.n", "", false},
		{"deal_context.o", "", false},
		{"deal_context.e", "", false},
	}
	for _, tc := range tests {
		raw, found, ok := envelope.Lookup(doc, tc.path)
		if !ok || !found {
			t.Fatalf("Lookup(%s) = found %v, ok %v", tc.path, found, ok)
		}
		v, isValue := keyValue(raw)
		if v != tc.want || isValue != tc.wantFound {
			t.Errorf("key at %s = %q (%v), want %q (%v)", tc.path, v, isValue, tc.want, tc.wantFound)
		}
	}
}

// FuzzKeyValue checks keyValue against encoding/json for every valid JSON
// value: a non-empty string decodes to its text, a number or boolean is its
// JSON text, anything else is no value.
func FuzzKeyValue(f *testing.F) {
	for _, s := range []string{`"D-1"`, `42`, `-1.5e3`, `true`, `null`, `{"a":1}`, `[1]`, `""`, `"a\"b"`, `"caf\u00e9"`, ` "x" `, `"\ud800"`, `1e1000`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // values come from a validated context
		}
		got, ok := keyValue(raw)
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // 1e1000 is a valid key value, not a float64
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		want, wantOK := "", false
		switch x := v.(type) {
		case string:
			want, wantOK = x, x != ""
		case json.Number, bool:
			want, wantOK = strings.TrimSpace(string(raw)), true
		}
		if got != want || ok != wantOK {
			t.Fatalf("keyValue(%q) = %q, %v; encoding/json: %q, %v", raw, got, ok, want, wantOK)
		}
	})
}

// keyValue reads a plain string without encoding/json; it runs for every
// business key of every transition:
//
//	go test ./engine -run '^$' -bench KeyValue -benchmem
func BenchmarkKeyValue(b *testing.B) {
	raw := []byte(`"6f1c2c1e-8d7a-4d3e-9a55-0b5b8f6c1a21"`)
	b.Run("keyValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := keyValue(raw); !ok {
				b.Fatal("no value")
			}
		}
	})
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
