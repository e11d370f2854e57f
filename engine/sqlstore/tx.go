package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
)

// The ops of the four writes of a batch, shared by the methods and by
// WriteBatch, which reports their errors as they do.
const (
	opInsert  = "sqlstore: insert sagas"
	opUpdate  = "sqlstore: update sagas"
	opHistory = "sqlstore: append history"
	opEnqueue = "sqlstore: enqueue"
)

// tx is the engine.Tx of one InTx call. The validation and encoding of a
// batch is shared; writing it is per dialect (tx_postgres.go, tx_sqlite.go).
type tx struct {
	s  *Store
	tx *sqlx.Tx
	// keys are the stored keys of the sagas loaded or written in this
	// transaction, so that Update rewrites only keys that changed. They stay
	// valid: keys change only with Rev, and Update checks Rev.
	keys map[string]map[string]string
}

// query runs a query of a batch in the transaction. On PostgreSQL the
// statement is prepared once per connection and kept (Store.stmts), which
// saves a parse, a plan and a round trip per batch statement.
func (t *tx) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if !t.d().postgres {
		return t.tx.QueryContext(ctx, query, args...)
	}
	st, err := t.s.stmts.Stmt(ctx, t.tx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// exec runs a statement of a batch in the transaction (prepared like query).
func (t *tx) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if !t.d().postgres {
		return t.tx.ExecContext(ctx, query, args...)
	}
	st, err := t.s.stmts.Stmt(ctx, t.tx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// remember records the stored keys of a saga.
func (t *tx) remember(id string, keys map[string]string) {
	if t.keys == nil {
		t.keys = make(map[string]map[string]string)
	}
	t.keys[id] = maps.Clone(keys)
}

var _ engine.Tx = (*tx)(nil)

func (t *tx) d() dialect { return t.s.d }

// uniqueSorted returns the distinct non-empty ids in order (a stable lock
// order for concurrent transactions), or an error naming an empty one.
func uniqueSorted(ids []string) ([]string, error) {
	out := make([]string, 0, len(ids))
	seen := make(map[string]struct{}, len(ids))
	for i, id := range ids {
		if id == "" {
			return nil, fmt.Errorf("id %d of %d is empty", i, len(ids))
		}
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// Claim records message ids in the inbox and returns the fresh ones.
func (t *tx) Claim(ctx context.Context, ids []string) (map[string]bool, error) {
	const op = "sqlstore: claim messages"
	ids, err := uniqueSorted(ids)
	if err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	if len(ids) == 0 {
		return map[string]bool{}, nil
	}
	fresh, err := t.s.dt.ClaimIDs(ctx, t.tx, ids)
	if err != nil {
		return nil, t.s.wrap(op, err)
	}
	return fresh, nil
}

// Unclaim forgets a message id.
func (t *tx) Unclaim(ctx context.Context, id string) error {
	if err := t.s.dt.Forget(ctx, t.tx, id); err != nil {
		return t.s.wrap("sqlstore: unclaim message "+id, err)
	}
	return nil
}

// Load returns those of ids that exist, by id.
func (t *tx) Load(ctx context.Context, ids []string) (map[string]*engine.Instance, error) {
	const op = "sqlstore: load sagas"
	ids, err := uniqueSorted(ids)
	if err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	out := make(map[string]*engine.Instance, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	arg, err := t.d().list(ids)
	if err != nil {
		return nil, t.s.wrap(op, err)
	}
	rows, err := t.query(ctx, t.d().q("SELECT "+t.d().instanceCols()+" FROM saga_instances s WHERE "+t.d().in("s.id")), arg)
	if err != nil {
		return nil, t.s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return nil, t.s.wrap(op, err)
		}
		out[in.ID] = in
		t.remember(in.ID, in.Keys)
	}
	if err := rows.Err(); err != nil {
		return nil, t.s.wrap(op, err)
	}
	return out, nil
}

// instRow is an instance encoded for the database.
type instRow struct {
	in       *engine.Instance
	context  *string // JSON, nil for none
	pending  *string // JSON, nil for none
	undo     *string // JSON array, nil for none
	deferred *string // JSON, nil for none
	join     *string // JSON, nil for none
}

// encodeInstances validates and encodes a batch of instances.
func encodeInstances(insts []*engine.Instance) ([]instRow, error) {
	rows := make([]instRow, len(insts))
	seen := make(map[string]struct{}, len(insts))
	for i, in := range insts {
		if in == nil {
			return nil, fmt.Errorf("instance %d of %d is nil", i, len(insts))
		}
		switch {
		case in.ID == "":
			return nil, fmt.Errorf("instance %d of %d has no id", i, len(insts))
		case in.Saga == "":
			return nil, fmt.Errorf("saga %s has no definition name", in.ID)
		case in.State == "":
			return nil, fmt.Errorf("saga %s has no state", in.ID)
		case in.Status == "":
			return nil, fmt.Errorf("saga %s has no status", in.ID)
		}
		if _, ok := seen[in.ID]; ok {
			return nil, fmt.Errorf("saga %s appears twice in one batch", in.ID)
		}
		seen[in.ID] = struct{}{}
		if len(in.Context) > 0 && !json.Valid(in.Context) {
			return nil, fmt.Errorf("saga %s: context is not valid JSON", in.ID)
		}
		r := instRow{in: in, context: nullJSON(in.Context)}
		if in.Pending != nil {
			if len(in.Pending.Payload) > 0 && !json.Valid(in.Pending.Payload) {
				return nil, fmt.Errorf("saga %s: pending command's payload is not valid JSON", in.ID)
			}
			b := envelope.AppendMessage(make([]byte, 0, 320+len(in.Pending.Payload)), in.Pending)
			s := unsafe.String(unsafe.SliceData(b), len(b))
			r.pending = &s
		}
		if len(in.Undo) > 0 {
			b, err := json.Marshal(in.Undo)
			if err != nil {
				return nil, fmt.Errorf("saga %s: encode undo list: %w", in.ID, err)
			}
			s := string(b)
			r.undo = &s
		}
		if in.Deferred != nil {
			b := envelope.AppendMessage(make([]byte, 0, 320+len(in.Deferred.Payload)), in.Deferred)
			s := string(b)
			r.deferred = &s
		}
		if in.Join != nil {
			b, err := json.Marshal(in.Join)
			if err != nil {
				return nil, fmt.Errorf("saga %s: encode parallel step: %w", in.ID, err)
			}
			s := string(b)
			r.join = &s
		}
		for k := range in.Keys {
			if k == "" {
				return nil, fmt.Errorf("saga %s has a key without a name", in.ID)
			}
		}
		rows[i] = r
	}
	// A stable order keeps concurrent transactions from deadlocking.
	sort.Slice(rows, func(i, j int) bool { return rows[i].in.ID < rows[j].in.ID })
	return rows, nil
}

// keyRows flattens the keys of a batch, in a stable order.
func keyRows(rows []instRow) (ids, names, values []string) {
	for _, r := range rows {
		names0 := make([]string, 0, len(r.in.Keys))
		for k := range r.in.Keys {
			names0 = append(names0, k)
		}
		sort.Strings(names0)
		for _, k := range names0 {
			ids = append(ids, r.in.ID)
			names = append(names, k)
			values = append(values, r.in.Keys[k])
		}
	}
	return ids, names, values
}

// Insert stores new instances with Rev 1; an existing id is CodeConflict.
func (t *tx) Insert(ctx context.Context, insts []*engine.Instance) error {
	const op = opInsert
	if len(insts) == 0 {
		return nil
	}
	rows, err := encodeInstances(insts)
	if err != nil {
		return &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	if t.d().postgres {
		err = t.insertPostgres(ctx, rows)
	} else {
		err = t.insertSQLite(ctx, rows)
	}
	if err != nil {
		return t.insertConflict(op, err)
	}
	t.inserted(insts)
	return nil
}

// inserted records that insts are stored with Rev 1.
func (t *tx) inserted(insts []*engine.Instance) {
	for _, in := range insts {
		in.Rev = 1
		t.remember(in.ID, in.Keys)
	}
}

// insertConflict turns err of an insert of sagas into its engine error: a
// unique violation is CodeConflict (an id exists).
func (t *tx) insertConflict(op string, err error) error {
	if engine.ErrorCode(t.s.wrap(op, err)) == engine.CodeConflict {
		return &engine.Error{Code: engine.CodeConflict, Op: op, Message: "a saga with one of these ids exists", Err: err}
	}
	return t.s.wrap(op, err)
}

// Update stores changed instances whose stored Rev equals inst.Rev and
// increments their Rev; if any Rev no longer matches it returns CodeConflict
// and changes no Rev. ID and CreatedAt are never changed.
func (t *tx) Update(ctx context.Context, insts []*engine.Instance) error {
	const op = opUpdate
	if len(insts) == 0 {
		return nil
	}
	rows, err := encodeInstances(insts)
	if err != nil {
		return &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	var updated map[string]bool
	if t.d().postgres {
		updated, err = t.updatePostgres(ctx, rows)
	} else {
		updated, err = t.updateSQLite(ctx, rows)
	}
	if err != nil {
		return t.s.wrap(op, err)
	}
	if err := staleRows(op, rows, updated); err != nil {
		return err
	}
	return t.updated(ctx, op, rows)
}

// staleRows is the CodeConflict of an update of rows that changed only the
// ones in updated, or nil if it changed them all.
func staleRows(op string, rows []instRow, updated map[string]bool) error {
	if len(updated) == len(rows) {
		return nil
	}
	var stale []string
	for _, r := range rows {
		if !updated[r.in.ID] {
			stale = append(stale, fmt.Sprintf("%s@%d", r.in.ID, r.in.Rev))
		}
	}
	return engine.Errorf(engine.CodeConflict, op, "%d of %d sagas changed since they were read (or do not exist): %s",
		len(stale), len(rows), strings.Join(stale, ", "))
}

// updated finishes an update of rows that changed them all: it replaces
// the keys that changed and increments each instance's Rev.
func (t *tx) updated(ctx context.Context, op string, rows []instRow) error {
	var rekey []instRow
	for _, r := range rows {
		if old, ok := t.keys[r.in.ID]; !ok || !maps.Equal(old, r.in.Keys) {
			rekey = append(rekey, r)
		}
	}
	if len(rekey) > 0 {
		var err error
		if t.d().postgres {
			err = t.replaceKeysPostgres(ctx, rekey)
		} else {
			err = t.replaceKeysSQLite(ctx, rekey)
		}
		if err != nil {
			return t.s.wrap(op+": replace keys", err)
		}
	}
	for _, r := range rows {
		r.in.Rev++
		t.remember(r.in.ID, r.in.Keys)
	}
	return nil
}

// histRow is a history entry encoded for the database.
type histRow struct {
	e        *engine.HistoryEntry
	commands *string
}

// AppendHistory appends timeline entries, in order.
func (t *tx) AppendHistory(ctx context.Context, entries []engine.HistoryEntry) error {
	const op = opHistory
	if len(entries) == 0 {
		return nil
	}
	rows, err := encodeHistory(op, entries)
	if err != nil {
		return err
	}
	if t.d().postgres {
		err = t.historyPostgres(ctx, rows)
	} else {
		err = t.historySQLite(ctx, rows)
	}
	return t.s.wrap(op, err)
}

// encodeHistory checks and encodes history entries for the database.
func encodeHistory(op string, entries []engine.HistoryEntry) ([]histRow, error) {
	rows := make([]histRow, len(entries))
	for i := range entries {
		e := &entries[i]
		if e.SagaID == "" || e.Kind == "" {
			return nil, engine.Errorf(engine.CodeInvalid, op, "entry %d of %d: saga id and kind are required", i, len(entries))
		}
		rows[i].e = e
		if len(e.Commands) > 0 {
			b := appendCommandRefs(make([]byte, 0, 128*len(e.Commands)), e.Commands)
			s := unsafe.String(unsafe.SliceData(b), len(b))
			rows[i].commands = &s
		}
	}
	return rows, nil
}

// Enqueue adds records to the outbox, in order (delivery.Tables.Write).
func (t *tx) Enqueue(ctx context.Context, recs []engine.OutboxRecord) error {
	const op = opEnqueue
	if len(recs) == 0 {
		return nil
	}
	rows, err := outboxRows(op, recs)
	if err != nil {
		return err
	}
	return t.s.wrap(op, t.s.dt.Write(ctx, t.tx, rows))
}

// outboxRows checks records and turns them into the delivery core's rows.
func outboxRows(op string, recs []engine.OutboxRecord) ([]delivery.Row, error) {
	rows := make([]delivery.Row, len(recs))
	for i := range recs {
		m := &recs[i].Message
		if recs[i].Topic == "" {
			return nil, engine.Errorf(engine.CodeInvalid, op, "record %d of %d has no topic", i, len(recs))
		}
		if len(m.Payload) > 0 && !json.Valid(m.Payload) {
			return nil, engine.Errorf(engine.CodeInvalid, op, "record %d of %d: payload is not valid JSON", i, len(recs))
		}
		// The delivery core encodes the message into its batch buffer.
		rows[i] = delivery.Row{Topic: recs[i].Topic, Key: recs[i].Key, Message: m}
		if tp := recs[i].Traceparent; tp != "" {
			rows[i].Headers = map[string]string{envelope.HeaderTraceparent: tp}
		}
	}
	return rows, nil
}

// AddDeadLetters stores dead letters; one whose MessageID is already parked
// and not replayed is skipped. A zero CreatedAt is set to now.
func (t *tx) AddDeadLetters(ctx context.Context, dls []engine.DeadLetter) error {
	const op = "sqlstore: add dead letters"
	if len(dls) == 0 {
		return nil
	}
	now := t.s.now()
	for i := range dls {
		if dls[i].Topic == "" || dls[i].Code == "" {
			return engine.Errorf(engine.CodeInvalid, op, "dead letter %d of %d: topic and code are required", i, len(dls))
		}
	}
	var err error
	if t.d().postgres {
		err = t.deadLettersPostgres(ctx, dls, now)
	} else {
		err = t.deadLettersSQLite(ctx, dls, now)
	}
	return t.s.wrap(op, err)
}

// MarkReplayed records that actor replayed dead letter id at at. A dead
// letter that does not exist is CodeNotFound; one already replayed is
// CodeConflict.
func (t *tx) MarkReplayed(ctx context.Context, id int64, actor string, at time.Time) error {
	op := fmt.Sprintf("sqlstore: mark dead letter %d replayed", id)
	res, err := t.tx.ExecContext(ctx, t.d().q(`UPDATE dead_letters SET replayed_at = ?, replayed_by = ?
		WHERE id = ? AND replayed_at IS NULL`), t.d().t(at), actor, id)
	if err != nil {
		return t.s.wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return t.s.wrap(op, err)
	}
	if n == 1 {
		return nil
	}
	var exists int
	if err := t.tx.GetContext(ctx, &exists, t.d().q("SELECT count(*) FROM dead_letters WHERE id = ?"), id); err != nil {
		return t.s.wrap(op, err)
	}
	if exists == 0 {
		return engine.Errorf(engine.CodeNotFound, op, "no dead letter %d", id)
	}
	return engine.Errorf(engine.CodeConflict, op, "dead letter %d was already replayed", id)
}

// SentCommand looks for commandID among the commands of sagaID's timeline
// entries and returns the last reference to it.
func (t *tx) SentCommand(ctx context.Context, sagaID, commandID string) (engine.CommandRef, bool, error) {
	op := "sqlstore: find command " + commandID + " of saga " + sagaID
	var ref engine.CommandRef
	found := false
	if commandID == "" {
		return ref, false, nil
	}
	rows, err := t.tx.QueryContext(ctx, t.d().q(`SELECT commands FROM saga_history
		WHERE saga_id = ? AND commands IS NOT NULL ORDER BY seq`), sagaID)
	if err != nil {
		return ref, false, t.s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return ref, false, t.s.wrap(op, err)
		}
		if !strings.Contains(string(raw), commandID) {
			continue
		}
		var refs []engine.CommandRef
		if err := json.Unmarshal(raw, &refs); err != nil {
			return ref, false, t.s.wrap(op, fmt.Errorf("decode commands: %w", err))
		}
		for _, r := range refs {
			if r.ID == commandID {
				ref, found = r, true
			}
		}
	}
	if err := rows.Err(); err != nil {
		return ref, false, t.s.wrap(op, err)
	}
	return ref, found, nil
}

// appendCommandRefs appends refs as the JSON array json.Marshal writes.
func appendCommandRefs(dst []byte, refs []engine.CommandRef) []byte {
	dst = append(dst, '[')
	for i, r := range refs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"id":`...)
		dst = envelope.AppendJSONString(dst, r.ID)
		dst = append(dst, `,"name":`...)
		dst = envelope.AppendJSONString(dst, r.Name)
		dst = append(dst, `,"participant":`...)
		dst = envelope.AppendJSONString(dst, r.Participant)
		dst = append(dst, `,"attempt":`...)
		dst = strconv.AppendInt(dst, int64(r.Attempt), 10)
		if r.Branch != "" {
			dst = append(dst, `,"branch":`...)
			dst = envelope.AppendJSONString(dst, r.Branch)
		}
		dst = append(dst, '}')
	}
	return append(dst, ']')
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
