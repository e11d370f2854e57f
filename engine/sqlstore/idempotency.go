package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// ClaimIdempotencyKey stores k unless the same caller already used the same
// key for the same saga definition; then it returns the stored key and
// false. On PostgreSQL a concurrent transaction inserting the same key
// makes this one wait for its outcome (the unique index), so both see one
// key. A zero CreatedAt is set to now.
func (t *tx) ClaimIdempotencyKey(ctx context.Context, k engine.IdempotencyKey) (engine.IdempotencyKey, bool, error) {
	const op = "sqlstore: claim idempotency key"
	if k.Saga == "" || k.Key == "" || k.RequestHash == "" || k.SagaID == "" {
		return engine.IdempotencyKey{}, false, engine.Errorf(engine.CodeInvalid, op,
			"saga, key, request hash and saga id are required (got saga %q, key %q, hash %q, saga id %q)", k.Saga, k.Key, k.RequestHash, k.SagaID)
	}
	if strings.ContainsRune(k.Caller+k.Saga+k.Key, 0) {
		return engine.IdempotencyKey{}, false, engine.Errorf(engine.CodeInvalid, op, "caller, saga and key must not contain NUL characters")
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = t.s.now()
	}
	res, err := t.exec(ctx, t.d().q(`INSERT INTO idempotency_keys (caller, saga, idem_key, request_hash, saga_id, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (caller, saga, idem_key) DO NOTHING`),
		k.Caller, k.Saga, k.Key, k.RequestHash, k.SagaID, t.d().t(k.CreatedAt))
	if err != nil {
		return engine.IdempotencyKey{}, false, t.s.wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return engine.IdempotencyKey{}, false, t.s.wrap(op, err)
	}
	if n == 1 {
		k.CreatedAt = k.CreatedAt.UTC().Truncate(micro)
		return k, true, nil
	}
	stored := engine.IdempotencyKey{Caller: k.Caller, Saga: k.Saga, Key: k.Key}
	var created dbTime
	err = t.tx.QueryRowContext(ctx, t.d().q(`SELECT request_hash, saga_id, created_at FROM idempotency_keys
		WHERE caller = ? AND saga = ? AND idem_key = ?`), k.Caller, k.Saga, k.Key).Scan(&stored.RequestHash, &stored.SagaID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		// Not inserted and not there: only possible if the row was deleted
		// between the two statements; the caller retries the transaction.
		return engine.IdempotencyKey{}, false, engine.Errorf(engine.CodeConflict, op, "key %q of %q vanished while it was claimed", k.Key, k.Caller)
	}
	if err != nil {
		return engine.IdempotencyKey{}, false, t.s.wrap(op, err)
	}
	stored.CreatedAt = created.T
	return stored, false, nil
}
