package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// StartSaga writes the starting event of a new saga instance into the
// outbox inside the caller's transaction, so it is published if and only if
// the caller's business change commits. It returns the new saga id. saga is
// the definition name (e.g. MANUAL_CREATE_ORDER), event its starting event
// (e.g. REGISTER), payload the initial saga context (a JSON object). The
// instance runs on the newest loaded version of the definition.
func (p *Participant) StartSaga(ctx context.Context, tx *sqlx.Tx, saga, event string, payload any) (string, error) {
	id := NewSagaID()
	if err := p.StartSagaWithID(ctx, tx, id, saga, event, payload); err != nil {
		return "", err
	}
	return id, nil
}

// NewSagaID returns a fresh saga instance id (a random UUID) for
// StartSagaWithID.
func NewSagaID() string { return uuid.NewString() }

// StartSagaWithID is StartSaga with the saga id chosen by the caller
// (NewSagaID), so that the business row written in the same transaction
// can carry it from its INSERT on, without a second statement. sagaID must
// be a UUID and must not have been used before.
func (p *Participant) StartSagaWithID(ctx context.Context, tx *sqlx.Tx, sagaID, saga, event string, payload any) error {
	if tx == nil {
		return fmt.Errorf("start saga %s: tx is nil", saga)
	}
	if _, err := uuid.Parse(sagaID); err != nil {
		return errs.Errorf(errs.CodeInvalid, "start saga", "saga id %q is not a UUID: %v", sagaID, err)
	}
	if !validName(saga) {
		return errs.Errorf(errs.CodeInvalid, "start saga", "saga name %q is not like MANUAL_CREATE_ORDER", saga)
	}
	if !validName(event) {
		return errs.Errorf(errs.CodeInvalid, "start saga", "event name %q is not like REGISTER", event)
	}
	body, err := marshalObject(event, payload)
	if err != nil {
		return errs.Errorf(errs.CodeInvalid, "start saga", "%s %s: %v", saga, event, err)
	}
	m := &envelope.Message{
		V:           envelope.Version,
		ID:          uuid.NewString(),
		SagaID:      sagaID,
		Saga:        saga,
		Kind:        envelope.KindEvent,
		Name:        event,
		Participant: p.cfg.Name,
		OccurredAt:  time.Now().UTC(),
		Payload:     body,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("start saga %s: encode %s: %w", saga, event, err)
	}
	if err := p.insertOutbox(ctx, tx, p.outRowFor(m, raw, nil)); err != nil {
		return fmt.Errorf("start saga %s: %w", saga, err)
	}
	p.log.Debug("saga start written to the outbox", "saga_id", m.SagaID, "saga", saga, "event", event, "message_id", m.ID)
	p.wake() // the caller commits soon; the relay also polls
	return nil
}

// PublishFunc publishes records and returns only when they are durable on
// the bus, like (*kafka.Producer).Publish.
type PublishFunc func(ctx context.Context, recs []kafka.Record) error

type outboxRow struct {
	Seq     int64  `db:"seq"`
	Topic   string `db:"topic"`
	Key     string `db:"msg_key"`
	Headers string `db:"headers"`
	Body    []byte `db:"body"`
}

// Flush publishes up to Config.RelayBatch outbox rows in order with publish
// and deletes them once published; it returns how many it published. Run
// calls it in a loop; call it yourself only when you relay by hand (tests,
// a custom transport). A failed publish leaves the rows for the next Flush
// (the bus may then see a message twice; consumers drop it by id).
//
// On PostgreSQL the rows are locked (FOR UPDATE SKIP LOCKED) while they are
// published, so several replicas relay disjoint rows.
func (p *Participant) Flush(ctx context.Context, publish PublishFunc) (int, error) {
	if p.dialect == dialectPostgres {
		return p.flushPostgres(ctx, publish)
	}
	return p.flushSQLite(ctx, publish)
}

