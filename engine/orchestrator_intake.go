package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
)

// The intake: Run's intakeLoop fetches a batch of events, HandleRecords
// applies it in one transaction (claim the message ids in the inbox, load
// the sagas, apply each event: orchestrator_apply.go; write the sagas, their
// history and the commands they cause into the outbox), and only then are
// the offsets committed and the relay (orchestrator_relay.go) woken.

// intakeLoop fetches and applies batches until ctx is done.
func (o *Orchestrator) intakeLoop(ctx context.Context, c Consumer) {
	bg := context.WithoutCancel(ctx)
	fetchFailures := 0
	for ctx.Err() == nil {
		recs, err := c.Fetch(ctx, o.cfg.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			fetchFailures++
			o.log.Warn("fetch events failed; retrying", "err", err, "failures", fetchFailures)
			relay.Sleep(ctx, relay.Backoff(fetchFailures, 100*time.Millisecond, 5*time.Second))
			continue
		}
		fetchFailures = 0
		if len(recs) == 0 {
			continue
		}
		// The batch in flight is finished even when ctx ends meanwhile; only
		// while the database refuses it do we give up at shutdown (the
		// records are then redelivered, nothing is committed past them).
		for attempt := 1; ; attempt++ {
			err = o.HandleRecords(bg, recs)
			if err == nil {
				break
			}
			o.log.Error("apply batch failed; retrying it", "records", len(recs), "attempt", attempt, "code", ErrorCode(err), "err", err)
			if ctx.Err() != nil {
				o.log.Warn("shutting down with an unapplied batch; its offsets are not committed", "records", len(recs))
				return
			}
			relay.Sleep(ctx, relay.Backoff(attempt, 50*time.Millisecond, 5*time.Second))
		}
		// The commands are committed: the relay publishes them while the
		// offsets are committed.
		o.Wake()
		if err := c.Commit(bg, recs); err != nil {
			// The effects are durable; redelivered records are duplicates
			// that the inbox drops.
			o.log.Warn("commit offsets failed; the records will be redelivered and dropped as duplicates", "records", len(recs), "err", err)
		}
	}
}

// permanent marks an error that retrying the transaction cannot fix.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// inTx runs fn in a transaction and retries it, with a short backoff, while
// it fails with an optimistic-lock conflict (CodeConflict) not marked
// permanent, at most Config.ConflictRetries times.
func (o *Orchestrator) inTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := o.st.InTx(ctx, fn)
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if ErrorCode(err) != CodeConflict || attempt > o.cfg.ConflictRetries {
			return err
		}
		d := relay.Backoff(attempt, 2*time.Millisecond, 200*time.Millisecond)
		relay.Sleep(ctx, d/2+rand.N(d/2+1))
		if ctx.Err() != nil {
			return err
		}
	}
}

// HandleRecords applies one batch of consumed records in one transaction:
// it records every message id in the inbox (duplicates change nothing),
// applies the events in record order, creates and updates the saga
// instances, appends their history, puts the commands they cause in the
// outbox and dead-letters what cannot be applied. It returns nil once all
// of that is committed; only then may the records' offsets be committed.
// On an optimistic-lock conflict with a timer or an operator the whole
// batch is retried; any other error (e.g. the database is unreachable)
// is returned and the caller retries the batch later.
func (o *Orchestrator) HandleRecords(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	start := time.Now()
	ins := make([]inbound, len(recs))
	for i, r := range recs {
		ins[i] = decodeRecord(r)
	}
	endTrace := traceBatch(ins) // orchestrator_trace.go: spans when tracing is on
	var b *batch
	err := o.inTx(ctx, func(ctx context.Context, tx Tx) error {
		b = newBatch(o.cfg.Clock().UTC())
		b.entries = make([]HistoryEntry, 0, len(ins))
		b.outbox = make([]OutboxRecord, 0, len(ins))
		b.after = make([]func(), 0, len(ins))
		return o.applyAll(ctx, tx, b, ins)
	})
	endTrace(err)
	if err != nil {
		return fmt.Errorf("apply a batch of %d records: %w", len(recs), err)
	}
	b.committed()
	o.iob.BatchHandled(len(recs), time.Since(start))
	if b.dups > 0 {
		o.log.Debug("dropped duplicate events", "count", b.dups)
	}
	return nil
}

