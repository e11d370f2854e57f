package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// SQLite runs in-process, so a statement costs no round trip: batches are
// written with one prepared statement executed per row, inside the
// transaction. (The inbox and the outbox are internal/delivery's.)

// each prepares query in the transaction and runs do with it.
func (t *tx) each(ctx context.Context, query string, do func(st *sql.Stmt) error) error {
	st, err := t.tx.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	defer st.Close()
	return do(st)
}

func (t *tx) insertSQLite(ctx context.Context, rows []instRow) error {
	d := t.d()
	err := t.each(ctx, `INSERT INTO saga_instances (id, saga, saga_version, state, status, context,
			created_at, updated_at, entered_at, rev, pending, attempts, timer_at, traceparent, undo, deferred, join_state)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)`, func(st *sql.Stmt) error {
		for _, r := range rows {
			in := r.in
			if _, err := st.ExecContext(ctx, in.ID, in.Saga, in.SagaVersion, in.State, string(in.Status), r.context,
				d.t(in.CreatedAt), d.t(in.UpdatedAt), d.t(in.EnteredAt), r.pending, in.Attempts, d.nt(in.TimerAt),
				nullString(in.Traceparent), r.undo, r.deferred, r.join); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return t.insertKeysSQLite(ctx, rows)
}

func (t *tx) insertKeysSQLite(ctx context.Context, rows []instRow) error {
	kIDs, kNames, kValues := keyRows(rows)
	if len(kIDs) == 0 {
		return nil
	}
	return t.each(ctx, "INSERT INTO saga_keys (saga_id, name, value) VALUES (?, ?, ?)", func(st *sql.Stmt) error {
		for i := range kIDs {
			if _, err := st.ExecContext(ctx, kIDs[i], kNames[i], kValues[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (t *tx) updateSQLite(ctx context.Context, rows []instRow) (map[string]bool, error) {
	d := t.d()
	updated := make(map[string]bool, len(rows))
	err := t.each(ctx, `UPDATE saga_instances SET saga = ?, saga_version = ?, state = ?, status = ?, context = ?,
			updated_at = ?, entered_at = ?, rev = rev + 1, pending = ?, attempts = ?, timer_at = ?, traceparent = ?,
			undo = ?, deferred = ?, join_state = ?
		WHERE id = ? AND rev = ?`, func(st *sql.Stmt) error {
		for _, r := range rows {
			in := r.in
			res, err := st.ExecContext(ctx, in.Saga, in.SagaVersion, in.State, string(in.Status), r.context,
				d.t(in.UpdatedAt), d.t(in.EnteredAt), r.pending, in.Attempts, d.nt(in.TimerAt), nullString(in.Traceparent),
				r.undo, r.deferred, r.join, in.ID, in.Rev)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				updated[in.ID] = true
			}
		}
		return nil
	})
	return updated, err
}

func (t *tx) replaceKeysSQLite(ctx context.Context, rows []instRow) error {
	err := t.each(ctx, "DELETE FROM saga_keys WHERE saga_id = ?", func(st *sql.Stmt) error {
		for _, r := range rows {
			if _, err := st.ExecContext(ctx, r.in.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return t.insertKeysSQLite(ctx, rows)
}

func (t *tx) historySQLite(ctx context.Context, rows []histRow) error {
	d := t.d()
	return t.each(ctx, `INSERT INTO saga_history (saga_id, at, kind, message_id, event, by_participant,
			from_state, to_state, commands, code, reason, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		func(st *sql.Stmt) error {
			for _, r := range rows {
				e := r.e
				if _, err := st.ExecContext(ctx, e.SagaID, d.t(e.At), string(e.Kind), e.MessageID, e.Event, e.By,
					e.FromState, e.ToState, r.commands, string(e.Code), e.Reason, e.Actor); err != nil {
					return err
				}
			}
			return nil
		})
}

func (t *tx) deadLettersSQLite(ctx context.Context, dls []engine.DeadLetter, now time.Time) error {
	d := t.d()
	return t.each(ctx, `INSERT INTO dead_letters (message_id, saga_id, topic, kafka_partition, kafka_offset, raw,
			code, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		func(st *sql.Stmt) error {
			for _, dl := range dls {
				created := dl.CreatedAt
				if created.IsZero() {
					created = now
				}
				raw := dl.Raw
				if raw == nil {
					raw = []byte{}
				}
				if _, err := st.ExecContext(ctx, nullString(dl.MessageID), dl.SagaID, dl.Topic, dl.Partition, dl.Offset,
					raw, string(dl.Code), dl.Reason, d.t(created)); err != nil {
					return err
				}
			}
			return nil
		})
}
