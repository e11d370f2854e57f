package sqldb_test

import (
	"context"
	"fmt"
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
	if got, want := db.DriverName(), "postgres"; got != want {
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
