package system

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	_ "modernc.org/sqlite" // SQLite driver "sqlite"
)

func isPostgres(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// redact hides the password of a URL, for errors and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// withDatabase returns the PostgreSQL URL server with its database replaced
// by name.
func withDatabase(server, name string) (string, error) {
	u, err := url.Parse(server)
	if err != nil {
		return "", fmt.Errorf("PostgreSQL URL %q: %w", redact(server), err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String(), nil
}

// ensureDatabase creates database name on the server of serverURL unless it
// exists.
func ensureDatabase(ctx context.Context, serverURL, name string) error {
	db, err := sql.Open("postgres", serverURL)
	if err != nil {
		return fmt.Errorf("create database %s: open %s: %w", name, redact(serverURL), err)
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("create database %s on %s: %w", name, redact(serverURL), err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+pq.QuoteIdentifier(name)); err != nil {
		var pe *pq.Error
		if errors.As(err, &pe) && (pe.Code == "42P04" || pe.Code == "23505") { // created meanwhile
			return nil
		}
		return fmt.Errorf("create database %s on %s: %w", name, redact(serverURL), err)
	}
	return nil
}

// openServiceDB opens a participant service's database the way the
// services' own command-line runner does: PostgreSQL with a pool of
// maxConns; SQLite in WAL mode with foreign keys, a busy timeout, immediate
// write transactions and ONE connection.
func openServiceDB(ctx context.Context, rawURL string, maxConns int) (*sqlx.DB, error) {
	var db *sqlx.DB
	var err error
	if isPostgres(rawURL) {
		if db, err = sqlx.Open("postgres", rawURL); err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", redact(rawURL), err)
		}
		db.SetMaxOpenConns(maxConns)
		db.SetMaxIdleConns(maxConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
	} else {
		path, err := sqlitePath(rawURL)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("open SQLite %s: create directory: %w", path, err)
		}
		dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
		if db, err = sqlx.Open("sqlite", dsn); err != nil {
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
		return nil, fmt.Errorf("open database %s: ping: %w", redact(rawURL), err)
	}
	return db, nil
}

// sqlitePath is the file of a sqlite:PATH or file:PATH URL.
func sqlitePath(rawURL string) (string, error) {
	path, ok := strings.CutPrefix(rawURL, "sqlite:")
	if !ok {
		path, ok = strings.CutPrefix(rawURL, "file:")
	}
	if !ok || path == "" || strings.ContainsRune(path, '?') || path == ":memory:" {
		return "", fmt.Errorf("database URL %q: want postgres://… or sqlite:PATH (a file path without parameters)", rawURL)
	}
	return path, nil
}
