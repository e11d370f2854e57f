package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ledger is a participant with a forward command (APPROVE_ORDER debits a
// deal's amount from one account) and its compensation (REVERT_ORDER puts
// it back, null-safe and idempotent: a deal never debited, or already
// reverted, is left alone).
type ledger struct {
	p     *sdk.Participant
	db    *sqlx.DB
	clock *clock

	mu      sync.Mutex
	runs    map[string]int                     // handler runs per command name
	seen    []sdk.Command[order]               // every REVERT_ORDER the handler got
	failFwd func(cmd sdk.Command[order]) error // if set, APPROVE_ORDER fails with its error
	failRev func(cmd sdk.Command[order]) error // if set, REVERT_ORDER fails with its error
}

const ledgerCash = 100

func newLedger(t *testing.T, db *sqlx.DB, cfg sdk.Config) *ledger {
	t.Helper()
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	for _, q := range []string{
		`CREATE TABLE account (id INTEGER PRIMARY KEY, cash INTEGER NOT NULL)`,
		`INSERT INTO account (id, cash) VALUES (1, 100)`,
		`CREATE TABLE debits (deal_id TEXT PRIMARY KEY, amount INTEGER NOT NULL, reverted INTEGER NOT NULL DEFAULT 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("ledger schema: %v", err)
		}
	}
	l := &ledger{db: db, clock: newClock(), runs: map[string]int{}}
	cfg.Name, cfg.DB, cfg.Now = "profile", db, l.clock.Now
	if cfg.Logger == nil {
		cfg.Logger = quietLogger(t)
	}
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = time.Millisecond, 2*time.Millisecond
	}
	p, err := sdk.New(cfg)
	if err != nil {
		t.Fatalf("new participant: %v", err)
	}
	l.p = p
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		l.mu.Lock()
		l.runs[cmd.Name]++
		fail := l.failFwd
		l.mu.Unlock()
		d := cmd.Payload.DealContext
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE account SET cash = cash - ? WHERE id = 1`), d.Amount); err != nil {
			return sdk.Result{}, fmt.Errorf("debit %s: %w", d.DealID, err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO debits (deal_id, amount) VALUES (?, ?)`), d.DealID, d.Amount); err != nil {
			return sdk.Result{}, fmt.Errorf("record debit %s: %w", d.DealID, err)
		}
		if fail != nil {
			if err := fail(cmd); err != nil {
				return sdk.Result{}, err
			}
		}
		return sdk.Reply("ORDER_APPROVED", map[string]any{"approved": d.DealID}), nil
	})
	sdk.Handle(p, "REVERT_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		l.mu.Lock()
		l.runs[cmd.Name]++
		l.seen = append(l.seen, cmd)
		fail := l.failRev
		l.mu.Unlock()
		if fail != nil {
			if err := fail(cmd); err != nil {
				return sdk.Result{}, err
			}
		}
		d := cmd.Payload.DealContext
		// Null-safe and idempotent: only a debit not reverted yet is undone.
		res, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE debits SET reverted = 1 WHERE deal_id = ? AND reverted = 0`), d.DealID)
		if err != nil {
			return sdk.Result{}, fmt.Errorf("revert %s: %w", d.DealID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return sdk.Result{}, fmt.Errorf("revert %s: %w", d.DealID, err)
		}
		if n == 1 {
			if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE account SET cash = cash + (SELECT amount FROM debits WHERE deal_id = ?) WHERE id = 1`), d.DealID); err != nil {
				return sdk.Result{}, fmt.Errorf("credit back %s: %w", d.DealID, err)
			}
		}
		return sdk.Reply("ORDER_REVERTED", map[string]any{"reverted": n == 1}), nil
	})
	return l
}

func (l *ledger) handlerRuns(command string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[command]
}

func (l *ledger) cash(t *testing.T) int {
	t.Helper()
	var c int
	if err := l.db.Get(&c, `SELECT cash FROM account WHERE id = 1`); err != nil {
		t.Fatalf("read cash: %v", err)
	}
	return c
}

// debits returns the deals debited and not reverted.
func (l *ledger) debits(t *testing.T) []string {
	t.Helper()
	var ids []string
	if err := l.db.Select(&ids, `SELECT deal_id FROM debits WHERE reverted = 0 ORDER BY deal_id`); err != nil {
		t.Fatalf("read debits: %v", err)
	}
	return ids
}

// forward is an APPROVE_ORDER command for deal (amount 30).
func forward(deal string, deadline time.Time) envelope.Message {
	raw, _ := json.Marshal(orderPayload(deal, 30))
	return envelope.Message{
		V: envelope.Version, ID: uuid.NewString(), SagaID: uuid.NewString(), Saga: "MANUAL_CREATE_ORDER", SagaVersion: 2,
		Kind: envelope.KindCommand, Name: "APPROVE_ORDER", Participant: "profile", OccurredAt: time.Now().UTC(), Attempt: 1,
		Deadline: deadline, Payload: raw,
	}
}

// compensation is the REVERT_ORDER command that undoes fwd.
func compensation(fwd envelope.Message) envelope.Message {
	m := fwd
	m.ID, m.Name, m.Compensates, m.Deadline, m.Attempt = uuid.NewString(), "REVERT_ORDER", fwd.ID, time.Time{}, 1
	return m
}

func record(t *testing.T, m envelope.Message) sdk.Record {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return sdk.Record{Topic: "PROFILE_TOPIC", Key: m.SagaID, Value: b, Headers: map[string]string{envelope.HeaderKind: "command", envelope.HeaderName: m.Name}}
}

func (l *ledger) dispatch(t *testing.T, m envelope.Message) sdk.Outcome {
	t.Helper()
	out, err := l.p.Dispatch(context.Background(), record(t, m))
	if err != nil {
		t.Fatalf("dispatch %s %s: %v", m.Name, m.ID, err)
	}
	return out
}

// outbox returns the messages waiting in the outbox (and relays them).
func (l *ledger) outbox(t *testing.T) []envelope.Message {
	t.Helper()
	var got []envelope.Message
	_, err := l.p.Flush(context.Background(), func(_ context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			var m envelope.Message
			if err := json.Unmarshal(r.Value, &m); err != nil {
				return fmt.Errorf("outbox row is not an envelope: %w", err)
			}
			got = append(got, m)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flush: %v", err)
	}
	return got
}

func rows(t *testing.T, db *sqlx.DB, table, id string) int {
	t.Helper()
	var n int
	if err := db.Get(&n, db.Rebind(`SELECT COUNT(*) FROM `+table+` WHERE message_id = ?`), id); err != nil {
		t.Fatalf("count %s rows of %s: %v", table, id, err)
	}
	return n
}

// checkExpired checks a COMMAND_EXPIRED reply to cmd: the one relayed and
// the outcome's.
func checkExpired(t *testing.T, out sdk.Outcome, relayed []envelope.Message, cmd envelope.Message, wantReason string) {
	t.Helper()
	if out.Reply == nil {
		t.Fatalf("%s: no reply (expired %v, err %v)", cmd.Name, out.Expired, out.Err)
	}
	r := out.Reply
	if r.Name != envelope.CommandExpired || r.CausationID != cmd.ID || r.SagaID != cmd.SagaID || r.Saga != cmd.Saga ||
		r.SagaVersion != cmd.SagaVersion || r.Kind != envelope.KindEvent || r.Participant != "profile" || len(r.Payload) != 0 {
		t.Errorf("reply = %+v, want %s (causation %s, saga %s, version %d, by profile, no payload)", r, envelope.CommandExpired, cmd.ID, cmd.SagaID, cmd.SagaVersion)
	}
	if !strings.Contains(r.Reason, wantReason) {
		t.Errorf("reply reason = %q, want it to contain %q", r.Reason, wantReason)
	}
	if len(relayed) != 1 || relayed[0].ID != r.ID || relayed[0].Name != envelope.CommandExpired {
		t.Errorf("relayed %+v, want only the reply %s", relayed, r.ID)
	}
}

func TestDeadlineRefusesExpiredCommand(t *testing.T) {
	const margin = 2 * time.Second
	tests := []struct {
		name       string
		margin     time.Duration
		deadline   time.Duration // from the participant's now; 0 with noDeadline: none
		noDeadline bool
		wantReason string // "" runs the handler
	}{
		{"passed", 0, -time.Second, false, "passed at 2030-01-02T03:04:05Z"},
		{"exactly now", 0, 0, false, "deadline 2030-01-02T03:04:05Z passed at 2030-01-02T03:04:05Z"},
		{"a nanosecond left", 0, time.Nanosecond, false, ""},
		{"within the margin", margin, margin - time.Millisecond, false, "is within the deadline margin 2s of 2030-01-02T03:04:05Z"},
		{"at the margin", margin, margin, false, "within the deadline margin"},
		{"beyond the margin", margin, margin + time.Millisecond, false, ""},
		{"long passed, margin", margin, -time.Hour, false, "passed at"},
		{"no deadline", 0, 0, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachDB(t, func(t *testing.T, db *sqlx.DB) {
				l := newLedger(t, db, sdk.Config{DeadlineMargin: tt.margin})
				var deadline time.Time
				if !tt.noDeadline {
					deadline = l.clock.Now().Add(tt.deadline)
				}
				cmd := forward("d1", deadline)
				out := l.dispatch(t, cmd)
				relayed := l.outbox(t)
				if tt.wantReason == "" {
					if out.Expired || out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" {
						t.Fatalf("outcome: expired %v reply %+v err %v; want ORDER_APPROVED", out.Expired, out.Reply, out.Err)
					}
					if got, want := l.cash(t), ledgerCash-30; got != want {
						t.Errorf("cash = %d, want %d", got, want)
					}
					return
				}
				if !out.Expired || out.Duplicate || out.Attempts != 0 || out.DeadLetter != nil {
					t.Errorf("outcome: expired %v duplicate %v attempts %d dead letter %v; want expired, 0 attempts", out.Expired, out.Duplicate, out.Attempts, out.DeadLetter)
				}
				checkExpired(t, out, relayed, cmd, tt.wantReason)
				first := out.Reply.ID

				// Redelivered (Kafka), re-sent by saga-machine (new attempt),
				// replayed without its deadline, and after the clock went
				// back: the stored refusal each time, never the handler.
				again := cmd
				again.Attempt = 2
				noDeadline := cmd
				noDeadline.Deadline = time.Time{}
				for i, m := range []envelope.Message{cmd, again, noDeadline} {
					if i == 2 {
						l.clock.Add(-24 * time.Hour)
					}
					out := l.dispatch(t, m)
					relayed := l.outbox(t)
					if !out.Duplicate || out.Reply == nil || out.Reply.ID != first || len(relayed) != 1 || relayed[0].ID != first {
						t.Errorf("delivery %d: duplicate %v reply %+v relayed %d; want the stored refusal %s", i+2, out.Duplicate, out.Reply, len(relayed), first)
					}
				}
				if got := l.handlerRuns("APPROVE_ORDER"); got != 0 {
					t.Errorf("handler runs = %d, want 0", got)
				}
				if got, want := l.cash(t), ledgerCash; got != want {
					t.Errorf("cash = %d, want %d (unchanged)", got, want)
				}
				if got := l.debits(t); len(got) != 0 {
					t.Errorf("debits = %v, want none", got)
				}
				if got, want := rows(t, db, "sdk_inbox", cmd.ID), 1; got != want {
					t.Errorf("inbox rows of the command = %d, want %d", got, want)
				}
			})
		})
	}
}

// A compensation command runs whatever its deadline: compensations must
// eventually apply.
func TestCompensationIgnoresDeadline(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		l := newLedger(t, db, sdk.Config{DeadlineMargin: time.Second})
		fwd := forward("d1", l.clock.Now().Add(time.Minute))
		if out := l.dispatch(t, fwd); out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" {
			t.Fatalf("forward: reply %+v (err %v), want ORDER_APPROVED", out.Reply, out.Err)
		}
		comp := compensation(fwd)
		comp.Deadline = l.clock.Now().Add(-time.Hour)
		out := l.dispatch(t, comp)
		if out.Expired || out.Reply == nil || out.Reply.Name != "ORDER_REVERTED" {
			t.Fatalf("compensation past its deadline: expired %v reply %+v (err %v); want ORDER_REVERTED", out.Expired, out.Reply, out.Err)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash = %d, want %d (reverted)", got, want)
		}
		l.mu.Lock()
		seen := l.seen
		l.mu.Unlock()
		if len(seen) != 1 || seen[0].Compensates != fwd.ID || !seen[0].Deadline.Equal(comp.Deadline) {
			t.Errorf("handler saw %+v, want one command with Compensates %s and the deadline", seen, fwd.ID)
		}
	})
}

// The barrier: a forward command that arrives after its compensation (a
// "hanging" command) is refused, also when replayed later.
func TestCompensationBeforeForward(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		l := newLedger(t, db, sdk.Config{})
		fwd := forward("d1", l.clock.Now().Add(time.Hour)) // still in time
		comp := compensation(fwd)

		out := l.dispatch(t, comp)
		l.outbox(t)
		if out.Expired || out.Reply == nil || out.Reply.Name != "ORDER_REVERTED" || out.Reply.CausationID != comp.ID {
			t.Fatalf("compensation: reply %+v (err %v), want ORDER_REVERTED", out.Reply, out.Err)
		}
		var p struct{ Reverted bool }
		if err := json.Unmarshal(out.Reply.Payload, &p); err != nil || p.Reverted {
			t.Errorf("compensation payload %s (err %v), want reverted false: nothing to undo", out.Reply.Payload, err)
		}
		if got, want := rows(t, db, "sdk_compensated", fwd.ID), 1; got != want {
			t.Errorf("barrier records of the forward id = %d, want %d", got, want)
		}

		out = l.dispatch(t, fwd)
		checkExpired(t, out, l.outbox(t), fwd, sdk.ReasonCompensated+" (compensation command "+comp.ID+")")
		if !out.Expired {
			t.Errorf("forward after its compensation: expired %v, want true", out.Expired)
		}
		first := out.Reply.ID
		// Replays: the same record, a re-send, the deadline removed.
		again := fwd
		again.Attempt, again.Deadline = 3, time.Time{}
		for i, m := range []envelope.Message{fwd, again} {
			out := l.dispatch(t, m)
			if !out.Duplicate || out.Reply == nil || out.Reply.ID != first {
				t.Errorf("replay %d: duplicate %v reply %+v, want the stored refusal %s", i, out.Duplicate, out.Reply, first)
			}
		}
		if got := l.handlerRuns("APPROVE_ORDER"); got != 0 {
			t.Errorf("APPROVE_ORDER handler runs = %d, want 0", got)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash = %d, want %d (no effect)", got, want)
		}
		if got := l.debits(t); len(got) != 0 {
			t.Errorf("debits = %v, want none", got)
		}
	})
}

func TestForwardThenCompensation(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		ctx := context.Background()
		l := newLedger(t, db, sdk.Config{})
		fwd := forward("d1", l.clock.Now().Add(time.Minute))
		approved := l.dispatch(t, fwd)
		if approved.Reply == nil || approved.Reply.Name != "ORDER_APPROVED" {
			t.Fatalf("forward: reply %+v (err %v), want ORDER_APPROVED", approved.Reply, approved.Err)
		}
		if got, want := l.cash(t), ledgerCash-30; got != want {
			t.Fatalf("cash after forward = %d, want %d", got, want)
		}
		comp := compensation(fwd)
		reverted := l.dispatch(t, comp)
		if reverted.Reply == nil || reverted.Reply.Name != "ORDER_REVERTED" {
			t.Fatalf("compensation: reply %+v (err %v), want ORDER_REVERTED", reverted.Reply, reverted.Err)
		}
		// Duplicate compensation: runs once.
		dup := l.dispatch(t, comp)
		if !dup.Duplicate || dup.Reply == nil || dup.Reply.ID != reverted.Reply.ID {
			t.Errorf("compensation redelivered: duplicate %v reply %+v, want the stored %s", dup.Duplicate, dup.Reply, reverted.Reply.ID)
		}
		// A second compensation of the same command under another id runs
		// (the SDK cannot know it is the same) and finds nothing to undo.
		comp2 := compensation(fwd)
		if out := l.dispatch(t, comp2); out.Reply == nil || out.Reply.Name != "ORDER_REVERTED" {
			t.Errorf("second compensation: reply %+v (err %v), want ORDER_REVERTED", out.Reply, out.Err)
		}
		// The forward command replayed: its stored reply, no second debit.
		replay := l.dispatch(t, fwd)
		if !replay.Duplicate || replay.Reply == nil || replay.Reply.ID != approved.Reply.ID {
			t.Errorf("forward replayed: duplicate %v reply %+v, want the stored %s", replay.Duplicate, replay.Reply, approved.Reply.ID)
		}
		if got, want := l.handlerRuns("APPROVE_ORDER"), 1; got != want {
			t.Errorf("APPROVE_ORDER runs = %d, want %d", got, want)
		}
		if got, want := l.handlerRuns("REVERT_ORDER"), 2; got != want {
			t.Errorf("REVERT_ORDER runs = %d, want %d (one per compensation id)", got, want)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash = %d, want %d (debited and credited back once)", got, want)
		}
		var by string
		if err := db.Get(&by, db.Rebind(`SELECT compensation_id FROM sdk_compensated WHERE message_id = ?`), fwd.ID); err != nil || by != comp.ID {
			t.Errorf("barrier record of %s: by %q (err %v), want the first compensation %s", fwd.ID, by, err, comp.ID)
		}

		// Past the inbox retention counted from the forward command, its
		// inbox record stays while its compensation is younger: a replay
		// is still a duplicate, with no effect.
		age(t, db, fwd.ID, sdk.DefaultInboxRetention+time.Hour)
		n, err := l.p.Prune(ctx)
		if err != nil || n != (sdk.Pruned{}) {
			t.Fatalf("Prune: %+v, %v; want nothing deleted (compensated recently)", n, err)
		}
		l.outbox(t)
		if out := l.dispatch(t, fwd); !out.Duplicate || out.Reply == nil || out.Reply.ID != approved.Reply.ID {
			t.Errorf("forward replayed after its retention: duplicate %v reply %+v, want the stored %s", out.Duplicate, out.Reply, approved.Reply.ID)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash after the forward was replayed = %d, want %d", got, want)
		}
		// Once the compensation is older than the retention too, both go.
		old := time.Now().Add(-sdk.DefaultInboxRetention - time.Hour).UTC()
		if _, err := db.Exec(db.Rebind(`UPDATE sdk_compensated SET compensated_at = ?`), old); err != nil {
			t.Fatal(err)
		}
		if n, err := l.p.Prune(ctx); err != nil || n.Compensated != 1 || n.Inbox != 1 {
			t.Errorf("Prune: %+v, %v; want 1 barrier record and the forward's inbox record deleted", n, err)
		}
		if got := count(t, db, "sdk_compensated"); got != 0 {
			t.Errorf("barrier records left = %d, want 0", got)
		}
	})
}

// The deadline is checked on every attempt: a forward command whose
// handler failed until its deadline passed is refused, not retried into
// an effect, and a parked one is refused when replayed.
func TestDeadlineOnRetryAndReplay(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		l := newLedger(t, db, sdk.Config{MaxAttempts: 5})
		fwd := forward("d1", l.clock.Now().Add(time.Minute))
		l.failFwd = func(sdk.Command[order]) error {
			l.clock.Add(time.Minute) // the partner was slow: the deadline passed
			return errors.New("partner timed out")
		}
		out := l.dispatch(t, fwd)
		checkExpired(t, out, l.outbox(t), fwd, "passed at")
		if !out.Expired || out.Attempts != 1 || out.DeadLetter != nil {
			t.Errorf("outcome: expired %v attempts %d dead letter %v; want expired after 1 failed attempt", out.Expired, out.Attempts, out.DeadLetter)
		}

		// Parked (permanent failure) while in time, replayed after the
		// deadline: refused; and parked, compensated, replayed: refused.
		l.mu.Lock()
		l.failFwd = func(sdk.Command[order]) error { return sdk.Permanent(errors.New("account locked")) }
		l.mu.Unlock()
		late := forward("d2", l.clock.Now().Add(time.Minute))
		hanging := forward("d3", l.clock.Now().Add(time.Hour))
		for _, m := range []envelope.Message{late, hanging} {
			if out := l.dispatch(t, m); out.DeadLetter == nil {
				t.Fatalf("%s: not parked (reply %+v, err %v)", m.Payload, out.Reply, out.Err)
			}
		}
		l.mu.Lock()
		l.failFwd = nil
		l.mu.Unlock()
		if out := l.dispatch(t, compensation(hanging)); out.Reply == nil || out.Reply.Name != "ORDER_REVERTED" {
			t.Fatalf("compensation of the parked command: reply %+v (err %v)", out.Reply, out.Err)
		}
		// The compensation resolved the parked command for operators: it is
		// handled now (its refusal is its reply), the other one still parked.
		e := newAdminEnv(t, l.p)
		if parked := e.list(t, "?state=parked"); len(parked) != 1 || parked[0].MessageID != late.ID {
			t.Errorf("parked dead letters: %+v, want only %s", parked, late.ID)
		}
		if handled := e.list(t, "?state=handled"); len(handled) != 1 || handled[0].MessageID != hanging.ID || handled[0].ReplyID == "" {
			t.Errorf("handled dead letters: %+v, want %s with its refusal as reply", handled, hanging.ID)
		}
		l.clock.Add(2 * time.Minute)
		l.outbox(t)
		dls, err := l.p.DeadLetters(context.Background())
		if err != nil || len(dls) != 2 {
			t.Fatalf("dead letters: %d (err %v), want 2", len(dls), err)
		}
		want := map[string]string{late.ID: "passed at", hanging.ID: sdk.ReasonCompensated}
		for _, dl := range dls {
			out, err := l.p.Replay(context.Background(), dl.ID)
			if err != nil {
				t.Fatalf("replay %s: %v", dl.MessageID, err)
			}
			cmd := late
			if dl.MessageID == hanging.ID {
				cmd = hanging
			}
			checkExpired(t, out, l.outbox(t), cmd, want[dl.MessageID])
		}
		if dls, err := l.p.DeadLetters(context.Background()); err != nil || len(dls) != 2 || dls[0].ReplayedAt.IsZero() || dls[1].ReplayedAt.IsZero() {
			t.Errorf("dead letters after replay: %+v (err %v), want both marked replayed", dls, err)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash = %d, want %d (no effect)", got, want)
		}
		if got := l.debits(t); len(got) != 0 {
			t.Errorf("debits = %v, want none", got)
		}
	})
}

// Hostile envelopes around compensation are parked, not applied.
func TestCompensationBadEnvelope(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		l := newLedger(t, db, sdk.Config{})
		self := forward("d1", time.Time{})
		self.Name, self.Compensates = "REVERT_ORDER", self.ID
		out := l.dispatch(t, self)
		if out.DeadLetter == nil || !strings.Contains(out.DeadLetter.Reason, "compensates its own id") {
			t.Errorf("compensation of itself: dead letter %+v, want one saying it compensates its own id", out.DeadLetter)
		}
		if got := l.handlerRuns("REVERT_ORDER"); got != 0 {
			t.Errorf("REVERT_ORDER runs = %d, want 0", got)
		}
		if got := count(t, db, "sdk_compensated"); got != 0 {
			t.Errorf("barrier records = %d, want 0", got)
		}
	})
}

func TestDeadlineMarginValidation(t *testing.T) {
	_, err := sdk.New(sdk.Config{Name: "p", DB: openSQLite(t), DeadlineMargin: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "DeadlineMargin is negative") {
		t.Errorf("New with a negative DeadlineMargin: err %v, want it refused", err)
	}
}

// quietLogger logs warnings and errors through t.Log.
func quietLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// TestParkedCompensationBarsItsForward: a compensation command that fails
// and is parked (its transaction rolled back) still bars the command it
// compensates, if that one has not been handled: the forward command
// arriving later is refused (COMMAND_EXPIRED, handler not run, no cash
// moved), so the participant does not apply what its saga is compensating.
// A forward command handled before its compensation was parked is left as
// it is (applied, for the operator who settles the dead letter), and a
// record whose envelope is malformed bars nothing.
func TestParkedCompensationBarsItsForward(t *testing.T) {
	eachDB(t, func(t *testing.T, db *sqlx.DB) {
		l := newLedger(t, db, sdk.Config{MaxAttempts: 2})
		l.failRev = func(sdk.Command[order]) error { return sdk.Permanent(errors.New("the order to revert does not match")) }

		// Compensation first, parked; then its forward command.
		fwd := forward("d1", l.clock.Now().Add(time.Hour))
		comp := compensation(fwd)
		out := l.dispatch(t, comp)
		if out.DeadLetter == nil {
			t.Fatalf("failing compensation: outcome %+v, want it parked", out)
		}
		if got := l.outbox(t); len(got) != 0 {
			t.Errorf("parked compensation answered %+v, want nothing", got)
		}
		out = l.dispatch(t, fwd)
		checkExpired(t, out, l.outbox(t), fwd, sdk.ReasonCompensated+" (compensation command "+comp.ID+")")
		if got := l.handlerRuns("APPROVE_ORDER"); got != 0 {
			t.Errorf("APPROVE_ORDER handler runs = %d, want 0", got)
		}
		if got, want := l.cash(t), ledgerCash; got != want {
			t.Errorf("cash = %d, want %d (nothing applied behind the parked compensation)", got, want)
		}
		// The compensation re-sent and parked again: one dead letter, the
		// same barrier.
		again := comp
		again.Attempt = 2
		if out := l.dispatch(t, again); out.DeadLetter == nil || out.DeadLetter.ID != l.deadLetters(t)[0].ID {
			t.Errorf("re-sent failing compensation: %+v, want the same dead letter", out.DeadLetter)
		}

		// Forward first (applied), then its compensation parked: nothing
		// is barred or undone; the debit stays for the operator.
		fwd2 := forward("d2", l.clock.Now().Add(time.Hour))
		if out := l.dispatch(t, fwd2); out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" {
			t.Fatalf("forward d2: %+v, want ORDER_APPROVED", out.Reply)
		}
		l.outbox(t)
		if out := l.dispatch(t, compensation(fwd2)); out.DeadLetter == nil {
			t.Fatalf("failing compensation of d2: %+v, want it parked", out)
		}
		if got, want := l.debits(t), []string{"d2"}; !slices.Equal(got, want) {
			t.Errorf("debits = %v, want %v", got, want)
		}
		if got := rows(t, db, "sdk_compensated", fwd2.ID); got != 0 {
			t.Errorf("sdk_compensated rows of the applied d2 = %d, want 0 (its compensation failed)", got)
		}

		// A malformed record that names a compensated id bars nothing.
		fwd3 := forward("d3", l.clock.Now().Add(time.Hour))
		bad := compensation(fwd3)
		bad.V = 99 // an envelope version the SDK does not read
		if out := l.dispatch(t, bad); out.DeadLetter == nil {
			t.Fatalf("malformed compensation: %+v, want it parked", out)
		}
		if out := l.dispatch(t, fwd3); out.Expired || out.Reply == nil || out.Reply.Name != "ORDER_APPROVED" {
			t.Errorf("forward d3 after a malformed record naming it: %+v, want ORDER_APPROVED", out.Reply)
		}
	})
}

// deadLetters lists the ledger's dead letters.
func (l *ledger) deadLetters(t *testing.T) []sdk.DeadLetter {
	t.Helper()
	dls, err := l.p.DeadLetters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dls
}
