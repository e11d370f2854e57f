package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/kafka"
)

// barrierFixture: DO writes an effect row; UNDO (a compensation) deletes
// the effect of the command it compensates, if any, and fails its first
// run when told to.
type barrierFixture struct {
	p  *Participant
	db *sqlx.DB

	mu       sync.Mutex
	runs     map[string]int
	undoFail int // UNDO runs left to fail
}

func newBarrierFixture(t *testing.T, db *sqlx.DB) *barrierFixture {
	t.Helper()
	ctx := context.Background()
	if err := Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE effects (command_id TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := New(Config{Name: "worker", DB: db, MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Now: func() time.Time { return now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := &barrierFixture{p: p, db: db, runs: map[string]int{}}
	Handle(p, "DO", func(ctx context.Context, tx *sqlx.Tx, cmd Command[struct{}]) (Result, error) {
		f.mu.Lock()
		f.runs[cmd.ID]++
		f.mu.Unlock()
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO effects (command_id) VALUES (?)`), cmd.ID); err != nil {
			return Result{}, err
		}
		return Reply("DONE", nil), nil
	})
	Handle(p, "UNDO", func(ctx context.Context, tx *sqlx.Tx, cmd Command[struct{}]) (Result, error) {
		f.mu.Lock()
		f.runs[cmd.ID]++
		fail := f.undoFail > 0
		f.undoFail--
		f.mu.Unlock()
		if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM effects WHERE command_id = ?`), cmd.Compensates); err != nil {
			return Result{}, err
		}
		if fail {
			return Result{}, errors.New("undo failed once")
		}
		return Reply("UNDONE", nil), nil
	})
	return f
}

// message is a command for the fixture; deadline is relative to the
// fixture's clock (zero: none).
func (f *barrierFixture) message(name, compensates string, deadline time.Duration) envelope.Message {
	m := envelope.Message{V: 1, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "S", SagaVersion: 1, Kind: envelope.KindCommand,
		Name: name, Participant: "worker", OccurredAt: time.Now().UTC(), Compensates: compensates}
	if deadline != 0 {
		m.Deadline = f.p.cfg.Now().Add(deadline)
	}
	return m
}

func barrierRecord(t *testing.T, m envelope.Message) kafka.Record {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Record{Topic: "WORKER_TOPIC", Key: m.SagaID, Value: b}
}

// TestProcessBatchBarrier: one fetched batch (one transaction) holding a
// compensation, then the command it compensates (a hanging command: the
// barrier record is not committed yet when it is handled), an expired
// command, a command in time and a second compensation of the same id.
// The in-batch barrier must refuse the hanging one, as a separate batch
// would; a compensation whose handler failed once records the barrier on
// the retry path.
func TestProcessBatchBarrier(t *testing.T) {
	for name, open := range batchDBs(t) {
		t.Run(name, func(t *testing.T) {
			f := newBarrierFixture(t, open(t))
			ctx := context.Background()
			hanging := f.message("DO", "", time.Hour)
			undo := f.message("UNDO", hanging.ID, 0)
			undo.SagaID = hanging.SagaID
			expired := f.message("DO", "", -time.Second)
			inTime := f.message("DO", "", time.Second)
			undo2 := f.message("UNDO", hanging.ID, 0)
			msgs := []envelope.Message{undo, hanging, expired, inTime, undo2}
			recs := make([]kafka.Record, len(msgs))
			for i, m := range msgs {
				recs[i] = barrierRecord(t, m)
			}
			outs, err := f.p.process(ctx, nil, recs)
			if err != nil {
				t.Fatalf("process: %v", err)
			}
			if got, want := len(outs), len(recs); got != want {
				t.Fatalf("outcomes = %d, want %d", got, want)
			}
			wants := []struct {
				reply   string
				expired bool
				reason  string
			}{
				{"UNDONE", false, ""},
				{envelope.CommandExpired, true, ReasonCompensated + " (compensation command " + undo.ID + ")"},
				{envelope.CommandExpired, true, "passed at 2030-01-01T00:00:00Z"},
				{"DONE", false, ""},
				{"UNDONE", false, ""},
			}
			for i, w := range wants {
				o := outs[i]
				if o.Command.ID != msgs[i].ID || o.Reply == nil || o.Reply.Name != w.reply || o.Expired != w.expired || o.Reply.Reason != strings.TrimSpace(o.Reply.Reason) || !strings.Contains(o.Reply.Reason, w.reason) {
					t.Errorf("record %d: id %s reply %+v expired %v (err %v); want %s expired %v reason %q", i, o.Command.ID, o.Reply, o.Expired, o.Err, w.reply, w.expired, w.reason)
				}
			}
			var effects []string
			if err := f.db.Select(&effects, `SELECT command_id FROM effects`); err != nil {
				t.Fatal(err)
			}
			if len(effects) != 1 || effects[0] != inTime.ID {
				t.Errorf("effects = %v, want only %s", effects, inTime.ID)
			}
			var barrier []struct {
				ID string `db:"message_id"`
				By string `db:"compensation_id"`
			}
			if err := f.db.Select(&barrier, `SELECT message_id, compensation_id FROM sdk_compensated`); err != nil {
				t.Fatal(err)
			}
			if len(barrier) != 1 || barrier[0].ID != hanging.ID || barrier[0].By != undo.ID {
				t.Errorf("barrier records = %+v, want %s compensated by %s", barrier, hanging.ID, undo.ID)
			}
			var inbox int
			if err := f.db.Get(&inbox, `SELECT COUNT(*) FROM sdk_inbox`); err != nil {
				t.Fatal(err)
			}
			if inbox != len(msgs) {
				t.Errorf("inbox rows = %d, want %d", inbox, len(msgs))
			}
			var names []string
			if err := f.db.Select(&names, `SELECT name FROM sdk_outbox ORDER BY seq`); err != nil {
				t.Fatal(err)
			}
			if got, want := strings.Join(names, ","), "UNDONE,COMMAND_EXPIRED,COMMAND_EXPIRED,DONE,UNDONE"; got != want {
				t.Errorf("outbox = %s, want %s (command order)", got, want)
			}

			// Retry path: a compensation that fails once, then the command.
			f.undoFail = 1
			late := f.message("DO", "", time.Hour)
			undoLate := f.message("UNDO", late.ID, 0)
			outs, err = f.p.process(ctx, nil, []kafka.Record{barrierRecord(t, undoLate), barrierRecord(t, late)})
			if err != nil {
				t.Fatalf("process: %v", err)
			}
			if o := outs[0]; o.Reply == nil || o.Reply.Name != "UNDONE" || o.Attempts != 2 {
				t.Errorf("failing compensation: reply %+v attempts %d (err %v), want UNDONE after 2", o.Reply, o.Attempts, o.Err)
			}
			if o := outs[1]; !o.Expired || o.Reply == nil || !strings.Contains(o.Reply.Reason, ReasonCompensated) {
				t.Errorf("command after the retried compensation: expired %v reply %+v, want refused", o.Expired, o.Reply)
			}
			if f.runs[late.ID] != 0 {
				t.Errorf("handler runs of the compensated command = %d, want 0", f.runs[late.ID])
			}
		})
	}
}
