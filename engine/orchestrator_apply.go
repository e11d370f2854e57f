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
	if err := tx.WriteBatch(ctx, ins, upd, b.entries, b.outbox); err != nil {
		return fmt.Errorf("write %d new and %d changed sagas, %d history entries and %d commands: %w",
			len(ins), len(upd), len(b.entries), len(b.outbox), err)
	}
	return b.writeDeadLetters(ctx, tx)
}

// writeDeadLetters stores the batch's dead letters.
func (b *batch) writeDeadLetters(ctx context.Context, tx Tx) error {
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
		step, err := model.ApplyWith("", m.Name, m.Participant, Data{SagaID: m.SagaID, Payload: m.Payload})
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
		if err := o.enter(b, w, in, step); err != nil {
			// Refused (e.g. a payload mapping fails): no saga is created.
			delete(b.sagas, m.SagaID)
			b.order = b.order[:len(b.order)-1]
			return err
		}
		return nil
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
	if j := w.inst.Join; j != nil {
		if p := w.model.Parallel(j.Step); p != nil && p.Event == j.Event && p.State == j.State {
			if br, ok, found := p.Reply(m.Participant, m.Name); found && (j.Waiting() || !w.model.accepts(w.inst.State, m.Name)) {
				return o.applyBranch(b, w, in, p, br, ok)
			}
		}
	}
	step, err := w.model.ApplyWith(w.inst.State, m.Name, m.Participant, Data{SagaID: w.inst.ID, Payload: m.Payload, Context: w.inst.Context})
	if err != nil {
		if late, lerr := o.applyLate(b, w, in, err); late || lerr != nil {
			return lerr
		}
		if o.lateWithoutEffects(b, w, in, err) || o.lateStop(b, w, in, err) {
			return nil
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
	merged, err := w.merged(m.Payload)
	if err != nil {
		return err
	}
	// What the step sends is built before anything changes: a payload
	// mapping or a fan-out that fails on this saga refuses the event.
	var payload json.RawMessage
	if step.Send != nil {
		if payload, err = step.Send.BuildPayload(inst.ID, merged); err != nil {
			// A command held back until the compensations are done is
			// built again when it is sent (a compensation's done event may
			// bring what it needs): the saga is not kept from failing.
			if !step.Failed || !willHold(inst, step) {
				return err
			}
			payload = nil
		}
	}
	var fan [][]json.RawMessage
	if step.Parallel != nil {
		if fan, err = expandBranches(step.Parallel, inst.ID, merged); err != nil {
			return err
		}
	}
	inst.Context = merged
	if inst.Join.Waiting() {
		// The saga leaves the join's state by another event (a timeout):
		// the step is over; its replies from now on are late.
		inst.Join.Outcome = JoinResultLeft
		inst.Join.stopRetries()
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
	if p := inst.Pending; p != nil && answers == p.ID && p.Participant == m.Participant {
		// How far the participant's command topic got, for the retry
		// timers (progress.go).
		topic, sent := w.model.Topic(p.Participant), p.OccurredAt
		b.after = append(b.after, func() { o.progress.answered(topic, sent, now) })
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
			V: EnvelopeVersion, ID: envelope.NewID(), SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion,
			Kind: KindCommand, Name: step.Send.Name, Participant: step.Send.Participant, CausationID: m.ID,
			OccurredAt: now, Attempt: 1, Payload: payload,
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
		e := newUndoEntry(u, m, cmd)
		if e.OfKind == KindCommand && step.Send.Payload != nil {
			e.Payload = payload
		}
		inst.Undo = append(inst.Undo, e)
	}
	held := ""
	if cmd != nil {
		// Pending and Deferred are stored without the payload: the payload
		// of a command is the saga context, which does not change until
		// the next accepted event replaces Pending anyway (resend restores
		// it), and a held-back command gets the context of when it is sent.
		// A command built by a mapping keeps its payload (re-sends send
		// the same).
		pending := *cmd
		if step.Send.Payload == nil {
			pending.Payload = nil
		}
		if step.Failed && holdsBack(inst) {
			inst.Deferred, held = &pending, cmd.Name
		} else {
			b.outbox = append(b.outbox, OutboxRecord{Topic: step.Send.Topic, Key: inst.ID, Message: *cmd, Traceparent: in.trace})
			inst.Pending, inst.Attempts = &pending, 1
			refs = []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: 1}}
		}
	}
	if step.Parallel != nil {
		refs = o.startJoin(b, w, in, step.Parallel, fan)
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
	if step.Condition != "" {
		if entry.Reason != "" {
			entry.Reason = "when " + step.Condition + "; " + entry.Reason
		} else {
			entry.Reason = "when " + step.Condition
		}
	}
	if step.Parallel != nil {
		entry.Reason = joinStartReason(step.Parallel, inst.Join)
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
	if step.Parallel != nil {
		// A step whose fan-outs sent nothing may be decided at once.
		o.checkJoin(b, w, step.Parallel)
	}
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
	merged, err := w.merged(payload)
	if err != nil {
		return err
	}
	w.inst.Context = merged
	return nil
}

// merged is the saga context with payload's top-level keys overlaid; the
// instance is not changed.
func (w *sagaWork) merged(payload json.RawMessage) (json.RawMessage, error) {
	p := bytes.TrimSpace(payload)
	doc := w.inst.Context
	if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("null")) {
		doc = json.RawMessage("{}")
	}
	if len(p) == 0 || bytes.Equal(p, []byte("null")) {
		return doc, nil
	}
	if merged, ok := envelope.Merge(doc, p); ok {
		return merged, nil
	}
	// Keys with escapes, or malformed input: decode, merge and encode.
	ctx := map[string]json.RawMessage{}
	if err := json.Unmarshal(doc, &ctx); err != nil {
		return nil, Errorf(CodeInternal, "merge event payload", "saga %s has a context that is not a JSON object: %v", w.inst.ID, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(p, &top); err != nil {
		return nil, Errorf(CodeInvalid, "merge event payload", "payload is not a JSON object: %v", err)
	}
	for k, v := range top {
		ctx[k] = v
	}
	merged, err := json.Marshal(ctx)
	if err != nil {
		return nil, Errorf(CodeInternal, "merge event payload", "encode context of saga %s: %v", w.inst.ID, err)
	}
	return merged, nil
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
			return keyValue(raw) // keys.go: the one rule for a key's text
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
	if j := inst.Join; j.Waiting() && j.State == inst.State {
		for i := range j.Commands {
			if t := j.Commands[i].NextAt; t != nil && j.Commands[i].Status == BranchPending && (at == nil || t.Before(*at)) {
				tt := *t
				at = &tt
			}
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

// Parallel steps at run time. A transition with a parallel step
// (Step.Parallel) sends every branch's commands at once (a fan-out branch
// one per element of its list) and records them in Instance.Join; the saga
// waits in the join's state. Each branch reply (Parallel.Reply, matched to
// its command by causation_id) is checked against its contract, merged
// into the context and counted once; when Parallel.Outcome decides, the
// engine raises the join's then or else event in the same transaction.
// Branch commands with a retry are re-sent by the timer (same id, same
// payload) and fail past their last attempt; a COMMAND_EXPIRED fails its
// command. Replies after the join decided (or after the saga left the
// state) are late: recorded in the timeline, their effect compensated
// like any late answer. The branches' undo entries share the step's Group
// so that a failing saga compensates them together (PlanGroup).

// MaxStepPayloadBytes bounds the payloads of all the commands one parallel
// step sends together (they are stored with the saga's join and in the
// outbox): a mapping copying a large part of the context into every
// command of a long fan-out is refused rather than amplified.
const MaxStepPayloadBytes = 16 << 20

// expandBranches builds the payloads of every branch's commands of p for a
// saga with context ctx (after the event's payload was merged). A step
// sends at most MaxFanOut commands in all, with at most
// MaxStepPayloadBytes of payloads.
func expandBranches(p *Parallel, sagaID string, ctx json.RawMessage) ([][]json.RawMessage, error) {
	const op = "start parallel step"
	out := make([][]json.RawMessage, len(p.Branches))
	count, size := 0, 0
	for i, br := range p.Branches {
		ps, err := br.Command.Expand(sagaID, ctx)
		if err != nil {
			return nil, &Error{Code: ErrorCode(err), Op: op,
				Message: fmt.Sprintf("branch %d (%s to %s)", i+1, br.Command.Name, br.Command.Participant), Err: err}
		}
		count += len(ps)
		for _, pl := range ps {
			size += len(pl)
		}
		if count > MaxFanOut {
			return nil, Errorf(CodeInvalid, op, "the branches send %d commands or more: a parallel step sends at most %d", count, MaxFanOut)
		}
		if size > MaxStepPayloadBytes {
			return nil, Errorf(CodeInvalid, op, "the branches' payloads add up to %d bytes or more: a parallel step sends at most %d", size, MaxStepPayloadBytes)
		}
		out[i] = ps
	}
	return out, nil
}

// startJoin sends the commands of parallel step p (payloads from
// expandBranches), records them as w's Join and their compensations as
// undo entries of one group, and returns the timeline's command refs.
func (o *Orchestrator) startJoin(b *batch, w *sagaWork, in *inbound, p *Parallel, fan [][]json.RawMessage) []CommandRef {
	inst, m, now := w.inst, &in.msg, b.now
	j := &Join{Step: p.ID, Event: m.Name, Cause: m.ID, State: p.State, Policy: string(p.Policy)}
	var refs []CommandRef
	timeout := w.model.Timeout(p.State)
	for bi, br := range p.Branches {
		spec := br.Command
		for k, payload := range fan[bi] {
			var elem *int
			if spec.ForEach != nil {
				e := k
				elem = &e
			}
			c := BranchCommand{
				ID: envelope.NewID(), Branch: bi, Element: elem, Name: spec.Name, Participant: spec.Participant,
				Status: BranchPending, Attempts: 1, Deadline: CommandDeadline(spec.Retry, timeout, now, now), Payload: payload,
				SentAt: now,
			}
			if spec.Retry != nil && spec.Retry.Attempts > 0 {
				t := now.Add(retryDelay(spec.Retry, 1))
				c.NextAt = &t
			}
			cmd := Message{
				V: EnvelopeVersion, ID: c.ID, SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion,
				Kind: KindCommand, Name: spec.Name, Participant: spec.Participant, CausationID: m.ID,
				OccurredAt: now, Attempt: 1, Deadline: c.Deadline, Payload: payload,
			}
			b.outbox = append(b.outbox, OutboxRecord{Topic: spec.Topic, Key: inst.ID, Message: cmd, Traceparent: in.trace})
			label := c.Label()
			if comp := spec.Compensate; comp != nil {
				inst.Undo = append(inst.Undo, UndoEntry{
					Participant: comp.Participant, Command: comp.Command, Done: comp.Done,
					Of: c.ID, OfKind: KindCommand, OfName: spec.Name, OfParticipant: spec.Participant,
					Status: UndoOpen, Group: m.ID, Branch: label,
				})
				if spec.Payload != nil {
					inst.Undo[len(inst.Undo)-1].Payload = payload
				}
			}
			refs = append(refs, CommandRef{ID: c.ID, Name: spec.Name, Participant: spec.Participant, Attempt: 1, Branch: label})
			j.Commands = append(j.Commands, c)
		}
	}
	j.Need = p.Need(len(j.Commands))
	inst.Join = j
	return refs
}

// joinStartReason describes a started parallel step for the timeline.
func joinStartReason(p *Parallel, j *Join) string {
	policy := string(p.Policy)
	if p.Policy == definition.JoinAtLeast {
		policy += " " + strconv.Itoa(p.N)
	}
	return fmt.Sprintf("parallel step: %d commands in %d branches, join %s (%d must succeed): %s or %s",
		len(j.Commands), len(p.Branches), policy, j.Need, p.Then, p.Else)
}

// stopRetries disarms the re-sends of j's unanswered commands.
func (j *Join) stopRetries() {
	for i := range j.Commands {
		j.Commands[i].NextAt = nil
	}
}

// checkJoin asks p whether w's join is decided and, if so, records the
// outcome and raises the join's then or else event.
func (o *Orchestrator) checkJoin(b *batch, w *sagaWork, p *Parallel) {
	j := w.inst.Join
	if !j.Waiting() || j.Step != p.ID || w.inst.State != j.State {
		return
	}
	succ, fail := j.Count()
	out := p.Outcome(len(j.Commands), succ, fail)
	event := ""
	switch out {
	case JoinDone:
		j.Outcome, event = JoinResultDone, p.Then
	case JoinFailed:
		j.Outcome, event = JoinResultFailed, p.Else
	default:
		return
	}
	j.stopRetries()
	w.touch()
	o.raiseNow(b, w, event, derivedID("join", w.inst.ID, j.Cause, string(j.Outcome)))
	if w.inst.State == j.State {
		// The state machine refused the join's event (dead letter): the
		// saga still waits in the state, whose time limit stays armed so
		// that it does not wait for ever (an operator may replay or abort).
		w.inst.TimerAt = nextTimer(w.model, w.inst, nil, b.now)
	}
}

// applyBranch applies a reply to a branch of w's parallel step: br's ok
// reply (ok) or fail reply. The reply names its command by causation_id
// (a branch with one command may be answered without one).
func (o *Orchestrator) applyBranch(b *batch, w *sagaWork, in *inbound, p *Parallel, br *Branch, ok bool) error {
	m, inst, j := &in.msg, w.inst, w.inst.Join
	op := "apply " + m.Name
	k := -1
	if m.CausationID != "" {
		for i := range j.Commands {
			if j.Commands[i].ID == m.CausationID {
				k = i
				break
			}
		}
		if k < 0 {
			return Errorf(CodeNotFound, op, "%s from %s answers command %q, which is not a command of the parallel step of saga %s (started by %s %s): no such branch command",
				m.Name, m.Participant, m.CausationID, inst.ID, j.Event, j.Cause)
		}
	} else {
		for i := range j.Commands {
			if j.Commands[i].Branch == br.Index {
				if k >= 0 {
					return Errorf(CodeInvalid, op, "%s from %s has no causation_id, and branch %d (%s) sent several commands: the reply must name its command",
						m.Name, m.Participant, br.Index+1, br.Command.Name)
				}
				k = i
			}
		}
		if k < 0 {
			return Errorf(CodeNotFound, op, "%s from %s answers branch %d (%s), which sent no command in saga %s", m.Name, m.Participant, br.Index+1, br.Command.Name, inst.ID)
		}
	}
	c := &j.Commands[k]
	if c.Branch != br.Index || c.Participant != m.Participant {
		return Errorf(CodeIllegal, op, "%s from %s answers command %s %s of branch %s (sent to %s): it is not a reply of that branch",
			m.Name, m.Participant, c.Name, c.ID, c.Label(), c.Participant)
	}
	if !j.Waiting() || c.Status != BranchPending || inst.State != j.State {
		return o.lateBranch(b, w, in, c, ok)
	}
	if ct := w.model.Contract(m.Name); ct != nil {
		if err := ct.Check(m.Payload); err != nil {
			return err
		}
	}
	merged, err := w.merged(m.Payload)
	if err != nil {
		return err
	}
	inst.Context = merged
	if touchesKeys(w.model, m.Payload) {
		inst.Keys = extractKeys(w.model, inst.Context)
	}
	if in.trace != "" {
		inst.Traceparent = in.trace
	}
	c.NextAt = nil
	if sent, now := c.SentAt, b.now; !sent.IsZero() {
		// How far the participant's command topic got (progress.go).
		b.after = append(b.after, func() { o.progress.answered(br.Command.Topic, sent, now) })
	}
	what := "ok"
	if ok {
		c.Status = BranchOK
	} else {
		c.Status, c.Why, what = BranchFailed, m.Name, "failed"
	}
	if i := commandEntry(inst, c.ID); i >= 0 {
		switch u := &inst.Undo[i]; u.Status {
		case UndoOpen, UndoExpired, UndoLate:
			if ok {
				u.Status = UndoReplied
			} else {
				u.Status = UndoFailed
			}
		}
	}
	succ, fail := j.Count()
	inst.UpdatedAt = b.now
	inst.TimerAt = nextTimer(w.model, inst, nil, b.now)
	w.touch()
	b.entries = append(b.entries, HistoryEntry{
		SagaID: inst.ID, At: b.now, Kind: EntryEvent, MessageID: m.ID, Event: m.Name, By: m.Participant,
		FromState: inst.State, ToState: inst.State,
		Commands: []CommandRef{{ID: c.ID, Name: c.Name, Participant: c.Participant, Attempt: c.Attempts, Branch: c.Label()}},
		Reason: fmt.Sprintf("branch %s %s %s: %d of %d commands succeeded (%d needed), %d failed",
			c.Label(), c.Name, what, succ, len(j.Commands), j.Need, fail),
	})
	saga, event, latency := inst.Saga, m.Name, b.now.Sub(m.OccurredAt)
	b.after = append(b.after, func() { o.obs.EventApplied(saga, event, latency) })
	o.checkJoin(b, w, p)
	return nil
}

// lateBranch records a reply to branch command c that the join no longer
// counts: the join decided, the saga left its state, or c was answered (or
// given up on) before. A second reply to an answered command changes
// nothing (it is counted once); an ok reply to a command given up on is a
// late effect, compensated like any late answer (applyLate); a fail reply
// had no effect.
func (o *Orchestrator) lateBranch(b *batch, w *sagaWork, in *inbound, c *BranchCommand, ok bool) error {
	m, inst := &in.msg, w.inst
	ref := []CommandRef{{ID: c.ID, Name: c.Name, Participant: c.Participant, Attempt: c.Attempts, Branch: c.Label()}}
	late := func(reason string) {
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: inst.State, ToState: inst.State, Commands: ref, Reason: reason,
		})
		inst.UpdatedAt = b.now
		w.touch()
		saga, ev := inst.Saga, m.Name
		b.after = append(b.after, func() { o.cob.LateReply(saga, ev) })
	}
	switch {
	case c.Status == BranchOK || (c.Status == BranchFailed && c.Why != "" && c.Why == m.Name) || (c.Status == BranchFailed && !ok):
		late(fmt.Sprintf("%s answers branch %s %s (command %s), which was already answered (%s): counted once, nothing changes",
			m.Name, c.Label(), c.Name, c.ID, c.Status))
		return nil
	case !ok:
		if c.Status == BranchPending {
			c.Status, c.Why, c.NextAt = BranchFailed, m.Name+" (late)", nil
		}
		if i := commandEntry(inst, c.ID); i >= 0 && (inst.Undo[i].Status == UndoOpen || inst.Undo[i].Status == UndoExpired) {
			inst.Undo[i].Status = UndoFailed
		}
		late(fmt.Sprintf("%s answers branch %s %s (command %s) after the parallel step was over: it failed without effect, nothing to undo",
			m.Name, c.Label(), c.Name, c.ID))
		return nil
	}
	if c.Status == BranchPending {
		c.Status, c.Why, c.NextAt = BranchOK, "late", nil
	}
	// applyLate finds the command's undo entry by causation_id, which a
	// one-command branch's reply may leave out.
	named := *in
	named.msg.CausationID = c.ID
	took, err := o.applyLate(b, w, &named, Errorf(CodeIllegal, "apply "+m.Name, "late branch reply"))
	if err != nil || took {
		if took && len(b.entries) > 0 {
			b.entries[len(b.entries)-1].Commands = append(ref, b.entries[len(b.entries)-1].Commands...)
		}
		return err
	}
	late(fmt.Sprintf("%s answers branch %s %s (command %s) after the parallel step was over; the branch has no compensation",
		m.Name, c.Label(), c.Name, c.ID))
	return nil
}

// joinTimer handles the due timer of a saga waiting for a join: branch
// commands due for a re-send are sent again (same id, same payload);
// those past their last attempt fail. The join may then decide.
func (o *Orchestrator) joinTimer(b *batch, w *sagaWork) {
	inst, j := w.inst, w.inst.Join
	p := w.model.Parallel(j.Step)
	inst.UpdatedAt = b.now
	w.touch()
	if p == nil {
		inst.TimerAt = nextTimer(w.model, inst, nil, b.now)
		return
	}
	saga, id := inst.Saga, inst.ID
	for k := range j.Commands {
		c := &j.Commands[k]
		if c.Status != BranchPending || c.NextAt == nil || c.NextAt.After(b.now) || c.Branch >= len(p.Branches) {
			continue
		}
		spec := p.Branches[c.Branch].Command
		r := spec.Retry
		ref := CommandRef{ID: c.ID, Name: c.Name, Participant: c.Participant, Branch: c.Label()}
		if r == nil || c.Attempts >= r.Attempts {
			c.Status, c.NextAt = BranchFailed, nil
			c.Why = fmt.Sprintf("no answer after %d attempts", c.Attempts)
			ref.Attempt = c.Attempts
			b.entries = append(b.entries, HistoryEntry{
				SagaID: id, At: b.now, Kind: EntryTimer, FromState: inst.State, ToState: inst.State, Commands: []CommandRef{ref},
				Reason: fmt.Sprintf("branch %s %s failed: %s", c.Label(), c.Name, c.Why),
			})
			continue
		}
		if c.Attempts+1 < r.Attempts { // the last attempt is always sent
			if why := o.stillQueued(c.Participant, spec.Topic, c.SentAt, retryDelay(r, c.Attempts), b.now); why != "" {
				// Still queued behind older commands: counted, not re-sent.
				c.Attempts++
				t := b.now.Add(retryDelay(r, c.Attempts))
				c.NextAt = &t
				b.entries = append(b.entries, HistoryEntry{
					SagaID: id, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State,
					Reason: fmt.Sprintf("no answer to %s (branch %s) yet; attempt %d of %d not re-sent: %s", c.Name, c.Label(), c.Attempts, r.Attempts, why),
				})
				o.heldBack(b, saga, id, c.Name)
				continue
			}
		}
		c.Attempts++
		t := b.now.Add(retryDelay(r, c.Attempts))
		c.NextAt = &t
		inst.Traceparent = traceOf(inst.Traceparent)
		cmd := Message{
			V: EnvelopeVersion, ID: c.ID, SagaID: id, Saga: saga, SagaVersion: inst.SagaVersion,
			Kind: KindCommand, Name: c.Name, Participant: c.Participant, CausationID: j.Cause,
			OccurredAt: b.now, Attempt: c.Attempts, Deadline: c.Deadline, Payload: c.Payload,
		}
		b.outbox = append(b.outbox, OutboxRecord{Topic: spec.Topic, Key: id, Message: cmd, Traceparent: inst.Traceparent})
		ref.Attempt = c.Attempts
		b.entries = append(b.entries, HistoryEntry{
			SagaID: id, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State, Commands: []CommandRef{ref},
			Reason: fmt.Sprintf("no answer to %s (branch %s); attempt %d of %d", c.Name, c.Label(), c.Attempts, r.Attempts),
		})
		name, attempt := c.Name, c.Attempts
		b.after = append(b.after, func() {
			o.obs.CommandRetried(saga, name)
			o.log.Info("branch command re-sent", "saga_id", id, "command", name, "attempt", attempt)
		})
	}
	inst.TimerAt = nextTimer(w.model, inst, nil, b.now)
	o.checkJoin(b, w, p)
}

// expireBranch fails w's branch command that a participant refused for
// its deadline (COMMAND_EXPIRED); it reports whether the event named one.
func (o *Orchestrator) expireBranch(b *batch, w *sagaWork, in *inbound) (bool, error) {
	m, inst, j := &in.msg, w.inst, w.inst.Join
	if !j.Waiting() || inst.State != j.State {
		return false, nil
	}
	for k := range j.Commands {
		c := &j.Commands[k]
		if c.ID != m.CausationID || c.Status != BranchPending {
			continue
		}
		if c.Participant != m.Participant {
			return true, Errorf(CodeWrongParticipant, "apply "+EventCommandExpired, "%s answers command %s %s, which was sent to %s, not %s",
				EventCommandExpired, c.Name, c.ID, c.Participant, m.Participant)
		}
		c.Status, c.Why, c.NextAt = BranchFailed, "expired", nil
		if i := commandEntry(inst, c.ID); i >= 0 && inst.Undo[i].Status == UndoOpen {
			inst.Undo[i].Status = UndoExpired
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryExpired, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: c.ID, Name: c.Name, Participant: c.Participant, Attempt: c.Attempts, Branch: c.Label()}},
			Reason:   expiredReason(m, c.Name) + "; branch " + c.Label() + " failed",
		})
		inst.UpdatedAt = b.now
		inst.TimerAt = nextTimer(w.model, inst, nil, b.now)
		w.touch()
		saga, name := inst.Saga, c.Name
		b.after = append(b.after, func() { o.cob.CommandExpired(saga, name) })
		if p := w.model.Parallel(j.Step); p != nil {
			o.checkJoin(b, w, p)
		}
		return true, nil
	}
	return false, nil
}
