package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// idSpace is the UUIDv5 namespace of the ids the engine derives
// deterministically (synthetic events, idempotent starts, inbox keys of
// undecodable records), so that doing the same thing twice gives the same id.
var idSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/portfolio-counselor/sagamachine"))

// derivedID is the UUIDv5 of parts joined by NUL bytes.
func derivedID(parts ...string) string {
	return uuid.NewSHA1(idSpace, []byte(strings.Join(parts, "\x00"))).String()
}

// inbound is one event on its way into a batch, with where it came from.
type inbound struct {
	msg     Message
	rec     Record    // origin, for dead letters (Value = raw bytes)
	bad     error     // decoding failed: dead-letter rec as CodeInvalid
	inboxID string    // id claimed in the inbox (msg.ID, or derived for bad records)
	kind    EntryKind // EntryEvent for participants, EntryTimer for the engine's own
	trace   string    // W3C traceparent the commands it causes carry
}

// decodeRecord turns a consumed record into an inbound event. Its trace is
// the record's traceparent header, or a new trace when it has no valid one.
func decodeRecord(r Record) inbound {
	in := inbound{rec: r, kind: EntryEvent, trace: traceOf(r.Headers[HeaderTraceparent])}
	in.msg, in.bad = decodeEvent(r.Value)
	if in.bad != nil {
		in.inboxID = derivedID("record", r.Topic, strconv.Itoa(int(r.Partition)), strconv.FormatInt(r.Offset, 10))
	} else {
		in.inboxID = in.msg.ID
	}
	return in
}

// decodeEvent parses and checks one event envelope. Every problem found is
// named in the *Error (CodeInvalid).
func decodeEvent(raw []byte) (Message, error) {
	const op = "decode event"
	var m Message
	if err := envelope.UnmarshalMessage(raw, &m); err != nil {
		return m, &Error{Code: CodeInvalid, Op: op, Message: "not a JSON message envelope", Err: err}
	}
	var probs []string
	switch {
	case m.V == 0:
		probs = append(probs, "missing v")
	case m.V != EnvelopeVersion:
		probs = append(probs, fmt.Sprintf("envelope version %d is not supported (want %d)", m.V, EnvelopeVersion))
	}
	for _, f := range []struct{ name, v string }{
		{"id", m.ID}, {"saga_id", m.SagaID}, {"saga", m.Saga}, {"kind", string(m.Kind)},
		{"name", m.Name}, {"participant", m.Participant},
	} {
		if strings.TrimSpace(f.v) == "" {
			probs = append(probs, "missing "+f.name)
		}
	}
	if m.OccurredAt.IsZero() {
		probs = append(probs, "missing occurred_at")
	}
	if m.Kind != "" && m.Kind != KindEvent {
		probs = append(probs, fmt.Sprintf("kind is %q, but saga-machine consumes only events", m.Kind))
	}
	if m.SagaVersion < 0 {
		probs = append(probs, fmt.Sprintf("saga_version %d is negative", m.SagaVersion))
	}
	if err := checkObject(m.Payload); err != nil {
		probs = append(probs, "payload "+err.Error())
	}
	if len(probs) > 0 {
		return m, Errorf(CodeInvalid, op, "%s", strings.Join(probs, "; "))
	}
	return m, nil
}

// checkObject accepts an absent or null payload or a JSON object.
func checkObject(p json.RawMessage) error {
	t := bytes.TrimSpace(p)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) || t[0] == '{' {
		return nil
	}
	return fmt.Errorf("is not a JSON object")
}

// batch collects everything one transaction changes, and what to tell the
// observer and the log once it committed.
type batch struct {
	now     time.Time
	sagas   map[string]*sagaWork
	order   []string // saga ids in first-touch order
	entries []HistoryEntry
	outbox  []OutboxRecord
	dls     []DeadLetter
	dups    int
	after   []func() // observer calls and log lines, run after commit
	// checks run first in write, with the transaction: decisions that need
	// to read the store (e.g. whether a saga sent a command).
	checks []func(ctx context.Context, tx Tx) error
}

// sagaWork is one saga instance touched by a batch.
type sagaWork struct {
	inst    *Instance
	model   *Model
	created bool // Insert it
	changed bool // Update it
}

