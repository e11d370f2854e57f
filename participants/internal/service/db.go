package service

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver "postgres"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // SQLite driver "sqlite"

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

// OpenDB opens a service database:
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL (lib/pq)
//	postgresql://...                               the same
//	sqlite:PATH, file:PATH or a plain PATH         SQLite file (modernc.org/sqlite), created if missing
//
// SQLite runs in WAL mode with foreign keys, a busy timeout and ONE
// connection (writes are serialised; never use the *sqlx.DB while holding
// one of its transactions). The database is pinged before returning.
func OpenDB(ctx context.Context, rawURL string) (*sqlx.DB, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, errors.New("open database: the URL is empty")
	}
	var db *sqlx.DB
	var err error
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		db, err = sqlx.Open("postgres", rawURL)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", Redact(rawURL), err)
		}
		db.SetMaxOpenConns(10)
		db.SetMaxIdleConns(10)
		db.SetConnMaxIdleTime(5 * time.Minute)
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			return nil, fmt.Errorf("open SQLite %q: query parameters are not supported; give a file path", rawURL)
		}
		if path == "" {
			return nil, fmt.Errorf("open SQLite %q: no file path", rawURL)
		}
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("open SQLite %s: create directory: %w", path, err)
			}
		}
		dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
		db, err = sqlx.Open("sqlite", dsn)
		if err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, err)
		}
		db.SetMaxOpenConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: ping: %w", Redact(rawURL), err)
	}
	return db, nil
}

// Redact hides the password of a database URL, for logs and errors.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

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
