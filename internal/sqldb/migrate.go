package sqldb

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jmoiron/sqlx"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/portfolio-counselor/sagamachine/schema"
)

// Migrations names a component's embedded migrations and how goose tracks
// them in a database shared with other components.
type Migrations struct {
	// Component is the folder under schema/migrations (engine, sdk, deals,
	// ...); the dialect's subfolder is taken.
	Component string
	// Table is goose's version table; "" means goose's default
	// (goose_db_version). Components sharing a database need distinct ones.
	Table string
	// LockID is the PostgreSQL advisory lock taken while migrating, so
	// that replicas starting together do not race; 0 means goose's default
	// lock. Components sharing a database need distinct ones.
	LockID int64
}

// Migrate applies the pending migrations of m to db with goose: the one
// goose wrapper of saga-machine's store, the participant SDK and the
// services. On PostgreSQL it holds a session advisory lock while it runs.
func Migrate(ctx context.Context, db *sqlx.DB, m Migrations) error {
	if db == nil {
		return fmt.Errorf("migrate %s: db is nil", m.Component)
	}
	d, err := DialectOf(db)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", m.Component, err)
	}
	dir := m.Component + "/" + string(d)
	fsys, err := schema.Migrations(dir)
	if err != nil {
		return fmt.Errorf("migrate %s: open embedded migrations: %w", m.Component, err)
	}
	if _, err := fs.Stat(fsys, "."); err != nil {
		return fmt.Errorf("migrate %s: embedded migrations %s: %w", m.Component, dir, err)
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if m.Table != "" {
		opts = append(opts, goose.WithTableName(m.Table))
	}
	gd := goose.DialectSQLite3
	if d == Postgres {
		gd = goose.DialectPostgres
		var lopts []lock.SessionLockerOption
		if m.LockID != 0 {
			lopts = append(lopts, lock.WithLockID(m.LockID))
		}
		locker, err := lock.NewPostgresSessionLocker(lopts...)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.Component, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	prov, err := goose.NewProvider(gd, db.DB, fsys, opts...)
	if err != nil {
		return fmt.Errorf("migrate %s (%s): %w", m.Component, d, err)
	}
	if _, err := prov.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s (%s): %w", m.Component, d, err)
	}
	return nil
}
