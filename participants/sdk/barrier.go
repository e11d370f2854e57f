package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
)

// ReasonCompensated starts the reason of the COMMAND_EXPIRED reply to a
// forward command that arrived after a compensation command had undone it
// (the barrier against "hanging" effects).
const ReasonCompensated = "compensated before it arrived"

// inboxPrunable selects the inbox records Prune and PurgeInbox delete
// (arguments: the cut-off time twice): handled before it, and not
// compensated after it.
const inboxPrunable = `processed_at < ? AND NOT EXISTS (SELECT 1 FROM sdk_compensated c
	WHERE c.message_id = sdk_inbox.message_id AND c.compensated_at >= ?)`

// barrierRow is what a handled compensation command writes: the record
// of target (the id it compensates) as compensated by it in
// sdk_compensated, and, unless target was handled already, an inbox row
// for target whose reply is the refusal (replyID, reply), so that target
// is refused as a duplicate if it ever arrives.
type barrierRow struct {
	target  string
	saga    string
	by      string
	inbox   bool
	replyID string
	reply   []byte
}

// refusal returns why the SDK answers m with COMMAND_EXPIRED instead of
// running its handler, or "" if the handler runs: its deadline is not
// after Now()+DeadlineMargin. Compensation commands are never refused:
// their deadline is ignored.
func (p *Participant) refusal(m envelope.Message) string {
	if m.Compensates != "" || m.Deadline.IsZero() {
		return ""
	}
	now := p.cfg.Now()
	if m.Deadline.After(now.Add(p.cfg.DeadlineMargin)) {
		return ""
	}
	d, n := m.Deadline.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano)
	if m.Deadline.After(now) {
		return fmt.Sprintf("deadline %s is within the deadline margin %s of %s", d, p.cfg.DeadlineMargin, n)
	}
	return fmt.Sprintf("deadline %s passed at %s", d, n)
}

// isExpired reports whether reply is the SDK's refusal (a handler may not
// answer COMMAND_EXPIRED itself).
func isExpired(reply *envelope.Message) bool {
	return reply != nil && reply.Name == envelope.CommandExpired
}

// expiredReply builds the COMMAND_EXPIRED reply to cmd (no payload).
func (p *Participant) expiredReply(cmd envelope.Message, reason string) (*envelope.Message, []byte, error) {
	reply, err := p.replyFor(cmd, Result{event: envelope.CommandExpired, reason: reason, reject: true})
	if err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(reply)
	if err != nil {
		return nil, nil, fmt.Errorf("encode reply %s: %w", reply.Name, err)
	}
	return reply, body, nil
}

// barrierFor builds the barrier row of the compensation command c. kept
// holds the commands known handled (the batch's inbox look-up and the
// commands handled in it, nil on the slow path): for one of them no inbox
// row is written; otherwise the refusal is added to kept, so that the
// compensated command is a duplicate later in the same batch.
func (p *Participant) barrierFor(c envelope.Message, kept map[string]keptReply) (barrierRow, error) {
	b := barrierRow{target: c.Compensates, saga: c.SagaID, by: c.ID}
	if _, handled := kept[b.target]; handled {
		return b, nil
	}
	target := envelope.Message{ID: b.target, SagaID: c.SagaID, Saga: c.Saga, SagaVersion: c.SagaVersion}
	reply, body, err := p.expiredReply(target, fmt.Sprintf("%s (compensation command %s)", ReasonCompensated, c.ID))
	if err != nil {
		return b, fmt.Errorf("barrier for %s compensated by %s: %w", b.target, c.ID, err)
	}
	b.inbox, b.replyID, b.reply = true, reply.ID, body
	if kept != nil {
		kept[b.target] = keptReply{reply: reply, body: body}
	}
	return b, nil
}

// recordBarrier writes barrier rows: into sdk_inbox (skipped if the
// compensated command was handled meanwhile) and sdk_compensated (the
// first compensation of a command keeps its record). One statement on
// PostgreSQL, written only by transactions that handled compensations.
func (p *Participant) recordBarrier(ctx context.Context, tx *sqlx.Tx, rows []barrierRow) error {
	if len(rows) == 0 {
		return nil
	}
	now := time.Now().UTC()
	if p.dialect != dialectPostgres {
		for _, b := range rows {
			if b.inbox {
				const q = `INSERT INTO sdk_inbox (message_id, saga_id, command, reply_id, reply, processed_at) VALUES (?, ?, '', ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`
				if _, err := p.sql.Exec(ctx, tx, q, b.target, b.saga, b.replyID, b.reply, now); err != nil {
					return fmt.Errorf("record the barrier for %s compensated by %s: %w", b.target, b.by, err)
				}
			}
			const q = `INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at) VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`
			if _, err := p.sql.Exec(ctx, tx, q, b.target, b.saga, b.by, now); err != nil {
				return fmt.Errorf("record %s as compensated by %s: %w", b.target, b.by, err)
			}
		}
		return nil
	}
	var ids, sagas, bys, iids, isagas, rids []string
	var bodies pq.ByteaArray
	for _, b := range rows {
		ids, sagas, bys = append(ids, b.target), append(sagas, b.saga), append(bys, b.by)
		if b.inbox {
			iids, isagas, rids, bodies = append(iids, b.target), append(isagas, b.saga), append(rids, b.replyID), append(bodies, b.reply)
		}
	}
	const q = `WITH b AS (
			INSERT INTO sdk_inbox (message_id, saga_id, command, reply_id, reply, processed_at)
			SELECT r.id, r.saga, '', r.rid, r.body, $4
			FROM unnest($5::text[], $6::text[], $7::text[], $8::bytea[]) AS r(id, saga, rid, body)
			ON CONFLICT (message_id) DO NOTHING)
		INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at)
		SELECT r.id, r.saga, r.cby, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, saga, cby)
		ON CONFLICT (message_id) DO NOTHING`
	if _, err := p.sql.Exec(ctx, tx, q, pq.Array(ids), pq.Array(sagas), pq.Array(bys), now,
		pq.Array(iids), pq.Array(isagas), pq.Array(rids), bodies); err != nil {
		return fmt.Errorf("record the barrier of %d compensations: %w", len(rows), err)
	}
	return nil
}

// pruneCompensated deletes barrier records written before before.
func (p *Participant) pruneCompensated(ctx context.Context, before time.Time) (int64, error) {
	res, err := p.db.ExecContext(ctx, p.db.Rebind(`DELETE FROM sdk_compensated WHERE compensated_at < ?`), before.UTC())
	if err != nil {
		return 0, fmt.Errorf("prune compensation records of %s: %w", p.cfg.Name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune compensation records of %s: %w", p.cfg.Name, err)
	}
	return n, nil
}
