package delivery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// Tables runs the delivery statements of one Layout on one database. It
// is safe for concurrent use.
type Tables struct {
	l      Layout
	d      sqldb.Dialect
	db     *sqlx.DB // writes, Publish, Purge
	reader *sqlx.DB // Backlog
	stmts  *sqldb.Statements
	now    func() time.Time
	q      queries
}

// Options are the optional parts of New.
type Options struct {
	// Reader runs Backlog (a read-only pool beside a one-connection SQLite
	// writer); default the database itself.
	Reader *sqlx.DB
	// Statements, if set, prepares the statements once per connection.
	Statements *sqldb.Statements
	// Now is the clock of inbox records, outbox rows and leases; default
	// time.Now.
	Now func() time.Time
}

// New returns the Tables of layout l on db, whose migrations created them.
func New(db *sqlx.DB, l Layout, o Options) (*Tables, error) {
	if db == nil {
		return nil, errors.New("delivery tables: db is nil")
	}
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return nil, fmt.Errorf("delivery tables %s: %w", l.Name, err)
	}
	if l.Inbox == "" || l.Outbox == "" || l.Key == "" || l.Value == "" {
		return nil, fmt.Errorf("delivery tables %s: the layout names no inbox, outbox, key or value", l.Name)
	}
	t := &Tables{l: l, d: d, db: db, reader: o.Reader, stmts: o.Statements, now: o.Now}
	if t.reader == nil {
		t.reader = db
	}
	if t.now == nil {
		t.now = time.Now
	}
	t.q = buildQueries(l, d)
	return t, nil
}

// Layout returns the layout.
func (t *Tables) Layout() Layout { return t.l }

// Dialect returns the database's dialect.
func (t *Tables) Dialect() sqldb.Dialect { return t.d }

// at is a time as the layout stores it.
func (t *Tables) at(tm time.Time) any {
	switch {
	case t.d == sqldb.Postgres:
		return tm.UTC().Truncate(time.Microsecond)
	case t.l.UnixMicros:
		return tm.UnixMicro()
	}
	return tm.UTC()
}

// exec runs a statement in tx (prepared through Statements when set), or
// on the database when tx is nil.
func (t *Tables) exec(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (sql.Result, error) {
	switch {
	case tx == nil:
		return t.db.ExecContext(ctx, q, args...)
	case t.stmts != nil:
		st, err := t.stmts.Stmt(ctx, tx, q)
		if err != nil {
			return nil, err
		}
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, q, args...)
}

// execer runs one statement many times.
type execer interface {
	ExecContext(ctx context.Context, args ...any) (sql.Result, error)
}

// stmt returns q ready to run many times in tx: the cached statement bound
// to tx, or one prepared in tx (closed with it).
func (t *Tables) stmt(ctx context.Context, tx *sqlx.Tx, q string) (execer, error) {
	if t.stmts != nil {
		return t.stmts.Stmt(ctx, tx, q)
	}
	return tx.PrepareContext(ctx, q)
}

// query is exec for a statement that returns rows.
func (t *Tables) query(ctx context.Context, tx *sqlx.Tx, q string, args ...any) (*sql.Rows, error) {
	switch {
	case tx == nil:
		return t.db.QueryContext(ctx, q, args...)
	case t.stmts != nil:
		st, err := t.stmts.Stmt(ctx, tx, q)
		if err != nil {
			return nil, err
		}
		return st.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, q, args...)
}

// list binds a list of values as one argument of in().
func (t *Tables) list(seqs []int64) any {
	if t.d == sqldb.Postgres {
		return sqldb.Int64Array(seqs)
	}
	b := make([]byte, 0, 2+len(seqs)*8)
	b = append(b, '[')
	for i, s := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%d", s)
	}
	return string(append(b, ']'))
}

// textList binds a list of strings as one argument of inText().
func (t *Tables) textList(ids []string) any {
	if t.d == sqldb.Postgres {
		return sqldb.TextArray(ids)
	}
	b := make([]byte, 0, 2+len(ids)*40)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = envelope.AppendJSONString(b, id)
	}
	return string(append(b, ']'))
}

// in is "col IN (the list bound as one argument)" in the dialect.
func in(d sqldb.Dialect, col, pgType string) string {
	if d == sqldb.Postgres {
		return col + " = ANY(?::" + pgType + "[])"
	}
	return col + " IN (SELECT value FROM json_each(?))"
}

// queries are the layout's statements, rebound for the dialect.
type queries struct {
	claimOne, forget, setReply, replies string
	repliesIn                           []string // SQLite: the replies of n ids as n placeholders, by n
	outboxCols                          string   // the columns Publish and Lease read
	insertOne                           string   // SQLite: one outbox row
	lease, release, del, count          string
	takeFree                            string // PostgreSQL: lock and delete the free rows, returning them
	purge                               string
	claimPG, writePG, claimWritePG      string // PostgreSQL batch statements
}

