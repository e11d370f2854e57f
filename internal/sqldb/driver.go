package sqldb

import (
	"errors"
	"fmt"
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
