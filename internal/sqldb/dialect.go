package sqldb

import (
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Dialect is the SQL dialect of a database; its value names the migration
// folders (schema/migrations/<component>/<dialect>).
type Dialect string

// The two dialects.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// DialectOf tells the dialect of db from its driver name: "postgres"
// (lib/pq; also "pgx", "pgx/v5", "pq") or "sqlite" (modernc.org/sqlite; also
// "sqlite3").
func DialectOf(db *sqlx.DB) (Dialect, error) { return DriverDialect(db.DriverName()) }

// DriverDialect tells the dialect of a database/sql driver name.
func DriverDialect(driver string) (Dialect, error) {
	switch driver {
	case "postgres", "pgx", "pgx/v5", "pq":
		return Postgres, nil
	case "sqlite", "sqlite3":
		return SQLite, nil
	}
	return "", fmt.Errorf("unsupported database driver %q (want postgres or sqlite)", driver)
}

// ForUpdate is the row-locking suffix of a SELECT in the dialect: " FOR
// UPDATE" on PostgreSQL; "" on SQLite, whose write transactions already
// exclude each other (Open and SQLiteDSN use _txlock=immediate).
func (d Dialect) ForUpdate() string {
	if d == Postgres {
		return " FOR UPDATE"
	}
	return ""
}
