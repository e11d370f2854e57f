package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	_ "modernc.org/sqlite"

	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// databases opens a fresh database of each dialect the services run on.
// SQLite gets ONE connection, as the services open it: a cache that
// prepared on the database while a transaction holds that connection
// would hang here.
func databases(t *testing.T) map[string]func(t *testing.T) *sqlx.DB {
	t.Helper()
	return map[string]func(t *testing.T) *sqlx.DB{
		"sqlite": func(t *testing.T) *sqlx.DB {
			t.Helper()
			db, err := sqlx.Open("sqlite", SQLiteDSN(filepath.Join(t.TempDir(), "p.db"), SQLiteOptions{}))
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(1)
			t.Cleanup(func() { db.Close() })
			return db
		},
		"postgres": func(t *testing.T) *sqlx.DB {
			t.Helper()
			db, err := sqlx.Open("postgres", testenv.Postgres(t))
			if err != nil {
				t.Fatal(err)
			}
			db.SetMaxOpenConns(4)
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
}

type item struct {
	ID   int    `db:"id"`
	Name string `db:"name"`
}

func inTx(t *testing.T, db *sqlx.DB, fn func(tx *sqlx.Tx) error) {
	t.Helper()
	tx, err := db.BeginTxx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := fn(tx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestCacheReusesStatements runs the same statements in many transactions
// (and from several goroutines) and checks their results, that each query
// ends up prepared once on the database, and that the cache keeps working
// after Close.
func TestStatementsReusesStatements(t *testing.T) {
	const (
		insert = `INSERT INTO items (id, name) VALUES (?, ?)`
		get    = `SELECT id, name FROM items WHERE id = ?`
		list   = `SELECT id, name FROM items WHERE id >= ? ORDER BY id`
		rename = `UPDATE items SET name = ? WHERE id = ?`
	)
	for name, open := range databases(t) {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			ctx := context.Background()
			if _, err := db.ExecContext(ctx, `CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			c := NewStatements(db)
			const workers, each = 4, 10
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						id := w*each + i
						err := func() error {
							tx, err := db.BeginTxx(ctx, nil)
							if err != nil {
								return err
							}
							defer tx.Rollback() //nolint:errcheck // no-op after Commit
							if _, err := c.Exec(ctx, tx, insert, id, fmt.Sprint("item ", id)); err != nil {
								return fmt.Errorf("insert %d: %w", id, err)
							}
							var got item
							if err := c.Get(ctx, tx, &got, get, id); err != nil {
								return fmt.Errorf("get %d: %w", id, err)
							}
							if want := (item{id, fmt.Sprint("item ", id)}); got != want {
								return fmt.Errorf("got %+v, want %+v", got, want)
							}
							return tx.Commit()
						}()
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			c.wait()
			if got, want := c.Len(), 2; got != want {
				t.Errorf("prepared on the database: %d queries, want %d", got, want)
			}

			inTx(t, db, func(tx *sqlx.Tx) error {
				res, err := c.Exec(ctx, tx, rename, "renamed", 3)
				if err != nil {
					return err
				}
				if n, err := res.RowsAffected(); err != nil || n != 1 {
					return fmt.Errorf("rename: %d rows, %v; want 1 row", n, err)
				}
				var rows []item
				if err := c.Select(ctx, tx, &rows, list, 38); err != nil {
					return err
				}
				if got, want := len(rows), workers*each-38; got != want {
					return fmt.Errorf("listed %d items, want %d", got, want)
				}
				var missing item
				if err := c.Get(ctx, tx, &missing, get, -1); !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("get a missing item: %v, want sql.ErrNoRows", err)
				}
				return nil
			})
			// Outside a transaction: the database-level statement.
			st, err := c.Stmt(ctx, nil, get)
			if err != nil {
				t.Fatal(err)
			}
			var renamed item
			if err := st.GetContext(ctx, &renamed, 3); err != nil {
				t.Fatal(err)
			}
			if renamed.Name != "renamed" {
				t.Errorf("item 3 is named %q, want %q", renamed.Name, "renamed")
			}

			if err := c.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if got := c.Len(); got != 0 {
				t.Errorf("after Close: %d statements kept, want 0", got)
			}
			inTx(t, db, func(tx *sqlx.Tx) error {
				var got item
				if err := c.Get(ctx, tx, &got, get, 3); err != nil {
					return fmt.Errorf("after Close: %w", err)
				}
				if got.Name != "renamed" {
					return fmt.Errorf("after Close: item 3 is named %q, want %q", got.Name, "renamed")
				}
				return nil
			})
		})
	}
}

// TestCacheBadQuery: a query that does not prepare is an error naming it,
// in a transaction and outside one.
func TestStatementsBadQuery(t *testing.T) {
	for name, open := range databases(t) {
		t.Run(name, func(t *testing.T) {
			db := open(t)
			ctx := context.Background()
			c := NewStatements(db)
			tx, err := db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Exec(ctx, tx, `INSERT INTO nowhere (x) VALUES (?)`, 1)
			tx.Rollback() //nolint:errcheck // the test is about the error above
			if err == nil {
				t.Fatal("exec on a missing table: no error")
			}
			c.wait()
			if _, err := c.Stmt(ctx, nil, `SELECT x FROM nowhere`); err == nil {
				t.Error("prepare on a missing table outside a transaction: no error")
			}
			if got := c.Len(); got != 0 {
				t.Errorf("prepared %d bad queries, want 0", got)
			}
		})
	}
}
