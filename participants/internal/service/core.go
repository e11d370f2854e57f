package service

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// CoreConfig is the part of a service's Config that every service has.
type CoreConfig struct {
	// DB is the service's database (required).
	DB *sqlx.DB
	// Participant is the service's SDK participant; required only when
	// RequireParticipant is set.
	Participant *sdk.Participant
	// Auth authenticates the HTTP routes (required).
	Auth *auth.Authenticator
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// RequireParticipant makes a nil Participant an error (a service that
	// starts sagas needs one; others only serve its dead letters with it).
	RequireParticipant bool
}

// Core is what every service's New derives from its Config: the checked
// dependencies, the database's dialect, a prepared-statement cache, a
// logger tagged with the service's name and a clock.
type Core struct {
	// DB is CoreConfig.DB.
	DB *sqlx.DB
	// Dialect is DB's SQL dialect (PostgreSQL or SQLite).
	Dialect Dialect
	// SQL caches the service's prepared statements on DB.
	SQL *sqldb.Statements
	// Participant is CoreConfig.Participant (may be nil unless required).
	Participant *sdk.Participant
	// Auth is CoreConfig.Auth.
	Auth *auth.Authenticator
	// Log is CoreConfig.Logger (or slog.Default()) with service=<name>.
	Log *slog.Logger
	// Now returns UTC times truncated to microseconds: both databases keep
	// microseconds, so a time read back equals the time written.
	Now func() time.Time
}

// NewCore checks cfg for the service name and fills in its defaults. Its
// errors read "new <name> service: ...".
func NewCore(name string, cfg CoreConfig) (Core, error) {
	what := "new " + name + " service"
	if cfg.DB == nil {
		return Core{}, errors.New(what + ": Config.DB is nil")
	}
	if cfg.RequireParticipant && cfg.Participant == nil {
		return Core{}, errors.New(what + ": Config.Participant is nil")
	}
	if cfg.Auth == nil {
		return Core{}, errors.New(what + ": Config.Auth is nil")
	}
	d, err := DialectOf(cfg.DB)
	if err != nil {
		return Core{}, fmt.Errorf("%s: %w", what, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	clock := cfg.Now
	if clock == nil {
		clock = time.Now
	}
	return Core{
		DB: cfg.DB, Dialect: d, SQL: sqldb.NewStatements(cfg.DB), Participant: cfg.Participant, Auth: cfg.Auth,
		Log: log.With("service", name), Now: func() time.Time { return clock().UTC().Truncate(time.Microsecond) },
	}, nil
}
