package sdk_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// A forward command and its compensation. The compensation handler is
// idempotent and null-safe (nothing to undo: it still answers), and the
// SDK refuses a forward command that arrives after its deadline or after
// its compensation (COMMAND_EXPIRED, handler not run).
func ExampleHandle_compensation() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sdk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db := sqlx.MustOpen("sqlite", "file:"+filepath.Join(dir, "profile.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	defer db.Close()
	if err := sdk.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	db.MustExec(`CREATE TABLE debits (deal_id TEXT PRIMARY KEY, amount INTEGER NOT NULL)`)
	now := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC) // the participant's clock, pinned here
	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	type deal struct {
		DealID string `json:"deal_id"`
		Amount int    `json:"amount"`
	}
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[deal]) (sdk.Result, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO debits (deal_id, amount) VALUES (?, ?)`, cmd.Payload.DealID, cmd.Payload.Amount)
		return sdk.Reply("ORDER_APPROVED", nil), err
	})
	sdk.Handle(p, "REVERT_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[deal]) (sdk.Result, error) {
		// cmd.Compensates is the APPROVE_ORDER's id. Undo what exists, once.
		var amount int
		err := tx.GetContext(ctx, &amount, `DELETE FROM debits WHERE deal_id = ? RETURNING amount`, cmd.Payload.DealID)
		if errors.Is(err, sql.ErrNoRows) {
			return sdk.Reply("ORDER_REVERTED", map[string]any{"undone": 0}), nil // nothing to undo
		}
		return sdk.Reply("ORDER_REVERTED", map[string]any{"undone": amount}), err
	})

	// What saga-machine sends: commands with a deadline; compensations
	// naming the command they undo.
	send := func(id, name, compensates string, deadline time.Time) {
		m := envelope.Message{V: envelope.Version, ID: id, SagaID: "saga-1", Saga: "MANUAL_CREATE_ORDER", Kind: envelope.KindCommand,
			Name: name, OccurredAt: time.Now(), Deadline: deadline, Compensates: compensates,
			Payload: json.RawMessage(`{"deal_id":"d1","amount":30}`)}
		body, _ := json.Marshal(m)
		out, err := p.Dispatch(ctx, sdk.Record{Key: m.SagaID, Value: body})
		if err != nil {
			log.Fatal(err)
		}
		r := out.Reply
		fmt.Printf("%s %s -> %s %s%s expired=%v duplicate=%v\n", id, name, r.Name, r.Reason, r.Payload, out.Expired, out.Duplicate)
	}
	inTime, late := now.Add(time.Minute), now.Add(-time.Second)

	send("c1", "APPROVE_ORDER", "", inTime)
	send("c2", "REVERT_ORDER", "c1", time.Time{}) // undoes c1

	send("c3", "REVERT_ORDER", "c4", time.Time{}) // c4 is late on the bus: nothing to undo
	send("c4", "APPROVE_ORDER", "", inTime)       // refused

	send("c5", "APPROVE_ORDER", "", late)   // refused
	send("c5", "APPROVE_ORDER", "", inTime) // the same id again: the same refusal

	var n int
	if err := db.Get(&n, `SELECT COUNT(*) FROM debits`); err != nil {
		log.Fatal(err)
	}
	fmt.Println("debits:", n)
	// Output:
	// c1 APPROVE_ORDER -> ORDER_APPROVED  expired=false duplicate=false
	// c2 REVERT_ORDER -> ORDER_REVERTED {"undone":30} expired=false duplicate=false
	// c3 REVERT_ORDER -> ORDER_REVERTED {"undone":0} expired=false duplicate=false
	// c4 APPROVE_ORDER -> COMMAND_EXPIRED compensated before it arrived (compensation command c3) expired=true duplicate=true
	// c5 APPROVE_ORDER -> COMMAND_EXPIRED deadline 2030-01-02T11:59:59Z passed at 2030-01-02T12:00:00Z expired=true duplicate=false
	// c5 APPROVE_ORDER -> COMMAND_EXPIRED deadline 2030-01-02T11:59:59Z passed at 2030-01-02T12:00:00Z expired=true duplicate=true
	// debits: 0
}
