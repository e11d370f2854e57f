package sqlstore

import (
	"context"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// purgeChunk is how many sagas one transaction of PurgeFinished removes.
const purgeChunk = 500

// PurgeFinished removes the sagas that finished (status completed or
// failed) before olderThan (their last change, updated_at), each with its
// keys, timeline and idempotency keys, at most limit of them (limit <= 0:
// all), in transactions of at most purgeChunk sagas; it returns how many
// it removed. Sagas that are running, compensating or stopped with
// compensation_failed (waiting for an operator) are never removed, nor
// are dead letters (an operator's record; replaying one of a removed saga
// is refused as not found). A retry of a start under an Idempotency-Key
// whose saga was removed starts a new saga.
func (s *Store) PurgeFinished(ctx context.Context, olderThan time.Time, limit int) (int64, error) {
	const op = "sqlstore: purge finished sagas"
	if olderThan.IsZero() {
		return 0, engine.Errorf(engine.CodeInvalid, op, "no cut-off time")
	}
	var total int64
	for limit <= 0 || total < int64(limit) {
		n := purgeChunk
		if limit > 0 {
			n = min(n, limit-int(total))
		}
		removed, err := s.purgeChunk(ctx, olderThan, n)
		total += removed
		if err != nil {
			return total, s.wrap(op, err)
		}
		if removed < int64(n) {
			break
		}
	}
	return total, nil
}

// purgeChunk removes up to n finished sagas older than olderThan and what
// belongs to them in one transaction.
func (s *Store) purgeChunk(ctx context.Context, olderThan time.Time, n int) (int64, error) {
	stx, err := s.w.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer stx.Rollback() //nolint:errcheck // no-op after Commit
	var ids []string
	// The status test repeats the partial index's predicate, so that
	// PostgreSQL uses it; FOR UPDATE (PostgreSQL) keeps a concurrent
	// operator action from changing a saga while it goes.
	lock := ""
	if s.d.postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	if err := stx.SelectContext(ctx, &ids, s.d.q(`SELECT id FROM saga_instances
		WHERE status IN ('completed', 'failed') AND updated_at < ? ORDER BY updated_at LIMIT ?`+lock), s.d.t(olderThan), n); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	list, err := s.d.list(ids)
	if err != nil {
		return 0, err
	}
	for _, table := range []string{"saga_keys", "saga_history", "idempotency_keys"} {
		if _, err := stx.ExecContext(ctx, s.d.q(`DELETE FROM `+table+` WHERE `+s.d.in("saga_id")), list); err != nil {
			return 0, err
		}
	}
	res, err := stx.ExecContext(ctx, s.d.q(`DELETE FROM saga_instances WHERE `+s.d.in("id")+` AND status IN ('completed', 'failed')`), list)
	if err != nil {
		return 0, err
	}
	removed, err := res.RowsAffected()
	if err != nil {
		return 0, err
	}
	if err := stx.Commit(); err != nil {
		return 0, err
	}
	return removed, nil
}