func newBatch(now time.Time) *batch {
	return &batch{now: now, sagas: make(map[string]*sagaWork)}
}

// add makes loaded instances known to the batch.
func (b *batch) add(insts map[string]*Instance) {
	for id, inst := range insts {
		if _, ok := b.sagas[id]; !ok {
			b.sagas[id] = &sagaWork{inst: inst}
			b.order = append(b.order, id)
		}
	}
}

// write stores the batch's effects in tx.
func (b *batch) write(ctx context.Context, tx Tx) error {
	for _, check := range b.checks {
		if err := check(ctx, tx); err != nil {
			return err
		}
	}
	b.checks = nil
	var ins, upd []*Instance
	for _, id := range b.order {
		w := b.sagas[id]
		switch {
		case w.created:
			ins = append(ins, w.inst)
		case w.changed:
			upd = append(upd, w.inst)
		}
	}
	if len(ins) > 0 {
		if err := tx.Insert(ctx, ins); err != nil {
			return fmt.Errorf("insert %d sagas: %w", len(ins), err)
		}
	}
	if len(upd) > 0 {
		if err := tx.Update(ctx, upd); err != nil {
			return fmt.Errorf("update %d sagas: %w", len(upd), err)
		}
	}
	if len(b.entries) > 0 {
		if err := tx.AppendHistory(ctx, b.entries); err != nil {
			return fmt.Errorf("append %d history entries: %w", len(b.entries), err)
		}
	}
	if len(b.outbox) > 0 {
		if err := tx.Enqueue(ctx, b.outbox); err != nil {
			return fmt.Errorf("enqueue %d commands: %w", len(b.outbox), err)
		}
	}
	if len(b.dls) > 0 {
		if err := tx.AddDeadLetters(ctx, b.dls); err != nil {
			return fmt.Errorf("store %d dead letters: %w", len(b.dls), err)
		}
	}
	return nil
}

// committed runs the deferred observer calls and log lines.
func (b *batch) committed() {
	for _, f := range b.after {
		f()
	}
}

// apply applies one event to the batch's sagas. It returns the reason the
// event is refused (an *Error with the model's code, CodeUnknownSaga or
// CodeNotFound) and then changes nothing.
func (o *Orchestrator) apply(b *batch, in *inbound) error {
	m := &in.msg
	w := b.sagas[m.SagaID]
	if w == nil {
		model, err := o.cat.Get(m.Saga, m.SagaVersion)
		if err != nil {
			return err
		}
		if m.Name == EventCommandExpired {
			return Errorf(CodeNotFound, "apply "+m.Name, "%s from %s answers command %q of saga %s, which does not exist: saga-machine did not send it",
				m.Name, m.Participant, m.CausationID, m.SagaID)
		}
		if c, ok := model.CompensationByDone(m.Participant, m.Name); ok {
			return Errorf(CodeNotFound, "apply "+m.Name, "%s from %s is the done event of compensation %s of saga %s, which does not exist",
				m.Name, m.Participant, c.Command, m.SagaID)
		}
		step, err := model.Apply("", m.Name, m.Participant)
		if err != nil {
			if ErrorCode(err) == CodeIllegal {
				return &Error{Code: CodeNotFound, Op: "apply " + m.Name, Message: fmt.Sprintf("saga %s does not exist and %s does not start a saga", m.SagaID, m.Name), Err: err}
			}
			return err
		}
		w = &sagaWork{
			inst: &Instance{
				ID: m.SagaID, Saga: model.Name(), SagaVersion: model.Version(),
				Context: json.RawMessage("{}"), CreatedAt: b.now,
			},
			model:   model,
			created: true,
		}
		b.sagas[m.SagaID] = w
		b.order = append(b.order, m.SagaID)
		return o.enter(b, w, in, step)
	}
	if w.model == nil {
		model, err := o.cat.Get(w.inst.Saga, w.inst.SagaVersion)
		if err != nil {
			return err
		}
		w.model = model
	}
	if m.Saga != w.inst.Saga {
		return Errorf(CodeInvalid, "apply "+m.Name, "the event names saga %s, but saga %s is a %s", m.Saga, m.SagaID, w.inst.Saga)
	}
	if m.Name == EventCommandExpired {
		return o.applyExpired(b, w, in)
	}
	if c, ok := w.model.CompensationByDone(m.Participant, m.Name); ok {
		return o.applyDone(b, w, in, c)
	}
	step, err := w.model.Apply(w.inst.State, m.Name, m.Participant)
	if err != nil {
		if late, lerr := o.applyLate(b, w, in, err); late || lerr != nil {
			return lerr
		}
		return err
	}
	return o.enter(b, w, in, step)
}

