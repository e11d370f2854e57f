package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/trace"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
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

// NewSagaID returns a fresh saga instance id (envelope.NewID: a UUID
// ordered by time) for
// StartSagaWithID.
func NewSagaID() string { return envelope.NewID() }

// StartSagaWithID is StartSaga with the saga id chosen by the caller
// (NewSagaID), so that the business row written in the same transaction
// can carry it from its INSERT on, without a second statement. sagaID must
// be a UUID and must not have been used before.
func (p *Participant) StartSagaWithID(ctx context.Context, tx *sqlx.Tx, sagaID, saga, event string, payload any) error {
	if tx == nil {
		return fmt.Errorf("start saga %s: tx is nil", saga)
	}
	m, err := p.newEvent("start saga", "REGISTER", sagaID, saga, event, payload)
	if err != nil {
		return err
	}
	if err := p.insertOutbox(ctx, tx, p.outRowFor(m, encodeMessage(m), startHeaders(ctx))); err != nil {
		return fmt.Errorf("start saga %s: %w", saga, err)
	}
	p.log.Debug("saga start written to the outbox", "saga_id", m.SagaID, "saga", saga, "event", event, "message_id", m.ID)
	return nil
}

// SagaStart is one saga for StartSagas.
type SagaStart struct {
	// SagaID is the new instance's id (NewSagaID): a UUID not used before.
	SagaID string
	// Saga is the definition name, Event its starting event.
	Saga, Event string
	// Payload is the initial saga context (a JSON object).
	Payload any
	// Span is the span the saga's trace continues (e.g. the HTTP request
	// that created the business row); zero: ctx's.
	Span trace.SpanContext
}

// StartSagas is StartSagaWithID for several sagas at once, in one outbox
// statement (a group commit of business rows writes all their saga starts
// together). Every start is checked before anything is written: one
// invalid start fails them all, writing nothing.
func (p *Participant) StartSagas(ctx context.Context, tx *sqlx.Tx, starts []SagaStart) error {
	if tx == nil {
		return errors.New("start sagas: tx is nil")
	}
	if len(starts) == 0 {
		return nil
	}
	rows := make([]delivery.Row, len(starts))
	for i, st := range starts {
		m, err := p.newEvent("start saga", "REGISTER", st.SagaID, st.Saga, st.Event, st.Payload)
		if err != nil {
			return err
		}
		sctx := ctx
		if st.Span.IsValid() {
			sctx = trace.ContextWithSpanContext(ctx, st.Span)
		}
		rows[i] = p.outRowFor(m, encodeMessage(m), startHeaders(sctx))
	}
	if err := p.dt.Write(ctx, tx, rows); err != nil {
		return fmt.Errorf("start %d sagas: write to the outbox: %w", len(starts), err)
	}
	p.log.Debug("saga starts written to the outbox", "sagas", len(starts))
	return nil
}

// newEvent checks the names and the payload of an event this participant
// writes on its own (a saga start, EmitEvent) and builds its envelope. op
// names the operation in errors (invalid input, errs.CodeInvalid) and
// example is an event name shown as the expected form.
func (p *Participant) newEvent(op, example, sagaID, saga, event string, payload any) (*envelope.Message, error) {
	if _, err := uuid.Parse(sagaID); err != nil {
		return nil, errs.Errorf(errs.CodeInvalid, op, "saga id %q is not a UUID: %v", sagaID, err)
	}
	if !validName(saga) {
		return nil, errs.Errorf(errs.CodeInvalid, op, "saga name %q is not like MANUAL_CREATE_ORDER", saga)
	}
	if !validName(event) {
		return nil, errs.Errorf(errs.CodeInvalid, op, "event name %q is not like %s", event, example)
	}
	body, err := marshalObject(event, payload)
	if err != nil {
		return nil, errs.Errorf(errs.CodeInvalid, op, "%s %s: %v", saga, event, err)
	}
	return &envelope.Message{
		V:           envelope.Version,
		ID:          uuid.NewString(),
		SagaID:      sagaID,
		Saga:        saga,
		Kind:        envelope.KindEvent,
		Name:        event,
		Participant: p.cfg.Name,
		OccurredAt:  time.Now().UTC(),
		Payload:     body,
	}, nil
}

// Record is one record on the bus (envelope.Record): an encoded message
// with its topic, key and headers. Dispatch takes one; Flush hands them to
// a PublishFunc.
type Record = envelope.Record

// PublishFunc publishes records and returns only when they are durable on
// the bus (Run uses an idempotent Kafka producer with acks=all).
type PublishFunc func(ctx context.Context, recs []Record) error

// Flush publishes up to Config.RelayBatch outbox rows in order with publish
// and deletes them once published; it returns how many it published. Run
// calls it in a loop; call it yourself only when you relay by hand (tests,
// a custom transport). A failing publish is retried for most of
// Config.RelayLease, then the rows are given back for the next Flush (the
// bus may then see a message twice; consumers drop it by id).
//
// Several replicas relay disjoint rows: on PostgreSQL the rows are locked
// (FOR UPDATE SKIP LOCKED) while they are published, in a transaction that
// PostgreSQL ends if the relay hangs longer than RelayLease; on SQLite they
// are leased (RelayLease) and published outside any transaction. It is the
// delivery core saga-machine's relay uses too (internal/delivery).
func (p *Participant) Flush(ctx context.Context, publish PublishFunc) (int, error) {
	start := time.Now()
	n, err := p.dt.Publish(ctx, p.owner, p.cfg.RelayBatch, p.cfg.RelayLease, func(ctx context.Context, rows []delivery.Row) error {
		recs := make([]Record, len(rows))
		for i, r := range rows {
			recs[i] = r.Record()
		}
		return relay.Within(ctx, p.cfg.RelayLease, p.log, fmt.Sprintf("%d events", len(recs)),
			func(ctx context.Context) error { return publish(ctx, recs) })
	})
	if err != nil {
		return 0, fmt.Errorf("relay outbox: %w", err)
	}
	p.relayStats.add(n, time.Since(start))
	return n, nil
}
