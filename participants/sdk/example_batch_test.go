package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// A batch handler: one statement for all the commands it is given. Run
// gives it a run of up to 32 consecutive APPROVE_ORDER commands fetched
// together; Dispatch (used here) one at a time. Either way it answers one
// Result per command, in order.
func ExampleHandleBatch() {
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
	db.MustExec(`CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)`)
	db.MustExec(`INSERT INTO orders (id, status) VALUES ('o1', 'draft'), ('o2', 'draft')`)
	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	type order struct {
		OrderID string `json:"order_id"`
	}
	sdk.HandleBatch(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmds []sdk.Command[order]) ([]sdk.Result, error) {
		ids := make([]any, len(cmds))
		for i, c := range cmds {
			ids[i] = c.Payload.OrderID
		}
		q := `UPDATE orders SET status = 'approved' WHERE status = 'draft' AND id IN (?` + strings.Repeat(", ?", len(ids)-1) + `) RETURNING id`
		var approved []string
		if err := tx.SelectContext(ctx, &approved, q, ids...); err != nil {
			return nil, fmt.Errorf("approve %d orders: %w", len(ids), err)
		}
		done := map[string]bool{}
		for _, id := range approved {
			done[id] = true
		}
		res := make([]sdk.Result, len(cmds))
		for i, c := range cmds {
			if done[c.Payload.OrderID] {
				res[i] = sdk.Reply("ORDER_APPROVED", nil)
			} else {
				res[i] = sdk.Reject("ORDER_REJECTED", "no draft order "+c.Payload.OrderID, nil)
			}
		}
		return res, nil
	})

	for i, id := range []string{"o1", "o2", "o3"} {
		m := envelope.Message{V: envelope.Version, ID: fmt.Sprint("c", i+1), SagaID: "saga-" + id, Saga: "S", Kind: envelope.KindCommand,
			Name: "APPROVE_ORDER", OccurredAt: time.Now(), Payload: json.RawMessage(`{"order_id":"` + id + `"}`)}
		body, _ := json.Marshal(m)
		out, err := p.Dispatch(ctx, sdk.Record{Key: m.SagaID, Value: body})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(strings.TrimSpace(m.ID + " " + out.Reply.Name + " " + out.Reply.Reason))
	}
	// Output:
	// c1 ORDER_APPROVED
	// c2 ORDER_APPROVED
	// c3 ORDER_REJECTED no draft order o3
}
