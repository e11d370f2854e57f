package sqlstore_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
)

// TestAges: LiveStateAges gives the oldest entered_at per definition,
// version, state and status of the live sagas only; OldestOutbox the
// creation of the oldest unpublished record, and nothing once all are
// published. On SQLite and PostgreSQL.
func TestAges(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(testing.TB) *sqlstore.Store
	}{{"sqlite", openSQLite}, {"postgres", openPostgres}} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			defer s.Close()
			testAges(t, s)
		})
	}
}

func testAges(t *testing.T, s *sqlstore.Store) {
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	mk := func(id, saga string, version int, state string, status engine.Status, entered time.Duration) *engine.Instance {
		e := base.Add(entered)
		return &engine.Instance{ID: id, Saga: saga, SagaVersion: version, State: state, Status: status,
			CreatedAt: base, UpdatedAt: e, EnteredAt: e}
	}
	insts := []*engine.Instance{
		mk("a1", "ORDER", 1, "DRAFT", engine.StatusRunning, 3*time.Minute),
		mk("a2", "ORDER", 1, "DRAFT", engine.StatusRunning, time.Minute), // the oldest DRAFT of v1
		mk("a3", "ORDER", 2, "DRAFT", engine.StatusRunning, 2*time.Minute),
		mk("a4", "ORDER", 1, "FAILED", engine.StatusCompensating, 5*time.Minute),
		mk("a5", "ORDER", 1, "FAILED", engine.StatusCompensationFailed, 7*time.Minute),
		mk("a6", "ORDER", 1, "FAILED", engine.StatusFailed, -time.Hour),  // done: left out
		mk("a7", "ORDER", 1, "DONE", engine.StatusCompleted, -time.Hour), // done: left out
		mk("a8", "REFUND", 1, "OPEN", engine.StatusRunning, 10*time.Second),
	}
	if err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, insts) }); err != nil {
		t.Fatalf("insert: %v", err)
	}
	got, err := s.LiveStateAges(ctx)
	if err != nil {
		t.Fatalf("LiveStateAges: %v", err)
	}
	want := []engine.StateAge{
		{Saga: "ORDER", SagaVersion: 1, State: "DRAFT", Status: engine.StatusRunning, OldestEnteredAt: base.Add(time.Minute)},
		{Saga: "ORDER", SagaVersion: 1, State: "FAILED", Status: engine.StatusCompensating, OldestEnteredAt: base.Add(5 * time.Minute)},
		{Saga: "ORDER", SagaVersion: 1, State: "FAILED", Status: engine.StatusCompensationFailed, OldestEnteredAt: base.Add(7 * time.Minute)},
		{Saga: "ORDER", SagaVersion: 2, State: "DRAFT", Status: engine.StatusRunning, OldestEnteredAt: base.Add(2 * time.Minute)},
		{Saga: "REFUND", SagaVersion: 1, State: "OPEN", Status: engine.StatusRunning, OldestEnteredAt: base.Add(10 * time.Second)},
	}
	if !slices.EqualFunc(got, want, func(a, b engine.StateAge) bool {
		return a.Saga == b.Saga && a.SagaVersion == b.SagaVersion && a.State == b.State && a.Status == b.Status &&
			a.OldestEnteredAt.Equal(b.OldestEnteredAt)
	}) {
		t.Errorf("LiveStateAges:\n got %+v\nwant %+v", got, want)
	}

	if _, ok, err := s.OldestOutbox(ctx); err != nil || ok {
		t.Fatalf("OldestOutbox of an empty outbox: got ok %v, err %v; want false, nil", ok, err)
	}
	rec := func(id string) engine.OutboxRecord {
		return engine.OutboxRecord{Topic: "DEALS_TOPIC", Key: "a1", Message: engine.Message{V: 1, ID: id, SagaID: "a1", Saga: "ORDER",
			Kind: engine.KindCommand, Name: "APPROVE_DEAL", Participant: "deals", OccurredAt: base, Payload: json.RawMessage(`{}`)}}
	}
	before := time.Now().Add(-time.Millisecond)
	enqueue := func(ids ...string) {
		t.Helper()
		var recs []engine.OutboxRecord
		for _, id := range ids {
			recs = append(recs, rec(id))
		}
		if err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) }); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
	}
	enqueue("c1", "c2")
	after := time.Now().Add(time.Millisecond)
	first, ok, err := s.OldestOutbox(ctx)
	if err != nil || !ok {
		t.Fatalf("OldestOutbox: got ok %v, err %v; want a time", ok, err)
	}
	if first.Before(before) || first.After(after) {
		t.Errorf("OldestOutbox: got %s, want between %s and %s", first, before, after)
	}
	enqueue("c3")
	if again, _, err := s.OldestOutbox(ctx); err != nil || !again.Equal(first) {
		t.Errorf("OldestOutbox after a later record: got %s, %v; want %s", again, err, first)
	}
	n, err := s.PublishOutbox(ctx, "test", 10, time.Minute, func(context.Context, []engine.OutboxRecord) error { return nil })
	if err != nil || n != 3 {
		t.Fatalf("PublishOutbox: got %d, %v; want 3", n, err)
	}
	if tm, ok, err := s.OldestOutbox(ctx); err != nil || ok {
		t.Errorf("OldestOutbox once all are published: got %s, %v, %v; want none", tm, ok, err)
	}
}
