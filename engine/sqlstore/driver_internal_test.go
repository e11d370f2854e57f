package sqlstore

import (
	"context"
	"database/sql"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// TestStoreDriverAndURLParams opens the store under each PostgreSQL
// driver (sqldb.DriverEnv) and checks that it uses that driver and that a
// run-time parameter of the URL (an operator's plan_cache_mode) is in
// force on every connection of its pool (pgx and lib/pq pass URL
// parameters to the server differently) while the store adds none of its
// own (the server's default plan mode: generic plans follow the tables
// through RefreshStats); and that a unique violation is classified as a
// conflict under both (error codes are read through sqldb.SQLState).
func TestStoreDriverAndURLParams(t *testing.T) {
	ctx := context.Background()
	for _, driver := range []string{sqldb.DriverPgx, sqldb.DriverLibPQ} {
		t.Run(driver, func(t *testing.T) {
			t.Setenv(sqldb.DriverEnv, driver)
			url := testenv.Postgres(t)
			plain, err := Open(ctx, url)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			var mode string
			if err := plain.w.QueryRowContext(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != "auto" {
				t.Errorf("plan_cache_mode without a URL parameter: got %q (err %v), want the server's auto", mode, err)
			}
			plain.Close()
			s, err := Open(ctx, url+"&plan_cache_mode=force_custom_plan", WithMaxConns(3))
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			if got := s.w.DriverName(); got != driver {
				t.Errorf("driver: got %q, want %q", got, driver)
			}
			var conns []*sql.Conn
			for range 3 {
				c, err := s.w.Conn(ctx)
				if err != nil {
					t.Fatalf("conn: %v", err)
				}
				conns = append(conns, c)
				var mode string
				if err := c.QueryRowContext(ctx, `SHOW plan_cache_mode`).Scan(&mode); err != nil || mode != "force_custom_plan" {
					t.Errorf("plan_cache_mode: got %q (err %v), want force_custom_plan", mode, err)
				}
			}
			for _, c := range conns {
				c.Close()
			}
			_, err = s.w.ExecContext(ctx, `INSERT INTO saga_keys (saga_id, name, value) VALUES ('s', 'k', 'v'), ('s', 'k', 'v')`)
			if err == nil {
				t.Fatal("duplicate key insert: got no error")
			}
			if got := classify(err); got != engine.CodeConflict {
				t.Errorf("classify(duplicate key) = %v (err %v), want %v", got, err, engine.CodeConflict)
			}
			var n int
			if err := s.w.GetContext(ctx, &n, `SELECT count(*) FROM saga_keys`); err != nil || n != 0 {
				t.Errorf("saga_keys after the refused insert: %d rows (err %v), want 0", n, err)
			}
		})
	}
}
