package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"

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
	// IdempotencyKey makes retries safe: the same key from the same caller
	// for the same saga name always gives the same saga, created once; the
	// same key with a different request (saga version, event or payload) is
	// refused with CodeKeyReused. Keys of different callers never meet.
	IdempotencyKey string
	// Event is the starting event; empty means the definition's first one
	// (for a Caller: the one starting transition open to the API).
	Event string
	// By is the participant the starting event is attributed to; empty
	// means the one the definition expects. Ignored when Caller is set: an
	// API caller speaks as definition.API, never as a participant.
	By string
	// Caller, when set, makes this an API start on behalf of a person or
	// client: only a starting transition `by: api` may fire, only for a
	// caller holding one of its roles (else CodeForbidden), the event is
	// attributed to definition.API and the caller's Subject is the Actor of
	// the timeline entry. nil means a trusted in-process start.
	Caller *Caller
	// Payload is the starting event's payload, a JSON object (or empty).
	Payload json.RawMessage
	// Traceparent is the caller's W3C trace context (e.g. the HTTP
	// request's traceparent header); empty or invalid starts a new trace.
	Traceparent string
}

// Caller is who asks for a start over the API.
type Caller struct {
	// Subject names the caller (the access token's subject). Required.
	Subject string
	// Roles are the caller's roles; a start `by: api` needs one of its
	// transition's roles.
	Roles []string
	// AllRoles grants every role: the API runs without authentication
	// (tests and the explicit dev mode only).
	AllRoles bool
}

