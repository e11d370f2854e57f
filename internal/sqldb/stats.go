package sqldb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// StatsEvery is how often the engine and every participant run
// RefreshStats on their PostgreSQL database.
const StatsEvery = 5 * time.Second

// Thresholds of RefreshStats: a table is analyzed once it has had at
// least statsMinChanges inserted, updated or deleted rows since its last
// ANALYZE, and at least statsGrowth times the rows that ANALYZE counted.
const (
	statsMinChanges = 200
	statsGrowth     = 0.5
)

// RefreshStats runs ANALYZE on the tables of db's database (PostgreSQL;
// on SQLite it does nothing) that changed a lot since they were last
// analyzed, and returns their names.
//
// Why: the hot statements are prepared once per connection and, under
// PostgreSQL's default plan_cache_mode (auto), soon run a generic plan. A
// generic plan made while a new database's tables are empty scans them
// whole (measured: profile's batch read scanned order_decisions 1,075
// times, 5.6 million rows, in a 10,000-saga run), and it is only made
// again when the table's statistics change. Autovacuum analyzes a table
// once a tenth of it changed, but looks only once a minute; a young
// database grows by orders of magnitude in that minute. An ANALYZE here
// invalidates the cached plans of the table, and the next ones are made
// with its real size. Planning each execution instead
// (plan_cache_mode=force_custom_plan) costs a third of PostgreSQL's time
// at moderate load (docs/operations.md).
//
// A table the database user may not analyze (not its owner) is skipped
// with PostgreSQL's warning; other errors are returned with the tables
// analyzed before them.
func RefreshStats(ctx context.Context, db *sqlx.DB) ([]string, error) {
	if d, err := DialectOf(db); err != nil || d != Postgres {
		return nil, err
	}
	var tables []string
	const q = `SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname)
		FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
		WHERE s.n_mod_since_analyze >= $1 AND s.n_mod_since_analyze >= $2 * GREATEST(c.reltuples, 0)
		ORDER BY 1`
	if err := db.SelectContext(ctx, &tables, q, statsMinChanges, statsGrowth); err != nil {
		return nil, fmt.Errorf("find the tables to analyze: %w", err)
	}
	var done []string
	var errs []error
	for _, t := range tables {
		// t is quote_ident's output: safe to splice.
		if _, err := db.ExecContext(ctx, "ANALYZE "+t); err != nil {
			errs = append(errs, fmt.Errorf("analyze %s: %w", t, err))
			continue
		}
		done = append(done, t)
	}
	return done, errors.Join(errs...)
}