// reservedParticipant is the refusal of an event that claims to come from
// the engine itself but arrived from the bus or an API caller: only the
// timer path raises such events (and an operator may replay those). An
// event from the bus naming definition.API is refused too: only
// Orchestrator.Start fires those, for an authenticated caller with a role.
func reservedParticipant(m *Message) error {
	if m.Participant == definition.API {
		return Errorf(CodeWrongParticipant, "apply "+m.Name,
			"participant %q is reserved for starts fired over saga-machine's HTTP API by an authenticated caller holding one of the transition's roles; an event from the bus may not name it",
			definition.API)
	}
	return Errorf(CodeWrongParticipant, "apply "+m.Name,
		"participant %q is reserved for the events the engine raises itself (timeouts, exhausted retries); an event from the bus or the API may not name it",
		definition.Engine)
}

// applyAll claims, loads, applies and writes ins in tx.
func (o *Orchestrator) applyAll(ctx context.Context, tx Tx, b *batch, ins []inbound) error {
	owners := o.eventTopicOwners()
	ids := make([]string, 0, len(ins))
	seen := make(map[string]bool, len(ins))
	for i := range ins {
		if id := ins[i].inboxID; !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	fresh, err := tx.Claim(ctx, ids)
	if err != nil {
		return fmt.Errorf("claim %d message ids: %w", len(ids), err)
	}
	sagaIDs := make([]string, 0, len(ins))
	seenSaga := make(map[string]bool, len(ins))
	for i := range ins {
		in := &ins[i]
		if in.bad == nil && fresh[in.inboxID] && !seenSaga[in.msg.SagaID] {
			seenSaga[in.msg.SagaID] = true
			sagaIDs = append(sagaIDs, in.msg.SagaID)
		}
	}
	if len(sagaIDs) > 0 {
		loaded, err := tx.Load(ctx, sagaIDs)
		if err != nil {
			return fmt.Errorf("load %d sagas: %w", len(sagaIDs), err)
		}
		b.add(loaded)
	}
	for i := range ins {
		in := &ins[i]
		if !fresh[in.inboxID] {
			b.dups++
			continue
		}
		delete(fresh, in.inboxID) // a second copy in this batch is a duplicate too
		if in.bad != nil {
			o.refuse(b, in, in.bad)
			continue
		}
		if p := in.msg.Participant; p == definition.Engine || p == definition.API {
			o.refuse(b, in, reservedParticipant(&in.msg))
			continue
		}
		if err := o.checkSender(owners, in); err != nil {
			o.refuse(b, in, err)
			continue
		}
		if err := o.apply(b, in); err != nil {
			o.refuse(b, in, err)
		}
	}
	return b.write(ctx, tx)
}

// eventTopicOwners maps every participant event topic to its participant
// when Config.EventTopicBase is set (nil otherwise: no check).
func (o *Orchestrator) eventTopicOwners() map[string]string {
	if o.cfg.EventTopicBase == "" {
		return nil
	}
	return topicOwners(o.cfg.EventTopicBase, o.cat)
}

// checkSender refuses an event that did not arrive on the event topic of
// the participant it names (Config.EventTopicBase). The broker lets each
// participant principal write only its own event topic, so the topic is
// the authenticated sender; the envelope's participant is only a claim.
// owners is eventTopicOwners(); nil checks nothing.
func (o *Orchestrator) checkSender(owners map[string]string, in *inbound) error {
	if owners == nil || in.rec.Topic == EngineTopic {
		return nil
	}
	m := &in.msg
	owner, ok := owners[in.rec.Topic]
	switch {
	case !ok:
		return Errorf(CodeWrongParticipant, "apply "+m.Name,
			"event from participant %q arrived on topic %q, which is not the event topic of any participant of the loaded definitions (want %s)",
			m.Participant, in.rec.Topic, EventTopic(o.cfg.EventTopicBase, m.Participant))
	case owner != m.Participant:
		return Errorf(CodeWrongParticipant, "apply "+m.Name,
			"event claims participant %q but arrived on %s, the event topic of %q: a participant may only send its own events (forged sender refused, nothing applied)",
			m.Participant, in.rec.Topic, owner)
	}
	return nil
}
