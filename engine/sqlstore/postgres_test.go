package sqlstore_test

import (
	"context"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore/storetest"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// openPostgres opens a store on a fresh PostgreSQL database.
func openPostgres(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	s, err := sqlstore.Open(context.Background(), testenv.Postgres(tb))
	if err != nil {
		tb.Fatalf("open PostgreSQL store: %v", err)
	}
	return s
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store { return openPostgres(t) })
}