func buildQueries(l Layout, d sqldb.Dialect) queries {
	rb := func(q string) string {
		if d == sqldb.Postgres {
			return sqlx.Rebind(sqlx.DOLLAR, q)
		}
		return q
	}
	var q queries
	cols := "seq, topic, " + l.Key + ", " + l.Value
	if l.Headers {
		cols += ", headers, message_id, name"
	} else {
		cols += ", traceparent"
	}
	q.outboxCols = cols
	if l.Replies {
		q.claimOne = rb(`INSERT INTO ` + l.Inbox + ` (message_id, saga_id, command, reply_id, reply, processed_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`)
		q.setReply = rb(`UPDATE ` + l.Inbox + ` SET reply_id = ?, reply = ? WHERE message_id = ?`)
		q.replies = rb(`SELECT message_id, reply_id, reply FROM ` + l.Inbox + ` WHERE ` + in(d, "message_id", "text"))
		if d == sqldb.SQLite {
			q.repliesIn = make([]string, claimOneBelow+1)
			for n := 1; n <= claimOneBelow; n++ {
				q.repliesIn[n] = `SELECT message_id, reply_id, reply FROM ` + l.Inbox + ` WHERE message_id IN (?` + strings.Repeat(",?", n-1) + `)`
			}
		}
	} else {
		q.claimOne = rb(`INSERT INTO ` + l.Inbox + ` (message_id, processed_at) VALUES (?, ?) ON CONFLICT (message_id) DO NOTHING`)
	}
	q.forget = rb(`DELETE FROM ` + l.Inbox + ` WHERE message_id = ?`)
	if l.Headers {
		q.insertOne = rb(`INSERT INTO ` + l.Outbox + ` (message_id, topic, ` + l.Key + `, name, headers, ` + l.Value + `, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`)
	} else {
		q.insertOne = rb(`INSERT INTO ` + l.Outbox + ` (topic, ` + l.Key + `, ` + l.Value + `, traceparent, created_at)
			VALUES (?, ?, ?, ?, ?)`)
	}
	free := `(claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)`
	lock := ""
	if d == sqldb.Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// = ANY(ARRAY(…)) rather than IN (…) on PostgreSQL: it runs the
	// subquery once and looks the rows up by key, where IN may be planned
	// as a hash join that scans the table twice.
	pick := `seq IN (SELECT seq FROM ` + l.Outbox + ` WHERE ` + free + ` ORDER BY seq LIMIT ?)`
	if d == sqldb.Postgres {
		pick = `seq = ANY(ARRAY(SELECT seq FROM ` + l.Outbox + ` WHERE ` + free + ` ORDER BY seq LIMIT ?` + lock + `))`
	}
	q.lease = rb(`UPDATE ` + l.Outbox + ` SET claimed_by = ?, claimed_until = ? WHERE ` + pick + ` RETURNING ` + cols)
	if d == sqldb.Postgres {
		// Publish deletes the rows it locks in the same statement and
		// returns them; its transaction stays open across the publish,
		// so a failed publish (rollback) or a lost session brings them
		// back. The one-row subquery sets the transaction's idle bound and
		// turns synchronous_commit off for it: it is evaluated once, before
		// any row is returned, and is not locked (FOR UPDATE OF the outbox
		// only). The deletion of rows already published is not worth a
		// WAL flush of its own: if a server crash loses it, the rows are
		// published again and the consumers' inboxes drop them by id.
		q.takeFree = rb(`DELETE FROM ` + l.Outbox + ` WHERE seq = ANY(ARRAY(SELECT seq FROM ` + l.Outbox +
			`, (SELECT set_config('idle_in_transaction_session_timeout', ?, true) AS idle_bound,` +
			` set_config('synchronous_commit', 'off', true) AS async_commit) AS bound WHERE ` + free +
			` ORDER BY seq LIMIT ? FOR UPDATE OF ` + l.Outbox + ` SKIP LOCKED)) RETURNING ` + cols)
	}
	q.release = rb(`UPDATE ` + l.Outbox + ` SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ? AND ` + in(d, "seq", "bigint"))
	q.del = rb(`DELETE FROM ` + l.Outbox + ` WHERE ` + in(d, "seq", "bigint"))
	q.count = `SELECT count(*) FROM ` + l.Outbox
	keep := ""
	if l.KeepInbox != "" {
		keep = " AND NOT (" + l.KeepInbox + ")"
	}
	q.purge = rb(`DELETE FROM ` + l.Inbox + ` WHERE message_id IN (SELECT message_id FROM ` + l.Inbox +
		` WHERE processed_at < ?` + keep + ` LIMIT ?)`)
	if d == sqldb.Postgres {
		q.claimPG = claimPostgresSQL(l, 1) + " RETURNING message_id"
		q.writePG = writePostgresSQL(l, 1)
		q.claimWritePG = "WITH i AS (" + claimPostgresSQL(l, 1) + " RETURNING message_id), o AS (" +
			writePostgresSQL(l, claimArgs(l)+1) + ") SELECT message_id FROM i"
	}
	return q
}

// placeholders counts the ? of an SQL text.
func placeholders(q string) int { return strings.Count(q, "?") }
