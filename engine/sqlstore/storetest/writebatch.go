package storetest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// testWriteBatch: WriteBatch has the effects of Insert, Update,
// AppendHistory and Enqueue called in this order, and their refusals; a
// refused batch writes nothing.
func testWriteBatch(t *testing.T, s Store) {
	ctx := context.Background()
	u1, u2 := fullInstance("wb-u1"), minimalInstance("wb-u2", at(0))
	u2.Keys = map[string]string{"k1": "v1", "k2": "v2"}
	insert(t, s, u1, u2)

	n1, n2 := fullInstance("wb-n1"), minimalInstance("wb-n2", at(time.Second))
	n1.Keys = map[string]string{"deal_id": "d-new"}
	u1b, u2b := clone(u1), clone(u2)
	u1b.State, u1b.UpdatedAt, u1b.EnteredAt = "APPROVED", at(time.Minute), at(time.Minute)
	u1b.Context = json.RawMessage(`{"deal_context":{"deal_id":"d-1","approved":true}}`)
	u2b.Keys = map[string]string{"k1": "changed"} // one key changed, one dropped
	u2b.Status = engine.StatusCompleted
	entries := []engine.HistoryEntry{
		{SagaID: "wb-n1", At: at(0), Kind: engine.EntryEvent, MessageID: "e1", Event: "REGISTER", By: "deals", ToState: "DRAFT",
			Commands: []engine.CommandRef{{ID: "c1", Name: "APPROVE_ORDER", Participant: "profile", Attempt: 1}}},
		{SagaID: "wb-u1", At: at(time.Second), Kind: engine.EntryEvent, MessageID: "e2", Event: "APPROVED", By: "profile",
			FromState: "DRAFT", ToState: "APPROVED"},
	}
	recs := outboxRecords(3, "wb")
	var before int64
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		m, err := tx.Load(ctx, []string{"wb-u1", "wb-u2"})
		if err != nil {
			return err
		}
		u1b.Rev, u2b.Rev = m["wb-u1"].Rev, m["wb-u2"].Rev
		return tx.WriteBatch(ctx, []*engine.Instance{n1, n2}, []*engine.Instance{u2b, u1b}, entries, recs)
	})
	if n1.Rev != 1 || n2.Rev != 1 || u1b.Rev != 2 || u2b.Rev != 2 {
		t.Errorf("Revs after WriteBatch: new %d %d, updated %d %d; want 1 1 2 2", n1.Rev, n2.Rev, u1b.Rev, u2b.Rev)
	}
	for _, want := range []*engine.Instance{n1, n2, u1b, u2b} {
		got, err := s.GetInstance(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetInstance(%s): %v", want.ID, err)
		}
		if diff := diffInstance(&got, want); diff != "" {
			t.Errorf("after WriteBatch %s: %s", want.ID, diff)
		}
	}
	for _, tc := range []struct {
		name, value string
		want        []string
	}{{"deal_id", "d-new", []string{"wb-n1"}}, {"k1", "changed", []string{"wb-u2"}}, {"k1", "v1", nil}, {"k2", "v2", nil}} {
		page, err := s.ListInstances(ctx, engine.SagaFilter{KeyName: tc.name, KeyValue: tc.value})
		if err != nil {
			t.Fatalf("ListInstances: %v", err)
		}
		if got := ids(page.Sagas); !slices.Equal(got, tc.want) {
			t.Errorf("sagas with key %s=%s: got %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
	for _, e := range entries {
		got, err := s.History(ctx, e.SagaID)
		if err != nil {
			t.Fatalf("History(%s): %v", e.SagaID, err)
		}
		if len(got) != 1 || got[0].MessageID != e.MessageID || got[0].Event != e.Event || len(got[0].Commands) != len(e.Commands) {
			t.Errorf("History(%s) = %+v, want the one entry %+v", e.SagaID, got, e)
		}
	}
	claimed, err := s.ClaimOutbox(ctx, "relay", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox: %v", err)
	}
	if got, want := msgIDs(claimed), msgIDs(recs); !slices.Equal(got, want) {
		t.Fatalf("outbox after WriteBatch: %v, want %v in order", got, want)
	}
	for i, r := range claimed {
		if diff := diffMessage(r.Message, recs[i].Message); diff != "" || r.Topic != recs[i].Topic || r.Key != recs[i].Key {
			t.Errorf("outbox record %d: topic %q key %q %s", i, r.Topic, r.Key, diff)
		}
	}
	if err := s.DeleteOutbox(ctx, seqs(claimed)); err != nil {
		t.Fatal(err)
	}
	if before, err = s.OutboxBacklog(ctx); err != nil || before != 0 {
		t.Fatalf("OutboxBacklog = %d, %v; want 0", before, err)
	}

	// Refused batches: each writes nothing, whatever else it carries.
	fresh := func(id string) *engine.Instance { return minimalInstance(id, at(time.Hour)) }
	stale := clone(u1b)
	stale.Rev = 1
	noTopic := outboxRecords(1, "wb-bad")
	noTopic[0].Topic = ""
	for _, tc := range []struct {
		name    string
		ins     []*engine.Instance
		upd     []*engine.Instance
		entries []engine.HistoryEntry
		want    engine.Code
	}{
		{"a stale update", []*engine.Instance{fresh("wb-r1")}, []*engine.Instance{stale}, nil, engine.CodeConflict},
		{"an existing id", []*engine.Instance{fresh("wb-r2"), fresh("wb-n1")}, nil, nil, engine.CodeConflict},
		{"an update of a saga that does not exist", []*engine.Instance{fresh("wb-r3")}, []*engine.Instance{fresh("wb-ghost")}, nil, engine.CodeConflict},
		{"a history entry without a saga", []*engine.Instance{fresh("wb-r4")}, nil, []engine.HistoryEntry{{Kind: engine.EntryEvent, At: at(0)}}, engine.CodeInvalid},
		{"a nil instance", []*engine.Instance{fresh("wb-r5"), nil}, nil, nil, engine.CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
				return tx.WriteBatch(ctx, tc.ins, tc.upd, append(tc.entries, engine.HistoryEntry{SagaID: "wb-r", At: at(0), Kind: engine.EntryEvent, MessageID: "r"}),
					outboxRecords(2, "wb-"+tc.name))
			})
			wantCode(t, "WriteBatch with "+tc.name, err, tc.want)
			checkNothingWritten(t, s, tc.ins)
		})
	}
	t.Run("a record without a topic", func(t *testing.T) {
		err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
			return tx.WriteBatch(ctx, []*engine.Instance{fresh("wb-r6")}, nil, nil, noTopic)
		})
		wantCode(t, "WriteBatch with a record without a topic", err, engine.CodeInvalid)
		checkNothingWritten(t, s, []*engine.Instance{fresh("wb-r6")})
	})
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.WriteBatch(ctx, nil, nil, nil, nil) })
	if got, err := s.GetInstance(ctx, "wb-n1"); err != nil || got.Rev != 1 {
		t.Errorf("wb-n1 after the refused batches: rev %d, %v; want 1", got.Rev, err)
	}
}

// checkNothingWritten fails if a refused batch left a new saga, a history
// entry or an outbox record.
func checkNothingWritten(t *testing.T, s Store, ins []*engine.Instance) {
	t.Helper()
	ctx := context.Background()
	for _, in := range ins {
		if in == nil || in.ID == "wb-n1" {
			continue
		}
		if _, err := s.GetInstance(ctx, in.ID); engine.ErrorCode(err) != engine.CodeNotFound {
			t.Errorf("saga %s of the refused batch: GetInstance = %v, want CodeNotFound", in.ID, err)
		}
	}
	if h, err := s.History(ctx, "wb-r"); err != nil || len(h) != 0 {
		t.Errorf("history of the refused batch: %d entries, %v; want none", len(h), err)
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 0 {
		t.Errorf("outbox after the refused batch: %d records, %v; want none", n, err)
	}
}
