package sqlstore_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

// Open a store, then apply one event the way the orchestrator does: claim the
// message, store the saga, its history and its command in one transaction.
func ExampleOpen() {
	ctx := context.Background()
	store, err := sqlstore.Open(ctx, "sqlite::memory:") // or postgres://…, sqlite:/var/lib/saga/saga.db
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	saga := &engine.Instance{ID: "saga-1", Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1, State: "DRAFT",
		Status: engine.StatusRunning, Context: []byte(`{"deal_context":{"deal_id":"d-1"}}`),
		Keys: map[string]string{"deal_id": "d-1"}, CreatedAt: now, UpdatedAt: now, EnteredAt: now}
	err = store.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		fresh, err := tx.Claim(ctx, []string{"event-1"})
		if err != nil || !fresh["event-1"] {
			return err // a duplicate would be skipped
		}
		if err := tx.Insert(ctx, []*engine.Instance{saga}); err != nil {
			return err
		}
		if err := tx.AppendHistory(ctx, []engine.HistoryEntry{{SagaID: saga.ID, At: now, Kind: engine.EntryEvent,
			MessageID: "event-1", Event: "REGISTER", By: "deals", ToState: "DRAFT"}}); err != nil {
			return err
		}
		return tx.Enqueue(ctx, []engine.OutboxRecord{{Topic: "PROFILE_TOPIC", Key: saga.ID, Message: engine.Message{
			V: engine.EnvelopeVersion, ID: "cmd-1", SagaID: saga.ID, Saga: saga.Saga, Kind: engine.KindCommand,
			Name: "APPROVE_ORDER", Participant: "profile", OccurredAt: now}}})
	})
	if err != nil {
		log.Fatal(err)
	}

	page, err := store.ListInstances(ctx, engine.SagaFilter{KeyName: "deal_id", KeyValue: "d-1"})
	if err != nil {
		log.Fatal(err)
	}
	recs, err := store.ClaimOutbox(ctx, "relay-1", 100, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(page.Sagas[0].ID, page.Sagas[0].State, page.Sagas[0].Rev)
	fmt.Println(recs[0].Topic, recs[0].Message.Name)
	// Output:
	// saga-1 DRAFT 1
	// PROFILE_TOPIC APPROVE_ORDER
}
