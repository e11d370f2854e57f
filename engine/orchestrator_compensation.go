package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// Compensation at run time. Every compensable step a saga takes leaves an
// UndoEntry in the instance (Step.Undos): an event's effect (status
// replied) or a command's possible effect (status open until answered).
// Entering a failed state sends the compensations of the entries that are
// open, replied or late, newest first, each time waiting for their done
// events: one at a time, except the branches of one parallel step (same
// Group), which are sent together (PlanGroup), each on its own retry
// schedule (UndoEntry.NextAt); the failed transition's own command is held
// back (Instance.Deferred) until the last one is done. Entering a final
// state compensates only what the saga abandoned (open and late entries),
// after the final command. A compensation unanswered past its retry policy
// stops the saga as compensation_failed for an operator.

// CommandDeadline is when saga-machine stops waiting for a command sent at
// sentAt by a transition into a state entered at enteredAt: the earlier of
// the end of the send's retry budget (the time the engine raises its
// exhausted event: sentAt plus every retry delay, see RetryBudget) and the
// state's time limit (enteredAt + timeout.After). Zero when there is
// neither. Re-sends of the command keep it.
func CommandDeadline(retry *definition.Retry, timeout *definition.Timeout, sentAt, enteredAt time.Time) time.Time {
	var d time.Time
	if retry != nil && retry.Attempts > 0 {
		d = sentAt.Add(RetryBudget(retry))
	}
	if timeout != nil && timeout.After > 0 {
		if t := enteredAt.Add(timeout.After); d.IsZero() || t.Before(d) {
			d = t
		}
	}
	return d
}

// RetryBudget is how long after the first send of a command with retry r
// the engine raises r's exhausted event: the sum of the waits after each
// of its r.Attempts sends (Backoff, doubling, capped at MaxBackoff). For
// attempts 5, backoff 2s, max_backoff 1m it is 2+4+8+16+32 = 62s.
func RetryBudget(r *definition.Retry) time.Duration {
	var total time.Duration
	for sent := 1; sent <= r.Attempts; sent++ {
		total += retryDelay(r, sent)
	}
	return total
}

// touch marks w to be stored (inserted if new, else updated).
func (w *sagaWork) touch() {
	if !w.created {
		w.changed = true
	}
}

// newUndoEntry turns one of Step.Undos into an instance entry: an event's
// effect happened (replied), a command's may happen (open).
func newUndoEntry(u Undo, ev *Message, cmd *Message) UndoEntry {
	e := UndoEntry{
		Participant: u.Compensation.Participant, Command: u.Compensation.Command, Done: u.Compensation.Done,
		Of: u.Of,
	}
	if cmd != nil && u.Of == cmd.ID {
		e.OfKind, e.OfName, e.OfParticipant, e.Status = KindCommand, cmd.Name, cmd.Participant, UndoOpen
	} else {
		e.OfKind, e.OfName, e.OfParticipant, e.Status = KindEvent, ev.Name, ev.Participant, UndoReplied
	}
	return e
}

// commandEntry returns the index of the entry of inst whose forward
// command is id, or -1.
func commandEntry(inst *Instance, id string) int {
	if id == "" {
		return -1
	}
	for i := range inst.Undo {
		if inst.Undo[i].OfKind == KindCommand && inst.Undo[i].Of == id {
			return i
		}
	}
	return -1
}

// compensatingEntry returns the index of the entry whose compensation is in
// flight, or -1.
func compensatingEntry(inst *Instance) int {
	for i := range inst.Undo {
		if inst.Undo[i].Status == UndoCompensating {
			return i
		}
	}
	return -1
}

// wanted reports whether a saga ending in failure (or success) must
// compensate an entry with status s: a failure undoes everything that
// happened or may have happened; a success undoes only what the saga
// abandoned.
func wanted(s UndoStatus, failure bool) bool {
	switch s {
	case UndoOpen, UndoLate:
		return true
	case UndoReplied:
		return failure
	}
	return false
}

