package sqlstore

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// Listing limits.
const (
	DefaultListLimit = 50  // SagaFilter.Limit when zero
	MaxListLimit     = 500 // larger limits are cut to this
)

func (d dialect) instanceCols() string {
	return "s.id, s.saga, s.saga_version, s.state, s.status, s.context, s.created_at, s.updated_at, " +
		"s.entered_at, s.rev, s.pending, s.attempts, s.timer_at, s.traceparent, s.undo, s.deferred, s.join_state, " + d.keysAgg
}

type scanner interface{ Scan(dest ...any) error }

func scanInstance(sc scanner) (*engine.Instance, error) {
	var (
		in                  engine.Instance
		status              string
		ctxDoc, pend, keys  []byte
		undo, deferred      []byte
		join                []byte
		created, upd, enter dbTime
		timer               dbTime
		trace               sql.NullString
	)
	if err := sc.Scan(&in.ID, &in.Saga, &in.SagaVersion, &in.State, &status, &ctxDoc, &created, &upd,
		&enter, &in.Rev, &pend, &in.Attempts, &timer, &trace, &undo, &deferred, &join, &keys); err != nil {
		return nil, err
	}
	in.Status = engine.Status(status)
	if len(ctxDoc) > 0 {
		in.Context = json.RawMessage(ctxDoc)
	}
	in.CreatedAt, in.UpdatedAt, in.EnteredAt = created.T, upd.T, enter.T
	in.TimerAt = timer.ptr()
	in.Traceparent = trace.String
	if len(pend) > 0 {
		var m engine.Message
		if err := envelope.UnmarshalMessage(pend, &m); err != nil {
			return nil, fmt.Errorf("saga %s: decode pending command: %w", in.ID, err)
		}
		in.Pending = &m
	}
	if len(undo) > 0 {
		if err := json.Unmarshal(undo, &in.Undo); err != nil {
			return nil, fmt.Errorf("saga %s: decode undo list: %w", in.ID, err)
		}
	}
	if len(deferred) > 0 {
		var m engine.Message
		if err := envelope.UnmarshalMessage(deferred, &m); err != nil {
			return nil, fmt.Errorf("saga %s: decode deferred command: %w", in.ID, err)
		}
		in.Deferred = &m
	}
	if len(join) > 0 {
		in.Join = &engine.Join{}
		if err := json.Unmarshal(join, in.Join); err != nil {
			return nil, fmt.Errorf("saga %s: decode parallel step: %w", in.ID, err)
		}
	}
	if len(keys) > 0 {
		var k map[string]string
		if err := json.Unmarshal(keys, &k); err != nil {
			return nil, fmt.Errorf("saga %s: decode keys: %w", in.ID, err)
		}
		if len(k) > 0 {
			in.Keys = k
		}
	}
	return &in, nil
}

// GetInstance returns one saga; *engine.Error CodeNotFound if there is none.
func (s *Store) GetInstance(ctx context.Context, id string) (engine.Instance, error) {
	op := "sqlstore: get saga " + id
	row := s.r.QueryRowxContext(ctx, s.d.q("SELECT "+s.d.instanceCols()+" FROM saga_instances s WHERE s.id = ?"), id)
	in, err := scanInstance(row)
	if errors.Is(err, sql.ErrNoRows) {
		return engine.Instance{}, engine.Errorf(engine.CodeNotFound, op, "no saga %s", id)
	}
	if err != nil {
		return engine.Instance{}, s.wrap(op, err)
	}
	return *in, nil
}

