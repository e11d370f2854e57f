package service

import (
	"context"
	"fmt"
	"hash/fnv"
	"io/fs"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/schema"
)

// Dialect is the SQL dialect of a service database.
type Dialect string

// The supported dialects; the values name the migration folders.
const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// DialectOf tells the dialect of db from its driver name.
func DialectOf(db *sqlx.DB) (Dialect, error) {
	switch db.DriverName() {
	case "postgres", "pgx", "pq":
		return Postgres, nil
	case "sqlite", "sqlite3":
		return SQLite, nil
	}
	return "", fmt.Errorf("unsupported database driver %q (want postgres or sqlite)", db.DriverName())
}

// ForUpdate is the row-locking suffix of a SELECT in the dialect: "FOR
// UPDATE" on PostgreSQL; "" on SQLite, whose write transactions already
// exclude each other (OpenDB opens them with _txlock=immediate).
func (d Dialect) ForUpdate() string {
	if d == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

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
// (schema/migrations/<service>/<dialect>) to db with goose, tracked in
// VersionTable(service). On PostgreSQL an advisory lock (distinct per
// service) keeps replicas starting together from racing.
func Migrate(ctx context.Context, db *sqlx.DB, service string) error {
	if db == nil {
		return fmt.Errorf("migrate %s: db is nil", service)
	}
	d, err := DialectOf(db)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", service, err)
	}
	fsys, err := schema.Migrations(service + "/" + string(d))
	if err != nil {
		return fmt.Errorf("migrate %s: open embedded migrations: %w", service, err)
	}
	if _, err := fs.Stat(fsys, "."); err != nil {
		return fmt.Errorf("migrate %s: embedded migrations %s/%s: %w", service, service, d, err)
	}
	opts := []goose.ProviderOption{goose.WithTableName(VersionTable(service)), goose.WithDisableGlobalRegistry(true)}
	gd := goose.DialectSQLite3
	if d == Postgres {
		gd = goose.DialectPostgres
		h := fnv.New32a()
		_, _ = h.Write([]byte("saga-machine migrations " + service)) // hash writes never fail
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum32())))
		if err != nil {
			return fmt.Errorf("migrate %s: %w", service, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	prov, err := goose.NewProvider(gd, db.DB, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrate %s (%s): %w", service, d, err)
	}
	if _, err := prov.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s (%s): %w", service, d, err)
	}
	return nil
}
