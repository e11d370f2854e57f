package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
)

// The inbox and the outbox are the delivery core's (internal/delivery,
// layout EngineTables), shared with the participant SDK: on PostgreSQL the
// relay locks the oldest free rows (SELECT … FOR UPDATE SKIP LOCKED),
// publishes them and deletes them before it commits, with
// idle_in_transaction_session_timeout = the lease; on SQLite, with one
// writer, it leases them, publishes and deletes them, each a short
// statement of its own. This file turns its rows into engine.OutboxRecords.

// PublishOutbox takes up to limit free outbox records, oldest first, calls
// publish with them and deletes them if publish returns nil.
func (s *Store) PublishOutbox(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, recs []engine.OutboxRecord) error) (int, error) {
	const op = "sqlstore: publish outbox"
	if publish == nil {
		return 0, engine.Errorf(engine.CodeInvalid, op, "no publish function")
	}
	if err := checkClaim(owner, limit, lease); err != nil {
		return 0, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	var pubErr error
	n, err := s.dt.Publish(ctx, owner, limit, lease, func(ctx context.Context, rows []delivery.Row) error {
		recs, err := outboxRecords(rows)
		if err != nil {
			return err
		}
		pubErr = publish(ctx, recs)
		return pubErr
	})
	switch {
	case err == nil:
	case pubErr != nil && errors.Is(err, pubErr):
		return 0, err // publish's own error (with a failed release joined on SQLite)
	default:
		return 0, s.wrap(op, err)
	}
	return n, nil
}

// ClaimOutbox leases up to limit unpublished records, oldest first, to owner
// until now+lease, skipping records whose lease to another relay has not run
// out (and, on PostgreSQL, records another relay's PublishOutbox holds).
// Records already leased to owner are leased again.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]engine.OutboxRecord, error) {
	const op = "sqlstore: claim outbox"
	if err := checkClaim(owner, limit, lease); err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	rows, err := s.dt.Lease(ctx, owner, limit, lease)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	recs, err := outboxRecords(rows)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	return recs, nil
}

// DeleteOutbox removes published records.
func (s *Store) DeleteOutbox(ctx context.Context, seqs []int64) error {
	return s.wrap("sqlstore: delete outbox records", s.dt.Delete(ctx, seqs))
}

// OutboxBacklog counts unpublished records.
func (s *Store) OutboxBacklog(ctx context.Context) (int64, error) {
	n, err := s.dt.Backlog(ctx)
	if err != nil {
		return 0, s.wrap("sqlstore: count outbox", err)
	}
	return n, nil
}

// PurgeInbox deletes the inbox records of messages processed before
// olderThan, in chunks, and returns how many it deleted.
func (s *Store) PurgeInbox(ctx context.Context, olderThan time.Time) (int64, error) {
	const op = "sqlstore: purge inbox"
	if olderThan.IsZero() {
		return 0, engine.Errorf(engine.CodeInvalid, op, "no cut-off time")
	}
	n, err := s.dt.Purge(ctx, olderThan)
	if err != nil {
		return n, s.wrap(op, err)
	}
	return n, nil
}

// checkClaim validates the arguments of a claim.
func checkClaim(owner string, limit int, lease time.Duration) error {
	switch {
	case owner == "":
		return fmt.Errorf("no owner")
	case limit <= 0:
		return fmt.Errorf("limit %d is not positive", limit)
	case lease <= 0:
		return fmt.Errorf("lease %v is not positive", lease)
	}
	return nil
}

// outboxRecords decodes outbox rows.
func outboxRecords(rows []delivery.Row) ([]engine.OutboxRecord, error) {
	out := make([]engine.OutboxRecord, len(rows))
	for i, r := range rows {
		out[i] = engine.OutboxRecord{Seq: r.Seq, Topic: r.Topic, Key: r.Key, Traceparent: r.Headers[envelope.HeaderTraceparent]}
		if err := envelope.UnmarshalMessage(r.Value, &out[i].Message); err != nil {
			return nil, fmt.Errorf("record %d: decode message: %w", r.Seq, err)
		}
	}
	return out, nil
}
