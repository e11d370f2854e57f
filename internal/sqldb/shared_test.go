package sqldb_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func TestSQLiteDSN(t *testing.T) {
	tests := []struct {
		name       string
		o          sqldb.SQLiteOptions
		want, miss []string
	}{
		{"writer", sqldb.SQLiteOptions{}, []string{"file:/d/x.db?", "busy_timeout(5000)", "synchronous(FULL)", "journal_mode(WAL)", "foreign_keys(1)", "_txlock=immediate"}, []string{"query_only"}},
		{"reader", sqldb.SQLiteOptions{ReadOnly: true, BusyTimeout: 1500e6}, []string{"busy_timeout(1500)", "query_only(1)"}, []string{"_txlock"}},
		{"throwaway", sqldb.SQLiteOptions{Synchronous: "OFF"}, []string{"synchronous(OFF)"}, []string{"synchronous(FULL)"}},
	}
	for _, tc := range tests {
		got := sqldb.SQLiteDSN("/d/x.db", tc.o)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: SQLiteDSN = %q, want it to contain %q", tc.name, got, w)
			}
		}
		for _, m := range tc.miss {
			if strings.Contains(got, m) {
				t.Errorf("%s: SQLiteDSN = %q, want no %q", tc.name, got, m)
			}
		}
	}
	// A reader opened with it cannot write.
	path := filepath.Join(t.TempDir(), "r.db")
	w := sqlx.MustOpen("sqlite", sqldb.SQLiteDSN(path, sqldb.SQLiteOptions{}))
	defer w.Close()
	w.MustExec(`CREATE TABLE t (v TEXT)`)
	r := sqlx.MustOpen("sqlite", sqldb.SQLiteDSN(path, sqldb.SQLiteOptions{ReadOnly: true}))
	defer r.Close()
	if _, err := r.Exec(`INSERT INTO t VALUES ('x')`); err == nil {
		t.Error("a reader wrote")
	}
	var n int
	if err := w.Get(&n, `SELECT count(*) FROM t`); err != nil || n != 0 {
		t.Errorf("rows after the refused write = %d, %v; want 0", n, err)
	}
}

func TestDialectOf(t *testing.T) {
	tests := []struct {
		driver string
		want   sqldb.Dialect
		ok     bool
	}{
		{"postgres", sqldb.Postgres, true}, {"pgx", sqldb.Postgres, true}, {"sqlite", sqldb.SQLite, true},
		{"sqlite3", sqldb.SQLite, true}, {"mysql", "", false},
	}
	for _, tc := range tests {
		got, err := sqldb.DriverDialect(tc.driver)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("DriverDialect(%q) = %q, %v; want %q (ok %v)", tc.driver, got, err, tc.want, tc.ok)
		}
	}
	if got, want := sqldb.Postgres.ForUpdate(), " FOR UPDATE"; got != want {
		t.Errorf("ForUpdate on PostgreSQL = %q, want %q", got, want)
	}
	if got := sqldb.SQLite.ForUpdate(); got != "" {
		t.Errorf("ForUpdate on SQLite = %q, want none", got)
	}
}

// Migrate applies a component's migrations once, in its own version
// table, on both databases; a second run (another replica) changes nothing.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var db *sqlx.DB
			var err error
			if kind == "sqlite" {
				db, err = sqldb.Open(ctx, filepath.Join(t.TempDir(), "m.db"), 0)
			} else {
				db, err = sqldb.Open(ctx, testenv.Postgres(t), 0)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			m := sqldb.Migrations{Component: "sdk", Table: "sdk_goose_db_version", LockID: 0x5d6b5344}
			for range 2 {
				if err := sqldb.Migrate(ctx, db, m); err != nil {
					t.Fatalf("Migrate: %v", err)
				}
			}
			var versions int
			if err := db.GetContext(ctx, &versions, `SELECT count(*) FROM sdk_goose_db_version WHERE version_id > 0`); err != nil {
				t.Fatal(err)
			}
			if versions == 0 {
				t.Error("no migration recorded in sdk_goose_db_version")
			}
			if _, err := db.ExecContext(ctx, `SELECT message_id FROM sdk_inbox LIMIT 1`); err != nil {
				t.Errorf("sdk_inbox after Migrate: %v", err)
			}
			if err := sqldb.Migrate(ctx, db, sqldb.Migrations{Component: "no-such-component"}); err == nil {
				t.Error("Migrate of a component without migrations: no error")
			}
			if err := sqldb.Migrate(ctx, nil, m); err == nil {
				t.Error("Migrate of a nil db: no error")
			}
		})
	}
}
