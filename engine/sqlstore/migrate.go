package sqlstore

import (
	"context"

	"github.com/portfolio-counselor/sagamachine/engine"
)

var _ engine.SagaLocker = (*tx)(nil)

// LockSagas locks the rows of the sagas ids until the transaction ends, so
// that an operator's migration (engine.Orchestrator.Migrate) and the events
// for the same saga take turns instead of conflicting. On PostgreSQL it is
// SELECT … FOR UPDATE, in id order (a stable lock order); SQLite has one
// writer at a time, and the Rev check of Update covers what it reads, so
// there it does nothing.
func (t *tx) LockSagas(ctx context.Context, ids []string) error {
	const op = "sqlstore: lock sagas"
	ids, err := uniqueSorted(ids)
	if err != nil {
		return &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	if len(ids) == 0 || !t.d().postgres {
		return nil
	}
	arg, err := t.d().list(ids)
	if err != nil {
		return t.s.wrap(op, err)
	}
	rows, err := t.tx.QueryContext(ctx, t.d().q("SELECT s.id FROM saga_instances s WHERE "+t.d().in("s.id")+" ORDER BY s.id FOR UPDATE"), arg)
	if err != nil {
		return t.s.wrap(op, err)
	}
	defer rows.Close()
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		return t.s.wrap(op, err)
	}
	return nil
}
