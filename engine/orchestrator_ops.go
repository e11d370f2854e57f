package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// StartRequest asks to start a saga, as the HTTP API does for a caller that
// is not on the bus.
type StartRequest struct {
	// Saga is the definition name, e.g. MANUAL_CREATE_ORDER. Required.
	Saga string
	// Version pins the definition version; 0 means the newest loaded.
	Version int
	// SagaID is the new saga's id; empty means a new UUID (or, with an
	// IdempotencyKey, one derived from it).
	SagaID string
	// IdempotencyKey makes retries safe: the same key (for the same saga
	// name) always gives the same saga, created once.
	IdempotencyKey string
	// Event is the starting event; empty means the definition's first one.
	Event string
	// By is the participant the starting event is attributed to; empty
	// means the one the definition expects.
	By string
	// Payload is the starting event's payload, a JSON object (or empty).
	Payload json.RawMessage
	// Traceparent is the caller's W3C trace context (e.g. the HTTP
	// request's traceparent header); empty or invalid starts a new trace.
	Traceparent string
}

// Start applies a starting event through the same path as consumed events,
// in its own transaction, and returns the saga and whether this call created
// it (false when the IdempotencyKey was seen before). A refused event is an
// *Error with the model's code; it is not dead-lettered.
func (o *Orchestrator) Start(ctx context.Context, req StartRequest) (Instance, bool, error) {
	const op = "start saga"
	if req.Saga == "" {
		return Instance{}, false, Errorf(CodeInvalid, op, "saga name is empty")
	}
	model, err := o.cat.Get(req.Saga, req.Version)
	if err != nil {
		return Instance{}, false, err
	}
	event := req.Event
	if event == "" {
		event = model.StartEvents()[0]
	}
	by := req.By
	if by == "" {
		for _, a := range model.Allowed("") {
			if a.Event == event {
				by = a.By
				break
			}
		}
	}
	if err := checkObject(req.Payload); err != nil {
		return Instance{}, false, Errorf(CodeInvalid, op, "payload %v", err)
	}
	if by == definition.Engine {
		return Instance{}, false, reservedParticipant(&Message{Name: event})
	}
	msgID, sagaID := uuid.NewString(), req.SagaID
	if req.IdempotencyKey != "" {
		msgID = derivedID("start", model.Name(), req.IdempotencyKey)
		if sagaID == "" {
			sagaID = derivedID("saga", model.Name(), req.IdempotencyKey)
		}
	}
	if sagaID == "" {
		sagaID = uuid.NewString()
	}
	trace := traceOf(req.Traceparent)
	var inst Instance
	var created bool
	var b *batch
	err = o.inTx(ctx, func(ctx context.Context, tx Tx) error {
		now := o.cfg.Clock().UTC()
		b, created = newBatch(now), false
		in := inbound{kind: EntryEvent, inboxID: msgID, trace: trace, msg: Message{
			V: EnvelopeVersion, ID: msgID, SagaID: sagaID, Saga: model.Name(), SagaVersion: model.Version(),
			Kind: KindEvent, Name: event, Participant: by, OccurredAt: now, Payload: req.Payload,
		}}
		fresh, err := tx.Claim(ctx, []string{msgID})
		if err != nil {
			return fmt.Errorf("claim message id: %w", err)
		}
		loaded, err := tx.Load(ctx, []string{sagaID})
		if err != nil {
			return fmt.Errorf("load saga %s: %w", sagaID, err)
		}
		if !fresh[msgID] {
			if got := loaded[sagaID]; got != nil {
				inst = *got
				return nil
			}
			return permanent{Errorf(CodeConflict, op, "idempotency key %q was used for another saga", req.IdempotencyKey)}
		}
		if loaded[sagaID] != nil {
			return permanent{Errorf(CodeConflict, op, "saga %s already exists", sagaID)}
		}
		if err := o.apply(b, &in); err != nil {
			return permanent{err}
		}
		if err := b.write(ctx, tx); err != nil {
			return err
		}
		inst, created = *b.sagas[sagaID].inst, true
		return nil
	})
	if err != nil {
		return Instance{}, false, fmt.Errorf("%s %s: %w", op, req.Saga, err)
	}
	if created {
		b.committed()
		o.Wake()
	}
	return inst, created, nil
}