// nextUndos plans inst's compensations (PlanGroup) and returns the indexes
// of the entries to compensate next, together: the newest wanted entry and,
// when it belongs to a parallel step, every other wanted entry of that
// step; none when nothing is left.
//
// On success, an abandoned command is not undone when the saga sent the
// same compensable command again (another id) and went on with that one's
// answer: a compensation undoes the participant's business record (the
// debit of the deal), which the kept answer is part of.
func nextUndos(m *Model, inst *Instance, failure bool) []int {
	if len(inst.Undo) == 0 {
		return nil
	}
	taken := make([]Undo, len(inst.Undo))
	for i, e := range inst.Undo {
		comp, _ := m.CompensationByDone(e.Participant, e.Done)
		want := wanted(e.Status, failure)
		if want && !failure && keptOther(inst.Undo, i) {
			want = false
		}
		taken[i] = Undo{Compensation: comp, Of: e.Of, Compensated: !want, Group: e.Group}
	}
	plan := PlanGroup(taken)
	out := make([]int, 0, len(plan))
	for _, u := range plan {
		for i := range inst.Undo {
			if inst.Undo[i].Of == u.Of && inst.Undo[i].Group == u.Group {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// compensationTimerAt is when the earliest compensation in flight is due
// for a re-send (nil when none is in flight). An entry stored before
// entries had their own time (NextAt nil) keeps the saga's timer.
func compensationTimerAt(inst *Instance) *time.Time {
	var at *time.Time
	for i := range inst.Undo {
		e := &inst.Undo[i]
		if e.Status != UndoCompensating || e.Stuck {
			continue
		}
		t := e.NextAt
		if t == nil {
			t = inst.TimerAt
		}
		if t != nil && (at == nil || t.Before(*at)) {
			tt := *t
			at = &tt
		}
	}
	return at
}

// stuckEntry returns the index of the compensation an operator retries or
// resolves: the one marked stuck, else the first in flight; -1 for none.
func stuckEntry(inst *Instance) int {
	for i := range inst.Undo {
		if inst.Undo[i].Status == UndoCompensating && inst.Undo[i].Stuck {
			return i
		}
	}
	return compensatingEntry(inst)
}

// keptOther reports whether another entry than undo[i] has the same
// compensation and was replied (the saga went on with it).
func keptOther(undo []UndoEntry, i int) bool {
	e := undo[i]
	for j, o := range undo {
		if j != i && o.Status == UndoReplied && o.Participant == e.Participant && o.Command == e.Command && o.Done == e.Done {
			return true
		}
	}
	return false
}

// holdsBack reports whether a saga entering a failed state has effects to
// undo first, so that the failed transition's command waits.
func holdsBack(inst *Instance) bool {
	for _, e := range inst.Undo {
		if wanted(e.Status, true) {
			return true
		}
	}
	return false
}

// compensating reports whether the saga is undoing effects (or stopped
// doing so).
func compensating(s Status) bool { return s == StatusCompensating || s == StatusCompensationFailed }

// describe names an entry for timelines and logs, e.g.
// "REVERT_ORDER → profile (undoes command APPROVE_ORDER 9f…)".
func (e *UndoEntry) describe() string {
	return fmt.Sprintf("%s → %s (undoes %s %s %s)", e.Command, e.Participant, e.OfKind, e.OfName, e.Of)
}

// sendCompensation puts entry i's compensation command in the outbox (same
// id on every send), marks it compensating and arms its retry timer.
func (o *Orchestrator) sendCompensation(b *batch, w *sagaWork, i int, cause string) (Message, error) {
	inst := w.inst
	e := &inst.Undo[i]
	comp, ok := w.model.CompensationByDone(e.Participant, e.Done)
	if !ok {
		return Message{}, Errorf(CodeInternal, "send compensation",
			"saga %s: %s has no compensation %s answered by %s from %s", inst.ID, w.model, e.Command, e.Done, e.Participant)
	}
	if e.CommandID == "" {
		e.CommandID = derivedID("compensate", inst.ID, e.Of, e.Command)
	}
	if e.Cause == "" {
		e.Cause = cause
	}
	e.Status = UndoCompensating
	e.Attempts++
	e.Sent++
	if e.SentAt.IsZero() {
		e.SentAt = b.now
	}
	inst.Traceparent = traceOf(inst.Traceparent)
	payload := inst.Context
	if len(e.Payload) > 0 {
		payload = e.Payload // the mapped payload of the command it undoes
	} else if p := branchPayload(w.model, inst, e); p != nil {
		// An entry stored before compensations kept their command's
		// payload: the join still has what the branch command was sent with.
		payload = p
	}
	cmd := Message{
		V: EnvelopeVersion, ID: e.CommandID, SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion,
		Kind: KindCommand, Name: e.Command, Participant: e.Participant, CausationID: e.Cause,
		OccurredAt: b.now, Attempt: e.Sent, Compensates: e.Of, Payload: payload,
	}
	b.outbox = append(b.outbox, OutboxRecord{Topic: comp.Topic, Key: inst.ID, Message: cmd, Traceparent: inst.Traceparent})
	at := b.now.Add(retryDelay(comp.Retry, e.Attempts))
	e.NextAt, e.Stuck = &at, false
	inst.TimerAt = compensationTimerAt(inst)
	inst.UpdatedAt = b.now
	w.touch()
	return cmd, nil
}

// compensateNext moves a saga in a terminal state on: it sends the next
// compensation Plan gives (status compensating), or, when none is left,
// sends the held-back command of the failed transition and sets the
// outcome's status (failed or completed). cause is what made it
// compensate (causation of a first send).
func (o *Orchestrator) compensateNext(b *batch, w *sagaWork, cause string) error {
	inst, m := w.inst, w.model
	failure := m.IsFailed(inst.State)
	if j := inst.Join; j.Waiting() && inst.State != j.State {
		// An operator's abort left the join's state: the step is over.
		j.Outcome = JoinResultLeft
		j.stopRetries()
	}
	if compensatingEntry(inst) >= 0 {
		// Compensations of a parallel step are still in flight: the next
		// ones wait for all their done events.
		if inst.Status != StatusCompensationFailed {
			inst.TimerAt = compensationTimerAt(inst)
		}
		inst.UpdatedAt = b.now
		w.touch()
		return nil
	}
	if next := nextUndos(m, inst, failure); len(next) > 0 {
		why := "the saga failed"
		if !failure {
			why = "the saga ended without this effect"
		}
		for _, i := range next {
			cmd, err := o.sendCompensation(b, w, i, cause)
			if err != nil {
				return err
			}
			inst.Status = StatusCompensating
			e := inst.Undo[i]
			reason := fmt.Sprintf("compensating: %s; %s", e.describe(), why)
			if e.Group != "" {
				reason = fmt.Sprintf("compensating branch %s of the parallel step started by %s, together with its other branches: %s; %s", e.Branch, e.Group, e.describe(), why)
			}
			b.entries = append(b.entries, HistoryEntry{
				SagaID: inst.ID, At: b.now, Kind: EntryCompensation, FromState: inst.State, ToState: inst.State,
				Commands: []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt, Branch: e.Branch}},
				Reason:   reason,
			})
			id, saga := inst.ID, inst.Saga
			b.after = append(b.after, func() {
				o.cob.Compensation(saga, e.Command, CompensationSent)
				o.log.Info("compensation sent", "saga_id", id, "saga", saga, "command", e.Command, "participant", e.Participant,
					"undoes", e.OfName, "of", e.Of)
			})
		}
		return nil
	}
	was := inst.Status
	inst.TimerAt = nil
	var refs []CommandRef
	notSent := ""
	if d := inst.Deferred; d != nil {
		cmd := *d
		cmd.OccurredAt = b.now
		mapped := false
		if spec := m.sendInto(inst.State, cmd.Name, cmd.Participant); spec != nil && spec.Payload != nil {
			// Built again from the context of now; the payload of when the
			// saga failed is kept should the mapping fail now.
			mapped = true
			if p, err := spec.BuildPayload(inst.ID, inst.Context); err == nil {
				cmd.Payload = p
			} else if cmd.Payload == nil {
				notSent = fmt.Sprintf("the held-back %s was not sent: its payload mapping fails on the saga's context (%v)", cmd.Name, err)
			}
		} else if cmd.Payload == nil {
			cmd.Payload = inst.Context
		}
		inst.Deferred = nil
		if notSent == "" {
			inst.Traceparent = traceOf(inst.Traceparent)
			b.outbox = append(b.outbox, OutboxRecord{Topic: m.Topic(cmd.Participant), Key: inst.ID, Message: cmd, Traceparent: inst.Traceparent})
			pending := cmd
			if !mapped {
				pending.Payload = nil
			}
			inst.Pending, inst.Attempts = &pending, 1
			refs = []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt}}
		} else {
			id, name, why := inst.ID, cmd.Name, notSent
			b.after = append(b.after, func() {
				o.log.Error("held-back command not sent", "saga_id", id, "command", name, "reason", why)
			})
		}
	}
	inst.Status = statusOf(m, inst.State)
	inst.UpdatedAt = b.now
	w.touch()
	if compensating(was) {
		reason := "every compensation is done; the saga is " + string(inst.Status)
		if len(refs) > 0 {
			reason += "; sent the held-back " + refs[0].Name
		}
		if notSent != "" {
			reason += "; " + notSent
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryCompensation, FromState: inst.State, ToState: inst.State,
			Commands: refs, Reason: reason,
		})
		id, saga, status := inst.ID, inst.Saga, inst.Status
		b.after = append(b.after, func() {
			o.log.Info("saga compensated", "saga_id", id, "saga", saga, "status", string(status))
		})
	}
	return nil
}