// hasAny reports whether c holds one of roles.
func (c *Caller) hasAny(roles []string) bool {
	if c.AllRoles {
		return true
	}
	for _, r := range roles {
		if slices.Contains(c.Roles, r) {
			return true
		}
	}
	return false
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
	if err := checkObject(req.Payload); err != nil {
		return Instance{}, false, Errorf(CodeInvalid, op, "payload %v", err)
	}
	event, by, caller := req.Event, req.By, ""
	if req.Caller != nil {
		if event, err = apiStart(model, req.Caller, req.Event); err != nil {
			return Instance{}, false, err
		}
		by, caller = definition.API, req.Caller.Subject
	} else {
		if event == "" {
			event = model.StartEvents()[0]
		}
		if by == "" {
			for _, a := range model.Allowed("") {
				if a.Event == event {
					by = a.By
					break
				}
			}
		}
	}
	if by == definition.Engine {
		return Instance{}, false, reservedParticipant(&Message{Name: event})
	}
	msgID, sagaID := envelope.NewID(), req.SagaID
	var idem *IdempotencyKey
	if req.IdempotencyKey != "" {
		// The caller is quoted: a subject cannot contain the NUL that
		// separates the parts, so no two (caller, saga, key) meet.
		scope := []string{strconv.Quote(caller), model.Name(), req.IdempotencyKey}
		msgID = derivedID(append([]string{"start"}, scope...)...)
		if sagaID == "" {
			sagaID = derivedID(append([]string{"saga"}, scope...)...)
		}
		hash, err := startHash(model.Name(), req)
		if err != nil {
			return Instance{}, false, err
		}
		idem = &IdempotencyKey{Caller: caller, Saga: model.Name(), Key: req.IdempotencyKey, RequestHash: hash, SagaID: sagaID}
	}
	if sagaID == "" {
		sagaID = envelope.NewID()
	}
	trace := traceOf(req.Traceparent)
	var inst Instance
	var created bool
	var b *batch
	err = o.inTx(ctx, func(ctx context.Context, tx Tx) error {
		now := o.cfg.Clock().UTC()
		b, created = newBatch(now), false
		if idem != nil {
			k := *idem
			k.CreatedAt = now
			stored, fresh, err := tx.ClaimIdempotencyKey(ctx, k)
			if err != nil {
				return fmt.Errorf("claim idempotency key: %w", err)
			}
			if !fresh {
				return o.sameStart(ctx, tx, stored, k, &inst)
			}
		}
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
			if got := loaded[sagaID]; got != nil && idem == nil {
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
		if caller != "" {
			// The person (or client) who fired the start is its actor.
			for i := range b.entries {
				if b.entries[i].MessageID == msgID {
					b.entries[i].Actor = caller
				}
			}
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

// sameStart answers a start whose idempotency key was already stored: the
// saga it started if the request is the same, else CodeKeyReused.
func (o *Orchestrator) sameStart(ctx context.Context, tx Tx, stored, k IdempotencyKey, inst *Instance) error {
	const op = "start saga"
	if stored.RequestHash != k.RequestHash {
		return permanent{Errorf(CodeKeyReused, op,
			"Idempotency-Key %q was used at %s for a different request (another version, event or payload); send a new key for a new saga, or the same request to get saga %s again",
			k.Key, stored.CreatedAt.UTC().Format(time.RFC3339), stored.SagaID)}
	}
	loaded, err := tx.Load(ctx, []string{stored.SagaID})
	if err != nil {
		return fmt.Errorf("load saga %s: %w", stored.SagaID, err)
	}
	got := loaded[stored.SagaID]
	if got == nil {
		return permanent{Errorf(CodeConflict, op, "Idempotency-Key %q started saga %s, which is no longer stored", k.Key, stored.SagaID)}
	}
	*inst = *got
	return nil
}

// apiStart picks and checks the starting event of an API start: it must be
// a starting transition `by: api` of m and c must hold one of its roles.
// An empty event means m's one starting transition open to the API.
func apiStart(m *Model, c *Caller, event string) (string, error) {
	const op = "start saga over the API"
	if strings.TrimSpace(c.Subject) == "" {
		return "", Errorf(CodeInvalid, op, "the caller has no subject: an API start must name who asked")
	}
	if event == "" {
		var open []string
		for _, ev := range m.StartEvents() {
			if _, ok := m.StartRoles(ev); ok {
				open = append(open, ev)
			}
		}
		switch len(open) {
		case 0:
			return "", Errorf(CodeForbidden, op, "%s opens no start to the HTTP API: %s", m, startersText(m))
		case 1:
			event = open[0]
		default:
			return "", Errorf(CodeInvalid, op, "%s has several starts open to the API (%s): name one in \"event\"", m, strings.Join(open, ", "))
		}
	}
	roles, ok := m.StartRoles(event)
	if !ok {
		for _, a := range m.Allowed("") {
			if a.Event == event {
				return "", Errorf(CodeForbidden, op,
					"%s is not open to the HTTP API: %s starts %s only when participant %s sends it on the bus (a starting transition `by: %s`); only starting transitions `by: api` may be fired over HTTP",
					event, event, m, a.By, a.By)
			}
		}
		if m.HasEvent(event) {
			return "", Errorf(CodeForbidden, op, "%s does not start %s: over the HTTP API a caller may only start a saga, never move one", event, m)
		}
		return "", Errorf(CodeUnknownEvent, op, "%s has no event %s", m, event)
	}
	if !c.hasAny(roles) {
		have := "no roles"
		if len(c.Roles) > 0 {
			have = "the roles " + strings.Join(c.Roles, ", ")
		}
		return "", Errorf(CodeForbidden, op, "starting %s with %s needs one of the roles %s; %q has %s",
			m, event, strings.Join(roles, ", "), c.Subject, have)
	}
	return event, nil
}

// startersText says who starts m's sagas and how, for a refusal.
func startersText(m *Model) string {
	var parts []string
	for _, a := range m.Allowed("") {
		parts = append(parts, fmt.Sprintf("%s is sent on the bus by participant %s", a.Event, a.By))
	}
	if len(parts) == 0 {
		return "it has no starting transition"
	}
	return strings.Join(parts, "; ") + " (only starting transitions `by: api` may be fired over HTTP)"
}

// startHash is the hex SHA-256 of the canonical form of a start request:
// the saga name, the requested version and event, and the payload with its
// object keys sorted and insignificant whitespace removed, so that a retry
// that re-encodes the same JSON is the same request.
func startHash(saga string, req StartRequest) (string, error) {
	payload := []byte{}
	if t := bytes.TrimSpace(req.Payload); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(t))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", Errorf(CodeInvalid, "start saga", "payload is not valid JSON: %v", err)
		}
		var err error
		if payload, err = json.Marshal(v); err != nil {
			return "", fmt.Errorf("start saga: canonical payload: %w", err)
		}
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte("saga-machine start v1"), []byte(saga), []byte(strconv.Itoa(req.Version)), []byte(req.Event), payload} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
	if cmd.Payload == nil { // a command built by a payload mapping keeps its payload
		cmd.Payload = inst.Context
	}
	b.outbox = append(b.outbox, OutboxRecord{Topic: w.model.Topic(cmd.Participant), Key: inst.ID, Message: cmd,
		Traceparent: inst.Traceparent})
	return cmd
}

// Abort ends a running saga unsuccessfully and records the operator's
// action in its timeline. If its definition handles the engine's ABORT
// event in the saga's state (on: ABORT, by: engine), the abort takes that
// transition as the engine takes a timeout's: into its failed state, with
// its send (telling the client, say), held back until the compensations
// are done; toState must then be "" or that transition's state. Otherwise
// the saga moves into the failed state toState ("" = the definition's
// first failed state) and sends nothing. Either way {"abort": {"at": now}}
// joins its context (abortPayload), its pending command and timer are
// cleared, and if it has effects to undo it compensates them as a saga
// failing by its definition does (status compensating, then failed).
func (o *Orchestrator) Abort(ctx context.Context, sagaID, toState, actor, reason string) (Instance, error) {
	const op = "abort saga"
	return o.operator(ctx, op, sagaID, actor, func(b *batch, w *sagaWork) error {
		inst, m := w.inst, w.model
		if toState != "" && !m.IsFailed(toState) {
			return Errorf(CodeInvalid, op, "%s is not a failed state of %s (failed states: %s)", toState, m, strings.Join(m.FailedStates(), ", "))
		}
		if m.IsTerminal(inst.State) {
			return Errorf(CodeFinished, op, "saga %s is already finished in %s", inst.ID, inst.State)
		}
		// The abort is the cause of what it sends and of the compensations
		// it starts.
		cause := derivedID("abort", inst.ID, strconv.FormatInt(inst.Rev, 10))
		payload := abortPayload(b.now)
		if m.accepts(inst.State, definition.Abort) {
			step, err := m.ApplyWith(inst.State, definition.Abort, definition.Engine, Data{SagaID: inst.ID, Payload: payload, Context: inst.Context})
			if err == nil {
				return o.abortByDefinition(b, w, step, toState, cause, actor, reason, payload)
			}
			// The transition cannot be taken on this saga (its condition
			// cannot be evaluated): an operator must still be able to stop
			// it, so the abort goes on without it, and the timeline says so.
			reason += "; the definition's ABORT transition could not be taken (" + err.Error() + "): aborted without it, nothing sent"
		}
		merged, err := w.merged(payload)
		if err != nil {
			return err
		}
		inst.Context = merged
		if toState == "" {
			failed := m.FailedStates()
			if len(failed) == 0 {
				return Errorf(CodeInvalid, op, "%s has no failed state to abort into", m)
			}
			toState = failed[0]
		}
		from := inst.State
		inst.State, inst.Status, inst.EnteredAt = toState, StatusFailed, b.now
		inst.Pending, inst.Attempts, inst.TimerAt = nil, 0, nil
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: definition.Abort, MessageID: cause, FromState: from, ToState: toState,
			Actor: actor, Reason: reason,
		})
		// An abort leaves no effect behind: what the saga did, or may
		// have done, is compensated as when it fails by its definition.
		if err := o.compensateNext(b, w, cause); err != nil {
			return err
		}
		id, saga, version, status := inst.ID, inst.Saga, inst.SagaVersion, inst.Status
		b.after = append(b.after, func() {
			o.obs.SagaFinished(saga, version, toState, StatusFailed)
			o.log.Info("operator aborted saga", "saga_id", id, "saga", saga, "from", from, "to", toState, "actor", actor, "reason", reason, "status", string(status))
		})
		return nil
	})
}

