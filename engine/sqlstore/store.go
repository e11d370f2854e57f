package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // SQLite driver "sqlite"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// Store is an engine.Store on PostgreSQL or SQLite. It is safe for
// concurrent use.
type Store struct {
	d       dialect
	w       *sqlx.DB // transactions and writes (one connection on SQLite)
	r       *sqlx.DB // reads; the same pool as w on PostgreSQL and in-memory SQLite
	now     func() time.Time
	migrate bool
	tmpDir  string            // removed by Close (in-memory SQLite)
	stmts   *sqldb.Statements // PostgreSQL batch statements, prepared once per connection of w
	dt      *delivery.Tables  // inbox and outbox (the delivery core, shared with the SDK)
}

var (
	_ engine.Store      = (*Store)(nil)
	_ engine.SagaPurger = (*Store)(nil)
)

// Option configures Open.
type Option func(*config)

type config struct {
	maxConns    int
	busyTimeout time.Duration
	migrate     bool
	now         func() time.Time
}

// WithMaxConns sets the size of the PostgreSQL connection pool (default 10)
// or of the SQLite reader pool (default 4). SQLite always has one writer.
func WithMaxConns(n int) Option { return func(c *config) { c.maxConns = n } }

// WithBusyTimeout sets how long SQLite waits for a lock held by another
// process (default 5s).
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithoutMigrations makes Open skip the migrations, for a database that is
// migrated separately (MigrateOnly).
func WithoutMigrations() Option { return func(c *config) { c.migrate = false } }

// WithClock sets the clock used for lease times, inbox records and default
// creation times (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// Open connects to the database named by rawURL (see the package doc),
// applies pending migrations and returns the store.
func Open(ctx context.Context, rawURL string, opts ...Option) (*Store, error) {
	const op = "sqlstore: open"
	cfg := config{migrate: true, busyTimeout: 5 * time.Second, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxConns < 0 {
		return nil, engine.Errorf(engine.CodeInvalid, op, "max conns %d is negative", cfg.maxConns)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	kind, target, err := parseURL(rawURL)
	if err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	s := &Store{now: cfg.now, migrate: cfg.migrate}
	switch kind {
	case kindPostgres:
		s.d = postgresDialect
		db, err := sqldb.OpenPostgres(target) // the driver of sqldb.DriverEnv
		if err != nil {
			return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
		}
		n := cfg.maxConns
		if n == 0 {
			n = 10
		}
		db.SetMaxOpenConns(n)
		db.SetMaxIdleConns(n)
		db.SetConnMaxIdleTime(5 * time.Minute)
		s.w, s.r = db, db
	case kindSQLiteMemory, kindSQLiteFile:
		s.d = sqliteDialect
		o := sqldb.SQLiteOptions{BusyTimeout: cfg.busyTimeout}
		if kind == kindSQLiteMemory {
			// Every connection to :memory: would be its own database, so an
			// in-memory store is a throwaway file: it behaves like a file
			// store (a writer and readers) and is removed by Close.
			dir, err := os.MkdirTemp("", "sagastore-*")
			if err != nil {
				return nil, &engine.Error{Code: engine.CodeUnavailable, Op: op, Err: err}
			}
			s.tmpDir, target = dir, filepath.Join(dir, "saga.db")
			o.Synchronous = "OFF"
		}
		w, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(target, o))
		if err != nil {
			return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
		}
		w.SetMaxOpenConns(1)
		w.SetConnMaxIdleTime(0)
		w.SetConnMaxLifetime(0)
		o.ReadOnly = true
		r, err := sqlx.Open("sqlite", sqldb.SQLiteDSN(target, o))
		if err != nil {
			w.Close()
			return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
		}
		n := cfg.maxConns
		if n == 0 {
			n = 4
		}
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		s.w, s.r = w, r
	}
	s.stmts = sqldb.NewStatements(s.w)
	if s.dt, err = delivery.New(s.w, delivery.EngineTables, delivery.Options{Reader: s.r, Statements: s.stmts, Now: s.now}); err != nil {
		s.Close()
		return nil, &engine.Error{Code: engine.CodeInternal, Op: op, Err: err}
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("%s %s: %w", op, redact(rawURL), err)
	}
	if cfg.migrate {
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// MigrateOnly applies the pending migrations to the database named by rawURL
// and closes it, for a `migrate` subcommand run before the daemons start.
func MigrateOnly(ctx context.Context, rawURL string, opts ...Option) error {
	s, err := Open(ctx, rawURL, append(opts, WithoutMigrations())...)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Migrate(ctx)
}

// Migrate applies the pending embedded migrations
// (schema/migrations/engine/<dialect>, goose's default version table). On
// PostgreSQL a session advisory lock keeps several replicas from migrating
// at once.
func (s *Store) Migrate(ctx context.Context) error {
	if err := sqldb.Migrate(ctx, s.w, sqldb.Migrations{Component: "engine"}); err != nil {
		return s.wrap("sqlstore: migrate "+s.d.name, err)
	}
	return nil
}

// Dialect returns "postgres" or "sqlite".
func (s *Store) Dialect() string { return s.d.name }

// Ping checks the database is reachable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return s.wrap("sqlstore: ping", err)
	}
	if s.r != s.w {
		if err := s.r.PingContext(ctx); err != nil {
			return s.wrap("sqlstore: ping readers", err)
		}
	}
	return nil
}

// RefreshStats analyzes the store's tables that grew since their last
// ANALYZE, so that the cached plans of its prepared statements follow
// them (sqldb.RefreshStats; nothing on SQLite). The orchestrator's Run
// calls it every StatsEvery.
func (s *Store) RefreshStats(ctx context.Context) ([]string, error) {
	if !s.d.postgres {
		return nil, nil
	}
	return sqldb.RefreshStats(ctx, s.w)
}

// StatsEvery is how often RefreshStats should run: sqldb.StatsEvery, the
// interval of every participant's database too.
func (s *Store) StatsEvery() time.Duration { return sqldb.StatsEvery }

// Close releases the connections.
func (s *Store) Close() error {
	var err error
	if s.stmts != nil {
		err = s.stmts.Close()
	}
	if s.r != nil && s.r != s.w {
		if e := s.r.Close(); e != nil {
			err = e
		}
	}
	if s.w != nil {
		if e := s.w.Close(); e != nil {
			err = e
		}
	}
	if s.tmpDir != "" {
		if e := os.RemoveAll(s.tmpDir); e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return s.wrap("sqlstore: close", err)
	}
	return nil
}

// InTx runs fn in one transaction and commits if fn returns nil; otherwise
// it rolls back and returns fn's error unchanged. A panic in fn rolls back
// and is re-raised.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx engine.Tx) error) (err error) {
	stx, err := s.w.BeginTxx(ctx, nil)
	if err != nil {
		return s.wrap("sqlstore: begin transaction", err)
	}
	done := false
	defer func() {
		if !done {
			_ = stx.Rollback()
		}
	}()
	t := &tx{s: s, tx: stx}
	if err := fn(ctx, t); err != nil {
		done = true
		if rbErr := stx.Rollback(); rbErr != nil && !isDone(rbErr) {
			return fmt.Errorf("%w (and roll back: %v)", err, rbErr)
		}
		return err
	}
	done = true
	if err := stx.Commit(); err != nil {
		return s.wrap("sqlstore: commit", err)
	}
	return nil
}

