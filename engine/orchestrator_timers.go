package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
)

// unknownDefinitionRetry is how long a timer of a saga whose definition
// this replica has not loaded waits before it is tried again.
const unknownDefinitionRetry = time.Minute

// EngineTopic is the Topic of the dead letters of events the engine raised
// itself (timeouts, exhausted retries): they came from no Kafka topic, and
// it is not a valid Kafka topic name. Only such a dead letter may be
// replayed with participant definition.Engine.
const EngineTopic = "(engine)"

// timerLoop fires due timers every Config.TimerPoll until ctx is done.
func (o *Orchestrator) timerLoop(ctx context.Context) {
	t := time.NewTicker(o.cfg.TimerPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := o.FireTimers(ctx)
			if err != nil && ctx.Err() == nil {
				o.log.Warn("fire due timers failed", "err", err)
			}
			if n < o.cfg.TimerBatch || err != nil {
				break
			}
		}
	}
}

// FireTimers handles the sagas whose timer is due now (at most
// Config.TimerBatch) and returns how many it looked at. They are handled
// in one transaction (fireTimers), as the intake handles a batch of
// events: under overload thousands of retry timers come due at once, and
// one transaction each cost more than the re-sends themselves. When that
// transaction fails (a saga changed concurrently, a refused timer event),
// each saga is handled in its own transaction instead, so one saga's
// trouble does not hold back the others. Run calls it every
// Config.TimerPoll; tests call it directly.
func (o *Orchestrator) FireTimers(ctx context.Context) (int, error) {
	ids, err := o.st.DueTimers(ctx, o.cfg.Clock().UTC(), o.cfg.TimerBatch)
	if err != nil {
		return 0, fmt.Errorf("find due timers: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	if len(ids) > 1 {
		fired, err := o.fireTimers(ctx, ids)
		if err == nil {
			if fired {
				o.Wake()
			}
			return len(ids), nil
		}
		if ctx.Err() != nil {
			return len(ids), ctx.Err()
		}
		o.log.Debug("firing timers together failed; one saga at a time", "sagas", len(ids), "err", err)
	}
	fired := false
	for _, id := range ids {
		ok, err := o.fireTimer(ctx, id)
		if err != nil {
			if ErrorCode(err) == CodeConflict {
				// Another replica or the intake changed the saga; whoever
				// won re-armed (or cleared) its timer.
				o.log.Debug("timer skipped: saga changed concurrently", "saga_id", id)
				continue
			}
			if ctx.Err() != nil {
				return len(ids), ctx.Err()
			}
			o.log.Warn("fire timer failed", "saga_id", id, "err", err)
			continue
		}
		fired = fired || ok
	}
	if fired {
		o.Wake()
	}
	return len(ids), nil
}

// fireTimers handles the due timers of sagaIDs in one transaction (see
// timerStep) and reports whether it did anything; a saga no longer due
// (another replica handled it) is skipped; any error leaves everything as
// it was.
func (o *Orchestrator) fireTimers(ctx context.Context, sagaIDs []string) (bool, error) {
	var b *batch
	did := false
	err := o.st.InTx(ctx, func(ctx context.Context, tx Tx) error {
		b, did = newBatch(o.cfg.Clock().UTC()), false
		loaded, err := tx.Load(ctx, sagaIDs)
		if err != nil {
			return fmt.Errorf("load %d sagas: %w", len(sagaIDs), err)
		}
		for _, id := range sagaIDs { // in the order DueTimers gave them
			if inst := loaded[id]; inst != nil && inst.TimerAt != nil && !inst.TimerAt.After(b.now) {
				b.add(map[string]*Instance{id: inst}) // the others: another replica handled them
			}
		}
		if len(b.sagas) == 0 {
			return nil
		}
		for _, id := range sagaIDs {
			if w := b.sagas[id]; w != nil {
				did = true
				if err := o.timerStep(ctx, tx, b, w); err != nil {
					return fmt.Errorf("saga %s: %w", id, err)
				}
			}
		}
		return b.write(ctx, tx)
	})
	if err != nil {
		if len(sagaIDs) == 1 {
			return false, fmt.Errorf("fire a timer: %w", err) // err names the saga
		}
		return false, fmt.Errorf("fire the timers of %d sagas: %w", len(sagaIDs), err)
	}
	b.committed()
	return did, nil
}

// fireTimer handles one saga's due timer in its own transaction (see
// timerStep). It reports whether it did anything.
func (o *Orchestrator) fireTimer(ctx context.Context, sagaID string) (bool, error) {
	return o.fireTimers(ctx, []string{sagaID})
}

// timerStep does what w's due timer calls for, into b: a compensation's
// re-send or give-up, the state's timeout event, a parallel step's branch
// re-sends, the pending command's re-send (or its held-back attempt), or,
// after the last attempt, the retry's exhausted event.
func (o *Orchestrator) timerStep(ctx context.Context, tx Tx, b *batch, w *sagaWork) error {
	inst, sagaID := w.inst, w.inst.ID
	var err error
	w.model, err = o.cat.Get(inst.Saga, inst.SagaVersion)
	if err != nil {
		// Nothing can be done without the definition here. Another
		// replica (newer, during a rolling deploy) may have it: try
		// again in a minute rather than disarm, so that the saga's
		// retries and timeouts are not lost; the loop does not spin.
		at := b.now.Add(unknownDefinitionRetry)
		inst.TimerAt, w.changed = &at, true
		b.after = append(b.after, func() {
			o.log.Error("timer postponed: the saga's definition is not loaded on this replica", "saga_id", sagaID, "retry_at", at, "err", err)
		})
		return nil
	}
	m := w.model
	to := m.Timeout(inst.State)
	retry := pendingRetry(m, inst)
	switch {
	case inst.Status == StatusCompensating:
		if err := o.compensationTimer(b, w); err != nil {
			return err
		}
	case m.IsTerminal(inst.State):
		inst.TimerAt, w.changed = nil, true
	case to != nil && !b.now.Before(inst.EnteredAt.Add(to.After)):
		if err := o.raise(ctx, tx, b, w, to.Event.Value); err != nil {
			return err
		}
	case inst.Join.Waiting() && inst.Join.State == inst.State:
		o.joinTimer(b, w)
	case retry != nil && inst.Attempts < retry.Attempts && o.holdBack(b, w, retry):
		// Still queued behind older commands: counted, not re-sent.
	case retry != nil && inst.Attempts < retry.Attempts:
		cmd := o.resend(b, w)
		inst.TimerAt = nextTimer(m, inst, retry, b.now)
		inst.UpdatedAt = b.now
		w.changed = true
		b.entries = append(b.entries, HistoryEntry{
			SagaID: inst.ID, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State,
			Commands: []CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: cmd.Attempt}},
			Reason:   fmt.Sprintf("no answer to %s; attempt %d of %d", cmd.Name, cmd.Attempt, retry.Attempts),
		})
		saga := inst.Saga
		b.after = append(b.after, func() {
			o.obs.CommandRetried(saga, cmd.Name)
			o.log.Info("command re-sent", "saga_id", sagaID, "command", cmd.Name, "attempt", cmd.Attempt)
		})
	case retry != nil:
		if err := o.raise(ctx, tx, b, w, retry.Exhausted.Value); err != nil {
			return err
		}
	default:
		inst.TimerAt, w.changed = nil, true // nothing left to wait for
	}
	return nil
}