// enter moves w into step.To: merges the payload, extracts keys, records
// the step's compensable effects, sends the step's command, arms the timer
// and writes the history entry. Entering a failed state with effects to
// undo holds the command back and starts compensating; entering a final
// state sends the command and then compensates what the saga abandoned.
func (o *Orchestrator) enter(b *batch, w *sagaWork, in *inbound, step Step) error {
	m, inst, now := &in.msg, w.inst, b.now
	if err := w.merge(m.Payload); err != nil {
		return err
	}
	from := inst.State
	inst.State = step.To
	inst.EnteredAt = now
	inst.UpdatedAt = now
	inst.Status = statusOf(w.model, step.To)
	if w.created || touchesKeys(w.model, m.Payload) {
		inst.Keys = extractKeys(w.model, inst.Context)
	}
	// The event answers the command it names as its cause; an event without
	// a causation id that the state machine accepted from the receiver of the
	// command the saga was waiting for answers that command (a participant
	// outside the SDK may not set causation ids: its answer must not leave
	// the command looking abandoned, which would undo it on success).
	answers := m.CausationID
	if answers == "" && inst.Pending != nil && inst.Pending.Participant == m.Participant {
		answers = inst.Pending.ID
	}
	inst.Pending, inst.Attempts = nil, 0
	if in.trace != "" {
		inst.Traceparent = in.trace
	}
	// An accepted answer to a compensable command: its effect is the saga's.
	if i := commandEntry(inst, answers); i >= 0 && inst.Undo[i].OfParticipant == m.Participant {
		switch inst.Undo[i].Status {
		case UndoOpen, UndoExpired, UndoLate:
			inst.Undo[i].Status = UndoReplied
		}
	}
	var refs []CommandRef
	var retry *definition.Retry
	var cmd *Message
	if step.Send != nil {
		cmd = &Message{
			V: EnvelopeVersion, ID: uuid.NewString(), SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion,
			Kind: KindCommand, Name: step.Send.Name, Participant: step.Send.Participant, CausationID: m.ID,
			OccurredAt: now, Attempt: 1, Payload: inst.Context,
		}
		if !w.model.IsTerminal(step.To) {
			cmd.Deadline = CommandDeadline(step.Send.Retry, w.model.Timeout(step.To), now, now)
		}
		retry = step.Send.Retry
	}
	cmdID := ""
	if cmd != nil {
		cmdID = cmd.ID
	}
	for _, u := range step.Undos(m.ID, cmdID) {
		inst.Undo = append(inst.Undo, newUndoEntry(u, m, cmd))
	}
	held := ""
	if cmd != nil {
		// Pending and Deferred are stored without the payload: the payload
		// of a command is the saga context, which does not change until
		// the next accepted event replaces Pending anyway (resend restores
		// it), and a held-back command gets the context of when it is sent.
		pending := *cmd
		pending.Payload = nil
		if step.Failed && holdsBack(inst) {
			inst.Deferred, held = &pending, cmd.Name
		} else {
			b.outbox = append(b.outbox, OutboxRecord{Topic: step.Send.Topic, Key: inst.ID, Message: *cmd, Traceparent: in.trace})
			inst.Pending, inst.Attempts = &pending, 1
			refs = []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: 1}}
		}
	}
	inst.TimerAt = nextTimer(w.model, inst, retry, now)
	w.touch()
	entry := HistoryEntry{
		SagaID: inst.ID, At: now, Kind: in.kind, MessageID: m.ID, Event: m.Name, By: m.Participant,
		FromState: from, ToState: step.To, Commands: refs,
	}
	if held != "" {
		entry.Reason = held + " is held back until the compensations are done"
	}
	b.entries = append(b.entries, entry)
	if step.Failed || step.Final {
		if err := o.compensateNext(b, w, m.ID); err != nil {
			return err
		}
	}

	saga, version, event, status, created := inst.Saga, inst.SagaVersion, m.Name, inst.Status, w.created && from == ""
	outcome, terminal := statusOf(w.model, step.To), w.model.IsTerminal(step.To)
	latency := now.Sub(m.OccurredAt)
	id, by, to := inst.ID, m.Participant, step.To
	b.after = append(b.after, func() {
		o.obs.EventApplied(saga, event, latency)
		if created {
			o.obs.SagaStarted(saga, version)
			o.log.Info("saga started", "saga_id", id, "saga", saga, "saga_version", version, "event", event, "state", to)
		} else {
			o.log.Debug("event applied", "saga_id", id, "saga", saga, "event", event, "by", by, "from", from, "to", to)
		}
		if terminal {
			o.obs.SagaFinished(saga, version, to, outcome)
			o.log.Info("saga finished", "saga_id", id, "saga", saga, "state", to, "status", string(status))
		}
	})
	return nil
}