// compensationTimer handles the due timer of a compensating saga: each
// compensation in flight whose time came (several for a parallel step's
// branches) is sent again, or, past its last attempt, marked stuck and the
// saga stops as compensation_failed.
func (o *Orchestrator) compensationTimer(b *batch, w *sagaWork) error {
	inst := w.inst
	if compensatingEntry(inst) < 0 {
		return o.compensateNext(b, w, "")
	}
	saga, id := inst.Saga, inst.ID
	armed := inst.TimerAt
	for i := range inst.Undo {
		e := &inst.Undo[i]
		if e.Status != UndoCompensating || e.Stuck {
			continue
		}
		if due := e.NextAt; due == nil {
			if armed != nil && armed.After(b.now) {
				continue
			}
		} else if due.After(b.now) {
			continue
		}
		comp, ok := w.model.CompensationByDone(e.Participant, e.Done)
		if !ok {
			return Errorf(CodeInternal, "compensation timer", "saga %s: %s has no compensation %s", inst.ID, w.model, e.Command)
		}
		if e.Attempts+1 < comp.Retry.Attempts { // the last attempt is always sent
			if why := o.stillQueued(e.Participant, comp.Topic, e.SentAt, retryDelay(comp.Retry, e.Attempts), b.now); why != "" {
				// Still queued behind older commands: counted, not re-sent.
				e.Attempts++
				at := b.now.Add(retryDelay(comp.Retry, e.Attempts))
				e.NextAt = &at
				b.entries = append(b.entries, HistoryEntry{
					SagaID: id, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State,
					Reason: fmt.Sprintf("no %s for compensation %s yet; attempt %d of %d not re-sent: %s", e.Done, e.Command, e.Attempts, comp.Retry.Attempts, why),
				})
				o.heldBack(b, saga, id, e.Command)
				continue
			}
		}
		if e.Attempts < comp.Retry.Attempts {
			cmd, err := o.sendCompensation(b, w, i, "")
			if err != nil {
				return err
			}
			b.entries = append(b.entries, HistoryEntry{
				SagaID: id, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State,
				Commands: []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt, Branch: e.Branch}},
				Reason:   fmt.Sprintf("no %s for compensation %s; attempt %d of %d", e.Done, e.Command, e.Attempts, comp.Retry.Attempts),
			})
			b.after = append(b.after, func() {
				o.obs.CommandRetried(saga, cmd.Name)
				o.log.Info("compensation re-sent", "saga_id", id, "command", cmd.Name, "attempt", cmd.Attempt)
			})
			continue
		}
		e.Stuck, e.NextAt = true, nil
		inst.Status, inst.UpdatedAt = StatusCompensationFailed, b.now
		w.touch()
		reason := fmt.Sprintf("compensation %s was not answered with %s after %d attempts: the saga stopped; "+
			"undo the effect by hand and resolve it, or retry it once %s can answer (POST /api/v1/sagas/%s/compensation/resolve or /retry)",
			e.describe(), e.Done, e.Attempts, e.Participant, id)
		b.entries = append(b.entries, HistoryEntry{
			SagaID: id, At: b.now, Kind: EntryCompensationFailed, FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: e.CommandID, Name: e.Command, Participant: e.Participant, Attempt: e.Sent, Branch: e.Branch}},
			Reason:   reason,
		})
		cmdName := e.Command
		b.after = append(b.after, func() {
			o.cob.Compensation(saga, cmdName, CompensationFailed)
			o.log.Error("compensation failed: saga stopped for an operator", "saga_id", id, "saga", saga, "command", cmdName, "reason", reason)
		})
	}
	if inst.Status == StatusCompensationFailed {
		inst.TimerAt = nil
	} else {
		inst.TimerAt = compensationTimerAt(inst)
	}
	inst.UpdatedAt = b.now
	w.touch()
	return nil
}

