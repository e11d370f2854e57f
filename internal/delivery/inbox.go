package delivery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// InboxRow is one message recorded in the inbox. With a layout without
// Replies only ID is stored.
type InboxRow struct {
	// ID is the message id; it must not be empty.
	ID string
	// SagaID and Command describe the message (Layout.Replies).
	SagaID, Command string
	// ReplyID and Reply are the reply the message produced, if any
	// (Layout.Replies): ReplyID "" means none, and Reply is not stored.
	ReplyID string
	Reply   []byte
}

// Reply is what the inbox keeps of a processed message (Layout.Replies).
type Reply struct {
	// ID is the reply's message id; "" if the message had no reply.
	ID string
	// Body is the reply as written (nil without one).
	Body []byte
}

// claimChunk bounds the rows of one SQLite claim statement (6 variables
// each, under SQLite's limit of 32766).
const claimChunk = 500

// Claim records rows in the inbox in tx and returns the ids that were not
// there before (the fresh ones); the others are duplicates and change
// nothing. An id given twice is recorded once. The rows are written in id
// order, a stable lock order for concurrent transactions.
func (t *Tables) Claim(ctx context.Context, tx *sqlx.Tx, rows []InboxRow) (map[string]bool, error) {
	rows, err := sortedRows(rows)
	if err != nil {
		return nil, fmt.Errorf("claim %d messages in %s: %w", len(rows), t.l.Inbox, err)
	}
	fresh := make(map[string]bool, len(rows))
	if len(rows) == 0 {
		return fresh, nil
	}
	if t.d == sqldb.Postgres {
		err = t.collect(ctx, tx, t.q.claimPG, t.claimPostgresArgs(rows), fresh)
	} else {
		err = t.claimSQLite(ctx, tx, rows, fresh)
	}
	if err != nil {
		return nil, fmt.Errorf("claim %d messages in %s: %w", len(rows), t.l.Inbox, err)
	}
	return fresh, nil
}

// ClaimIDs is Claim of bare message ids.
func (t *Tables) ClaimIDs(ctx context.Context, tx *sqlx.Tx, ids []string) (map[string]bool, error) {
	rows := make([]InboxRow, len(ids))
	for i, id := range ids {
		rows[i].ID = id
	}
	return t.Claim(ctx, tx, rows)
}

// ClaimAndWrite is Claim of in followed by Write of out, in one statement
// on PostgreSQL (two round trips fewer per batch of commands).
func (t *Tables) ClaimAndWrite(ctx context.Context, tx *sqlx.Tx, in []InboxRow, out []Row) (map[string]bool, error) {
	if t.d != sqldb.Postgres || len(in) == 0 || len(out) == 0 {
		fresh, err := t.Claim(ctx, tx, in)
		if err != nil {
			return nil, err
		}
		return fresh, t.Write(ctx, tx, out)
	}
	rows, err := sortedRows(in)
	if err != nil {
		return nil, fmt.Errorf("claim %d messages in %s: %w", len(in), t.l.Inbox, err)
	}
	wargs, err := t.writePostgresArgs(out)
	if err != nil {
		return nil, err
	}
	fresh := make(map[string]bool, len(rows))
	if err := t.collect(ctx, tx, t.q.claimWritePG, append(t.claimPostgresArgs(rows), wargs...), fresh); err != nil {
		return nil, fmt.Errorf("claim %d messages in %s and write %d rows to %s: %w", len(rows), t.l.Inbox, len(out), t.l.Outbox, err)
	}
	return fresh, nil
}

