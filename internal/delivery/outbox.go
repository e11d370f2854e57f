package delivery

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
	"github.com/portfolio-counselor/sagamachine/internal/tracing"
)

// Row is one message in the outbox.
type Row struct {
	// Seq orders the outbox; set by the table.
	Seq int64
	// ID and Name are the message's id and name (kept by a layout with
	// Headers; for logs).
	ID, Name string
	// Topic, Key and Value are the record to publish. Write encodes
	// Message (envelope.AppendMessage) when it is set and Value is nil;
	// Publish returns Value.
	Topic, Key string
	Value      []byte
	Message    *envelope.Message
	// Headers travel beside the value. A layout without Headers keeps only
	// envelope.HeaderTraceparent.
	Headers map[string]string
}

// Record is the bus record of r.
func (r Row) Record() envelope.Record {
	return envelope.Record{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: r.Headers}
}

// Write adds rows to the outbox in tx, in order: their Seq ascend in the
// order given. On PostgreSQL it is one statement whatever the number of
// rows. A layout with ValueJSON needs every Value to be one JSON document.
func (t *Tables) Write(ctx context.Context, tx *sqlx.Tx, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	if err := t.checkTopics(rows); err != nil {
		return err
	}
	var err error
	if t.d == sqldb.Postgres {
		var args []any
		if args, err = t.writePostgresArgs(rows); err == nil {
			_, err = t.exec(ctx, tx, t.q.writePG, args...)
		}
	} else {
		err = t.writeSQLite(ctx, tx, rows)
	}
	if err != nil {
		return fmt.Errorf("write %d rows to %s: %w", len(rows), t.l.Outbox, err)
	}
	return nil
}

// WriteStatement is Write's statement on PostgreSQL, for a caller that runs
// it as a part of a statement of its own (a data-modifying WITH): the
// INSERT of rows with its parameters numbered from first ($first, ...),
// and its arguments. The rows are checked as Write checks them. On SQLite
// it is an error: there Write runs one statement per row.
func (t *Tables) WriteStatement(rows []Row, first int) (string, []any, error) {
	if t.d != sqldb.Postgres {
		return "", nil, fmt.Errorf("write %d rows to %s: one statement is for PostgreSQL only", len(rows), t.l.Outbox)
	}
	if len(rows) == 0 || first < 1 {
		return "", nil, fmt.Errorf("write %d rows to %s from parameter %d: want rows and a parameter from 1", len(rows), t.l.Outbox, first)
	}
	if err := t.checkTopics(rows); err != nil {
		return "", nil, err
	}
	args, err := t.writePostgresArgs(rows)
	if err != nil {
		return "", nil, fmt.Errorf("write %d rows to %s: %w", len(rows), t.l.Outbox, err)
	}
	return writePostgresSQL(t.l, first), args, nil
}

// checkTopics refuses rows of which one has no topic.
func (t *Tables) checkTopics(rows []Row) error {
	for i := range rows {
		if rows[i].Topic == "" {
			return fmt.Errorf("write %d rows to %s: row %d has no topic", len(rows), t.l.Outbox, i+1)
		}
	}
	return nil
}

// writePostgresSQL is the INSERT of writePostgresArgs as one statement,
// its parameters numbered from first: one array per column expanded with
// unnest (a json value column as one JSON array expanded with
// json_array_elements, parsed once), zipped by position, inserted in the
// order given.
func writePostgresSQL(l Layout, first int) string {
	p := func(i int) string { return fmt.Sprintf("$%d", first+i) }
	valueExpr := "unnest(" + p(2) + "::bytea[])"
	if l.ValueJSON {
		valueExpr = "json_array_elements(" + p(2) + "::json)"
	}
	if !l.Headers {
		return `INSERT INTO ` + l.Outbox + ` (topic, ` + l.Key + `, ` + l.Value + `, traceparent, created_at)
			SELECT v.topic, v.k, v.val, v.tp, ` + p(4) + `
			FROM ROWS FROM (unnest(` + p(0) + `::text[]), unnest(` + p(1) + `::text[]), ` + valueExpr + `, unnest(` + p(3) + `::text[]))
				WITH ORDINALITY AS v(topic, k, val, tp, n)
			ORDER BY v.n`
	}
	return `INSERT INTO ` + l.Outbox + ` (topic, ` + l.Key + `, ` + l.Value + `, message_id, name, headers, created_at)
		SELECT v.topic, v.k, v.val, v.id, v.name, v.headers, ` + p(6) + `
		FROM ROWS FROM (unnest(` + p(0) + `::text[]), unnest(` + p(1) + `::text[]), ` + valueExpr + `, unnest(` + p(3) + `::text[]),
			unnest(` + p(4) + `::text[]), unnest(` + p(5) + `::text[]))
			WITH ORDINALITY AS v(topic, k, val, id, name, headers, n)
		ORDER BY v.n`
}

