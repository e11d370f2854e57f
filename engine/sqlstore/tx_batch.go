package sqlstore

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// WriteBatch (engine.Tx) writes what one intake batch changed: Insert(ins),
// Update(upd), AppendHistory(entries) and Enqueue(outbox), in this order,
// with their checks, effects and errors. On PostgreSQL the writes are one
// statement, each a part of a data-modifying WITH with the update last
// (its RETURNING tells the sagas that changed since they were read),
// instead of one round trip each; keys that an update changes are then
// replaced by statements of their own, as Update does. On SQLite it calls
// the four methods.
func (t *tx) WriteBatch(ctx context.Context, ins, upd []*engine.Instance, entries []engine.HistoryEntry, outbox []engine.OutboxRecord) error {
	if !t.d().postgres {
		return t.writeEach(ctx, ins, upd, entries, outbox)
	}
	const op = "sqlstore: write batch"
	var w batchStatement
	if len(ins) > 0 {
		rows, err := encodeInstances(ins)
		if err != nil {
			return &engine.Error{Code: engine.CodeInvalid, Op: opInsert, Err: err}
		}
		w.add(insertInstancesSQL, insertInstancesArgs(pgInstColumns(rows)))
		if kIDs, kNames, kValues := keyRows(rows); len(kIDs) > 0 {
			w.add(insertKeysSQL, []any{sqldb.TextArray(kIDs), sqldb.TextArray(kNames), sqldb.TextArray(kValues)})
		}
	}
	if len(entries) > 0 {
		rows, err := encodeHistory(opHistory, entries)
		if err != nil {
			return err
		}
		w.add(historySQL, historyArgs(rows))
	}
	if len(outbox) > 0 {
		rows, err := outboxRows(opEnqueue, outbox)
		if err != nil {
			return err
		}
		q, args, err := t.s.dt.WriteStatement(rows, len(w.args)+1)
		if err != nil {
			return t.s.wrap(opEnqueue, err)
		}
		w.parts, w.args = append(w.parts, q), append(w.args, args...)
	}
	var updRows []instRow
	if len(upd) > 0 {
		var err error
		if updRows, err = encodeInstances(upd); err != nil {
			return &engine.Error{Code: engine.CodeInvalid, Op: opUpdate, Err: err}
		}
		w.add(updateInstancesSQL, updateInstancesArgs(pgInstColumns(updRows)))
	}
	if len(w.parts) == 0 {
		return nil
	}
	q := w.sql()
	var updated map[string]bool
	var err error
	if len(updRows) > 0 {
		res, qerr := t.query(ctx, q, w.args...)
		if err = qerr; err == nil {
			updated, err = scanIDs(res, len(updRows))
		}
	} else {
		_, err = t.exec(ctx, q, w.args...)
	}
	if err != nil {
		if len(ins) > 0 {
			return t.insertConflict(op, err)
		}
		return t.s.wrap(op, err)
	}
	t.inserted(ins)
	if len(updRows) == 0 {
		return nil
	}
	if err := staleRows(opUpdate, updRows, updated); err != nil {
		return err
	}
	return t.updated(ctx, opUpdate, updRows)
}

// writeEach is WriteBatch one method after the other (SQLite).
func (t *tx) writeEach(ctx context.Context, ins, upd []*engine.Instance, entries []engine.HistoryEntry, outbox []engine.OutboxRecord) error {
	if err := t.Insert(ctx, ins); err != nil {
		return err
	}
	if err := t.Update(ctx, upd); err != nil {
		return err
	}
	if err := t.AppendHistory(ctx, entries); err != nil {
		return err
	}
	return t.Enqueue(ctx, outbox)
}

// batchStatement collects statements, each with its parameters numbered from
// $1, into one: the parameters of each part are renumbered after those of
// the parts before it.
type batchStatement struct {
	parts []string
	args  []any
}

// param is a positional parameter in one of this package's statements
// (none has a "$" in a literal).
var param = regexp.MustCompile(`\$([0-9]+)`)

// add appends a statement whose parameters are $1..$len(args).
func (w *batchStatement) add(q string, args []any) {
	if off := len(w.args); off > 0 {
		q = shifted(q, off)
	}
	w.parts, w.args = append(w.parts, q), append(w.args, args...)
}

// shiftKey is a statement and the number its parameters are moved by.
type shiftKey struct {
	q   string
	off int
}

// shiftCache holds shifted's results: the statements and offsets of the
// intake's batches are few (a part is present or not), and rewriting them
// on every batch would be the hot path's work.
var shiftCache sync.Map // shiftKey -> string

// shifted is q with each parameter $n renumbered $(n+off).
func shifted(q string, off int) string {
	k := shiftKey{q, off}
	if s, ok := shiftCache.Load(k); ok {
		return s.(string)
	}
	s := param.ReplaceAllStringFunc(q, func(p string) string {
		n, _ := strconv.Atoi(p[1:]) // the pattern has only digits
		return "$" + strconv.Itoa(n+off)
	})
	shiftCache.Store(k, s)
	return s
}

// sql is the one statement: the parts before the last as WITH queries, the
// last as the main statement (PostgreSQL runs every data-modifying WITH
// query to completion, whether or not it is referenced).
func (w *batchStatement) sql() string {
	if len(w.parts) == 1 {
		return w.parts[0]
	}
	var b strings.Builder
	b.WriteString("WITH ")
	for i, p := range w.parts[:len(w.parts)-1] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "w%d AS (%s)", i, p)
	}
	b.WriteString(" ")
	b.WriteString(w.parts[len(w.parts)-1])
	return b.String()
}