// refuse dead-letters in's event for reason err and, when the saga exists,
// notes the refusal in its timeline.
func (o *Orchestrator) refuse(b *batch, in *inbound, err error) {
	code := ErrorCode(err)
	m := &in.msg
	raw := in.rec.Value
	if raw == nil {
		raw, _ = json.Marshal(m)
	}
	msgID := m.ID
	if in.bad != nil {
		msgID = ""
	}
	b.dls = append(b.dls, DeadLetter{
		MessageID: msgID, SagaID: m.SagaID, Topic: in.rec.Topic, Partition: in.rec.Partition, Offset: in.rec.Offset,
		Raw: raw, Code: code, Reason: err.Error(), CreatedAt: b.now,
	})
	state := ""
	if w := b.sagas[m.SagaID]; w != nil && in.bad == nil {
		state = w.inst.State
		b.entries = append(b.entries, HistoryEntry{
			SagaID: m.SagaID, At: b.now, Kind: EntryRefused, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: state, Code: code, Reason: err.Error(),
		})
	}
	saga, event := m.Saga, m.Name
	rec := in.rec
	b.after = append(b.after, func() {
		if in.bad == nil {
			o.obs.EventRefused(saga, event, code)
		}
		o.obs.DeadLettered(code)
		attrs := []any{"code", string(code), "reason", err.Error(), "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset}
		if m.SagaID != "" {
			attrs = append([]any{"saga_id", m.SagaID, "saga", saga, "event", event, "state", state}, attrs...)
		}
		o.log.Warn("event dead-lettered", attrs...)
	})
}

// merge overlays payload's top-level keys on the saga context.
func (w *sagaWork) merge(payload json.RawMessage) error {
	p := bytes.TrimSpace(payload)
	doc := w.inst.Context
	if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("null")) {
		doc = json.RawMessage("{}")
	}
	if len(p) == 0 || bytes.Equal(p, []byte("null")) {
		w.inst.Context = doc
		return nil
	}
	if merged, ok := envelope.Merge(doc, p); ok {
		w.inst.Context = merged
		return nil
	}
	// Keys with escapes, or malformed input: decode, merge and encode.
	ctx := map[string]json.RawMessage{}
	if err := json.Unmarshal(doc, &ctx); err != nil {
		return Errorf(CodeInternal, "merge event payload", "saga %s has a context that is not a JSON object: %v", w.inst.ID, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(p, &top); err != nil {
		return Errorf(CodeInvalid, "merge event payload", "payload is not a JSON object: %v", err)
	}
	for k, v := range top {
		ctx[k] = v
	}
	merged, err := json.Marshal(ctx)
	if err != nil {
		return Errorf(CodeInternal, "merge event payload", "encode context of saga %s: %v", w.inst.ID, err)
	}
	w.inst.Context = merged
	return nil
}

// extractKeys reads the model's business keys from the context. Strings are
// taken as they are, numbers and booleans as their JSON text; missing keys
// and other values are left out.
func extractKeys(m *Model, doc json.RawMessage) map[string]string {
	paths := m.keys
	if len(paths) == 0 {
		return nil
	}
	out := make(map[string]string, len(paths))
	for name, path := range paths {
		raw, found, ok := envelope.Lookup(doc, path)
		if !ok {
			return extractKeysDecoded(m, doc)
		}
		if !found {
			continue
		}
		if v, ok := keyValue(raw); ok {
			out[name] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// extractKeysDecoded is extractKeys for a context the byte scanner does not
// handle (keys with escapes): it decodes the context.
func extractKeysDecoded(m *Model, raw json.RawMessage) map[string]string {
	var doc map[string]json.RawMessage
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	paths := m.keys
	out := make(map[string]string, len(paths))
	nested := map[string]map[string]json.RawMessage{} // decoded top-level objects, shared by the paths
	for name, path := range paths {
		top, rest, deep := strings.Cut(path, ".")
		cur := doc
		if deep {
			obj, ok := nested[top]
			if !ok {
				raw := bytes.TrimSpace(doc[top])
				if len(raw) > 0 && raw[0] == '{' {
					_ = json.Unmarshal(raw, &obj)
				}
				nested[top] = obj
			}
			cur, path = obj, rest
		}
		if v, ok := lookupPath(cur, path); ok {
			out[name] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// touchesKeys reports whether payload may change a business key: whether
// it has a top-level member that begins one of the model's key paths.
func touchesKeys(m *Model, payload json.RawMessage) bool {
	if len(m.keys) == 0 || len(bytes.TrimSpace(payload)) <= 2 {
		return false
	}
	for _, path := range m.keys {
		top, _, _ := strings.Cut(path, ".")
		if bytes.Contains(payload, []byte(`"`+top+`"`)) {
			return true
		}
	}
	return false
}

func lookupPath(doc map[string]json.RawMessage, path string) (string, bool) {
	cur := doc
	parts := strings.Split(path, ".")
	for i, p := range parts {
		raw, ok := cur[p]
		if !ok {
			return "", false
		}
		raw = bytes.TrimSpace(raw)
		if i == len(parts)-1 {
			if len(raw) == 0 {
				return "", false
			}
			switch raw[0] {
			case '"':
				var s string
				if json.Unmarshal(raw, &s) != nil || s == "" {
					return "", false
				}
				return s, true
			case '{', '[', 'n':
				return "", false
			default:
				return string(raw), true
			}
		}
		if len(raw) == 0 || raw[0] != '{' {
			return "", false
		}
		var next map[string]json.RawMessage
		if json.Unmarshal(raw, &next) != nil {
			return "", false
		}
		cur = next
	}
	return "", false
}

func statusOf(m *Model, state string) Status {
	switch {
	case m.IsFinal(state):
		return StatusCompleted
	case m.IsFailed(state):
		return StatusFailed
	}
	return StatusRunning
}

// nextTimer is when the engine must next look at inst: the earliest of its
// state's deadline and, when its pending command has a retry policy, the next
// re-send (or, after the last send, the exhausted event). Terminal states
// have no timer.
func nextTimer(m *Model, inst *Instance, retry *definition.Retry, now time.Time) *time.Time {
	if m.IsTerminal(inst.State) {
		return nil
	}
	var at *time.Time
	if to := m.Timeout(inst.State); to != nil {
		t := inst.EnteredAt.Add(to.After)
		at = &t
	}
	if inst.Pending != nil && retry != nil {
		t := now.Add(retryDelay(retry, inst.Attempts))
		if at == nil || t.Before(*at) {
			at = &t
		}
	}
	return at
}

// retryDelay is the wait after the sent-th send: Backoff doubled per send
// and capped at MaxBackoff.
func retryDelay(r *definition.Retry, sent int) time.Duration {
	d := r.Backoff
	if d <= 0 {
		d = time.Second
	}
	for i := 1; i < sent; i++ {
		if r.MaxBackoff > 0 && d >= r.MaxBackoff {
			break
		}
		d *= 2
	}
	if r.MaxBackoff > 0 && d > r.MaxBackoff {
		d = r.MaxBackoff
	}
	return d
}

// pendingRetry finds the retry policy of inst's pending command: the send of
// a transition into inst.State with the same command and receiver.
func pendingRetry(m *Model, inst *Instance) *definition.Retry {
	if inst.Pending == nil {
		return nil
	}
	for _, tr := range m.Definition().Transitions {
		if tr.To.Value == inst.State && tr.Send != nil && tr.Send.Retry != nil &&
			tr.Send.Command.Value == inst.Pending.Name && tr.Send.To.Value == inst.Pending.Participant {
			return tr.Send.Retry
		}
	}
	return nil
}
