package sdk

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// ReasonCompensated starts the reason of the COMMAND_EXPIRED reply to a
// forward command that arrived after a compensation command had undone it
// (the barrier against "hanging" effects).
const ReasonCompensated = "compensated before it arrived"

// compensatedRow is the barrier record a handled compensation command
// writes: target is the id it compensates, by its own id.
type compensatedRow struct {
	target string
	saga   string
	by     string
}

// refusal returns why the SDK answers m with COMMAND_EXPIRED instead of
// running its handler, or "" if the handler runs. by is the id of the
// compensation command that recorded m.ID as compensated ("" if none).
// Compensation commands are never refused: their deadline is ignored.
func (p *Participant) refusal(m engine.Message, by string) string {
	if m.Compensates != "" {
		return ""
	}
	if by != "" {
		return fmt.Sprintf("%s (compensation command %s)", ReasonCompensated, by)
	}
	if m.Deadline.IsZero() {
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

// expiredReply builds the COMMAND_EXPIRED reply to cmd (no payload).
func (p *Participant) expiredReply(cmd engine.Message, reason string) (*engine.Message, []byte, error) {
	reply, err := p.replyFor(cmd, Result{event: engine.EventCommandExpired, reason: reason, reject: true})
	if err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(reply)
	if err != nil {
		return nil, nil, fmt.Errorf("encode reply %s: %w", reply.Name, err)
	}
	return reply, body, nil
}

// compensatedBy reads which compensation command recorded id as
// compensated ("" if none).
func (p *Participant) compensatedBy(ctx context.Context, tx *sqlx.Tx, id string) (string, error) {
	st, err := p.sql.Stmt(ctx, tx, `SELECT compensation_id FROM sdk_compensated WHERE message_id = ?`)
	if err != nil {
		return "", fmt.Errorf("look up whether command %s was compensated: %w", id, err)
	}
	var by string
	err = st.QueryRowxContext(ctx, id).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up whether command %s was compensated: %w", id, err)
	}
	return by, nil
}

// recordCompensated writes the barrier record of a handled compensation
// command; the first compensation of a message keeps its record.
func (p *Participant) recordCompensated(ctx context.Context, tx *sqlx.Tx, r compensatedRow) error {
	const q = `INSERT INTO sdk_compensated (message_id, saga_id, compensation_id, compensated_at) VALUES (?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING`
	if _, err := p.sql.Exec(ctx, tx, q, r.target, r.saga, r.by, time.Now().UTC()); err != nil {
		return fmt.Errorf("record %s as compensated by %s: %w", r.target, r.by, err)
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
