package sqlstore

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// appendCommandRefs writes what json.Marshal writes for a history entry's
// command references, several times faster (it runs for every transition
// of a batch):
//
//	go test ./engine/sqlstore -run '^$' -bench CommandRefs -benchmem
func BenchmarkCommandRefs(b *testing.B) {
	refs := []engine.CommandRef{
		{ID: "0b5b8f6c-1a21-4d3e-9a55-6f1c2c1e8d7a", Name: "APPROVE_ORDER", Participant: "profile", Attempt: 1},
		{ID: "6f1c2c1e-8d7a-4d3e-9a55-0b5b8f6c1a21", Name: "NOTIFY", Participant: "notification", Attempt: 2},
	}
	b.Run("appendCommandRefs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = appendCommandRefs(make([]byte, 0, 256), refs)
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(refs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzCommandRefs checks appendCommandRefs against encoding/json: what it
// writes decodes to the references given, as json.Marshal's output does.
func FuzzCommandRefs(f *testing.F) {
	f.Add("c-1", "APPROVE_ORDER", "profile", 1, "c-2", "NOTIFY", "notification", 2)
	f.Add("quote \" back \\ tab \t", "café ✓", "<b>&", 0, "", "", "", -7)
	f.Add("bad \xff utf8", "\u2028", "\x00", 1<<40, "x", "y", "z", 3)
	f.Fuzz(func(t *testing.T, id1, name1, p1 string, a1 int, id2, name2, p2 string, a2 int) {
		refs := []engine.CommandRef{{ID: id1, Name: name1, Participant: p1, Attempt: a1}, {ID: id2, Name: name2, Participant: p2, Attempt: a2}}
		got := appendCommandRefs(nil, refs)
		want, err := json.Marshal(refs)
		if err != nil {
			t.Fatal(err)
		}
		var g, w []engine.CommandRef
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("appendCommandRefs(%+v) = %q, not JSON: %v", refs, got, err)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("appendCommandRefs reads back as %+v, json.Marshal's as %+v", g, w)
		}
	})
}