func (p *Participant) flushPostgres(ctx context.Context, publish PublishFunc) (int, error) {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("relay outbox: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	var rows []outboxRow
	if err := p.sql.Select(ctx, tx, &rows, `SELECT seq, topic, msg_key, headers, body FROM sdk_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`, p.cfg.RelayBatch); err != nil {
		return 0, fmt.Errorf("relay outbox: read: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if err := p.publishRows(ctx, publish, rows); err != nil {
		return 0, err
	}
	seqs := make([]int64, len(rows))
	for i, r := range rows {
		seqs[i] = r.Seq
	}
	if _, err := p.sql.Exec(ctx, tx, `DELETE FROM sdk_outbox WHERE seq = ANY($1)`, pq.Array(seqs)); err != nil {
		return 0, fmt.Errorf("relay outbox: delete %d published rows: %w", len(rows), err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("relay outbox: commit deletion of %d published rows: %w", len(rows), err)
	}
	return len(rows), nil
}

// flushSQLite reads, publishes and deletes without holding a transaction
// across the publish: SQLite has one writer, and the reader is this process.
func (p *Participant) flushSQLite(ctx context.Context, publish PublishFunc) (int, error) {
	var rows []outboxRow
	st, err := p.sql.Stmt(ctx, nil, `SELECT seq, topic, msg_key, headers, body FROM sdk_outbox ORDER BY seq LIMIT ?`)
	if err != nil {
		return 0, fmt.Errorf("relay outbox: read: %w", err)
	}
	if err := st.SelectContext(ctx, &rows, p.cfg.RelayBatch); err != nil {
		return 0, fmt.Errorf("relay outbox: read: %w", err)
	}
	if len(rows) == 0 {
		return 0, nil
	}
	if err := p.publishRows(ctx, publish, rows); err != nil {
		return 0, err
	}
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("relay outbox: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	if err := deleteRows(ctx, tx, rows); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("relay outbox: commit deletion of %d published rows: %w", len(rows), err)
	}
	return len(rows), nil
}

func (p *Participant) publishRows(ctx context.Context, publish PublishFunc, rows []outboxRow) error {
	recs := make([]kafka.Record, len(rows))
	for i, r := range rows {
		h, err := decodeHeaders(r.Headers)
		if err != nil {
			return fmt.Errorf("relay outbox row %d: %w", r.Seq, err)
		}
		recs[i] = kafka.Record{Topic: r.Topic, Key: r.Key, Value: r.Body, Headers: h}
	}
	if err := publish(ctx, recs); err != nil {
		return fmt.Errorf("relay outbox: publish %d records: %w", len(recs), err)
	}
	return nil
}

// deleteRows deletes published rows by seq (not "seq <= max": on
// PostgreSQL a row with a smaller seq may commit after a bigger one; the
// SQLite relay keeps the same rule).
func deleteRows(ctx context.Context, tx *sqlx.Tx, rows []outboxRow) error {
	const chunk = 500
	for start := 0; start < len(rows); start += chunk {
		part := rows[start:min(start+chunk, len(rows))]
		seqs := make([]int64, len(part))
		for i, r := range part {
			seqs[i] = r.Seq
		}
		q, args, err := sqlx.In(`DELETE FROM sdk_outbox WHERE seq IN (?)`, seqs)
		if err != nil {
			return fmt.Errorf("relay outbox: build delete: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(q), args...); err != nil {
			return fmt.Errorf("relay outbox: delete %d published rows: %w", len(part), err)
		}
	}
	return nil
}

// relay publishes the outbox until stop closes, then flushes once more
// with ctx (bounded by the shutdown timeout).
func (p *Participant) relay(ctx context.Context, stop <-chan struct{}, publish PublishFunc) {
	tick := time.NewTicker(p.cfg.RelayInterval)
	defer tick.Stop()
	failures := 0
	for {
		n, err := p.Flush(ctx, publish)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			failures++
			p.log.Warn("outbox relay failed, will retry", "err", err, "failures", failures)
			if !sleep(stop, p.backoff(failures)) {
				p.finalFlush(ctx, publish)
				return
			}
			continue
		}
		failures = 0
		if n == p.cfg.RelayBatch {
			continue // more waiting
		}
		select {
		case <-stop:
			p.finalFlush(ctx, publish)
			return
		case <-p.kick:
		case <-tick.C:
		}
	}
}

func (p *Participant) finalFlush(ctx context.Context, publish PublishFunc) {
	for ctx.Err() == nil {
		n, err := p.Flush(ctx, publish)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				p.log.Warn("outbox relay at shutdown failed; the rest is published on the next start", "err", err)
			}
			return
		}
		if n < p.cfg.RelayBatch {
			return
		}
	}
}
