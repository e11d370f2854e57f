package sqldb

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

// Statements keeps the prepared statements of a component's hot paths (the
// store's batch statements, the SDK's inbox and outbox, the services'
// handlers): each query is prepared once per database connection and then
// reused by every transaction on that connection, instead of being parsed
// (and, on PostgreSQL, planned and sent in an extra round trip) on every
// execution.
//
// It belongs to one *sqlx.DB. Its first use of a query inside a transaction
// prepares it on the transaction itself (so a one-connection SQLite pool
// never waits on itself) and, in the background, once on the database;
// later uses bind the database-level statement to the transaction with
// Tx.Stmtx, which database/sql reuses on the connection the statement was
// prepared on (and prepares again on any other). It is safe for concurrent
// use. The zero value is not usable; call NewStatements.
type Statements struct {
	db *sqlx.DB

	mu      sync.Mutex
	stmts   map[string]*sqlx.Stmt
	pending map[string]bool
	closed  bool
	wg      sync.WaitGroup
}

// NewStatements returns an empty cache for db.
func NewStatements(db *sqlx.DB) *Statements {
	return &Statements{db: db, stmts: map[string]*sqlx.Stmt{}, pending: map[string]bool{}}
}

// Stmt returns query (written with ? placeholders; rebound for the driver)
// as a statement of tx; the statement is closed with the transaction. With
// a nil tx it returns the database-level statement, preparing it now if
// needed: never do that while holding a transaction of a one-connection
// database.
func (c *Statements) Stmt(ctx context.Context, tx *sqlx.Tx, query string) (*sqlx.Stmt, error) {
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

func (c *Statements) dbStmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
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
func (c *Statements) prepare(query string) {
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
func (c *Statements) Exec(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (sql.Result, error) {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// Get scans the one row of query into dest (sql.ErrNoRows if none).
func (c *Statements) Get(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return err
	}
	return s.GetContext(ctx, dest, args...)
}

// Select scans every row of query into the slice dest.
func (c *Statements) Select(ctx context.Context, tx *sqlx.Tx, dest any, query string, args ...any) error {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return err
	}
	return s.SelectContext(ctx, dest, args...)
}

// Query runs query and returns its rows (close them).
func (c *Statements) Query(ctx context.Context, tx *sqlx.Tx, query string, args ...any) (*sqlx.Rows, error) {
	s, err := c.Stmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryxContext(ctx, args...)
}

// wait waits for the background prepares under way.
func (c *Statements) wait() { c.wg.Wait() }

// Len returns how many queries are prepared at the database level.
func (c *Statements) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stmts)
}

// Close waits for background prepares and closes every statement; the
// cache then prepares per transaction only. Close it before closing the
// database.
func (c *Statements) Close() error {
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