// operator runs an operator action on one saga in a transaction: fn changes
// w (and b) and returns a refusal, if any.
func (o *Orchestrator) operator(ctx context.Context, op, sagaID, actor string, fn func(b *batch, w *sagaWork) error) (Instance, error) {
	if strings.TrimSpace(actor) == "" {
		return Instance{}, Errorf(CodeInvalid, op, "actor is empty: operator actions must name who acted")
	}
	var inst Instance
	var b *batch
	err := o.inTx(ctx, func(ctx context.Context, tx Tx) error {
		b = newBatch(o.cfg.Clock().UTC())
		loaded, err := tx.Load(ctx, []string{sagaID})
		if err != nil {
			return fmt.Errorf("load saga %s: %w", sagaID, err)
		}
		if loaded[sagaID] == nil {
			return permanent{Errorf(CodeNotFound, op, "saga %s does not exist", sagaID)}
		}
		b.add(loaded)
		w := b.sagas[sagaID]
		if w.model, err = o.cat.Get(w.inst.Saga, w.inst.SagaVersion); err != nil {
			return permanent{err}
		}
		if err := fn(b, w); err != nil {
			return permanent{err}
		}
		w.changed = true
		w.inst.UpdatedAt = b.now
		if err := b.write(ctx, tx); err != nil {
			return err
		}
		inst = *w.inst
		return nil
	})
	if err != nil {
		return Instance{}, fmt.Errorf("%s %s: %w", op, sagaID, err)
	}
	b.committed()
	o.Wake()
	return inst, nil
}

// Resend sends the saga's pending command again (same message id, next
// attempt number) and records the operator's action in its timeline.
func (o *Orchestrator) Resend(ctx context.Context, sagaID, actor, reason string) (Instance, error) {
	const op = "re-send pending command of saga"
	return o.operator(ctx, op, sagaID, actor, func(b *batch, w *sagaWork) error {
		inst := w.inst
		if inst.Pending == nil {
			return Errorf(CodeConflict, op, "saga %s in state %s has no pending command", inst.ID, inst.State)
		}
		cmd := o.resend(b, w)
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: "RESEND", FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt}},
			Actor:    actor, Reason: reason,
		})
		id := inst.ID
		b.after = append(b.after, func() {
			o.log.Info("operator re-sent command", "saga_id", id, "command", cmd.Name, "attempt", cmd.Attempt, "actor", actor, "reason", reason)
		})
		return nil
	})
}

// resend enqueues w's pending command again with the next attempt number.
// The timer is left alone (the caller re-arms it if needed).
func (o *Orchestrator) resend(b *batch, w *sagaWork) Message {
	inst := w.inst
	inst.Attempts++
	inst.Pending.Attempt = inst.Attempts
	inst.Pending.OccurredAt = b.now
	inst.Traceparent = traceOf(inst.Traceparent)
	cmd := *inst.Pending
	cmd.Payload = inst.Context
	b.outbox = append(b.outbox, OutboxRecord{Topic: w.model.Topic(cmd.Participant), Key: inst.ID, Message: cmd,
		Traceparent: inst.Traceparent})
	return cmd
}

