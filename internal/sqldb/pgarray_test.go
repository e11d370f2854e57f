package sqldb_test

import (
	"database/sql"
	"encoding/json"
	"slices"
	"testing"

	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

func TestNullTextArray(t *testing.T) {
	s := func(v string) *string { return &v }
	tests := []struct {
		in   sqldb.NullTextArray
		want string
	}{
		{nil, "{}"},
		{sqldb.NullTextArray{nil}, "{NULL}"},
		{sqldb.NullTextArray{s(""), s("NULL"), s(`{"a":"b\\c"}`), nil}, `{"","NULL","{\"a\":\"b\\\\c\"}",NULL}`},
	}
	for _, tc := range tests {
		v, err := tc.in.Value()
		got, _ := v.([]byte)
		if err != nil || string(got) != tc.want {
			t.Errorf("Value() = %v, %v; want %s", got, err, tc.want)
		}
	}
	// TextArray encodes like pq.StringArray.
	for _, in := range [][]string{nil, {}, {""}, {"a", `q"uote`, `back\slash`, "é, {x}", "NULL"}} {
		v, err := sqldb.TextArray(in).Value()
		if err != nil {
			t.Fatalf("TextArray.Value: %v", err)
		}
		got, _ := v.([]byte)
		want, _ := pq.StringArray(in).Value()
		if in == nil {
			want = "{}"
		}
		if string(got) != want {
			t.Errorf("TextArray(%q) = %s, want %v", in, got, want)
		}
	}
	// Int64Array encodes like pq.Int64Array.
	for _, in := range [][]int64{{}, {0}, {1, -2, 9223372036854775807}} {
		v, _ := sqldb.Int64Array(in).Value()
		got, _ := v.([]byte)
		want, _ := pq.Int64Array(in).Value()
		if string(got) != want {
			t.Errorf("Int64Array(%v) = %s, want %v", in, got, want)
		}
	}
	// JSONArray joins documents, nil as null.
	v, _ := sqldb.JSONArray{s(`{"a":1}`), nil, s(`[2]`)}.Value()
	if got, want := string(v.([]byte)), `[{"a":1},null,[2]]`; got != want {
		t.Errorf("JSONArray = %s, want %s", got, want)
	}
}

// FuzzTextArray checks the hand-written array literal against lib/pq's
// parser: any strings (NUL aside, which PostgreSQL's text refuses) come
// back unchanged, and NullTextArray's nils come back as NULLs.
func FuzzTextArray(f *testing.F) {
	f.Add(`a`, `q"uote`, `back\slash`)
	f.Add(``, `NULL`, `{"a":"b\\c"}`)
	f.Add(`é, {x}`, ` `, `,`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		in := []string{a, b, c}
		for _, s := range in {
			if slices.Contains([]byte(s), 0) {
				return
			}
		}
		v, err := sqldb.TextArray(in).Value()
		if err != nil {
			t.Fatal(err)
		}
		var back pq.StringArray
		if err := back.Scan(v); err != nil {
			t.Fatalf("lib/pq cannot parse %q: %v", v, err)
		}
		if !slices.Equal([]string(back), in) {
			t.Fatalf("TextArray(%q) = %s reads back as %q", in, v, back)
		}
		nv, _ := sqldb.NullTextArray{&a, nil, &c}.Value()
		var nback []sql.NullString
		if err := (pq.GenericArray{A: &nback}).Scan(nv); err != nil {
			t.Fatalf("lib/pq cannot parse %q: %v", nv, err)
		}
		if len(nback) != 3 || nback[0].String != a || !nback[0].Valid || nback[1].Valid || nback[2].String != c {
			b, _ := json.Marshal(nback)
			t.Fatalf("NullTextArray reads back as %s", b)
		}
	})
}
