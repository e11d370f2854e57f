package sdk

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// EmitEvent writes an event of this participant for the running saga
// sagaID (of definition saga) into the outbox inside the caller's
// transaction, so it is published if and only if the caller's business
// change commits: for what the participant learns by itself rather than
// in answer to a command, e.g. a client's request to cancel (deals'
// CANCEL_REQUESTED). The event carries no causation id: it answers no
// command. payload (a JSON object, or nil) is merged into the saga's
// context as any event's. saga-machine applies it if the saga's state
// allows it from this participant, and dead-letters it otherwise.
func (p *Participant) EmitEvent(ctx context.Context, tx *sqlx.Tx, sagaID, saga, event string, payload any) error {
	if tx == nil {
		return fmt.Errorf("emit %s: tx is nil", event)
	}
	m, err := p.newEvent("emit event", "CANCEL_REQUESTED", sagaID, saga, event, payload)
	if err != nil {
		return err
	}
	if err := p.insertOutbox(ctx, tx, p.outRowFor(m, encodeMessage(m), startHeaders(ctx))); err != nil {
		return fmt.Errorf("emit %s to saga %s: %w", event, sagaID, err)
	}
	p.log.Debug("event written to the outbox", "saga_id", m.SagaID, "saga", saga, "event", event, "message_id", m.ID)
	return nil
}