// Abort moves a running saga into the failed state toState ("" = the
// definition's first failed state), clears its pending command and timer,
// and records the operator's action in its timeline.
func (o *Orchestrator) Abort(ctx context.Context, sagaID, toState, actor, reason string) (Instance, error) {
	const op = "abort saga"
	return o.operator(ctx, op, sagaID, actor, func(b *batch, w *sagaWork) error {
		inst, m := w.inst, w.model
		if toState == "" {
			failed := m.FailedStates()
			if len(failed) == 0 {
				return Errorf(CodeInvalid, op, "%s has no failed state to abort into", m)
			}
			toState = failed[0]
		}
		if !m.IsFailed(toState) {
			return Errorf(CodeInvalid, op, "%s is not a failed state of %s (failed states: %s)", toState, m, strings.Join(m.FailedStates(), ", "))
		}
		if m.IsTerminal(inst.State) {
			return Errorf(CodeFinished, op, "saga %s is already finished in %s", inst.ID, inst.State)
		}
		from := inst.State
		inst.State, inst.Status, inst.EnteredAt = toState, StatusFailed, b.now
		inst.Pending, inst.Attempts, inst.TimerAt = nil, 0, nil
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: "ABORT", FromState: from, ToState: toState,
			Actor: actor, Reason: reason,
		})
		id, saga, version := inst.ID, inst.Saga, inst.SagaVersion
		b.after = append(b.after, func() {
			o.obs.SagaFinished(saga, version, toState, StatusFailed)
			o.log.Info("operator aborted saga", "saga_id", id, "saga", saga, "from", from, "to", toState, "actor", actor, "reason", reason)
		})
		return nil
	})
}

// Replay processes a dead-lettered event again, as if it had just arrived,
// and marks the dead letter replayed. If the event is still refused, Replay
// returns the refusal (an *Error with its code) and changes nothing.
func (o *Orchestrator) Replay(ctx context.Context, deadLetterID int64, actor string) error {
	op := fmt.Sprintf("replay dead letter %d", deadLetterID)
	if strings.TrimSpace(actor) == "" {
		return Errorf(CodeInvalid, op, "actor is empty: operator actions must name who acted")
	}
	dl, err := o.st.GetDeadLetter(ctx, deadLetterID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if dl.ReplayedAt != nil {
		return Errorf(CodeConflict, op, "it was already replayed by %s at %s", dl.ReplayedBy, dl.ReplayedAt.Format("2006-01-02T15:04:05Z07:00"))
	}
	in := decodeRecord(Record{Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset, Value: dl.Raw})
	if in.bad != nil {
		return &Error{Code: CodeInvalid, Op: op, Message: "the message still cannot be decoded", Err: in.bad}
	}
	if in.msg.Participant == definition.Engine {
		// Only an event the engine raised itself may name it.
		if dl.Topic != EngineTopic {
			return &Error{Code: CodeWrongParticipant, Op: op, Message: "the event came from topic " + dl.Topic, Err: reservedParticipant(&in.msg)}
		}
		in.kind = EntryTimer
	}
	var b *batch
	err = o.inTx(ctx, func(ctx context.Context, tx Tx) error {
		b = newBatch(o.cfg.Clock().UTC())
		if err := tx.MarkReplayed(ctx, deadLetterID, actor, b.now); err != nil {
			return fmt.Errorf("mark replayed: %w", err)
		}
		if err := tx.Unclaim(ctx, in.msg.ID); err != nil {
			return fmt.Errorf("unclaim message %s: %w", in.msg.ID, err)
		}
		if _, err := tx.Claim(ctx, []string{in.msg.ID}); err != nil {
			return fmt.Errorf("claim message %s: %w", in.msg.ID, err)
		}
		loaded, err := tx.Load(ctx, []string{in.msg.SagaID})
		if err != nil {
			return fmt.Errorf("load saga %s: %w", in.msg.SagaID, err)
		}
		b.add(loaded)
		if inst := loaded[in.msg.SagaID]; inst != nil && inst.Traceparent != "" {
			in.trace = traceOf(inst.Traceparent) // the dead letter kept no headers: stay in the saga's trace
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: in.msg.SagaID, At: b.now, Kind: EntryOperator, Event: "REPLAY", MessageID: in.msg.ID,
			Actor: actor, Reason: fmt.Sprintf("replayed dead letter %d (%s)", deadLetterID, in.msg.Name),
		})
		if err := o.apply(b, &in); err != nil {
			return permanent{&Error{Code: ErrorCode(err), Op: op, Message: "the event is still refused", Err: err}}
		}
		return b.write(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	b.committed()
	o.log.Info("operator replayed dead letter", "saga_id", in.msg.SagaID, "dead_letter", deadLetterID, "event", in.msg.Name, "actor", actor)
	o.Wake()
	return nil
}
