package servicetest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// StatementCounts are what a StatementCounter counted: every statement
// sent (executed on a connection or a prepared statement; BEGIN, COMMIT
// and ROLLBACK included), those its match function accepted, and the
// transactions begun and rolled back.
type StatementCounts struct {
	Total, Matching, Begins, Rollbacks int
}

// StatementCounter counts the statements a pool sends to PostgreSQL (the
// services' batch benchmarks and statement-count tests: how many
// statements a command costs).
type StatementCounter struct {
	match func(query string) bool

	mu sync.Mutex
	n  StatementCounts
}

// CountedPostgres opens a lib/pq pool on the PostgreSQL database at url
// (e.g. testenv.Postgres's), migrated as Postgres migrates (the SDK's
// tables, then migrate's), whose statements the returned counter counts
// from then on; match picks the statements counted as Matching (nil:
// none). The pool is closed when tb ends.
func CountedPostgres(tb testing.TB, url string, migrate func(context.Context, *sqlx.DB) error, match func(query string) bool) (*sqlx.DB, *StatementCounter) {
	tb.Helper()
	conn, err := pq.NewConnector(url)
	if err != nil {
		tb.Fatal(err)
	}
	c := &StatementCounter{match: match}
	db := sqlx.NewDb(sql.OpenDB(countConnector{Connector: conn, n: c}), "postgres")
	tb.Cleanup(func() { db.Close() })
	migrateAll(tb, db, migrate)
	c.Reset()
	return db, c
}

// Reset zeroes the counts.
func (c *StatementCounter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = StatementCounts{}
}

// Counts returns the counts since the pool was migrated or the last Reset.
func (c *StatementCounter) Counts() StatementCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Report reports a benchmark of n commands that took elapsed, from the
// counts since the last Reset: commands/s, stmts/cmd, <matching>-stmts/cmd
// (the Matching statements) and cmds/tx. It returns the counts.
func (c *StatementCounter) Report(b *testing.B, n int, elapsed time.Duration, matching string) StatementCounts {
	counts := c.Counts()
	b.ReportMetric(float64(n)/elapsed.Seconds(), "commands/s")
	b.ReportMetric(float64(counts.Total)/float64(n), "stmts/cmd")
	b.ReportMetric(float64(counts.Matching)/float64(n), matching+"-stmts/cmd")
	b.ReportMetric(float64(n)/float64(max(counts.Begins, 1)), "cmds/tx")
	return counts
}

func (c *StatementCounter) add(q string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.Total++
	if c.match != nil && c.match(q) {
		c.n.Matching++
	}
	switch q {
	case "BEGIN":
		c.n.Begins++
	case "ROLLBACK":
		c.n.Rollbacks++
	}
}

// countConnector wraps a driver.Connector and counts every statement
// executed (on a connection or a prepared statement), BEGIN, COMMIT and
// ROLLBACK.
type countConnector struct {
	driver.Connector
	n *StatementCounter
}

func (k countConnector) Connect(ctx context.Context) (driver.Conn, error) {
	c, err := k.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countConn{Conn: c, n: k.n}, nil
}

type countConn struct {
	driver.Conn
	n *StatementCounter
}

func (c *countConn) Prepare(q string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), q)
}

func (c *countConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	var s driver.Stmt
	var err error
	if pc, ok := c.Conn.(driver.ConnPrepareContext); ok {
		s, err = pc.PrepareContext(ctx, q)
	} else {
		s, err = c.Conn.Prepare(q)
	}
	if err != nil {
		return nil, err
	}
	return &countStmt{Stmt: s, q: q, n: c.n}, nil
}

func (c *countConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	c.n.add("BEGIN")
	tx, err := c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return countTx{Tx: tx, n: c.n}, nil
}

func (c *countConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.n.add(q)
	return e.ExecContext(ctx, q, args)
}

func (c *countConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	qc, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.n.add(q)
	return qc.QueryContext(ctx, q, args)
}

func (c *countConn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type countStmt struct {
	driver.Stmt
	q string
	n *StatementCounter
}

func (s *countStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	s.n.add(s.q)
	return s.Stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *countStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	s.n.add(s.q)
	return s.Stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
}

type countTx struct {
	driver.Tx
	n *StatementCounter
}

func (t countTx) Commit() error   { t.n.add("COMMIT"); return t.Tx.Commit() }
func (t countTx) Rollback() error { t.n.add("ROLLBACK"); return t.Tx.Rollback() }