// applyDone applies the done event of compensation comp: the compensation
// it answers (causation_id = its command id) is done, the payload merges
// into the context and the next compensation (or the held-back command)
// goes out. A done event for a compensation already done or resolved is
// recorded as late and changes nothing.
func (o *Orchestrator) applyDone(b *batch, w *sagaWork, in *inbound, comp *Compensation) error {
	m, inst := &in.msg, w.inst
	i := -1
	for j := range inst.Undo {
		e := &inst.Undo[j]
		if e.CommandID != "" && e.CommandID == m.CausationID && e.Participant == m.Participant && e.Done == m.Name {
			i = j
			break
		}
	}
	if i < 0 {
		return Errorf(CodeIllegal, "apply "+m.Name,
			"%s from %s is the done event of compensation %s, but its causation_id %q is not a %s command saga %s sent: "+
				"a done event must answer the compensation command it reports on",
			m.Name, m.Participant, comp.Command, m.CausationID, comp.Command, inst.ID)
	}
	e := &inst.Undo[i]
	saga, id := inst.Saga, inst.ID
	if e.Status != UndoCompensating {
		b.entries = append(b.entries, HistoryEntry{
			SagaID: id, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: inst.State, ToState: inst.State,
			Reason: fmt.Sprintf("%s again for compensation %s, which is already %s: nothing to do", m.Name, e.describe(), e.Status),
		})
		ev := m.Name
		b.after = append(b.after, func() { o.cob.LateReply(saga, ev) })
		return nil
	}
	if ct := w.model.Contract(m.Name); ct != nil {
		if err := ct.Check(m.Payload); err != nil {
			return err
		}
	}
	if err := w.merge(m.Payload); err != nil {
		return err
	}
	if touchesKeys(w.model, m.Payload) {
		inst.Keys = extractKeys(w.model, inst.Context)
	}
	if in.trace != "" {
		inst.Traceparent = in.trace
	}
	e.Status, e.NextAt, e.Stuck = UndoCompensated, nil, false
	inst.UpdatedAt = b.now
	w.touch()
	if sent, now := e.SentAt, b.now; !sent.IsZero() {
		// How far the participant's command topic got (progress.go).
		b.after = append(b.after, func() { o.progress.answered(comp.Topic, sent, now) })
	}
	b.entries = append(b.entries, HistoryEntry{
		SagaID: id, At: b.now, Kind: EntryCompensation, MessageID: m.ID, Event: m.Name, By: m.Participant,
		FromState: inst.State, ToState: inst.State, Reason: "compensation done: " + e.describe(),
	})
	cmdName, ev, latency := e.Command, m.Name, b.now.Sub(m.OccurredAt)
	b.after = append(b.after, func() {
		o.obs.EventApplied(saga, ev, latency)
		o.cob.Compensation(saga, cmdName, CompensationDone)
		o.log.Info("compensation done", "saga_id", id, "command", cmdName, "event", ev)
	})
	if compensating(inst.Status) {
		return o.compensateNext(b, w, m.ID)
	}
	return nil
}

