package system

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

func isPostgres(u string) bool { return sqldb.IsPostgres(u) }

// redact hides the password of a URL, for errors and logs.
func redact(raw string) string { return sqldb.Redact(raw) }

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
	db, err := sqldb.OpenPostgres(serverURL)
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
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+sqldb.QuoteIdentifier(name)); err != nil {
		if code := sqldb.SQLState(err); code == "42P04" || code == "23505" { // created meanwhile
			return nil
		}
		return fmt.Errorf("create database %s on %s: %w", name, redact(serverURL), err)
	}
	return nil
}

// openServiceDB opens a participant service's database the way the
// services' own command-line runner does (internal/sqldb): PostgreSQL with a
// pool of maxConns; SQLite in WAL mode with foreign keys, a busy timeout,
// immediate write transactions and ONE connection.
func openServiceDB(ctx context.Context, rawURL string, maxConns int) (*sqlx.DB, error) {
	return sqldb.Open(ctx, rawURL, maxConns)
}