// writePostgresArgs are the arrays of a write of rows (writePostgresSQL).
func (t *Tables) writePostgresArgs(rows []Row) ([]any, error) {
	if tracing.Enabled() {
		rows = traceRows(rows)
	}
	n := len(rows)
	topics, keys := make([]string, n), make([]string, n)
	for i, r := range rows {
		topics[i], keys[i] = r.Topic, r.Key
	}
	var values any
	if t.l.ValueJSON {
		size := 2
		for _, r := range rows {
			size += valueSize(r) + 1
		}
		b := make([]byte, 0, size)
		b = append(b, '[')
		for i, r := range rows {
			if i > 0 {
				b = append(b, ',')
			}
			start := len(b)
			b = appendValue(b, r)
			if len(b) == start {
				return nil, fmt.Errorf("row %d has no value", i+1)
			}
		}
		values = append(b, ']')
	} else {
		bs := make(sqldb.ByteaArray, n)
		for i, r := range rows {
			bs[i] = r.Value
			if bs[i] == nil && r.Message != nil {
				bs[i] = appendValue(nil, r)
			}
			if bs[i] == nil {
				bs[i] = []byte{}
			}
		}
		values = bs
	}
	if !t.l.Headers {
		traces := make(sqldb.NullTextArray, n)
		for i, r := range rows {
			if tp := r.Headers[envelope.HeaderTraceparent]; tp != "" {
				traces[i] = &tp
			}
		}
		return []any{sqldb.TextArray(topics), sqldb.TextArray(keys), values, traces, t.at(t.now())}, nil
	}
	ids, names, headers := make([]string, n), make([]string, n), make([]string, n)
	for i, r := range rows {
		ids[i], names[i], headers[i] = r.ID, r.Name, encodeHeaders(r.Headers)
	}
	return []any{sqldb.TextArray(topics), sqldb.TextArray(keys), values, sqldb.TextArray(ids), sqldb.TextArray(names),
		sqldb.TextArray(headers), t.at(t.now())}, nil
}