// applyExpired applies a participant's COMMAND_EXPIRED: the command it
// answers (causation_id) had no effect. For the command the saga waits for
// the step failed at once: its retry's exhausted event (or the state's
// timeout event) is raised now. For a compensable command sent earlier
// the entry becomes expired (nothing to undo). For any other command the
// saga sent it is recorded (checked against the timeline when the batch is
// written); for a command the saga did not send it is refused.
func (o *Orchestrator) applyExpired(b *batch, w *sagaWork, in *inbound) error {
	m, inst, model := &in.msg, w.inst, w.model
	op := "apply " + EventCommandExpired
	if m.CausationID == "" {
		return Errorf(CodeInvalid, op, "%s from %s has no causation_id: it must name the command it refused", EventCommandExpired, m.Participant)
	}
	if inst.Join != nil {
		if took, err := o.expireBranch(b, w, in); took || err != nil {
			return err
		}
	}
	saga, id := inst.Saga, inst.ID
	if p := inst.Pending; p != nil && p.ID == m.CausationID && inst.Status == StatusRunning && !model.IsTerminal(inst.State) {
		if p.Participant != m.Participant {
			return Errorf(CodeWrongParticipant, op, "%s answers command %s %s, which was sent to %s, not %s", EventCommandExpired, p.Name, p.ID, p.Participant, m.Participant)
		}
		if i := commandEntry(inst, p.ID); i >= 0 && inst.Undo[i].Status == UndoOpen {
			inst.Undo[i].Status = UndoExpired
		}
		raise := ""
		if r := pendingRetry(model, inst); r != nil {
			raise = r.Exhausted.Value
		} else if to := model.Timeout(inst.State); to != nil {
			raise = to.Event.Value
		}
		next := "no retry or time limit gives up on it: the saga keeps waiting (an operator may abort it)"
		if raise != "" {
			next = "the step failed without effect: raising " + raise + " now"
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: id, At: b.now, Kind: EntryExpired, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: p.ID, Name: p.Name, Participant: p.Participant, Attempt: inst.Attempts}},
			Reason:   expiredReason(m, p.Name) + "; " + next,
		})
		inst.UpdatedAt = b.now
		w.touch()
		cmdName := p.Name
		b.after = append(b.after, func() {
			o.cob.CommandExpired(saga, cmdName)
			o.log.Info("command expired", "saga_id", id, "command", cmdName, "raise", raise)
		})
		if raise == "" {
			inst.Pending, inst.Attempts = nil, 0
			inst.TimerAt = nextTimer(model, inst, nil, b.now)
			return nil
		}
		o.raiseNow(b, w, raise, derivedID("expired", id, m.CausationID, raise))
		return nil
	}
	if i := commandEntry(inst, m.CausationID); i >= 0 {
		e := &inst.Undo[i]
		if e.OfParticipant != m.Participant {
			return Errorf(CodeWrongParticipant, op, "%s answers command %s %s, which was sent to %s, not %s", EventCommandExpired, e.OfName, e.Of, e.OfParticipant, m.Participant)
		}
		var what string
		switch e.Status {
		case UndoOpen:
			e.Status = UndoExpired
			what = "nothing to undo"
		case UndoCompensating:
			what = "its compensation " + e.Command + " is under way and is answered all the same"
		default:
			what = "the effect is " + string(e.Status)
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: id, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: e.Of, Name: e.OfName, Participant: e.OfParticipant}},
			Reason:   expiredReason(m, e.OfName) + " after the saga stopped waiting for it; " + what,
		})
		inst.UpdatedAt = b.now
		w.touch()
		cmdName := e.OfName
		b.after = append(b.after, func() { o.cob.CommandExpired(saga, cmdName) })
		return nil
	}
	// Some other command: the saga's timeline says whether it sent it.
	check := *in
	b.checks = append(b.checks, func(ctx context.Context, tx Tx) error {
		ref, found, err := tx.SentCommand(ctx, check.msg.SagaID, check.msg.CausationID)
		if err != nil {
			return fmt.Errorf("look up command %s of saga %s: %w", check.msg.CausationID, check.msg.SagaID, err)
		}
		switch {
		case !found:
			o.refuse(b, &check, Errorf(CodeIllegal, op, "%s from %s answers command %q, which saga %s never sent",
				EventCommandExpired, check.msg.Participant, check.msg.CausationID, check.msg.SagaID))
		case ref.Participant != check.msg.Participant:
			o.refuse(b, &check, Errorf(CodeWrongParticipant, op, "%s answers command %s %s, which was sent to %s, not %s",
				EventCommandExpired, ref.Name, ref.ID, ref.Participant, check.msg.Participant))
		default:
			b.entries = append(b.entries, HistoryEntry{
				SagaID: check.msg.SagaID, At: b.now, Kind: EntryLate, MessageID: check.msg.ID, Event: check.msg.Name,
				By: check.msg.Participant, FromState: w.inst.State, ToState: w.inst.State, Commands: []CommandRef{ref},
				Reason: expiredReason(&check.msg, ref.Name) + " after the saga stopped waiting for it; it had no effect",
			})
			b.after = append(b.after, func() { o.cob.CommandExpired(saga, ref.Name) })
		}
		return nil
	})
	return nil
}

