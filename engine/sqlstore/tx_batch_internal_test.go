package sqlstore

import (
	"strings"
	"testing"
)

// TestBatchStatement: the parts after the first have their parameters
// renumbered after the parts before them, and the last part is the main
// statement.
func TestBatchStatement(t *testing.T) {
	var w batchStatement
	w.add(`INSERT INTO a SELECT unnest($1::text[]), $2`, []any{1, 2})
	w.add(`INSERT INTO b SELECT unnest($1::text[]), $2, $10`, make([]any, 10))
	w.add(`UPDATE c SET x = $1 RETURNING id`, []any{3})
	got := w.sql()
	want := `WITH w0 AS (INSERT INTO a SELECT unnest($1::text[]), $2), w1 AS (INSERT INTO b SELECT unnest($3::text[]), $4, $12) UPDATE c SET x = $13 RETURNING id`
	if got != want || len(w.args) != 13 {
		t.Errorf("sql()\n got %s (%d args)\nwant %s (13 args)", got, len(w.args), want)
	}
	// The same parts at the same places give the same text (from the cache).
	var again batchStatement
	again.add(`INSERT INTO a SELECT unnest($1::text[]), $2`, []any{1, 2})
	again.add(`INSERT INTO b SELECT unnest($1::text[]), $2, $10`, make([]any, 10))
	again.add(`UPDATE c SET x = $1 RETURNING id`, []any{3})
	if again.sql() != want {
		t.Errorf("second build: %s", again.sql())
	}
}

// BenchmarkBatchStatement builds the statement of an intake batch with new
// and changed sagas, keys and history (the outbox part is numbered by the
// delivery core itself).
//
//	go test -run '^$' -bench BatchStatement -benchmem ./engine/sqlstore/
func BenchmarkBatchStatement(b *testing.B) {
	for b.Loop() {
		var w batchStatement
		w.add(insertInstancesSQL, make([]any, 16))
		w.add(insertKeysSQL, make([]any, 3))
		w.add(historySQL, make([]any, 12))
		w.add(updateInstancesSQL, make([]any, 16))
		if q := w.sql(); !strings.HasPrefix(q, "WITH ") {
			b.Fatal(q)
		}
	}
}