// writeSQLite inserts rows one prepared statement execution each (SQLite
// runs in-process: a statement costs no round trip).
func (t *Tables) writeSQLite(ctx context.Context, tx *sqlx.Tx, rows []Row) error {
	if tracing.Enabled() {
		rows = traceRows(rows)
	}
	now := t.at(t.now())
	st, err := t.stmt(ctx, tx, t.q.insertOne)
	if err != nil {
		return err
	}
	size := 0
	for _, r := range rows {
		if r.Value == nil && r.Message != nil {
			size += valueSize(r)
		}
	}
	buf := make([]byte, 0, size) // the encoded Messages, one after the other
	for _, r := range rows {
		v := r.Value
		if v == nil && r.Message != nil {
			start := len(buf)
			buf = appendValue(buf, r)
			v = buf[start:]
		}
		var value any = v
		if t.l.ValueJSON {
			// A text column; the bytes stay unchanged until the statement
			// is done with them.
			value = unsafe.String(unsafe.SliceData(v), len(v))
		} else if v == nil {
			value = []byte{}
		}
		if t.l.Headers {
			_, err = st.ExecContext(ctx, r.ID, r.Topic, r.Key, r.Name, encodeHeaders(r.Headers), value, now)
		} else {
			var tp any
			if s := r.Headers[envelope.HeaderTraceparent]; s != "" {
				tp = s
			}
			_, err = st.ExecContext(ctx, r.Topic, r.Key, value, tp, now)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// valueSize estimates the encoded size of r's value.
func valueSize(r Row) int {
	if r.Value == nil && r.Message != nil {
		return 320 + len(r.Message.Payload)
	}
	return len(r.Value)
}

// appendValue appends r's value: Value, or Message encoded.
func appendValue(dst []byte, r Row) []byte {
	if r.Value == nil && r.Message != nil {
		return envelope.AppendMessage(dst, r.Message)
	}
	return append(dst, r.Value...)
}

func encodeHeaders(h map[string]string) string {
	if len(h) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(h) // a map[string]string always encodes
	return string(b)
}

// Publish takes up to limit of the oldest outbox rows no other relay holds,
// calls publish with them (in Seq order) and deletes them if it returns
// nil; it returns how many it published. A failed publish releases them
// at once, and the rows of a relay that dies become free again within
// lease, so publish must return within lease (relay.Within).
//
// On PostgreSQL one statement locks the rows (FOR UPDATE SKIP LOCKED) and
// deletes them, returning them, in a transaction that lives across publish
// and commits only if publish returns nil: a row leaves two row versions
// (insert, delete), no lease is written, and a failed publish, a crashed
// relay (PostgreSQL notices its connection is gone) or a relay that hangs
// while it holds them (idle_in_transaction_session_timeout = lease) rolls
// the deletion back, so the rows are free again. On SQLite, with one writer, a
// transaction held across a publish would stop every other writer, so the
// rows are leased to owner (Lease), published, and deleted, each step a
// short statement of its own. Either way rows leased to another owner are
// skipped until their lease runs out.
func (t *Tables) Publish(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, rows []Row) error) (int, error) {
	if err := checkClaim(owner, limit, lease); err != nil {
		return 0, fmt.Errorf("publish %s: %w", t.l.Outbox, err)
	}
	if publish == nil {
		return 0, fmt.Errorf("publish %s: no publish function", t.l.Outbox)
	}
	if t.d != sqldb.Postgres {
		return t.publishLeased(ctx, owner, limit, lease, publish)
	}
	tx, err := t.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("publish %s: begin: %w", t.l.Outbox, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// A relay that stalls while it holds the rows loses its session (and
	// the rows) after lease: takeFree sets idle_in_transaction_session_timeout
	// for this transaction.
	recs, err := t.takeFree(ctx, tx, owner, limit, lease)
	if err != nil {
		return 0, fmt.Errorf("publish %s: take rows: %w", t.l.Outbox, err)
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := publish(ctx, recs); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("publish %s: commit the deletion of %d published rows (they will be published again): %w", t.l.Outbox, len(recs), err)
	}
	return len(recs), nil
}

// takeFree locks and deletes, in tx, up to limit of the oldest rows no
// other relay holds and returns them (PostgreSQL). It also sets tx's idle
// bound to lease and turns synchronous_commit off for tx.
func (t *Tables) takeFree(ctx context.Context, tx *sqlx.Tx, owner string, limit int, lease time.Duration) ([]Row, error) {
	rows, err := t.query(ctx, tx, t.q.takeFree, strconv.FormatInt(max(lease.Milliseconds(), 1), 10), t.at(t.now()), owner, limit)
	if err != nil {
		return nil, err
	}
	return t.scan(rows)
}

// publishLeased is Publish with leases and short statements (SQLite). The
// lease and the deletion commit without waiting for an fsync (unsynced),
// as the transaction of Publish on PostgreSQL does.
func (t *Tables) publishLeased(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, rows []Row) error) (int, error) {
	var recs []Row
	err := t.unsynced(ctx, func(c *sql.Conn) (err error) {
		recs, err = t.leaseOn(ctx, c, owner, limit, lease)
		return err
	})
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	seqs := seqsOf(recs)
	if err := publish(ctx, recs); err != nil {
		if relErr := t.Release(context.WithoutCancel(ctx), owner, seqs); relErr != nil {
			return 0, errors.Join(err, relErr)
		}
		return 0, err
	}
	if err := t.unsynced(ctx, func(c *sql.Conn) error { return t.deleteOn(ctx, c, seqs) }); err != nil {
		return 0, fmt.Errorf("delete %d published rows (they will be published again): %w", len(seqs), err)
	}
	return len(recs), nil
}

// Lease leases up to limit of the oldest outbox rows to owner until
// now+lease and returns them, skipping rows whose lease to another owner
// has not run out (and, on PostgreSQL, rows another relay's Publish
// holds). Rows already leased to owner are leased again at once: a relay
// that gave up on a publish retries it without waiting for its own lease,
// so owners must be unique per relay (relay.Owner).
func (t *Tables) Lease(ctx context.Context, owner string, limit int, lease time.Duration) ([]Row, error) {
	return t.leaseOn(ctx, t.db, owner, limit, lease)
}

// leaseOn is Lease on db or on one of its connections.
func (t *Tables) leaseOn(ctx context.Context, db interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, owner string, limit int, lease time.Duration) ([]Row, error) {
	if err := checkClaim(owner, limit, lease); err != nil {
		return nil, fmt.Errorf("lease %s: %w", t.l.Outbox, err)
	}
	now := t.now()
	rows, err := db.QueryContext(ctx, t.q.lease, owner, t.at(now.Add(lease)), t.at(now), owner, limit)
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", t.l.Outbox, err)
	}
	out, err := t.scan(rows)
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", t.l.Outbox, err)
	}
	return out, nil
}

