package sqldb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // SQLite driver "sqlite"
)

// DefaultMaxConns is the PostgreSQL pool size when Open is given 0.
const DefaultMaxConns = 10

// pingTimeout bounds the ping Open does before returning.
const pingTimeout = 10 * time.Second

// IsPostgres tells whether rawURL is a PostgreSQL URL (postgres:// or
// postgresql://).
func IsPostgres(rawURL string) bool {
	return strings.HasPrefix(rawURL, "postgres://") || strings.HasPrefix(rawURL, "postgresql://")
}

// SQLitePath is the file of a SQLite database URL: sqlite:PATH, file:PATH
// or a plain PATH. Query parameters, an empty path and ":memory:" are
// refused: the services need a durable file.
func SQLitePath(rawURL string) (string, error) {
	path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "file:")
	switch {
	case strings.ContainsRune(path, '?'):
		return "", fmt.Errorf("SQLite URL %q: query parameters are not supported; give a file path", rawURL)
	case strings.TrimSpace(path) == "":
		return "", fmt.Errorf("SQLite URL %q: no file path", rawURL)
	case path == ":memory:":
		return "", fmt.Errorf("SQLite URL %q: an in-memory database is not durable; give a file path", rawURL)
	}
	return path, nil
}

// Open opens a service database and pings it:
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL (driver: DriverEnv), a pool of maxConns (0: DefaultMaxConns)
//	postgresql://...                               the same
//	sqlite:PATH, file:PATH or a plain PATH         SQLite file (modernc.org/sqlite), created if missing
//
// The SQLite file, its -wal and -shm companions and a directory Open
// creates are private to the owner (PrepareSQLiteFile). SQLite runs in WAL mode with foreign keys, a busy timeout, immediate
// write transactions (_txlock=immediate) and ONE connection: writes are
// serialised; never use the *sqlx.DB while holding one of its
// transactions.
func Open(ctx context.Context, rawURL string, maxConns int) (*sqlx.DB, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, errors.New("open database: the URL is empty")
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	var db *sqlx.DB
	var err error
	if IsPostgres(rawURL) {
		if db, err = OpenPostgres(rawURL); err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		path, err := SQLitePath(rawURL)
		if err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		if err := PrepareSQLiteFile(path); err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, err)
		}
		if db, err = sqlx.Open("sqlite", SQLiteDSN(path, SQLiteOptions{})); err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, err)
		}
		db.SetMaxOpenConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: ping: %w", Redact(rawURL), err)
	}
	return db, nil
}

// DefaultBusyTimeout is how long a SQLite connection waits for a lock held
// by another connection or process before it fails with "database is
// locked".
const DefaultBusyTimeout = 5 * time.Second

// SQLiteOptions tune SQLiteDSN. The zero value is a durable writer.
type SQLiteOptions struct {
	// BusyTimeout is how long to wait for a lock (default
	// DefaultBusyTimeout).
	BusyTimeout time.Duration
	// Synchronous is SQLite's synchronous setting: FULL (the default: a
	// commit survives a power loss), NORMAL or OFF (throwaway databases).
	Synchronous string
	// ReadOnly opens a reader (query_only): it never takes the write lock,
	// so it may run beside the one writer. Default: a writer whose
	// transactions take the write lock at BEGIN (_txlock=immediate), so
	// that two writers wait for each other instead of failing.
	ReadOnly bool
}

// SQLiteDSN is the modernc.org/sqlite data source of the database file
// path, the one every SQLite database of saga-machine is opened with (its
// store, the services, the SDK's test kit): WAL journal, foreign keys, a
// busy timeout, synchronous FULL unless told otherwise, and immediate
// write transactions (or query_only for a reader).
func SQLiteDSN(path string, o SQLiteOptions) string {
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=synchronous(%s)&_pragma=journal_mode(WAL)",
		path, o.BusyTimeout.Milliseconds(), o.Synchronous)
	if o.ReadOnly {
		return dsn + "&_pragma=query_only(1)"
	}
	return dsn + "&_txlock=immediate"
}

// Redact hides the password of a database URL, for logs and errors; a URL
// without one (or a path) is returned unchanged.
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

// File modes of SQLite databases: the data (portfolios, deals, sagas) is
// for the service's own user only.
const (
	SQLiteFileMode = 0o600
	SQLiteDirMode  = 0o700
)

// sqliteCompanions are the suffixes of the files SQLite keeps beside a
// database in WAL mode (and of a rollback journal).
var sqliteCompanions = []string{"-wal", "-shm", "-journal"}

// PrepareSQLiteFile makes a SQLite database file private before SQLite
// opens it: it creates path's directory (SQLiteDirMode) if missing and the
// file itself (SQLiteFileMode, empty: SQLite initialises it) if missing,
// and takes the group and other permissions away from an existing file and
// its -wal, -shm and -journal companions (files of an earlier run). SQLite
// creates the companions with the permissions of the database file, so
// they are private too. An existing directory is left as it is.
func PrepareSQLiteFile(path string) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, SQLiteDirMode); err != nil {
			return fmt.Errorf("create directory of %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, SQLiteFileMode)
	switch {
	case err == nil:
		if err := f.Close(); err != nil {
			return fmt.Errorf("create %s: %w", path, err)
		}
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("create %s: %w", path, err)
	}
	for _, p := range append([]string{path}, companions(path)...) {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check permissions of %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			if p == path {
				return fmt.Errorf("%s is not a regular file", p)
			}
			continue
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(p, perm&^0o077); err != nil {
				return fmt.Errorf("make %s private (mode %o): %w", p, perm&^0o077, err)
			}
		}
	}
	return nil
}

func companions(path string) []string {
	out := make([]string, 0, len(sqliteCompanions))
	for _, s := range sqliteCompanions {
		out = append(out, path+s)
	}
	return out
}
