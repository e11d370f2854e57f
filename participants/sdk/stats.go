package sdk

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
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
	// Batches, BatchCommands and BatchTime count, since the participant
	// was created, the fetched batches handled in one transaction each
	// and committed, their commands, and the time from each one's start
	// to its commit (commands handled one by one, after a failure, are
	// not in them). The growth of BatchTime over an interval is the share
	// of it spent handling batches; near 1 this participant is the stage
	// that limits the sagas' throughput (above 1 when large batches run
	// partition by partition at once, Config.Concurrency).
	Batches, BatchCommands int64
	BatchTime              time.Duration
	// RelayRounds counts, since the participant was created, the relay's
	// rounds (Flush calls that did not fail), RelayPublished the outbox rows
	// they published, RelayEmptyRounds the rounds that found nothing to
	// publish (each costs a transaction: polls of an idle outbox, wake-ups
	// whose rows an earlier round took) and RelayTime the time spent in
	// them (its growth over an interval is the relay's busy share).
	RelayRounds, RelayPublished, RelayEmptyRounds int64
	RelayTime                                     time.Duration
}

// relayCounters are the running totals behind Stats' relay fields.
type relayCounters struct {
	rounds, published, empty, nanos atomic.Int64
}

// add counts one relay round that published n rows and took took.
func (c *relayCounters) add(n int, took time.Duration) {
	c.rounds.Add(1)
	c.published.Add(int64(n))
	if n == 0 {
		c.empty.Add(1)
	}
	c.nanos.Add(int64(took))
}

// batchCounters are the running totals behind Stats' batch fields.
type batchCounters struct {
	n, commands, nanos atomic.Int64
}

// add counts one committed batch of commands that took took.
func (c *batchCounters) add(commands int, took time.Duration) {
	c.n.Add(1)
	c.commands.Add(int64(commands))
	c.nanos.Add(int64(took))
}

// Stats reads the participant's Stats from its database: a few counts,
// cheap enough for every scrape (the dead letters and the outbox are
// short tables in a healthy service).
func (p *Participant) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Batches: p.batchStats.n.Load(), BatchCommands: p.batchStats.commands.Load(), BatchTime: time.Duration(p.batchStats.nanos.Load()),
		RelayRounds: p.relayStats.rounds.Load(), RelayPublished: p.relayStats.published.Load(), RelayEmptyRounds: p.relayStats.empty.Load(),
		RelayTime: time.Duration(p.relayStats.nanos.Load())}
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
