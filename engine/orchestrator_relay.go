package engine

import (
	"context"
	"fmt"
	"time"
)

// relayLoop publishes the outbox until ctx is done: while there is backlog
// it keeps going, otherwise it waits for a wake-up or Config.RelayPoll.
func (o *Orchestrator) relayLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		n, err := o.RelayOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			o.log.Warn("relay outbox failed; retrying", "err", err, "failures", failures)
			sleep(ctx, backoff(failures, 50*time.Millisecond, 5*time.Second))
			continue
		}
		failures = 0
		if n > 0 {
			continue
		}
		t := time.NewTimer(o.cfg.RelayPoll)
		select {
		case <-ctx.Done():
		case <-o.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// RelayOnce takes up to Config.RelayBatch outbox records, publishes them
// and deletes them (Store.PublishOutbox), and returns how many it published.
// Records are deleted only after the publisher acknowledged them, so a
// crash in between publishes them again (at-least-once).
func (o *Orchestrator) RelayOnce(ctx context.Context) (int, error) {
	if o.pub == nil {
		return 0, Errorf(CodeInvalid, "relay outbox", "no publisher")
	}
	var oldest time.Time
	n, err := o.st.PublishOutbox(ctx, o.cfg.Owner, o.cfg.RelayBatch, o.cfg.RelayLease,
		func(ctx context.Context, recs []OutboxRecord) error {
			oldest = recs[0].Message.OccurredAt
			return o.publishRecords(ctx, recs, &oldest)
		})
	if err != nil {
		return 0, fmt.Errorf("relay outbox: %w", err)
	}
	if n > 0 {
		o.obs.CommandsPublished(n, o.cfg.Clock().Sub(oldest))
	}
	return n, nil
}

// publishRecords publishes recs, retrying failures for most of the relay
// lease (the store holds the records for this relay that long), and sets
// *oldest to the earliest OccurredAt among them.
func (o *Orchestrator) publishRecords(ctx context.Context, recs []OutboxRecord, oldest *time.Time) error {
	takenAt := time.Now()
	out := make([]Record, len(recs))
	for i, r := range recs {
		val := AppendMessage(make([]byte, 0, 256+len(r.Message.Payload)), &r.Message)
		out[i] = Record{Topic: r.Topic, Key: r.Key, Value: val, Headers: map[string]string{
			HeaderKind: string(r.Message.Kind), HeaderName: r.Message.Name,
			HeaderTraceparent: traceOf(r.Traceparent), // records enqueued before traces were kept get a new one
		}}
		if r.Message.OccurredAt.Before(*oldest) {
			*oldest = r.Message.OccurredAt
		}
	}
	// Keep retrying within the lease rather than giving the records up
	// after one failure.
	pubCtx, cancel := context.WithDeadline(ctx, takenAt.Add(o.cfg.RelayLease*4/5))
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := o.pub.Publish(pubCtx, out)
		if err == nil {
			return nil
		}
		if pubCtx.Err() != nil {
			return fmt.Errorf("publish %d commands (they are published again later): %w", len(out), err)
		}
		o.log.Warn("publish commands failed; retrying", "commands", len(out), "attempt", attempt, "err", err)
		sleep(pubCtx, backoff(attempt, 50*time.Millisecond, 2*time.Second))
	}
}

// flushOutbox relays until the outbox is empty, an error occurs or ctx ends.
func (o *Orchestrator) flushOutbox(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := o.RelayOnce(ctx)
		total += n
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
	}
}
