package sqldb_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestRefreshStatsReplansGrownTables is why RefreshStats exists: a
// prepared statement's generic plan made while its table was small scans
// the table whole however much it grows, until the table's statistics
// change. RefreshStats analyzes the grown table, and the same prepared
// statement is planned again with an index scan.
func TestRefreshStatsReplansGrownTables(t *testing.T) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, testenv.Postgres(t), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.MustExec(`CREATE TABLE grows (id text PRIMARY KEY, v int NOT NULL)`)
	db.MustExec(`INSERT INTO grows SELECT 'k' || g, g FROM generate_series(1, 20) g`)
	db.MustExec(`ANALYZE grows`) // a young table, as after the first minute of a new database
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{`SET plan_cache_mode = force_generic_plan`,
		`PREPARE look(text[]) AS SELECT v FROM grows WHERE id = ANY($1)`} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	plan := func() string {
		t.Helper()
		var lines []string
		if err := conn.SelectContext(ctx, &lines, `EXPLAIN EXECUTE look('{k1}')`); err != nil {
			t.Fatal(err)
		}
		return strings.Join(lines, "\n")
	}
	if p := plan(); !strings.Contains(p, "Seq Scan") {
		t.Fatalf("the young table's generic plan:\n%s\nwant a Seq Scan (the case RefreshStats is for)", p)
	}
	// The rows come from a session that reports its counts at once (a
	// backend otherwise reports them within seconds: what the 5 s loop
	// waits for anyway).
	writer, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	for _, q := range []string{`INSERT INTO grows SELECT 'k' || g, g FROM generate_series(21, 50000) g`,
		`SELECT pg_stat_force_next_flush()`, `SELECT 1`} {
		if _, err := writer.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if p := plan(); !strings.Contains(p, "Seq Scan") {
		t.Fatalf("the grown table's cached generic plan before RefreshStats:\n%s\nwant the stale Seq Scan", p)
	}
	analyzed, err := sqldb.RefreshStats(ctx, db)
	if err != nil {
		t.Fatalf("RefreshStats: %v", err)
	}
	if !slices.Contains(analyzed, "public.grows") {
		t.Errorf("RefreshStats analyzed %v, want public.grows among them", analyzed)
	}
	if p := plan(); !strings.Contains(p, "Index") {
		t.Errorf("the plan after RefreshStats:\n%s\nwant an index scan", p)
	}
	again, err := sqldb.RefreshStats(ctx, db)
	if err != nil || slices.Contains(again, "public.grows") {
		t.Errorf("RefreshStats right after: analyzed %v (err %v), want public.grows left alone (unchanged since)", again, err)
	}
}

// TestRefreshStatsSQLite: nothing to do on SQLite (it has no plan cache
// of this kind), and no error.
func TestRefreshStatsSQLite(t *testing.T) {
	db, err := sqldb.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if analyzed, err := sqldb.RefreshStats(context.Background(), db); err != nil || analyzed != nil {
		t.Errorf("RefreshStats on SQLite = %v, %v; want nothing", analyzed, err)
	}
}
