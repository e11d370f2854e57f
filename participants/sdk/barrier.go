package sdk

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// ReasonCompensated starts the reason of the COMMAND_EXPIRED reply to a
// forward command that arrived after a compensation command had undone it
// (the barrier against "hanging" effects).
const ReasonCompensated = "compensated before it arrived"

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
	return reply, encodeMessage(reply), nil
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

// recordBarrier writes barrier rows: into sdk_inbox (through the delivery
// core; skipped if the compensated command was handled meanwhile) and
// sdk_compensated (the first compensation of a command keeps its record).
// Written only by transactions that handled compensations.
func (p *Participant) recordBarrier(ctx context.Context, tx *sqlx.Tx, rows []barrierRow) error {
	if len(rows) == 0 {
		return nil
	}
	var in []delivery.InboxRow
	for _, b := range rows {
		if b.inbox {
			in = append(in, delivery.InboxRow{ID: b.target, SagaID: b.saga, ReplyID: b.replyID, Reply: b.reply})
		}
	}
	if _, err := p.dt.Claim(ctx, tx, in); err != nil {
		return fmt.Errorf("record the barrier of %d compensations: %w", len(rows), err)
	}
	now := time.Now().UTC()
	if p.dialect != dialectPostgres {
		for _, b := range rows {
			const q = `INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at) VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`
			if _, err := p.sql.Exec(ctx, tx, q, b.target, b.saga, b.by, now); err != nil {
				return fmt.Errorf("record %s as compensated by %s: %w", b.target, b.by, err)
			}
		}
		return nil
	}
	ids, sagas, bys := make([]string, len(rows)), make([]string, len(rows)), make([]string, len(rows))
	for i, b := range rows {
		ids[i], sagas[i], bys[i] = b.target, b.saga, b.by
	}
	const q = `INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at)
		SELECT r.id, r.saga, r.cby, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS r(id, saga, cby)
		ON CONFLICT (message_id) DO NOTHING`
	if _, err := p.sql.Exec(ctx, tx, q, sqldb.TextArray(ids), sqldb.TextArray(sagas), sqldb.TextArray(bys), now); err != nil {
		return fmt.Errorf("record %d commands as compensated: %w", len(rows), err)
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
