package service

import (
	"context"
	"hash/fnv"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// Dialect is the SQL dialect of a service database (sqldb.Dialect); its
// values name the migration folders.
type Dialect = sqldb.Dialect

// The supported dialects.
const (
	Postgres = sqldb.Postgres
	SQLite   = sqldb.SQLite
)

// DialectOf tells the dialect of db from its driver name (sqldb.DialectOf).
func DialectOf(db *sqlx.DB) (Dialect, error) { return sqldb.DialectOf(db) }

// OpenDB opens a service database with internal/sqldb.Open and its default
// pool: postgres://… (or postgresql://…), or sqlite:PATH, file:PATH or a
// plain PATH (a SQLite file, created if missing, with ONE connection: never
// use the *sqlx.DB while holding one of its transactions). The database is
// pinged before returning.
func OpenDB(ctx context.Context, rawURL string) (*sqlx.DB, error) {
	return sqldb.Open(ctx, rawURL, sqldb.DefaultMaxConns)
}

// Redact hides the password of a database URL, for logs and errors.
func Redact(rawURL string) string { return sqldb.Redact(rawURL) }

// VersionTable is the goose version table of a service's business
// migrations, e.g. "deals_goose_db_version"; it coexists with the SDK's
// "sdk_goose_db_version" in the same database.
func VersionTable(service string) string { return service + "_goose_db_version" }

// Migrate applies the embedded business migrations of service
// (schema/migrations/<service>/<dialect>) to db with goose (sqldb.Migrate),
// tracked in VersionTable(service). On PostgreSQL an advisory lock (distinct
// per service) keeps replicas starting together from racing.
func Migrate(ctx context.Context, db *sqlx.DB, service string) error {
	h := fnv.New32a()
	_, _ = h.Write([]byte("saga-machine migrations " + service)) // hash writes never fail
	return sqldb.Migrate(ctx, db, sqldb.Migrations{Component: service, Table: VersionTable(service), LockID: int64(h.Sum32())})
}