// raise applies an event the engine emits itself (by definition.Engine) to
// w through the same path as participants' events. Its id is derived from
// the saga id, its revision and the event, so that two replicas racing for
// the same timer raise the same message and the inbox keeps one.
func (o *Orchestrator) raise(ctx context.Context, tx Tx, b *batch, w *sagaWork, event string) error {
	id := derivedID("timer", w.inst.ID, strconv.FormatInt(w.inst.Rev, 10), event)
	fresh, err := tx.Claim(ctx, []string{id})
	if err != nil {
		return fmt.Errorf("claim timer event %s: %w", event, err)
	}
	if !fresh[id] {
		return Errorf(CodeConflict, "raise "+event, "saga %s: the event was already raised", w.inst.ID)
	}
	o.raiseNow(b, w, event, id)
	return nil
}

// raiseNow applies the engine's event with message id id to w. If the
// state machine refuses it, it is dead-lettered (topic EngineTopic) and
// the saga's timer disarmed.
func (o *Orchestrator) raiseNow(b *batch, w *sagaWork, event, id string) {
	inst := w.inst
	in := inbound{kind: EntryTimer, trace: traceOf(inst.Traceparent), msg: Message{
		V: EnvelopeVersion, ID: id,
		SagaID: inst.ID, Saga: inst.Saga, SagaVersion: inst.SagaVersion, Kind: KindEvent, Name: event,
		Participant: definition.Engine, OccurredAt: b.now,
	}}
	in.inboxID = in.msg.ID
	in.rec = Record{Topic: EngineTopic, Key: inst.ID, Partition: -1, Offset: -1}
	in.rec.Value, _ = json.Marshal(in.msg)
	if err := o.apply(b, &in); err != nil {
		o.refuse(b, &in, err)
		inst.TimerAt = nil
		w.touch()
		return
	}
	saga := inst.Saga
	b.after = append(b.after, func() {
		o.obs.TimerFired(saga, event)
		o.log.Info("engine raised event", "saga_id", inst.ID, "event", event, "state", inst.State)
	})
}

