package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// testPurgeFinished: PurgeFinished removes exactly the sagas that finished
// (completed or failed) before the cut-off, with their keys, timeline and
// idempotency keys; it never removes a running, compensating or
// compensation_failed saga, a saga that finished after the cut-off, or a
// dead letter; limit bounds one call; a zero cut-off is CodeInvalid.
func testPurgeFinished(t *testing.T, s Store) {
	sp, ok := s.(engine.SagaPurger)
	if !ok {
		t.Fatalf("%T does not implement engine.SagaPurger", s)
	}
	ctx := context.Background()
	cut := at(time.Hour)
	type saga struct {
		id      string
		status  engine.Status
		updated time.Duration // since base
		gone    bool          // removed by the purge at cut
	}
	sagas := []saga{
		{"old-completed", engine.StatusCompleted, 0, true},
		{"old-failed", engine.StatusFailed, 30 * time.Minute, true},
		{"old-running", engine.StatusRunning, 0, false},
		{"old-compensating", engine.StatusCompensating, 0, false},
		{"old-compensation-failed", engine.StatusCompensationFailed, 0, false},
		{"new-completed", engine.StatusCompleted, 2 * time.Hour, false},
		{"at-cut-completed", engine.StatusCompleted, time.Hour, false}, // not before the cut-off
	}
	for i, sg := range sagas {
		in := minimalInstance(sg.id, at(0))
		in.Status, in.UpdatedAt = sg.status, at(sg.updated)
		in.Keys = map[string]string{"deal_id": "d-" + sg.id}
		insert(t, s, in)
		mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
			if _, _, err := tx.ClaimIdempotencyKey(ctx, engine.IdempotencyKey{Caller: "alice", Saga: "S", Key: "k-" + sg.id,
				RequestHash: "h", SagaID: sg.id, CreatedAt: at(0)}); err != nil {
				return err
			}
			return tx.AppendHistory(ctx, []engine.HistoryEntry{{SagaID: sg.id, At: at(time.Duration(i) * time.Second),
				Kind: engine.EntryEvent, MessageID: "m-" + sg.id, Event: "E", By: "p", ToState: "A"}})
		})
	}
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		return tx.AddDeadLetters(ctx, []engine.DeadLetter{{MessageID: "late-1", SagaID: "old-completed", Topic: "T", Offset: 1,
			Raw: []byte(`{}`), Code: engine.CodeFinished, Reason: "late", CreatedAt: at(0)}})
	})

	if _, err := sp.PurgeFinished(ctx, time.Time{}, 0); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("PurgeFinished without a cut-off: err %v, want invalid", err)
	}
	// limit 1: one of the two, the older first.
	n, err := sp.PurgeFinished(ctx, cut, 1)
	if err != nil || n != 1 {
		t.Fatalf("PurgeFinished(limit 1) = %d, %v; want 1", n, err)
	}
	if _, err := s.GetInstance(ctx, "old-completed"); engine.ErrorCode(err) != engine.CodeNotFound {
		t.Errorf("after limit 1: old-completed err %v, want it removed first (the older)", err)
	}
	n, err = sp.PurgeFinished(ctx, cut, 0)
	if err != nil || n != 1 {
		t.Fatalf("PurgeFinished = %d, %v; want the one left (old-failed)", n, err)
	}
	if n, err := sp.PurgeFinished(ctx, cut, 0); err != nil || n != 0 {
		t.Errorf("PurgeFinished again = %d, %v; want 0", n, err)
	}
	for i, sg := range sagas {
		_, err := s.GetInstance(ctx, sg.id)
		switch {
		case sg.gone && engine.ErrorCode(err) != engine.CodeNotFound:
			t.Errorf("%s: GetInstance err %v, want not found (removed)", sg.id, err)
		case !sg.gone && err != nil:
			t.Errorf("%s: GetInstance err %v, want it kept", sg.id, err)
		}
		h, err := s.History(ctx, sg.id)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 0, false: 1}[sg.gone]; len(h) != want {
			t.Errorf("%s: %d timeline entries, want %d", sg.id, len(h), want)
		}
		page, err := s.ListInstances(ctx, engine.SagaFilter{KeyName: "deal_id", KeyValue: "d-" + sg.id, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 0, false: 1}[sg.gone]; len(page.Sagas) != want {
			t.Errorf("%s: found by its key %d times, want %d", sg.id, len(page.Sagas), want)
		}
		// The idempotency key: claimed afresh when its saga was removed.
		var fresh bool
		mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
			var err error
			_, fresh, err = tx.ClaimIdempotencyKey(ctx, engine.IdempotencyKey{Caller: "alice", Saga: "S", Key: "k-" + sg.id,
				RequestHash: "h", SagaID: "again-" + sg.id, CreatedAt: at(time.Duration(i) * time.Minute)})
			return err
		})
		if fresh != sg.gone {
			t.Errorf("%s: its idempotency key claimed afresh %v, want %v", sg.id, fresh, sg.gone)
		}
	}
	dls, err := s.DeadLetters(ctx, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].SagaID != "old-completed" {
		t.Errorf("dead letters = %+v, want old-completed's kept", dls)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := sp.PurgeFinished(cctx, at(3*time.Hour), 0); err == nil || !errors.Is(err, context.Canceled) && engine.ErrorCode(err) == "" {
		t.Errorf("PurgeFinished with a cancelled context: err %v, want one", err)
	}
	if _, err := s.GetInstance(ctx, "new-completed"); err != nil {
		t.Errorf("a cancelled purge removed new-completed: %v", err)
	}
}