// sortedRows returns rows without repeated ids, in id order, or an error
// naming an empty id.
func sortedRows(rows []InboxRow) ([]InboxRow, error) {
	out := make([]InboxRow, 0, len(rows))
	seen := make(map[string]bool, len(rows))
	for i, r := range rows {
		if r.ID == "" {
			return nil, fmt.Errorf("message %d of %d has no id", i+1, len(rows))
		}
		if !seen[r.ID] {
			seen[r.ID] = true
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// claimPostgresSQL is the INSERT of claimPostgresArgs as one statement,
// its parameters numbered from first, without RETURNING.
func claimPostgresSQL(l Layout, first int) string {
	p := func(i int) string { return fmt.Sprintf("$%d", first+i) }
	if !l.Replies {
		return `INSERT INTO ` + l.Inbox + ` (message_id, processed_at) SELECT unnest(` + p(0) + `::text[]), ` + p(1) + `
			ON CONFLICT (message_id) DO NOTHING`
	}
	// Reply ids are never empty: '' stands for no reply.
	return `INSERT INTO ` + l.Inbox + ` (message_id, saga_id, command, reply_id, reply, processed_at)
		SELECT r.id, r.saga, r.cmd, NULLIF(r.rid, ''), CASE WHEN r.rid = '' THEN NULL ELSE r.body END, ` + p(5) + `
		FROM unnest(` + p(0) + `::text[], ` + p(1) + `::text[], ` + p(2) + `::text[], ` + p(3) + `::text[], ` + p(4) + `::bytea[])
			AS r(id, saga, cmd, rid, body)
		ON CONFLICT (message_id) DO NOTHING`
}

// claimPostgresArgs are the arrays of a claim of rows (claimPostgresSQL).
func (t *Tables) claimPostgresArgs(rows []InboxRow) []any {
	n := len(rows)
	ids := make([]string, n)
	for i, r := range rows {
		ids[i] = r.ID
	}
	if !t.l.Replies {
		return []any{sqldb.TextArray(ids), t.at(t.now())}
	}
	sagas, cmds, rids := make([]string, n), make([]string, n), make([]string, n)
	bodies := make(sqldb.ByteaArray, n)
	for i, r := range rows {
		sagas[i], cmds[i], rids[i] = r.SagaID, r.Command, r.ReplyID
		if r.ReplyID != "" {
			bodies[i] = r.Reply
		}
	}
	return []any{sqldb.TextArray(ids), sqldb.TextArray(sagas), sqldb.TextArray(cmds), sqldb.TextArray(rids), bodies, t.at(t.now())}
}

// claimArgs is the number of claimPostgresArgs.
func claimArgs(l Layout) int {
	if l.Replies {
		return 6
	}
	return 2
}

// claimOneBelow is the batch size under which SQLite claims go row by row
// with one prepared statement (no text to build and parse) rather than in
// multi-row VALUES statements.
const claimOneBelow = 64

// claimSQLite inserts rows (SQLite runs in-process: there are no round
// trips to save, only statements to parse): a few with one prepared
// statement per row, many with multi-row VALUES statements.
func (t *Tables) claimSQLite(ctx context.Context, tx *sqlx.Tx, rows []InboxRow, fresh map[string]bool) error {
	now := t.at(t.now())
	if len(rows) < claimOneBelow {
		st, err := t.stmt(ctx, tx, t.q.claimOne)
		if err != nil {
			return err
		}
		for _, r := range rows {
			var res sql.Result
			if t.l.Replies {
				var rid, body any
				if r.ReplyID != "" {
					rid, body = r.ReplyID, r.Reply
				}
				res, err = st.ExecContext(ctx, r.ID, r.SagaID, r.Command, rid, body, now)
			} else {
				res, err = st.ExecContext(ctx, r.ID, now)
			}
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				fresh[r.ID] = true
			}
		}
		return nil
	}
	per := "(?,?)"
	cols := "(message_id, processed_at)"
	if t.l.Replies {
		per, cols = "(?,?,?,?,?,?)", "(message_id, saga_id, command, reply_id, reply, processed_at)"
	}
	for start := 0; start < len(rows); start += claimChunk {
		chunk := rows[start:min(start+claimChunk, len(rows))]
		var b strings.Builder
		b.WriteString("INSERT INTO " + t.l.Inbox + " " + cols + " VALUES ")
		args := make([]any, 0, placeholders(per)*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(per)
			if !t.l.Replies {
				args = append(args, r.ID, now)
				continue
			}
			var rid, body any
			if r.ReplyID != "" {
				rid, body = r.ReplyID, r.Reply
			}
			args = append(args, r.ID, r.SagaID, r.Command, rid, body, now)
		}
		b.WriteString(" ON CONFLICT (message_id) DO NOTHING RETURNING message_id")
		// Not through Statements: the text varies with the number of rows.
		if err := collectRows(tx.QueryContext(ctx, b.String(), args...))(fresh); err != nil {
			return err
		}
	}
	return nil
}

// collect runs q in tx and adds the ids it returns to set.
func (t *Tables) collect(ctx context.Context, tx *sqlx.Tx, q string, args []any, set map[string]bool) error {
	return collectRows(t.query(ctx, tx, q, args...))(set)
}

// collectRows adds the ids of rows (one text column) to a set, then
// closes them.
func collectRows(rows *sql.Rows, err error) func(set map[string]bool) error {
	return func(set map[string]bool) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			set[id] = true
		}
		return rows.Err()
	}
}

// Replies returns what the inbox keeps of those of ids it has (Layout.Replies).
func (t *Tables) Replies(ctx context.Context, tx *sqlx.Tx, ids []string) (map[string]Reply, error) {
	return t.BoundReplies(ctx, tx, "", ids)
}

