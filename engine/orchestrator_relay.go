package engine

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/delivery/relay"
)

// RelayOnce takes up to Config.RelayBatch outbox records, publishes them
// and deletes them (Store.PublishOutbox), and returns how many it published.
// Records are deleted only after the publisher acknowledged them, so a
// crash in between publishes them again (at-least-once). Run calls it from
// its relay loop (relay.Loop) and once more at shutdown.
func (o *Orchestrator) RelayOnce(ctx context.Context) (int, error) {
	if o.pub == nil {
		return 0, Errorf(CodeInvalid, "relay outbox", "no publisher")
	}
	start := time.Now()
	var oldest, newest time.Time
	n, err := o.st.PublishOutbox(ctx, o.cfg.Owner, o.cfg.RelayBatch, o.cfg.RelayLease,
		func(ctx context.Context, recs []OutboxRecord) error {
			oldest, newest = recs[0].Message.OccurredAt, recs[0].Message.OccurredAt
			for i := range recs {
				if t := recs[i].Message.OccurredAt; t.After(newest) {
					newest = t
				}
			}
			return o.publishRecords(ctx, recs, &oldest)
		})
	if err != nil {
		return 0, fmt.Errorf("relay outbox: %w", err)
	}
	o.rob.RelayRound(n, time.Since(start))
	if n > 0 {
		now := o.cfg.Clock()
		o.obs.CommandsPublished(n, now.Sub(oldest))
		// How far the outbox got, for the retry timers (progress.go).
		o.progress.published(newest, now)
	}
	return n, nil
}

// publishRecords publishes recs, retrying failures for most of the relay
// lease (relay.Within: the store holds the records for this
// relay that long), and sets *oldest to the earliest OccurredAt among them.
func (o *Orchestrator) publishRecords(ctx context.Context, recs []OutboxRecord, oldest *time.Time) error {
	out := make([]Record, len(recs))
	for i, r := range recs {
		val := envelope.AppendMessage(make([]byte, 0, 256+len(r.Message.Payload)), &r.Message)
		out[i] = Record{Topic: r.Topic, Key: r.Key, Value: val, Headers: map[string]string{
			HeaderKind: string(r.Message.Kind), HeaderName: r.Message.Name,
			HeaderTraceparent: traceOf(r.Traceparent), // records enqueued before traces were kept get a new one
		}}
		if r.Message.OccurredAt.Before(*oldest) {
			*oldest = r.Message.OccurredAt
		}
	}
	return relay.Within(ctx, o.cfg.RelayLease, o.log, strconv.Itoa(len(out))+" commands",
		func(ctx context.Context) error { return o.pub.Publish(ctx, out) })
}
