package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

var _ engine.AgeReporter = (*Store)(nil)

// LiveStateAges returns, per definition, version, state and status of the
// instances that are not done, the earliest time one of them entered its
// state. It reads only the live statuses (index saga_instances_status), so
// its cost follows the number of sagas under way, not the history.
func (s *Store) LiveStateAges(ctx context.Context) ([]engine.StateAge, error) {
	var live []any
	for _, st := range engine.Statuses() {
		if !st.Done() {
			live = append(live, string(st))
		}
	}
	marks := "?"
	for range live[1:] {
		marks += ", ?"
	}
	rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT saga, saga_version, state, status, min(entered_at)
		FROM saga_instances WHERE status IN (`+marks+`)
		GROUP BY saga, saga_version, state, status ORDER BY saga, saga_version, state, status`), live...)
	if err != nil {
		return nil, s.wrap("sqlstore: oldest live saga per state", err)
	}
	defer rows.Close()
	var out []engine.StateAge
	for rows.Next() {
		var (
			a       engine.StateAge
			status  string
			entered dbTime
		)
		if err := rows.Scan(&a.Saga, &a.SagaVersion, &a.State, &status, &entered); err != nil {
			return nil, s.wrap("sqlstore: oldest live saga per state", err)
		}
		a.Status, a.OldestEnteredAt = engine.Status(status), entered.T
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap("sqlstore: oldest live saga per state", err)
	}
	return out, nil
}

// OldestOutbox returns when the oldest unpublished outbox record was
// created (the lowest seq: seq grows with insertion); ok is false when the
// outbox is empty.
func (s *Store) OldestOutbox(ctx context.Context) (time.Time, bool, error) {
	var created dbTime
	err := s.r.QueryRowContext(ctx, `SELECT created_at FROM outbox ORDER BY seq LIMIT 1`).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, s.wrap("sqlstore: oldest outbox record", err)
	}
	return created.T, created.Valid, nil
}
