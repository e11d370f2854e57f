package sqldb

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL driver "pgx"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver "postgres"
)

// DriverEnv is the environment variable that picks the database/sql
// driver of every PostgreSQL database saga-machine opens (its store, the
// participant services, the SDK's test databases, cmd/bench): "pgx"
// (github.com/jackc/pgx/v5/stdlib) or "pq" (github.com/lib/pq). Unset or
// empty means DefaultPostgresDriver.
const DriverEnv = "SAGA_PG_DRIVER"

// The database/sql names of the two PostgreSQL drivers.
const (
	DriverPgx   = "pgx"      // github.com/jackc/pgx/v5/stdlib
	DriverLibPQ = "postgres" // github.com/lib/pq
)

// DefaultPostgresDriver is the PostgreSQL driver used when DriverEnv is not
// set (see docs/operations.md, "Driver: pgx vs lib/pq").
const DefaultPostgresDriver = DriverLibPQ

// PostgresDriver is the database/sql driver name DriverEnv selects
// (DefaultPostgresDriver when it is unset).
func PostgresDriver() (string, error) { return ParsePostgresDriver(os.Getenv(DriverEnv)) }

// ParsePostgresDriver turns a driver choice into its database/sql name:
// "pgx" is DriverPgx; "pq", "lib/pq" and "postgres" are DriverLibPQ; ""
// is DefaultPostgresDriver. Anything else is an error.
func ParsePostgresDriver(choice string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(choice)) {
	case "":
		return DefaultPostgresDriver, nil
	case "pgx", "pgx/v5":
		return DriverPgx, nil
	case "pq", "lib/pq", "postgres":
		return DriverLibPQ, nil
	}
	return "", fmt.Errorf("%s=%q: want pgx or pq", DriverEnv, choice)
}

// OpenPostgres returns a pool (not yet connected) on the PostgreSQL
// database at rawURL with the driver DriverEnv selects. Both drivers take
// the same URLs; a query parameter that is not a connection setting (such
// as plan_cache_mode) is sent as a run-time parameter when each connection
// starts.
func OpenPostgres(rawURL string) (*sqlx.DB, error) {
	driver, err := PostgresDriver()
	if err != nil {
		return nil, err
	}
	return OpenPostgresWith(driver, rawURL)
}

// WithCustomPlans adds plan_cache_mode=force_custom_plan to a PostgreSQL
// URL that does not set it (Open does, and so does the engine's store).
// The hot statements are prepared once per connection; a generic plan,
// chosen once while the tables are small (a new database), keeps scanning
// a table sequentially as it grows, until an ANALYZE happens to invalidate
// it: on a 10,000-saga run, profile's batch read of earlier decisions
// scanned order_decisions whole 1,075 times (5.6 million rows) and
// notification's recipient check scanned notifications 343 times. A custom
// plan sees the statement's real arguments and the current table size every
// time, for a plan made per execution. An operator's plan_cache_mode stays.
func WithCustomPlans(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	q := u.Query()
	if q.Has("plan_cache_mode") {
		return rawURL
	}
	q.Set("plan_cache_mode", "force_custom_plan")
	u.RawQuery = q.Encode()
	return u.String()
}

// OpenPostgresWith is OpenPostgres with the driver given (DriverPgx or
// DriverLibPQ).
func OpenPostgresWith(driver, rawURL string) (*sqlx.DB, error) {
	if driver != DriverPgx && driver != DriverLibPQ {
		return nil, fmt.Errorf("open PostgreSQL: unknown driver %q (want %q or %q)", driver, DriverPgx, DriverLibPQ)
	}
	db, err := sqlx.Open(driver, rawURL)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL %s with %s: %w", Redact(rawURL), driver, err)
	}
	return db, nil
}

// SQLState is the SQLSTATE code of a PostgreSQL error in err's chain
// (lib/pq's *pq.Error and pgx's *pgconn.PgError both carry one), or "" if
// there is none.
func SQLState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return ""
}

// QuoteIdentifier quotes a PostgreSQL identifier (a database or table
// name) for SQL text: in double quotes, inner double quotes doubled, cut
// at a NUL byte (which PostgreSQL identifiers cannot hold), as lib/pq's
// QuoteIdentifier does.
func QuoteIdentifier(name string) string {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}