// abortPayload is the payload of the engine's ABORT event, which joins the
// saga's context (definition.Abort): {"abort": {"at": now}}. The
// compensations and the transition's send see it, so that a participant
// can tell an operator's abort from a failure (deals words the reason it
// gives the client so). The operator's name and reason stay in the
// timeline: they are not for the participants.
func abortPayload(now time.Time) json.RawMessage {
	return json.RawMessage(`{"abort":{"at":"` + now.UTC().Format(time.RFC3339Nano) + `"}}`)
}

// abortByDefinition is Abort through step, the transition of w's
// definition on the engine's ABORT event from w's state: the event, with
// message id cause and payload, goes through enter as a timeout's does
// (its payload joins the context, held-back send, compensations,
// history), and its history entry names the operator.
func (o *Orchestrator) abortByDefinition(b *batch, w *sagaWork, step Step, toState, cause, actor, reason string, payload json.RawMessage) error {
	const op = "abort saga"
	inst := w.inst
	if toState != "" && toState != step.To {
		return Errorf(CodeInvalid, op, "%s aborts saga %s from %s into %s (its transition on: %s, by: %s): leave the state out, or ask for %s",
			w.model, inst.ID, inst.State, step.To, definition.Abort, definition.Engine, step.To)
	}
	in := inbound{kind: EntryOperator, trace: traceOf(inst.Traceparent), msg: Message{
		V: EnvelopeVersion, ID: cause,
		SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion, Kind: KindEvent, Name: definition.Abort,
		Participant: definition.Engine, OccurredAt: b.now, Payload: payload,
	}}
	in.inboxID = cause
	from, first := inst.State, len(b.entries)
	if err := o.enter(b, w, &in, step); err != nil {
		return err
	}
	// The transition's entry (compensations may follow it) is the
	// operator's, with her reason, as on the abort without a transition.
	for i := first; i < len(b.entries); i++ {
		if e := &b.entries[i]; e.Kind == EntryOperator && e.MessageID == cause && e.Event == definition.Abort {
			e.Actor, e.Reason = actor, reason
			break
		}
	}
	id, saga, to, status := inst.ID, inst.Saga, step.To, inst.Status
	b.after = append(b.after, func() {
		o.log.Info("operator aborted saga", "saga_id", id, "saga", saga, "from", from, "to", to, "actor", actor, "reason", reason, "status", string(status))
	})
	return nil
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
	if in.msg.Participant == definition.API {
		// API starts are never dead-lettered: this one came from the bus.
		return &Error{Code: CodeWrongParticipant, Op: op, Message: "the event came from topic " + dl.Topic, Err: reservedParticipant(&in.msg)}
	}
	if err := o.checkSender(o.eventTopicOwners(), &in); err != nil {
		return &Error{Code: CodeWrongParticipant, Op: op, Message: "the event is still refused", Err: err}
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