// Release gives up owner's leases on seqs.
func (t *Tables) Release(ctx context.Context, owner string, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	if _, err := t.db.ExecContext(ctx, t.q.release, owner, t.list(seqs)); err != nil {
		return fmt.Errorf("release %d leases in %s: %w", len(seqs), t.l.Outbox, err)
	}
	return nil
}

// Delete removes published rows by seq (not "seq <= max": on PostgreSQL a
// row with a smaller seq may commit after a bigger one).
func (t *Tables) Delete(ctx context.Context, seqs []int64) error {
	return t.deleteOn(ctx, t.db, seqs)
}

// deleteOn is Delete on db or on one of its connections.
func (t *Tables) deleteOn(ctx context.Context, db interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, t.q.del, t.list(seqs)); err != nil {
		return fmt.Errorf("delete %d published rows from %s: %w", len(seqs), t.l.Outbox, err)
	}
	return nil
}

// sqliteNormal is SQLite's synchronous level NORMAL: in WAL mode a commit
// writes its pages to the WAL without an fsync.
const sqliteNormal = 1

// unsynced runs fn on one connection of the database (SQLite) at the
// synchronous level NORMAL, and gives the connection its own level back
// after it (FULL unless the operator chose otherwise; a level of NORMAL or
// below is left as it is).
//
// Why: it is how the relay's lease and deletion commit, and both are safe
// to lose. In WAL mode a commit at NORMAL is in the WAL as soon as it
// returns, safe from a crash of the process; only a crash of the machine
// before the next fsync (the next commit at FULL, or a checkpoint) can
// roll it back. A lost lease leaves the rows free and a lost deletion
// leaves them in the outbox: either way they are published again, and the
// consumers' inboxes drop the copies. Nothing else is weakened: the next
// commit at FULL syncs the WAL with every frame before it. Each fsync
// skipped is one the single writer does not wait for (measured: bench -c
// 200 on the embedded defaults, +8 %; docs/operations.md).
//
// A connection whose level cannot be given back is closed, never returned
// to the pool.
func (t *Tables) unsynced(ctx context.Context, fn func(c *sql.Conn) error) error {
	if t.d != sqldb.SQLite {
		return errors.New("unsynced is for SQLite")
	}
	c, err := t.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%s: take a connection: %w", t.l.Outbox, err)
	}
	defer c.Close()
	var level int
	if err := c.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&level); err != nil {
		return fmt.Errorf("%s: read synchronous: %w", t.l.Outbox, err)
	}
	if level <= sqliteNormal {
		return fn(c)
	}
	if _, err := c.ExecContext(ctx, "PRAGMA synchronous = "+strconv.Itoa(sqliteNormal)); err != nil {
		return fmt.Errorf("%s: set synchronous NORMAL: %w", t.l.Outbox, err)
	}
	ferr := fn(c)
	if _, err := c.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = "+strconv.Itoa(level)); err != nil {
		_ = c.Raw(func(any) error { return driver.ErrBadConn }) // closes the connection
		return errors.Join(ferr, fmt.Errorf("%s: restore synchronous %d (connection closed): %w", t.l.Outbox, level, err))
	}
	return ferr
}