// History returns a saga's timeline in order.
func (s *Store) History(ctx context.Context, sagaID string) ([]engine.HistoryEntry, error) {
	op := "sqlstore: history of saga " + sagaID
	rows, err := s.r.QueryxContext(ctx, s.d.q(`SELECT seq, saga_id, at, kind, message_id, event, by_participant,
		from_state, to_state, commands, code, reason, actor FROM saga_history WHERE saga_id = ? ORDER BY seq`), sagaID)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()
	var out []engine.HistoryEntry
	for rows.Next() {
		var (
			h          engine.HistoryEntry
			at         dbTime
			kind, code string
			cmds       []byte
		)
		if err := rows.Scan(&h.Seq, &h.SagaID, &at, &kind, &h.MessageID, &h.Event, &h.By, &h.FromState,
			&h.ToState, &cmds, &code, &h.Reason, &h.Actor); err != nil {
			return nil, s.wrap(op, err)
		}
		h.At, h.Kind, h.Code = at.T, engine.EntryKind(kind), engine.Code(code)
		if len(cmds) > 0 {
			if err := json.Unmarshal(cmds, &h.Commands); err != nil {
				return nil, s.wrap(op, fmt.Errorf("entry %d: decode commands: %w", h.Seq, err))
			}
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// cursor is the position after the last saga of a page.
type cursor struct {
	CreatedAt int64  `json:"t"` // unix microseconds
	ID        string `json:"i"`
}

func encodeCursor(in engine.Instance) string {
	b, _ := json.Marshal(cursor{CreatedAt: in.CreatedAt.UnixMicro(), ID: in.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err == nil && c.ID == "" {
		err = errors.New("no id")
	}
	if err != nil {
		return cursor{}, fmt.Errorf("bad cursor %q: %w", s, err)
	}
	return c, nil
}

// ListInstances returns one page of sagas matching f, newest first (by
// creation time, then id). Limit defaults to DefaultListLimit and is cut to
// MaxListLimit.
func (s *Store) ListInstances(ctx context.Context, f engine.SagaFilter) (engine.SagaPage, error) {
	const op = "sqlstore: list sagas"
	limit := f.Limit
	switch {
	case limit < 0:
		return engine.SagaPage{}, engine.Errorf(engine.CodeInvalid, op, "limit %d is negative", limit)
	case limit == 0:
		limit = DefaultListLimit
	case limit > MaxListLimit:
		limit = MaxListLimit
	}
	if f.KeyValue != "" && f.KeyName == "" {
		return engine.SagaPage{}, engine.Errorf(engine.CodeInvalid, op, "key value %q without a key name", f.KeyValue)
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	if f.Saga != "" {
		add("s.saga = ?", f.Saga)
	}
	if f.Version < 0 {
		return engine.SagaPage{}, engine.Errorf(engine.CodeInvalid, op, "version %d is negative", f.Version)
	}
	if f.Version > 0 {
		add("s.saga_version = ?", f.Version)
	}
	if f.State != "" {
		add("s.state = ?", f.State)
	}
	if f.Status != "" {
		add("s.status = ?", string(f.Status))
	}
	if !f.From.IsZero() {
		add("s.created_at >= ?", s.d.t(f.From))
	}
	if !f.To.IsZero() {
		add("s.created_at < ?", s.d.t(f.To))
	}
	if f.KeyName != "" {
		if f.KeyValue != "" {
			add("EXISTS (SELECT 1 FROM saga_keys kf WHERE kf.saga_id = s.id AND kf.name = ? AND kf.value = ?)", f.KeyName, f.KeyValue)
		} else {
			add("EXISTS (SELECT 1 FROM saga_keys kf WHERE kf.saga_id = s.id AND kf.name = ?)", f.KeyName)
		}
	}
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return engine.SagaPage{}, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
		}
		add("(s.created_at, s.id) < (?, ?)", s.d.t(time.UnixMicro(c.CreatedAt)), c.ID)
	}
	q := "SELECT " + s.d.instanceCols() + " FROM saga_instances s"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY s.created_at DESC, s.id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.r.QueryxContext(ctx, s.d.q(q), args...)
	if err != nil {
		return engine.SagaPage{}, s.wrap(op, err)
	}
	defer rows.Close()
	page := engine.SagaPage{Sagas: []engine.Instance{}}
	for rows.Next() {
		in, err := scanInstance(rows)
		if err != nil {
			return engine.SagaPage{}, s.wrap(op, err)
		}
		page.Sagas = append(page.Sagas, *in)
	}
	if err := rows.Err(); err != nil {
		return engine.SagaPage{}, s.wrap(op, err)
	}
	if len(page.Sagas) > limit {
		page.Sagas = page.Sagas[:limit]
		page.Next = encodeCursor(page.Sagas[limit-1])
	}
	return page, nil
}

// CountByState counts instances per definition, version, state and status.
func (s *Store) CountByState(ctx context.Context) ([]engine.StateCount, error) {
	var out []engine.StateCount
	err := s.r.SelectContext(ctx, &out, `SELECT saga, saga_version AS sagaversion, state, status, count(*) AS count
		FROM saga_instances GROUP BY saga, saga_version, state, status ORDER BY saga, saga_version, state, status`)
	if err != nil {
		return nil, s.wrap("sqlstore: count sagas by state", err)
	}
	return out, nil
}

// DueTimers returns the ids of up to limit sagas whose TimerAt <= now,
// earliest first.
func (s *Store) DueTimers(ctx context.Context, now time.Time, limit int) ([]string, error) {
	const op = "sqlstore: due timers"
	if limit <= 0 {
		return nil, engine.Errorf(engine.CodeInvalid, op, "limit %d is not positive", limit)
	}
	var ids []string
	err := s.r.SelectContext(ctx, &ids, s.d.q(`SELECT id FROM saga_instances
		WHERE timer_at IS NOT NULL AND timer_at <= ? ORDER BY timer_at, id LIMIT ?`), s.d.t(now), limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	return ids, nil
}

const deadLetterCols = `id, message_id, saga_id, topic, kafka_partition, kafka_offset, raw, code, reason,
	created_at, replayed_at, replayed_by`

func scanDeadLetter(sc scanner) (engine.DeadLetter, error) {
	var (
		dl         engine.DeadLetter
		msgID      sql.NullString
		code       string
		created    dbTime
		replayedAt dbTime
	)
	if err := sc.Scan(&dl.ID, &msgID, &dl.SagaID, &dl.Topic, &dl.Partition, &dl.Offset, &dl.Raw, &code,
		&dl.Reason, &created, &replayedAt, &dl.ReplayedBy); err != nil {
		return engine.DeadLetter{}, err
	}
	dl.MessageID, dl.Code, dl.CreatedAt, dl.ReplayedAt = msgID.String, engine.Code(code), created.T, replayedAt.ptr()
	return dl, nil
}

// DeadLetters returns up to limit dead letters, newest first; replayed ones
// only if includeReplayed.
func (s *Store) DeadLetters(ctx context.Context, limit int, includeReplayed bool) ([]engine.DeadLetter, error) {
	const op = "sqlstore: list dead letters"
	if limit <= 0 {
		return nil, engine.Errorf(engine.CodeInvalid, op, "limit %d is not positive", limit)
	}
	q := "SELECT " + deadLetterCols + " FROM dead_letters"
	if !includeReplayed {
		q += " WHERE replayed_at IS NULL"
	}
	q += " ORDER BY id DESC LIMIT ?"
	rows, err := s.r.QueryxContext(ctx, s.d.q(q), limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	defer rows.Close()
	var out []engine.DeadLetter
	for rows.Next() {
		dl, err := scanDeadLetter(rows)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// GetDeadLetter returns one dead letter; *engine.Error CodeNotFound if there
// is none.
func (s *Store) GetDeadLetter(ctx context.Context, id int64) (engine.DeadLetter, error) {
	op := fmt.Sprintf("sqlstore: get dead letter %d", id)
	dl, err := scanDeadLetter(s.r.QueryRowxContext(ctx, s.d.q("SELECT "+deadLetterCols+" FROM dead_letters WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return engine.DeadLetter{}, engine.Errorf(engine.CodeNotFound, op, "no dead letter %d", id)
	}
	if err != nil {
		return engine.DeadLetter{}, s.wrap(op, err)
	}
	return dl, nil
}
