package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// The outbox on PostgreSQL is published inside one transaction: the relay
// locks the oldest free records (SELECT … FOR UPDATE SKIP LOCKED), publishes
// them and deletes them before it commits. A record thus leaves two row
// versions (insert, delete) rather than three (insert, lease, delete), and
// no lease column is written or read. The row locks are what keeps other
// relays off the records: they go with the transaction, so a failed publish
// releases them at once and a crashed relay's connection releases them when
// PostgreSQL notices it is gone. idle_in_transaction_session_timeout, set
// to the lease for the transaction, ends a relay that hangs while it holds
// them.
//
// SQLite has one writer: a transaction held open across a publish would
// stop every intake transaction for as long, so SQLite leases the records
// (ClaimOutbox), publishes them and then deletes them (DeleteOutbox), each
// step a short transaction of its own.

// outboxFree selects the records no other relay has leased (ClaimOutbox):
// lease columns are only ever set by ClaimOutbox, on SQLite and by relays of
// older versions.
const outboxFree = `(claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)`

// PublishOutbox takes up to limit free outbox records, oldest first, calls
// publish with them and deletes them if publish returns nil.
func (s *Store) PublishOutbox(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, recs []engine.OutboxRecord) error) (int, error) {
	const op = "sqlstore: publish outbox"
	if err := checkClaim(owner, limit, lease); err != nil {
		return 0, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	if publish == nil {
		return 0, engine.Errorf(engine.CodeInvalid, op, "no publish function")
	}
	if !s.d.postgres {
		return s.publishLeased(ctx, owner, limit, lease, publish)
	}
	n := 0
	err := s.InTx(ctx, func(ctx context.Context, etx engine.Tx) error {
		t := etx.(*tx)
		rows, err := t.query(ctx, s.d.q(`SELECT seq, topic, key, message, traceparent FROM outbox
			WHERE `+outboxFree+` ORDER BY seq LIMIT ?`+s.d.skipLock),
			s.d.t(s.now()), owner, limit)
		if err != nil {
			return s.wrap(op+": lock records", err)
		}
		recs, err := scanOutbox(rows)
		if err != nil {
			return s.wrap(op+": lock records", err)
		}
		if len(recs) == 0 {
			return nil
		}
		// A relay that stalls while it holds the records loses its session
		// (and the records) after lease.
		ms := max(lease.Milliseconds(), 1)
		if _, err := t.exec(ctx, "SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
			strconv.FormatInt(ms, 10)); err != nil {
			return s.wrap(op+": bound the transaction", err)
		}
		if err := publish(ctx, recs); err != nil {
			return err
		}
		seqs := make([]int64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if _, err := t.exec(ctx, "DELETE FROM outbox WHERE seq = ANY($1::bigint[])", int64Array(seqs)); err != nil {
			return s.wrap(fmt.Sprintf("%s: delete %d published records (they will be published again)", op, len(seqs)), err)
		}
		n = len(recs)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// publishLeased is PublishOutbox with leases and short transactions
// (SQLite). A failed publish gives the lease up, so that any relay can
// retry at once.
func (s *Store) publishLeased(ctx context.Context, owner string, limit int, lease time.Duration,
	publish func(ctx context.Context, recs []engine.OutboxRecord) error) (int, error) {
	recs, err := s.ClaimOutbox(ctx, owner, limit, lease)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	seqs := make([]int64, len(recs))
	for i, r := range recs {
		seqs[i] = r.Seq
	}
	if err := publish(ctx, recs); err != nil {
		if relErr := s.releaseOutbox(context.WithoutCancel(ctx), owner, seqs); relErr != nil {
			return 0, errors.Join(err, relErr)
		}
		return 0, err
	}
	if err := s.DeleteOutbox(ctx, seqs); err != nil {
		return 0, fmt.Errorf("delete %d published outbox records (they will be published again): %w", len(seqs), err)
	}
	return len(recs), nil
}

// releaseOutbox gives up owner's leases on seqs.
func (s *Store) releaseOutbox(ctx context.Context, owner string, seqs []int64) error {
	const op = "sqlstore: release outbox leases"
	arg, err := s.d.list(seqs)
	if err != nil {
		return s.wrap(op, err)
	}
	if _, err := s.w.ExecContext(ctx, s.d.q(`UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
		WHERE claimed_by = ? AND `+s.d.in("seq")), owner, arg); err != nil {
		return s.wrap(op, err)
	}
	return nil
}

// checkClaim validates the arguments of a claim.
func checkClaim(owner string, limit int, lease time.Duration) error {
	switch {
	case owner == "":
		return errors.New("no owner")
	case limit <= 0:
		return fmt.Errorf("limit %d is not positive", limit)
	case lease <= 0:
		return fmt.Errorf("lease %v is not positive", lease)
	}
	return nil
}

// ClaimOutbox leases up to limit unpublished records, oldest first, to owner
// until now+lease, skipping records whose lease to another relay has not run
// out (and, on PostgreSQL, records another relay's PublishOutbox holds).
// Records already leased to owner are leased again.
func (s *Store) ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]engine.OutboxRecord, error) {
	const op = "sqlstore: claim outbox"
	if err := checkClaim(owner, limit, lease); err != nil {
		return nil, &engine.Error{Code: engine.CodeInvalid, Op: op, Err: err}
	}
	now := s.now()
	// = ANY(ARRAY(…)) rather than IN (…): PostgreSQL runs the subquery
	// once and looks the records up by key, where IN may be planned as a
	// hash join that scans the table twice.
	in := "seq IN (SELECT seq FROM outbox WHERE " + outboxFree + " ORDER BY seq LIMIT ?)"
	if s.d.postgres {
		in = "seq = ANY(ARRAY(SELECT seq FROM outbox WHERE " + outboxFree + " ORDER BY seq LIMIT ?" + s.d.skipLock + "))"
	}
	rows, err := s.w.QueryContext(ctx, s.d.q(`UPDATE outbox SET claimed_by = ?, claimed_until = ?
		WHERE `+in+` RETURNING seq, topic, key, message, traceparent`), owner, s.d.t(now.Add(lease)), s.d.t(now), owner, limit)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	out, err := scanOutbox(rows)
	if err != nil {
		return nil, s.wrap(op, err)
	}
	return out, nil
}

// scanOutbox reads and closes rows of seq, topic, key, message,
// traceparent, and returns the records by seq.
func scanOutbox(rows *sql.Rows) ([]engine.OutboxRecord, error) {
	defer rows.Close()
	var out []engine.OutboxRecord
	for rows.Next() {
		var (
			r     engine.OutboxRecord
			msg   []byte
			trace sql.NullString
		)
		if err := rows.Scan(&r.Seq, &r.Topic, &r.Key, &msg, &trace); err != nil {
			return nil, err
		}
		r.Traceparent = trace.String
		if err := engine.UnmarshalMessage(msg, &r.Message); err != nil {
			return nil, fmt.Errorf("record %d: decode message: %w", r.Seq, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out, nil
}
