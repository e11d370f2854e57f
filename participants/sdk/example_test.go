package sdk_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// A whole participant: New, Handle, Run. The handler's changes, the inbox
// record and the reply commit in one transaction.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	db := sqlx.MustOpen("postgres", os.Getenv("PROFILE_DATABASE_URL"))
	if err := sdk.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}

	p, err := sdk.New(sdk.Config{Name: "profile", DB: db, Brokers: []string{"127.0.0.1:9092"}})
	if err != nil {
		log.Fatal(err)
	}
	type deal struct {
		DealContext struct {
			DealID string `json:"deal_id"`
			Amount string `json:"amount"`
		} `json:"deal_context"`
	}
	sdk.Handle(p, "APPROVE_ORDER", func(ctx context.Context, tx *sqlx.Tx, cmd sdk.Command[deal]) (sdk.Result, error) {
		// ... check the balance and debit it through tx ...
		return sdk.Reply("ORDER_APPROVED", map[string]any{"approved_deal": cmd.Payload.DealContext.DealID}), nil
	})
	if err := p.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// StartSaga writes the saga's starting event in the same transaction as the
// business change; Run's relay (here Flush, by hand) publishes it.
func ExampleParticipant_StartSaga() {
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
	db.MustExec(`CREATE TABLE deals (id TEXT PRIMARY KEY, saga_id TEXT NOT NULL)`)
	p, err := sdk.New(sdk.Config{Name: "deals", DB: db})
	if err != nil {
		log.Fatal(err)
	}

	tx := db.MustBeginTx(ctx, nil)
	sagaID, err := p.StartSaga(ctx, tx, "MANUAL_CREATE_ORDER", "REGISTER",
		map[string]any{"deal_context": map[string]any{"deal_id": "d-1"}})
	if err != nil {
		log.Fatal(err)
	}
	tx.MustExec(`INSERT INTO deals (id, saga_id) VALUES (?, ?)`, "d-1", sagaID)
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	p.Wake() // committed: Run's relay publishes it now rather than at its next poll

	n, err := p.Flush(ctx, func(ctx context.Context, recs []sdk.Record) error {
		for _, r := range recs {
			fmt.Println(r.Topic, r.Headers["name"], r.Key == sagaID)
		}
		return nil
	})
	fmt.Println(n, err)
	// Output:
	// SAGA_SERVER_TOPIC_DEALS REGISTER true
	// 1 <nil>
}
