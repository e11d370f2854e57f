package sqlstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/envelope"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

// BenchmarkApplyBatch writes what the orchestrator writes for one batch of
// 500 events in one transaction: claim the message ids, load the sagas,
// insert the new ones (half the batch starts sagas), update the others (the
// sagas started by the previous batch), append one history entry and enqueue
// one command per event, commit. It reports events/s.
//
// The ids (sagas, messages) are made as the system makes them
// (envelope.NewID, ordered by time: ids=ordered) or as random UUIDs
// (ids=random), to show what the order costs in the indexes keyed by them.
//
//	go test -run '^$' -bench ApplyBatch -benchtime 40x ./engine/sqlstore/
func BenchmarkApplyBatch(b *testing.B) {
	for _, ids := range []struct {
		name  string
		newID func() string
	}{{"ordered", envelope.NewID}, {"random", uuid.NewString}} {
		b.Run("postgres/ids="+ids.name, func(b *testing.B) { benchApplyBatch(b, openPostgres(b), ids.newID) })
		b.Run("sqlite/ids="+ids.name, func(b *testing.B) { benchApplyBatch(b, openSQLite(b), ids.newID) })
	}
}

const benchBatch = 500

var benchContext = json.RawMessage(`{"deal_context":{"deal_id":"3f6c1a52-8a4e-4c1e-9d2a-5e8f0b7c6d41","portfolio_id":"PF-000123",` +
	`"instrument":"US0378331005","side":"BUY","quantity":"150","price":"187.35","currency":"USD",` +
	`"account":"ACC-7788","requested_by":"advisor@example.com","comment":"rebalance Q3"}}`)

func benchApplyBatch(b *testing.B, s *sqlstore.Store, newID func() string) {
	b.Helper()
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	newSaga := func() *engine.Instance {
		id := newID()
		return &engine.Instance{ID: id, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 1, State: "DRAFT",
			Status: engine.StatusRunning, Context: benchContext, Keys: map[string]string{"deal_id": id},
			CreatedAt: now, UpdatedAt: now, EnteredAt: now}
	}
	command := func(in *engine.Instance, name string) engine.Message {
		return engine.Message{V: engine.EnvelopeVersion, ID: newID(), SagaID: in.ID, Saga: in.Saga,
			SagaVersion: in.SagaVersion, Kind: engine.KindCommand, Name: name, Participant: "profile",
			CausationID: newID(), OccurredAt: now, Attempt: 1, Payload: benchContext}
	}
	// Sagas started by the "previous" batch, advanced by the next one.
	var prev []*engine.Instance
	for range benchBatch / 2 {
		prev = append(prev, newSaga())
	}
	if err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, prev) }); err != nil {
		b.Fatalf("seed: %v", err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		msgIDs := make([]string, benchBatch)
		sagaIDs := make([]string, 0, benchBatch)
		started := make([]*engine.Instance, 0, benchBatch/2)
		for i := range msgIDs {
			msgIDs[i] = newID()
		}
		for range benchBatch / 2 {
			in := newSaga()
			started = append(started, in)
			sagaIDs = append(sagaIDs, in.ID)
		}
		for _, in := range prev {
			sagaIDs = append(sagaIDs, in.ID)
		}
		err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
			fresh, err := tx.Claim(ctx, msgIDs)
			if err != nil {
				return err
			}
			if len(fresh) != benchBatch {
				return fmt.Errorf("%d fresh of %d", len(fresh), benchBatch)
			}
			loaded, err := tx.Load(ctx, sagaIDs)
			if err != nil {
				return err
			}
			updated := make([]*engine.Instance, 0, len(prev))
			for _, p := range prev {
				in := loaded[p.ID]
				in.State, in.EnteredAt, in.UpdatedAt, in.Attempts = "APPROVED", now, now, 1
				updated = append(updated, in)
			}
			if err := tx.Insert(ctx, started); err != nil {
				return err
			}
			if err := tx.Update(ctx, updated); err != nil {
				return err
			}
			hist := make([]engine.HistoryEntry, 0, benchBatch)
			recs := make([]engine.OutboxRecord, 0, benchBatch)
			for i, in := range append(started, updated...) {
				cmd := command(in, "APPROVE_ORDER")
				hist = append(hist, engine.HistoryEntry{SagaID: in.ID, At: now, Kind: engine.EntryEvent, MessageID: msgIDs[i],
					Event: "ORDER_APPROVED", By: "profile", FromState: "DRAFT", ToState: in.State,
					Commands: []engine.CommandRef{{ID: cmd.ID, Name: cmd.Name, Participant: cmd.Participant, Attempt: 1}}})
				recs = append(recs, engine.OutboxRecord{Topic: "PROFILE_TOPIC", Key: in.ID, Message: cmd})
			}
			if err := tx.AppendHistory(ctx, hist); err != nil {
				return err
			}
			return tx.Enqueue(ctx, recs)
		})
		if err != nil {
			b.Fatalf("apply batch: %v", err)
		}
		prev = started
	}
	b.ReportMetric(float64(b.N*benchBatch)/time.Since(start).Seconds(), "events/s")
}
