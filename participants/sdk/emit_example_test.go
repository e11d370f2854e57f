package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// EmitEvent writes an event for a running saga in the same transaction as
// the business change that caused it (here a client's cancellation), with
// no causation id: it answers no command.
func ExampleParticipant_EmitEvent() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sdk-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db := sqlx.MustOpen("sqlite", "file:"+filepath.Join(dir, "deals.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	defer db.Close()
	if err := sdk.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	db.MustExec(`CREATE TABLE deals (id TEXT PRIMARY KEY, saga_id TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0)`)
	db.MustExec(`INSERT INTO deals (id, saga_id) VALUES ('d-1', '6f1c2c0e-8f5b-4d1e-9a0b-2b1f8e7c9d10')`)
	p, err := sdk.New(sdk.Config{Name: "deals", DB: db})
	if err != nil {
		log.Fatal(err)
	}

	tx := db.MustBeginTx(ctx, nil)
	tx.MustExec(`UPDATE deals SET cancel_requested = 1 WHERE id = 'd-1'`)
	if err := p.EmitEvent(ctx, tx, "6f1c2c0e-8f5b-4d1e-9a0b-2b1f8e7c9d10", "MANUAL_CREATE_ORDER", "CANCEL_REQUESTED",
		map[string]any{"cancellation": map[string]any{"deal_id": "d-1"}}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}

	_, err = p.Flush(ctx, func(ctx context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			var m struct {
				Kind        string          `json:"kind"`
				Name        string          `json:"name"`
				Participant string          `json:"participant"`
				CausationID string          `json:"causation_id"`
				Payload     json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal(r.Value, &m); err != nil {
				return err
			}
			fmt.Println(r.Topic, m.Kind, m.Name, m.Participant, m.CausationID == "", string(m.Payload))
		}
		return nil
	})
	fmt.Println(err)
	// Output:
	// SAGA_SERVER_TOPIC_DEALS event CANCEL_REQUESTED deals true {"cancellation":{"deal_id":"d-1"}}
	// <nil>
}