// stillQueued says why a command first sent at first to participant on
// topic is most likely still queued (progress.go), judged on the wait
// that just ended (wait long, ending now): the participant answered
// commands sent a quarter of the wait or more before it, or the relay
// published only commands enqueued that long before it; "" when neither
// (re-send it). A zero first is never judged (a saga stored before its
// commands' send times were kept).
func (o *Orchestrator) stillQueued(participant, topic string, first time.Time, wait time.Duration, now time.Time) string {
	if first.IsZero() {
		return ""
	}
	since := now.Add(-wait)
	if since.Before(first) {
		since = first
	}
	cutoff := first.Add(-wait / 4)
	if behind, oldest := o.progress.behind(topic, since, now, cutoff); behind {
		return fmt.Sprintf("%s is still answering older commands (during the last %s, one sent %s before this one)",
			participant, wait, first.Sub(oldest).Round(time.Millisecond))
	}
	if behind, newest := o.progress.outboxBehind(since, cutoff); behind {
		return fmt.Sprintf("it is most likely still in the outbox (during the last %s the relay published commands enqueued up to %s before this one)",
			wait, first.Sub(newest).Round(time.Millisecond))
	}
	return ""
}

// holdBack counts the next attempt of w's pending command without sending
// it again when its participant is behind it (progress.go): during the
// wait that just ended it answered commands sent a quarter of the wait or
// more before this one. The last attempt is never held back. The timer is
// armed as after a re-send, so the budget ends when it would.
func (o *Orchestrator) holdBack(b *batch, w *sagaWork, retry *definition.Retry) bool {
	inst := w.inst
	cmd := inst.Pending
	if cmd.OccurredAt.IsZero() || inst.Attempts+1 >= retry.Attempts {
		// The last attempt is always sent: whatever the evidence, a
		// command that was lost or parked gets one more chance before the
		// budget ends.
		return false
	}
	// Progress is kept per command topic: two definitions may give one
	// participant name to different topics. The wait that just ended
	// began with the previous attempt.
	why := o.stillQueued(cmd.Participant, w.model.Topic(cmd.Participant), cmd.OccurredAt, retryDelay(retry, inst.Attempts), b.now)
	if why == "" {
		return false
	}
	inst.Attempts++
	inst.TimerAt = nextTimer(w.model, inst, retry, b.now)
	inst.UpdatedAt = b.now
	w.changed = true
	b.entries = append(b.entries, HistoryEntry{
		SagaID: inst.ID, At: b.now, Kind: EntryRetry, FromState: inst.State, ToState: inst.State,
		Reason: fmt.Sprintf("no answer to %s yet; attempt %d of %d not re-sent: %s", cmd.Name, inst.Attempts, retry.Attempts, why),
	})
	o.heldBack(b, inst.Saga, inst.ID, cmd.Name)
	return true
}

// heldBack reports, after the batch commits, a re-send of command of saga
// sagaID (definition saga) that was held back.
func (o *Orchestrator) heldBack(b *batch, saga, sagaID, command string) {
	b.after = append(b.after, func() {
		if ro, ok := o.obs.(ResendObserver); ok {
			ro.CommandHeldBack(saga, command)
		}
		o.log.Debug("re-send held back: the participant is behind", "saga_id", sagaID, "command", command)
	})
}