// expiredReason says what a COMMAND_EXPIRED reported.
func expiredReason(m *Message, command string) string {
	s := fmt.Sprintf("%s refused %s (command %s) for its deadline: it had no effect", m.Participant, command, m.CausationID)
	if r := strings.TrimSpace(m.Reason); r != "" {
		s += " (" + abbreviate(r, 300) + ")"
	}
	return s
}

// abbreviate cuts s to at most n bytes at a rune boundary, with an
// ellipsis.
func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// applyLate takes an event the state machine refused (refusal) and, if it
// answers a compensable command of the saga, records it as a late reply
// instead of a dead letter: the effect happened after the saga gave up on
// it, so the entry becomes late and is compensated (now, if the saga is
// finished; after the compensation in flight, if it is compensating; when
// it ends, if it still runs). It reports whether it took the event; an
// error means the compensation could not be sent.
func (o *Orchestrator) applyLate(b *batch, w *sagaWork, in *inbound, refusal error) (bool, error) {
	switch ErrorCode(refusal) {
	case CodeIllegal, CodeFinished:
	default:
		return false, nil
	}
	m, inst := &in.msg, w.inst
	i := commandEntry(inst, m.CausationID)
	if i < 0 || inst.Undo[i].OfParticipant != m.Participant {
		return false, nil
	}
	e := &inst.Undo[i]
	var what string
	var refs []CommandRef
	switch e.Status {
	case UndoOpen, UndoExpired:
		e.Status = UndoLate
		switch {
		case inst.Status == StatusRunning:
			what = fmt.Sprintf("the saga had moved on; %s undoes it when the saga ends", e.Command)
		case inst.Status == StatusCompensating:
			what = fmt.Sprintf("%s is queued after the compensation under way", e.Command)
		case inst.Status == StatusCompensationFailed:
			what = fmt.Sprintf("%s is queued after the stuck compensation is retried or resolved", e.Command)
		default:
			n := len(b.outbox)
			if err := o.compensateNext(b, w, m.ID); err != nil {
				return false, err
			}
			for _, r := range b.outbox[n:] {
				refs = append(refs, CommandRef{ID: r.Message.ID, Name: r.Message.Name, Participant: r.Message.Participant, Attempt: r.Message.Attempt})
			}
			if e.Status == UndoCompensating {
				what = fmt.Sprintf("the saga had finished; %s is sent now", e.Command)
			} else {
				what = fmt.Sprintf("the saga had finished with another %s answered and kept, which this effect is part of; nothing to undo", e.OfName)
			}
		}
	case UndoCompensating:
		what = fmt.Sprintf("its compensation %s is under way and undoes it", e.Command)
	case UndoCompensated, UndoResolved:
		what = fmt.Sprintf("its compensation %s already ran (%s): the effect was undone", e.Command, e.Status)
	default: // replied, late: answered before
		what = fmt.Sprintf("the command was answered before (%s); nothing more to do", e.Status)
	}
	b.entries = append(b.entries, HistoryEntry{
		SagaID: inst.ID, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
		FromState: inst.State, ToState: inst.State, Commands: refs,
		Reason: fmt.Sprintf("%s answers %s (command %s) after the saga stopped waiting for it; %s", m.Name, e.OfName, e.Of, what),
	})
	inst.UpdatedAt = b.now
	w.touch()
	saga, id, ev := inst.Saga, inst.ID, m.Name
	b.after = append(b.after, func() {
		o.cob.LateReply(saga, ev)
		o.log.Info("late reply", "saga_id", id, "event", ev, "what", what)
	})
	return true, nil
}