func isDone(err error) bool { return err == sql.ErrTxDone }

type urlKind int

const (
	kindPostgres urlKind = iota + 1
	kindSQLiteMemory
	kindSQLiteFile
)

// parseURL tells the database from the URL and returns what to connect to:
// the URL itself for PostgreSQL, the file path for SQLite.
func parseURL(raw string) (urlKind, string, error) {
	switch {
	case raw == "":
		return 0, "", fmt.Errorf("empty database URL")
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err := url.Parse(raw); err != nil {
			return 0, "", fmt.Errorf("database URL: %w", err)
		}
		return kindPostgres, raw, nil
	case raw == "sqlite::memory:", raw == "sqlite:memory", raw == ":memory:", raw == "file::memory:":
		return kindSQLiteMemory, "", nil
	case strings.HasPrefix(raw, "sqlite://"):
		return sqlitePath(strings.TrimPrefix(raw, "sqlite://"))
	case strings.HasPrefix(raw, "sqlite:"):
		return sqlitePath(strings.TrimPrefix(raw, "sqlite:"))
	case strings.HasPrefix(raw, "file:"):
		return sqlitePath(strings.TrimPrefix(raw, "file:"))
	case strings.HasSuffix(raw, ".db"), strings.HasSuffix(raw, ".sqlite"), strings.HasSuffix(raw, ".sqlite3"):
		return sqlitePath(raw)
	}
	return 0, "", fmt.Errorf("database URL %q: want postgres://…, sqlite:PATH, file:PATH, a PATH ending in .db or sqlite::memory:", redact(raw))
}

func sqlitePath(p string) (urlKind, string, error) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return 0, "", fmt.Errorf("sqlite URL %q: parameters are not supported, the store sets its own", p)
	}
	if p == "" {
		return 0, "", fmt.Errorf("sqlite URL without a path")
	}
	if p == ":memory:" {
		return kindSQLiteMemory, "", nil
	}
	return kindSQLiteFile, p, nil
}

// redact hides a password in a URL for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
