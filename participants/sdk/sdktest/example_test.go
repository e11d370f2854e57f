package sdktest_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
	"github.com/portfolio-counselor/sagamachine/participants/sdk/sdktest"
)

type notification struct {
	Notification struct {
		Text string `json:"text"`
	} `json:"notification"`
}

// register is what a service exports to wire its handlers.
func register(p *sdk.Participant) {
	sdk.Handle(p, "NOTIFY", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[notification]) (sdk.Result, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO sent (saga_id, text) VALUES (?, ?)`, cmd.SagaID, cmd.Payload.Notification.Text)
		return sdk.NoReply(), err
	})
}

// migrate is the service's own schema.
func migrate(db *sqlx.DB) error {
	_, err := db.Exec(`CREATE TABLE sent (saga_id TEXT NOT NULL, text TEXT NOT NULL)`)
	return err
}

// A handler test: send a command, check the reply and the database, then
// redeliver it and check nothing ran twice.
func Example() {
	testNotify := func(t *testing.T) {
		kit := sdktest.New(t, sdk.Config{Name: "notification"}, register, migrate)

		res := kit.Send(t, "NOTIFY", map[string]any{"notification": map[string]any{"text": "deal executed"}})
		if res.Err != nil || res.DeadLettered || res.Event != "" {
			t.Fatalf("NOTIFY: event %q, err %v, dead lettered %v; want no reply", res.Event, res.Err, res.DeadLettered)
		}
		if again := kit.Redeliver(t); !again.Duplicate {
			t.Fatal("redelivered NOTIFY was not seen as a duplicate")
		}
		var n int
		if err := kit.DB().Get(&n, `SELECT COUNT(*) FROM sent`); err != nil {
			t.Fatal(err)
		}
		if got, want := n, 1; got != want {
			t.Errorf("sent notifications = %d, want %d", got, want)
		}
	}
	_ = testNotify // in a _test.go file: func TestNotify(t *testing.T) { ... }
}

type order struct {
	DealID string `json:"deal_id"`
	Amount int    `json:"amount"`
}

// registerOrders wires a forward command and its compensation. The
// compensation handler is idempotent and null-safe: it undoes only a
// debit that exists and is not undone yet, and answers ORDER_REVERTED
// either way.
func registerOrders(p *sdk.Participant) {
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		if _, err := tx.ExecContext(ctx, `UPDATE account SET cash = cash - ?`, cmd.Payload.Amount); err != nil {
			return sdk.Result{}, err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO debits (deal_id, amount) VALUES (?, ?)`, cmd.Payload.DealID, cmd.Payload.Amount)
		return sdk.Reply("ORDER_APPROVED", nil), err
	})
	sdk.Handle(p, "REVERT_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[order]) (sdk.Result, error) {
		// cmd.Compensates is the id of the APPROVE_ORDER this undoes.
		var amount int
		err := tx.GetContext(ctx, &amount, `DELETE FROM debits WHERE deal_id = ? RETURNING amount`, cmd.Payload.DealID)
		switch {
		case errors.Is(err, sql.ErrNoRows): // never debited, or reverted already: nothing to undo
		case err != nil:
			return sdk.Result{}, err
		default:
			if _, err := tx.ExecContext(ctx, `UPDATE account SET cash = cash + ?`, amount); err != nil {
				return sdk.Result{}, err
			}
		}
		return sdk.Reply("ORDER_REVERTED", nil), nil
	})
}

func migrateOrders(db *sqlx.DB) error {
	_, err := db.Exec(`CREATE TABLE account (cash INTEGER NOT NULL); INSERT INTO account VALUES (100);
		CREATE TABLE debits (deal_id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`)
	return err
}

// Testing a compensation handler: it undoes the forward command's effect
// once, and a forward command that arrives after its compensation (it was
// delayed on the bus) is refused by the SDK without running its handler.
func ExampleKit_Compensate() {
	testRevertOrder := func(t *testing.T) {
		kit := sdktest.New(t, sdk.Config{Name: "profile"}, registerOrders, migrateOrders)
		d1 := map[string]any{"deal_id": "d1", "amount": 30}

		approved := kit.Send(t, "APPROVE_ORDER", d1)
		reverted := kit.Compensate(t, "REVERT_ORDER", approved.Command, d1)
		if reverted.Event != "ORDER_REVERTED" || kit.Redeliver(t).Event != "ORDER_REVERTED" {
			t.Fatalf("REVERT_ORDER: event %q (err %v)", reverted.Event, reverted.Err)
		}
		// cash is 100 again: the redelivered compensation did not run twice.

		// The compensation first, then its forward command: refused.
		d2 := map[string]any{"deal_id": "d2", "amount": 50}
		late := kit.Command(t, "APPROVE_ORDER", d2)
		kit.Compensate(t, "REVERT_ORDER", late, d2) // nothing to undo yet
		res := kit.SendMessage(t, late)
		if !res.Expired || res.Event != envelope.CommandExpired {
			t.Fatalf("APPROVE_ORDER after its compensation: event %q, want %s", res.Event, envelope.CommandExpired)
		}
		// res.Reason: "compensated before it arrived (compensation command ...)"; cash still 100.
	}
	_ = testRevertOrder // in a _test.go file: func TestRevertOrder(t *testing.T) { ... }
}

// A command that arrives after its deadline (saga-machine stopped waiting
// for it) is answered COMMAND_EXPIRED and its handler does not run.
func ExampleKit_SendWithDeadline() {
	testExpired := func(t *testing.T) {
		kit := sdktest.New(t, sdk.Config{Name: "profile"}, registerOrders, migrateOrders)

		res := kit.SendWithDeadline(t, "APPROVE_ORDER", time.Now().Add(-time.Second), map[string]any{"deal_id": "d1", "amount": 30})
		if !res.Expired || res.Event != envelope.CommandExpired {
			t.Fatalf("expired APPROVE_ORDER: event %q, want %s", res.Event, envelope.CommandExpired)
		}
		// res.Reason: "deadline 2025-... passed at 2025-..."; cash unchanged.
		if again := kit.Redeliver(t); !again.Duplicate || again.Reply.ID != res.Reply.ID {
			t.Fatal("a redelivered expired command must get the same refusal")
		}
	}
	_ = testExpired // in a _test.go file: func TestExpired(t *testing.T) { ... }
}
