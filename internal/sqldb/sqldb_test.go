package sqldb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

func TestOpenSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "x.db")
	for _, u := range []string{"sqlite:" + path, "file:" + path, path} {
		db, err := sqldb.Open(ctx, u, 0)
		if err != nil {
			t.Fatalf("Open(%q): %v", u, err)
		}
		if got, want := db.DriverName(), "sqlite"; got != want {
			t.Errorf("driver of %q: got %q, want %q", u, got, want)
		}
		if got, want := db.Stats().MaxOpenConnections, 1; got != want {
			t.Errorf("max connections of %q: got %d, want %d", u, got, want)
		}
		var mode string
		if err := db.GetContext(ctx, &mode, `PRAGMA journal_mode`); err != nil || mode != "wal" {
			t.Errorf("journal mode of %q: got %q (err %v), want wal", u, mode, err)
		}
		db.Close()
	}
}

func TestOpenRefusesBadURLs(t *testing.T) {
	for _, bad := range []string{"", " ", "sqlite:", "file:", "sqlite:x.db?mode=ro", "sqlite::memory:"} {
		if db, err := sqldb.Open(context.Background(), bad, 0); err == nil {
			db.Close()
			t.Errorf("Open(%q): got no error, want one", bad)
		}
	}
}

func TestOpenPostgres(t *testing.T) {
	u := testenv.Postgres(t)
	db, err := sqldb.Open(context.Background(), u, 7)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	want, err := sqldb.PostgresDriver()
	if err != nil {
		t.Fatal(err)
	}
	if got := db.DriverName(); got != want {
		t.Errorf("driver: got %q, want %q", got, want)
	}
	if got, want := db.Stats().MaxOpenConnections, 7; got != want {
		t.Errorf("max connections: got %d, want %d", got, want)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres://u:secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"sqlite:/x.db", "sqlite:/x.db"},
	}
	for _, tt := range tests {
		got := sqldb.Redact(tt.in)
		if got != tt.want || strings.Contains(got, "secret") {
			t.Errorf("Redact(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func ExampleRedact() {
	fmt.Println(sqldb.Redact("postgres://app:s3cret@db.internal:5432/deals"))
	// Output: postgres://app:xxxxx@db.internal:5432/deals
}

// TestSQLiteFilesArePrivate checks that a database Open creates, its WAL
// and shared-memory files and the directory it creates are readable by the
// owner only, and that Open takes group and other permissions away from a
// file an earlier version left world-readable.
func TestSQLiteFilesArePrivate(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(dir, "x.db")
	db, err := sqldb.Open(ctx, "sqlite:"+path, 0)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('secret')`); err != nil {
		t.Fatalf("write: %v", err)
	}
	checkMode(t, dir, sqldb.SQLiteDirMode)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		checkMode(t, p, sqldb.SQLiteFileMode)
	}

	old := filepath.Join(t.TempDir(), "old.db")
	if err := os.WriteFile(old, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old+"-wal", nil, 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := os.Chmod(old+"-wal", 0o664); err != nil {
		t.Fatal(err)
	}
	db2, err := sqldb.Open(ctx, old, 0)
	if err != nil {
		t.Fatalf("Open of an existing file: %v", err)
	}
	defer db2.Close()
	checkMode(t, old, 0o600)
	checkMode(t, old+"-wal", 0o600)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s: got %o, want %o", filepath.Base(path), got, want)
	}
}
