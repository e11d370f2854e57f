package prepared

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// prepareTimeout bounds a background database-level prepare (it waits for
// a free connection).
const prepareTimeout = 30 * time.Second

// Cache holds the database-level prepared statements of one database,
// keyed by query text. It is safe for concurrent use. The zero value is not
// usable; call New.
type Cache struct {
	db *sqlx.DB

	mu      sync.Mutex
	stmts   map[string]*sqlx.Stmt
	pending map[string]bool
	closed  bool
	wg      sync.WaitGroup
}

// New returns an empty cache for db.
func New(db *sqlx.DB) *Cache {
	return &Cache{db: db, stmts: map[string]*sqlx.Stmt{}, pending: map[string]bool{}}
}

// Stmt returns query (written with ? placeholders; rebound for the driver)
// as a statement of tx; the statement is closed with the transaction. With
// a nil tx it returns the database-level statement, preparing it now if
// needed: never do that while holding a transaction of a one-connection
// database.
func (c *Cache) Stmt(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
	if tx == nil {
		return c.dbStmt(ctx, query)
	}
	c.mu.Lock()
	s, ok := c.stmts[query]
	if !ok && !c.pending[query] && !c.closed {
		c.pending[query] = true
		c.wg.Add(1)
		go c.prepare(query)
	}
	c.mu.Unlock()
	if ok {
		return tx.StmtxContext(ctx, s), nil
	}
	st, err := tx.PreparexContext(ctx, tx.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("prepare %.60q: %w", query, err)
	}
	return st, nil
}

func (c *Cache) dbStmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	c.mu.Lock()
	s, ok := c.stmts[query]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := c.db.PreparexContext(ctx, c.db.Rebind(query))
	if err != nil {
		return nil, fmt.Errorf("prepare %.60q: %w", query, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.stmts[query]; ok || c.closed {
		s.Close() //nolint:errcheck // a duplicate
		if ok {
			return prev, nil
		}
		return nil, fmt.Errorf("prepare %.60q: the statement cache is closed", query)
	}
	c.stmts[query] = s
	return s, nil
}

// prepare prepares query on the database and keeps it. A failure (the
// database closing, say) is forgotten: the next use tries again.
func (c *Cache) prepare(query string) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), prepareTimeout)
	defer cancel()
	s, err := c.db.PreparexContext(ctx, c.db.Rebind(query))
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, query)
	if err != nil {
		return
	}
	if c.closed {
		s.Close() //nolint:errcheck // nothing to do about it
		return
	}
	c.stmts[query] = s
}

// Exec executes query with args in tx.
func (c *Cache) Exec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error) {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// Get scans the one row of query into dest (sql.ErrNoRows if none).
func (c *Cache) Get(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return err
	}
	return s.GetContext(ctx, dest, args...)
}

// Select scans every row of query into the slice dest.
func (c *Cache) Select(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return err
	}
	return s.SelectContext(ctx, dest, args...)
}

// Query runs query and returns its rows (close them).
func (c *Cache) Query(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (*sqlx.Rows, error) {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryxContext(ctx, args...)
}

// wait waits for the background prepares under way.
func (c *Cache) wait() { c.wg.Wait() }

// Len returns how many queries are prepared at the database level.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stmts)
}

// Close waits for background prepares and closes every statement; the
// cache then prepares per transaction only. Close it before closing the
// database.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var first error
	for q, s := range c.stmts {
		if err := s.Close(); err != nil && first == nil {
			first = fmt.Errorf("close prepared statement %.60q: %w", q, err)
		}
		delete(c.stmts, q)
	}
	return first
}
