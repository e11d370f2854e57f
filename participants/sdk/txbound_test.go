package sdk_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// TestPausedHandlerReleasesItsLocks is the chaos run's finding: a replica
// paused inside a handler's transaction (SIGSTOP) kept the business rows it
// had locked until it resumed, so the replica that took its partitions over
// waited on them. With Config.TxIdleTimeout the server ends the idle
// transaction: another session then gets the row, the paused handler's work
// rolls back, and the command is handled again once, with one effect in all.
// The control (a bound of an hour) shows the row stays locked without it.
func TestPausedHandlerReleasesItsLocks(t *testing.T) {
	ctx := context.Background()
	db, err := sqlx.Open("postgres", testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sdk.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE cash (id int PRIMARY KEY, debits int NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	run := func(t *testing.T, idle time.Duration, name string) (other error, out sdk.Outcome, dispatchErr error) {
		if _, err := db.ExecContext(ctx, `INSERT INTO cash VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET debits = 0`); err != nil {
			t.Fatal(err)
		}
		p, err := sdk.New(sdk.Config{Name: name, DB: db, TxIdleTimeout: idle, MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		locked, release := make(chan struct{}), make(chan struct{})
		var calls atomic.Int32
		sdk.Handle(p, "DEBIT", func(ctx context.Context, tx *sqlx.Tx, _ sdk.Command[map[string]any]) (sdk.Result, error) {
			if _, err := tx.ExecContext(ctx, `SELECT debits FROM cash WHERE id = 1 FOR UPDATE`); err != nil {
				return sdk.Result{}, err
			}
			if calls.Add(1) == 1 {
				close(locked)
				<-release // "paused": the session sits idle in its transaction
			}
			if _, err := tx.ExecContext(ctx, `UPDATE cash SET debits = debits + 1 WHERE id = 1`); err != nil {
				return sdk.Result{}, err
			}
			return sdk.Reply("DEBITED", nil), nil
		})
		cmd := envelope.AppendMessage(nil, &envelope.Message{V: envelope.Version, ID: "cmd-" + name, SagaID: "saga-1", Saga: "S", SagaVersion: 1,
			Kind: envelope.KindCommand, Name: "DEBIT", Participant: name, OccurredAt: time.Now().UTC(), Attempt: 1})
		done := make(chan struct{})
		go func() {
			defer close(done)
			out, dispatchErr = p.Dispatch(ctx, sdk.Record{Topic: p.Config().CommandTopic, Key: "saga-1", Value: cmd, Offset: 1,
				Headers: map[string]string{envelope.HeaderKind: string(envelope.KindCommand)}})
		}()
		<-locked
		// The replica that took the partitions over: it needs the row. A
		// lock_timeout far above the bound keeps a stuck test from hanging.
		lctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		other = func() error {
			tx, err := db.BeginTxx(lctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback() //nolint:errcheck
			if _, err := tx.ExecContext(lctx, `SET LOCAL lock_timeout = '3s'`); err != nil {
				return err
			}
			_, err = tx.ExecContext(lctx, `SELECT debits FROM cash WHERE id = 1 FOR UPDATE`)
			return err
		}()
		close(release)
		<-done
		return other, out, dispatchErr
	}

	t.Run("bounded", func(t *testing.T) {
		other, out, err := run(t, 300*time.Millisecond, "bounded")
		if other != nil {
			t.Fatalf("the other replica could not lock the row the paused handler held: %v", other)
		}
		if err != nil || out.Reply == nil || out.Reply.Name != "DEBITED" {
			t.Fatalf("after the pause: outcome %+v, err %v; want the command handled again and DEBITED", out, err)
		}
		var debits int
		if err := db.GetContext(ctx, &debits, `SELECT debits FROM cash WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		if debits != 1 {
			t.Errorf("debits = %d, want exactly 1 (the paused attempt rolled back, the retry committed)", debits)
		}
	})
	t.Run("control: an hour's bound keeps the row locked", func(t *testing.T) {
		other, out, err := run(t, time.Hour, "control")
		var pqErr *pq.Error
		if !errors.As(other, &pqErr) || pqErr.Code != "55P03" {
			t.Fatalf("the other replica's lock: err %v, want lock_not_available (55P03): the row stays locked while the handler is paused", other)
		}
		if err != nil || out.Reply == nil || out.Reply.Name != "DEBITED" {
			t.Fatalf("outcome %+v, err %v; want DEBITED once resumed", out, err)
		}
	})
}

// TestTxIdleTimeoutValidation: a negative or sub-millisecond bound is refused.
func TestTxIdleTimeoutValidation(t *testing.T) {
	db, err := sqlx.Open("postgres", "postgres://unused/none?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{-1, "TxIdleTimeout is negative"}, {time.Microsecond, "below 1ms"}} {
		if _, err := sdk.New(sdk.Config{Name: "p", DB: db, TxIdleTimeout: tt.d}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("TxIdleTimeout %v: err %v, want %q", tt.d, err, tt.want)
		}
	}
	p, err := sdk.New(sdk.Config{Name: "p", DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Config().TxIdleTimeout; got != sdk.DefaultTxIdleTimeout {
		t.Errorf("default TxIdleTimeout = %v, want %v", got, sdk.DefaultTxIdleTimeout)
	}
}