// lateWithoutEffects takes an event the state machine refused (refusal:
// the saga is finished, or in a state that does not accept it) that names
// the command it answers, when the definition sends its sender some
// command with effects: none. Whether it answers such a command is read
// from the saga's timeline when the batch is written: if the saga sent
// that command to the sender, the answer is recorded as late (it changed
// nothing anywhere: nothing to undo, nothing to park); otherwise it is
// refused as before (a dead letter with refusal). It reports whether it
// took the event.
func (o *Orchestrator) lateWithoutEffects(b *batch, w *sagaWork, in *inbound, refusal error) bool {
	switch ErrorCode(refusal) {
	case CodeIllegal, CodeFinished:
	default:
		return false
	}
	if in.msg.CausationID == "" || !w.model.sendsNoEffects(in.msg.Participant) {
		return false
	}
	check, model, state := *in, w.model, w.inst.State
	b.checks = append(b.checks, func(ctx context.Context, tx Tx) error {
		m := &check.msg
		ref, found, err := tx.SentCommand(ctx, m.SagaID, m.CausationID)
		if err != nil {
			return fmt.Errorf("look up command %s of saga %s: %w", m.CausationID, m.SagaID, err)
		}
		if !found || ref.Participant != m.Participant || !model.NoEffects(ref.Participant, ref.Name) {
			o.refuse(b, &check, refusal)
			return nil
		}
		b.entries = append(b.entries, HistoryEntry{
			SagaID: m.SagaID, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
			FromState: state, ToState: state, Commands: []CommandRef{ref},
			Reason: fmt.Sprintf("%s answers %s (command %s) after the saga stopped waiting for it; %s has no effects (effects: none): nothing to undo",
				m.Name, ref.Name, ref.ID, ref.Name),
		})
		saga, ev := model.Name(), m.Name
		b.after = append(b.after, func() { o.cob.LateReply(saga, ev) })
		return nil
	})
	return true
}

// lateStop takes an event the state machine refused because the saga is
// over (refusal CodeFinished) when the saga ended failed and the event
// only asks it to stop (Model.OnlyStops: every transition on it, by its
// sender, leads into a failed state; no causation: it answers no
// command). Such a request lost a race with another way the saga stopped
// (a client's cancellation after an operator's abort, or after a timeout):
// what it asks for has happened, so it is a late entry of the timeline,
// not a dead letter. On a saga that ended in success, or from a sender the
// definition does not take it from, it is refused as before. It reports
// whether it took the event.
func (o *Orchestrator) lateStop(b *batch, w *sagaWork, in *inbound, refusal error) bool {
	m, inst := &in.msg, w.inst
	if ErrorCode(refusal) != CodeFinished || m.CausationID != "" || !w.model.IsFailed(inst.State) || !w.model.OnlyStops(m.Name, m.Participant) {
		return false
	}
	b.entries = append(b.entries, HistoryEntry{
		SagaID: inst.ID, At: b.now, Kind: EntryLate, MessageID: m.ID, Event: m.Name, By: m.Participant,
		FromState: inst.State, ToState: inst.State,
		Reason: fmt.Sprintf("%s from %s asks to stop the saga, which had already stopped in %s (%s): nothing more to do",
			m.Name, m.Participant, inst.State, inst.Status),
	})
	saga, id, ev := inst.Saga, inst.ID, m.Name
	b.after = append(b.after, func() {
		o.cob.LateReply(saga, ev)
		o.log.Info("late request to stop a saga that had stopped", "saga_id", id, "event", ev)
	})
	return true
}

