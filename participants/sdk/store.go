package sdk

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/errs"
	"github.com/portfolio-counselor/sagamachine/internal/delivery"
	"github.com/portfolio-counselor/sagamachine/internal/sqldb"
)

// VersionTable is the goose version table of the SDK's own migrations.
const VersionTable = "sdk_goose_db_version"

// migrationLockID is the PostgreSQL advisory lock taken while migrating, so
// replicas starting together do not race (distinct from goose's default).
const migrationLockID = 0x5d6b5344 // "]kSD"

type dialect = sqldb.Dialect

const (
	dialectPostgres = sqldb.Postgres
	dialectSQLite   = sqldb.SQLite
)

func detectDialect(db *sqlx.DB) (dialect, error) { return sqldb.DialectOf(db) }

// Migrate creates or upgrades the SDK's own tables (inbox, outbox, dead
// letters, compensation records) in db with goose, tracked in the version
// table "sdk_goose_db_version". Services run their business migrations
// separately (with goose's default table or their own). Safe to call from
// several replicas at once on PostgreSQL (advisory lock).
func Migrate(ctx context.Context, db *sqlx.DB) error {
	if err := sqldb.Migrate(ctx, db, sqldb.Migrations{Component: "sdk", Table: VersionTable, LockID: migrationLockID}); err != nil {
		return fmt.Errorf("migrate sdk tables: %w", err)
	}
	return nil
}

func encodeHeaders(h map[string]string) string {
	if len(h) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(h) // map[string]string always encodes
	return string(b)
}

func decodeHeaders(s string) (map[string]string, error) {
	if s == "" || s == "{}" {
		return nil, nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, fmt.Errorf("decode stored headers: %w", err)
	}
	return h, nil
}

func (p *Participant) insertOutbox(ctx context.Context, tx *sqlx.Tx, r delivery.Row) error {
	if err := p.dt.Write(ctx, tx, []delivery.Row{r}); err != nil {
		return fmt.Errorf("write %s %s to the outbox: %w", r.Name, r.ID, err)
	}
	return nil
}

// storeReply writes the reply to the outbox and keeps it in the command's
// inbox row.
func (p *Participant) storeReply(ctx context.Context, tx *sqlx.Tx, commandID string, r delivery.Row) error {
	if err := p.insertOutbox(ctx, tx, r); err != nil {
		return err
	}
	if err := p.dt.SetReply(ctx, tx, commandID, r.ID, r.Value); err != nil {
		return fmt.Errorf("keep reply %s in the inbox: %w", r.ID, err)
	}
	return nil
}

// claimInbox records the command id; it reports false if it was there
// already (a duplicate).
func (p *Participant) claimInbox(ctx context.Context, tx *sqlx.Tx, msg envelope.Message) (bool, error) {
	fresh, err := p.dt.Claim(ctx, tx, []delivery.InboxRow{{ID: msg.ID, SagaID: msg.SagaID, Command: msg.Name}})
	if err != nil {
		return false, fmt.Errorf("record command %s in the inbox: %w", msg.ID, err)
	}
	return fresh[msg.ID], nil
}

// storedReply returns the reply kept for an already handled command (nil if
// it had none).
func (p *Participant) storedReply(ctx context.Context, tx *sqlx.Tx, commandID string) (*envelope.Message, []byte, error) {
	kept, err := p.keptReplies(ctx, tx, []envelope.Message{{ID: commandID}})
	if err != nil {
		return nil, nil, fmt.Errorf("read the stored reply of command %s: %w", commandID, err)
	}
	k := kept[commandID]
	return k.reply, k.body, nil
}

// DeadLetter is a command the participant could not handle: malformed,
// unknown, or failing after every attempt. It stays in the participant's
// database, also once replayed (ReplayedAt set), until Prune removes it with
// the inbox record of its command.
type DeadLetter struct {
	// ID identifies the dead letter (for Replay).
	ID string
	// MessageID, SagaID and Command come from the envelope (may be empty
	// for a malformed one).
	MessageID string
	SagaID    string
	Command   string
	// Reason is the last error.
	Reason string
	// Attempts counts handler runs over all deliveries of the command.
	Attempts int
	// Topic, Partition and Offset locate the record on the bus (Offset -1
	// when it did not come from Kafka).
	Topic     string
	Partition int32
	Offset    int64
	// Headers and Body are the record as received.
	Headers   map[string]string
	Body      []byte
	CreatedAt time.Time
	UpdatedAt time.Time
	// ReplayedAt is when a replay (Participant.Replay, ReplayAs or the
	// admin API) last handled the command successfully; zero if never.
	// ReplayedBy says who asked for it.
	ReplayedAt time.Time
	ReplayedBy string
}