// Backlog counts the rows waiting in the outbox.
func (t *Tables) Backlog(ctx context.Context) (int64, error) {
	var n int64
	if err := t.reader.GetContext(ctx, &n, t.q.count); err != nil {
		return 0, fmt.Errorf("count %s: %w", t.l.Outbox, err)
	}
	return n, nil
}

// sortRows orders rows by Seq.
func sortRows(rows []Row) {
	sort.Slice(rows, func(i, j int) bool { return rows[i].Seq < rows[j].Seq })
}

// checkClaim validates the arguments of Publish and Lease.
func checkClaim(owner string, limit int, lease time.Duration) error {
	switch {
	case owner == "":
		return errors.New("no owner")
	case limit <= 0:
		return fmt.Errorf("limit %d is not positive", limit)
	case lease <= 0:
		return fmt.Errorf("lease %v is not positive", lease)
	}
	return nil
}

func seqsOf(rows []Row) []int64 {
	seqs := make([]int64, len(rows))
	for i, r := range rows {
		seqs[i] = r.Seq
	}
	return seqs
}

// scan reads and closes rows of outboxCols, in Seq order.
func (t *Tables) scan(rows *sql.Rows) ([]Row, error) {
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		if t.l.Headers {
			var headers string
			if err := rows.Scan(&r.Seq, &r.Topic, &r.Key, &r.Value, &headers, &r.ID, &r.Name); err != nil {
				return nil, err
			}
			if headers != "" && headers != "{}" {
				if err := json.Unmarshal([]byte(headers), &r.Headers); err != nil {
					return nil, fmt.Errorf("row %d: decode headers: %w", r.Seq, err)
				}
			}
		} else {
			var trace sql.NullString
			if err := rows.Scan(&r.Seq, &r.Topic, &r.Key, &r.Value, &trace); err != nil {
				return nil, err
			}
			if trace.String != "" {
				r.Headers = map[string]string{envelope.HeaderTraceparent: trace.String}
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortRows(out)
	return out, nil
}

// traceRows records an "outbox <NAME>" span for each row, a child of the
// row's traceparent header (the span of the handler or request that wrote
// it; a new trace if it has none), and returns copies of the rows that
// carry the span's traceparent: the relay's publish span is its child.
// rows and their headers are not changed. Call only when tracing.Enabled.
func traceRows(rows []Row) []Row {
	out := make([]Row, len(rows))
	for i, r := range rows {
		id, name, kind := r.ID, r.Name, ""
		if r.Message != nil {
			id, name, kind = r.Message.ID, r.Message.Name, string(r.Message.Kind)
		} else if k := r.Headers[envelope.HeaderKind]; k != "" {
			kind = k
		}
		_, span := tracing.StartRemote(context.Background(), r.Headers[envelope.HeaderTraceparent], tracing.Name("outbox", name), trace.SpanKindInternal,
			tracing.AttrTopic.String(r.Topic),
			tracing.AttrSagaID.String(r.Key),
			tracing.AttrMessageID.String(id),
			tracing.AttrMessageName.String(name),
			tracing.AttrMessageKind.String(kind))
		r.Headers = tracing.WithTraceparent(r.Headers, tracing.Traceparent(span))
		span.End()
		out[i] = r
	}
	return out
}