// RetryCompensation sends a saga's stuck compensation again (status
// compensation_failed): same command id, its retry policy starting over,
// and records the operator's action in the timeline. A saga in any other
// status is CodeConflict.
func (o *Orchestrator) RetryCompensation(ctx context.Context, sagaID, actor, reason string) (Instance, error) {
	const op = "retry compensation of saga"
	return o.operator(ctx, op, sagaID, actor, func(b *batch, w *sagaWork) error {
		inst := w.inst
		i := stuckEntry(inst)
		if inst.Status != StatusCompensationFailed || i < 0 {
			return Errorf(CodeConflict, op, "saga %s is %s, not compensation_failed: there is no stuck compensation to retry", inst.ID, inst.Status)
		}
		e := &inst.Undo[i]
		e.Attempts = 0
		cmd, err := o.sendCompensation(b, w, i, "")
		if err != nil {
			return err
		}
		inst.Status = StatusCompensating
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: "COMPENSATION_RETRY", FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt}},
			Actor:    actor, Reason: reason,
		})
		id, saga, name := inst.ID, inst.Saga, cmd.Name
		b.after = append(b.after, func() {
			o.cob.Compensation(saga, name, CompensationRetried)
			o.log.Info("operator retried compensation", "saga_id", id, "command", name, "actor", actor, "reason", reason)
		})
		return nil
	})
}

// ResolveCompensation records that an operator undid a saga's stuck
// compensation by hand (status compensation_failed): the entry becomes
// resolved with the actor and reason, and the saga goes on with the next
// compensation (or the held-back command, and ends). A saga in any other
// status is CodeConflict.
func (o *Orchestrator) ResolveCompensation(ctx context.Context, sagaID, actor, reason string) (Instance, error) {
	const op = "resolve compensation of saga"
	return o.operator(ctx, op, sagaID, actor, func(b *batch, w *sagaWork) error {
		inst := w.inst
		i := stuckEntry(inst)
		if inst.Status != StatusCompensationFailed || i < 0 {
			return Errorf(CodeConflict, op, "saga %s is %s, not compensation_failed: there is no stuck compensation to resolve", inst.ID, inst.Status)
		}
		if strings.TrimSpace(reason) == "" {
			return Errorf(CodeInvalid, op, "reason is empty: say how the effect was undone")
		}
		e := &inst.Undo[i]
		e.Status, e.ResolvedBy, e.Reason, e.Stuck, e.NextAt = UndoResolved, actor, reason, false, nil
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryOperator, Event: "COMPENSATION_RESOLVE", FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: e.CommandID, Name: e.Command, Participant: e.Participant, Attempt: e.Sent}},
			Actor:    actor, Reason: reason,
		})
		id, saga, name := inst.ID, inst.Saga, e.Command
		b.after = append(b.after, func() {
			o.cob.Compensation(saga, name, CompensationResolved)
			o.log.Info("operator resolved compensation", "saga_id", id, "command", name, "actor", actor, "reason", reason)
		})
		return o.compensateNext(b, w, derivedID("resolve", inst.ID, e.CommandID))
	})
}

// willHold reports whether taking step (into a failed state) holds its
// command back: the saga has effects to undo, or the step adds one.
func willHold(inst *Instance, step Step) bool {
	return holdsBack(inst) || step.Undo != nil || (step.Send != nil && step.Send.Compensate != nil)
}

// branchPayload returns the payload the branch command e undoes was sent
// with, from the saga's join, when a payload mapping built it; nil when e
// undoes no mapped branch command of the join.
func branchPayload(m *Model, inst *Instance, e *UndoEntry) json.RawMessage {
	if e.Group == "" || e.OfKind != KindCommand || inst.Join == nil || inst.Join.Cause != e.Group {
		return nil
	}
	p := m.Parallel(inst.Join.Step)
	for i := range inst.Join.Commands {
		c := &inst.Join.Commands[i]
		if c.ID != e.Of {
			continue
		}
		if p == nil || c.Branch < 0 || c.Branch >= len(p.Branches) || p.Branches[c.Branch].Command.Payload == nil {
			return nil // not built by a mapping: the context, as for any other
		}
		return c.Payload
	}
	return nil
}
