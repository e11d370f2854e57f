package sqlstore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore/storetest"
)

// openSQLite opens a store on a fresh SQLite file in a temporary directory.
func openSQLite(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	s, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(tb.TempDir(), "saga.db"))
	if err != nil {
		tb.Fatalf("open SQLite store: %v", err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return openSQLite(t) })
}

func TestSQLiteMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := sqlstore.Open(context.Background(), "sqlite::memory:")
		if err != nil {
			t.Fatalf("open in-memory SQLite store: %v", err)
		}
		return s
	})
}