// deadLetterRow is a DeadLetter as stored.
type deadLetterRow struct {
	ID        string    `db:"id"`
	MessageID string    `db:"message_id"`
	SagaID    string    `db:"saga_id"`
	Command   string    `db:"command"`
	Reason    string    `db:"reason"`
	Attempts  int       `db:"attempts"`
	Topic     string    `db:"topic"`
	Partition int32     `db:"kpartition"`
	Offset    int64     `db:"koffset"`
	Headers   string    `db:"headers"`
	Body      []byte    `db:"body"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`

	ReplayedAt sql.NullTime `db:"replayed_at"`
	ReplayedBy string       `db:"replayed_by"`
}

func (r deadLetterRow) deadLetter() (DeadLetter, error) {
	h, err := decodeHeaders(r.Headers)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("dead letter %s: %w", r.ID, err)
	}
	return DeadLetter{
		ID: r.ID, MessageID: r.MessageID, SagaID: r.SagaID, Command: r.Command, Reason: r.Reason,
		Attempts: r.Attempts, Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
		Headers: h, Body: r.Body, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
		ReplayedAt: r.ReplayedAt.Time.UTC(), ReplayedBy: r.ReplayedBy,
	}, nil
}

// park stores a dead letter. A command already parked (same message id) is
// updated rather than stored twice, so the saga-machine's re-sends of a
// failing command leave one row. For a compensation command that failed
// (comp non-nil) it also writes, in the same transaction, the barrier of
// the command it compensates if that command has not been handled: its
// inbox row with the refusal, as a handled compensation would (barrierFor).
// The forward command then never applies if it arrives after its
// compensation was parked: the saga is compensating it, and an operator
// settling the parked compensation finds nothing applied behind it.
func (p *Participant) park(ctx context.Context, dl DeadLetter, comp *envelope.Message) (DeadLetter, error) {
	now := time.Now().UTC()
	tx, err := p.db.BeginTxx(ctx, nil)
	if err != nil {
		return dl, fmt.Errorf("park command %s as a dead letter: %w", dl.MessageID, err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// After the dead letter's write (SQLite: write first, then read).
	bar := func() error {
		if comp == nil || comp.Compensates == "" {
			return nil
		}
		kept, err := p.keptReplies(ctx, tx, []envelope.Message{{ID: comp.Compensates}})
		if err != nil {
			return fmt.Errorf("park compensation %s: look up the command it compensates: %w", comp.ID, err)
		}
		if _, handled := kept[comp.Compensates]; handled {
			return nil // applied (or barred) already: the operator settles it
		}
		b, err := p.barrierFor(*comp, kept)
		if err != nil {
			return fmt.Errorf("park compensation %s: %w", comp.ID, err)
		}
		if err := p.recordBarrier(ctx, tx, []barrierRow{b}); err != nil {
			return fmt.Errorf("park compensation %s: %w", comp.ID, err)
		}
		return nil
	}
	if dl.MessageID != "" {
		// Write first, then read: on SQLite a transaction that reads before
		// writing cannot take the write lock once another writer committed.
		q := tx.Rebind(`UPDATE sdk_dead_letters SET reason = ?, attempts = attempts + ?, topic = ?, kpartition = ?, koffset = ?, updated_at = ? WHERE message_id = ?`)
		res, err := tx.ExecContext(ctx, q, dl.Reason, dl.Attempts, dl.Topic, dl.Partition, dl.Offset, now, dl.MessageID)
		if err != nil {
			return dl, fmt.Errorf("park command %s as a dead letter: update: %w", dl.MessageID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return dl, fmt.Errorf("park command %s as a dead letter: update: %w", dl.MessageID, err)
		} else if n > 0 {
			var row deadLetterRow
			q := tx.Rebind(`SELECT * FROM sdk_dead_letters WHERE message_id = ? ORDER BY created_at LIMIT 1`)
			if err := tx.GetContext(ctx, &row, q, dl.MessageID); err != nil {
				return dl, fmt.Errorf("park command %s as a dead letter: read back: %w", dl.MessageID, err)
			}
			if err := bar(); err != nil {
				return dl, err
			}
			if err := tx.Commit(); err != nil {
				return dl, fmt.Errorf("park command %s as dead letter %s: commit: %w", dl.MessageID, row.ID, err)
			}
			return row.deadLetter()
		}
	}
	dl.ID = uuid.NewString()
	dl.CreatedAt, dl.UpdatedAt = now, now
	q := tx.Rebind(`INSERT INTO sdk_dead_letters (id, message_id, saga_id, command, reason, attempts, topic, kpartition, koffset, headers, body, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	body := dl.Body
	if body == nil {
		body = []byte{}
	}
	if _, err := tx.ExecContext(ctx, q, dl.ID, dl.MessageID, dl.SagaID, dl.Command, dl.Reason, dl.Attempts,
		dl.Topic, dl.Partition, dl.Offset, encodeHeaders(dl.Headers), body, now, now); err != nil {
		return dl, fmt.Errorf("park command %s as a dead letter: %w", dl.MessageID, err)
	}
	if err := bar(); err != nil {
		return dl, err
	}
	if err := tx.Commit(); err != nil {
		return dl, fmt.Errorf("park command %s as a dead letter: commit: %w", dl.MessageID, err)
	}
	return dl, nil
}

// DeadLetters lists the dead letters, oldest first: the parked commands
// and those replayed since (ReplayedAt set) that Prune has not removed yet.
func (p *Participant) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	var rows []deadLetterRow
	if err := p.db.SelectContext(ctx, &rows, `SELECT * FROM sdk_dead_letters ORDER BY created_at, id`); err != nil {
		return nil, fmt.Errorf("list dead letters of %s: %w", p.cfg.Name, err)
	}
	out := make([]DeadLetter, 0, len(rows))
	for _, r := range rows {
		dl, err := r.deadLetter()
		if err != nil {
			return nil, fmt.Errorf("list dead letters of %s: %w", p.cfg.Name, err)
		}
		out = append(out, dl)
	}
	return out, nil
}

func (p *Participant) deadLetter(ctx context.Context, id string) (DeadLetter, error) {
	var row deadLetterRow
	err := p.db.GetContext(ctx, &row, p.db.Rebind(`SELECT * FROM sdk_dead_letters WHERE id = ?`), id)
	if errors.Is(err, sql.ErrNoRows) {
		return DeadLetter{}, errs.Errorf(errs.CodeNotFound, "replay dead letter", "no dead letter %q in %s", id, p.cfg.Name)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %s: %w", id, err)
	}
	return row.deadLetter()
}

func (p *Participant) updateDeadLetter(ctx context.Context, id, reason string, attempts int) error {
	q := p.db.Rebind(`UPDATE sdk_dead_letters SET reason = ?, attempts = attempts + ?, updated_at = ? WHERE id = ?`)
	if _, err := p.db.ExecContext(ctx, q, reason, attempts, time.Now().UTC(), id); err != nil {
		return fmt.Errorf("update dead letter %s: %w", id, err)
	}
	return nil
}

func markReplayed(ctx context.Context, tx *sqlx.Tx, id, by string) error {
	now := time.Now().UTC()
	q := tx.Rebind(`UPDATE sdk_dead_letters SET replayed_at = ?, replayed_by = ?, updated_at = ? WHERE id = ?`)
	if _, err := tx.ExecContext(ctx, q, now, by, now, id); err != nil {
		return fmt.Errorf("mark dead letter %s replayed: %w", id, err)
	}
	return nil
}

// PurgeInbox deletes inbox records of commands handled before olderThan and
// returns how many it deleted; the record of a command compensated since
// olderThan is kept until its compensation is older (so a replay of it
// stays a duplicate). A command re-delivered after its record is gone runs
// again, so keep records longer than the saga-machine re-sends commands
// (its retry and timeout policies). Prune does this and more on
// Config.InboxRetention; PurgeInbox is for your own schedule.
func (p *Participant) PurgeInbox(ctx context.Context, olderThan time.Time) (int64, error) {
	if olderThan.IsZero() {
		return 0, nil // nothing was handled before the zero time
	}
	n, err := p.dt.Purge(ctx, olderThan)
	if err != nil {
		return n, fmt.Errorf("purge inbox of %s: %w", p.cfg.Name, err)
	}
	return n, nil
}