// BoundReplies is Replies that, on PostgreSQL and in tx, first evaluates
// settings, a select list of set_config calls local to the transaction
// (the SDK bounds its handler transactions so), in the same statement: one
// round trip for both. The settings are evaluated whether or not any id is
// found. settings is SQL: never build it from input. It is ignored on
// SQLite and without tx.
func (t *Tables) BoundReplies(ctx context.Context, tx *sqlx.Tx, settings string, ids []string) (map[string]Reply, error) {
	if !t.l.Replies {
		return nil, fmt.Errorf("read replies: %s keeps no replies", t.l.Inbox)
	}
	out := make(map[string]Reply, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	q, args := t.q.replies, []any{t.textList(ids)}
	if t.d == sqldb.Postgres && tx != nil && settings != "" {
		// The one-row settings subquery is the preserved side of the
		// join: evaluated once, it yields one row of NULLs when no id is
		// in the inbox (skipped below).
		q = `SELECT i.message_id, i.reply_id, i.reply FROM (SELECT ` + settings + `) AS bound LEFT JOIN ` +
			t.l.Inbox + ` AS i ON i.message_id = ANY($1::text[])`
	}
	if t.d == sqldb.SQLite && len(ids) <= claimOneBelow {
		// A list of placeholders: SQLite looks each id up in the primary
		// key, where IN (SELECT … json_each) costs a JSON parse and a join
		// (BenchmarkDispatch: 2.5x the time of this look-up). At most
		// claimOneBelow statement texts, prepared once each.
		q = t.q.repliesIn[len(ids)]
		args = make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
	}
	var rows *sql.Rows
	var err error
	if t.d == sqldb.Postgres && tx != nil {
		// Not prepared: a prepared statement's generic plan, made while
		// the inbox is small (a new database), keeps scanning the whole
		// inbox as it grows (measured: every batch of the notification
		// service read all of sdk_inbox). Planned per call, it looks the
		// ids up in the primary key.
		rows, err = tx.QueryContext(ctx, q, args...)
	} else {
		rows, err = t.query(ctx, tx, q, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("look up %d messages in %s: %w", len(ids), t.l.Inbox, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id sql.NullString
		var rid sql.NullString
		var body []byte
		if err := rows.Scan(&id, &rid, &body); err != nil {
			return nil, fmt.Errorf("look up messages in %s: %w", t.l.Inbox, err)
		}
		if !id.Valid {
			continue // BoundReplies' row when nothing was found
		}
		r := Reply{}
		if rid.Valid && len(body) > 0 {
			r = Reply{ID: rid.String, Body: body}
		}
		out[id.String] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up messages in %s: %w", t.l.Inbox, err)
	}
	return out, nil
}

// SetReply keeps the reply of message id, recorded earlier in tx
// (Layout.Replies).
func (t *Tables) SetReply(ctx context.Context, tx *sqlx.Tx, id, replyID string, body []byte) error {
	if !t.l.Replies {
		return fmt.Errorf("keep the reply of %s: %s keeps no replies", id, t.l.Inbox)
	}
	if _, err := t.exec(ctx, tx, t.q.setReply, replyID, body, id); err != nil {
		return fmt.Errorf("keep reply %s of %s in %s: %w", replyID, id, t.l.Inbox, err)
	}
	return nil
}

// Forget removes message id from the inbox in tx, so that it is processed
// again (an operator's replay of a dead letter).
func (t *Tables) Forget(ctx context.Context, tx *sqlx.Tx, id string) error {
	if _, err := t.exec(ctx, tx, t.q.forget, id); err != nil {
		return fmt.Errorf("forget message %s in %s: %w", id, t.l.Inbox, err)
	}
	return nil
}

// purgeChunk is the most inbox records one purge statement deletes, so that
// a large purge is many short statements rather than one long one.
var purgeChunk = 10000

// Purge deletes the inbox records of messages processed before olderThan
// (but those Layout.KeepInbox keeps), in chunks of short statements, and
// returns how many it deleted. A message redelivered after its record is
// gone is processed again, so the retention must exceed how long the bus
// may deliver a message again.
func (t *Tables) Purge(ctx context.Context, olderThan time.Time) (int64, error) {
	if olderThan.IsZero() {
		return 0, errors.New("purge inbox: no cut-off time")
	}
	args := t.cutoffArgs(olderThan)
	args = append(args, purgeChunk)
	var total int64
	for {
		res, err := t.db.ExecContext(ctx, t.q.purge, args...)
		if err != nil {
			return total, fmt.Errorf("purge %s before %s (%d deleted so far): %w", t.l.Inbox, olderThan.UTC().Format(time.RFC3339), total, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("purge %s: %w", t.l.Inbox, err)
		}
		total += n
		if n < int64(purgeChunk) {
			return total, nil
		}
	}
}

// Prunable returns the condition (on the inbox table, with ? placeholders
// for the dialect's Rebind) and its arguments that select the records
// Purge(olderThan) deletes, for the caller's own statements about them
// (the SDK deletes the dead letters of those commands first).
func (t *Tables) Prunable(olderThan time.Time) (string, []any) {
	cond := t.l.Inbox + ".processed_at < ?"
	if t.l.KeepInbox != "" {
		cond += " AND NOT (" + t.l.KeepInbox + ")"
	}
	return cond, t.cutoffArgs(olderThan)
}

// cutoffArgs binds the cut-off once for processed_at and once per ? of
// Layout.KeepInbox.
func (t *Tables) cutoffArgs(olderThan time.Time) []any {
	at := t.at(olderThan)
	args := []any{at}
	for range placeholders(t.l.KeepInbox) {
		args = append(args, at)
	}
	return args
}
