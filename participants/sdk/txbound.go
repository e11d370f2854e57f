package sdk

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jmoiron/sqlx"
)

// beginHandlerTx begins the transaction handlers run in. On PostgreSQL it
// first bounds how long the transaction may sit idle (Config.TxIdleTimeout):
// a replica paused or hung inside it loses its session after that long, so
// the rows it locked do not hold up the replica that takes its partitions
// over. The setting is local to the transaction (set_config's third
// argument), so the pooled connection keeps the server's default after it.
// The statement has no parameters: the simple query protocol, one round
// trip.
func (p *Participant) beginHandlerTx(ctx context.Context) (*sqlx.Tx, error) {
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil || p.dialect != dialectPostgres {
		return tx, err
	}
	if _, err := tx.ExecContext(ctx, "SELECT "+p.txSettings); err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("bound the transaction's idle time: %w", err)
	}
	return tx, nil
}

// beginBatchTx begins a batch's transaction without its settings:
// runBatch's first statement, the inbox look-up (keptReplies), applies
// them on PostgreSQL in the same round trip (delivery's BoundReplies).
func (p *Participant) beginBatchTx(ctx context.Context) (*sqlx.Tx, error) {
	return p.db.BeginTxx(ctx, nil)
}

// txSettingsSQL is the select list that sets idle_in_transaction_session_timeout
// to ms milliseconds for the current transaction only.
func txSettingsSQL(ms int64) string {
	return "set_config('idle_in_transaction_session_timeout', '" + strconv.FormatInt(ms, 10) + "', true)"
}
