package sdk

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Stats is what a participant's database holds that operators watch: the
// numbers behind the participant services' /metrics
// (saga_participant_dead_letters, saga_participant_outbox_backlog,
// saga_participant_outbox_oldest_age_seconds) and their alerts.
type Stats struct {
	// DeadLettersParked counts the dead letters whose command has not
	// been handled since it was parked (StateParked in the admin API):
	// they wait for an operator.
	DeadLettersParked int64
	// DeadLettersHandled counts the dead letters whose command was
	// handled since (StateHandled) and that Prune has not removed yet.
	DeadLettersHandled int64
	// OutboxBacklog counts the replies and saga starts not yet published.
	OutboxBacklog int64
	// OldestOutbox is when the oldest of them was stored; zero when the
	// outbox is empty.
	OldestOutbox time.Time
}

// Stats reads the participant's Stats from its database: a few counts,
// cheap enough for every scrape (the dead letters and the outbox are
// short tables in a healthy service).
func (p *Participant) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var total int64
	// Parked: no inbox record of its command, as the admin API's state.
	if err := p.db.QueryRowContext(ctx, `SELECT count(*), COALESCE(sum(CASE WHEN d.message_id = ''
			OR NOT EXISTS (SELECT 1 FROM sdk_inbox i WHERE i.message_id = d.message_id) THEN 1 ELSE 0 END), 0)
		FROM sdk_dead_letters d`).Scan(&total, &st.DeadLettersParked); err != nil {
		return Stats{}, fmt.Errorf("count the dead letters of %s: %w", p.cfg.Name, err)
	}
	st.DeadLettersHandled = total - st.DeadLettersParked
	if err := p.db.GetContext(ctx, &st.OutboxBacklog, `SELECT count(*) FROM sdk_outbox`); err != nil {
		return Stats{}, fmt.Errorf("count the outbox of %s: %w", p.cfg.Name, err)
	}
	// seq grows with insertion: the lowest is the oldest.
	err := p.db.GetContext(ctx, &st.OldestOutbox, `SELECT created_at FROM sdk_outbox ORDER BY seq LIMIT 1`)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		st.OldestOutbox = time.Time{}
	case err != nil:
		return Stats{}, fmt.Errorf("read the oldest outbox record of %s: %w", p.cfg.Name, err)
	default:
		st.OldestOutbox = st.OldestOutbox.UTC()
	}
	return st, nil
}
