package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
)

// Store is what the suite checks: engine.Store (what the orchestrator
// needs), engine.Queries (what operators read), the outbox lease the
// relay uses on SQLite, and Close.
type Store interface {
	engine.Store
	engine.Queries
	// ClaimOutbox leases up to limit unpublished records (oldest first) to
	// owner for lease, skipping records leased to others whose lease has
	// not run out; records already leased to owner are leased again.
	ClaimOutbox(ctx context.Context, owner string, limit int, lease time.Duration) ([]engine.OutboxRecord, error)
	// DeleteOutbox removes published records.
	DeleteOutbox(ctx context.Context, seqs []int64) error
	// Close releases the connections.
	Close() error
}

// Run runs the conformance suite. open must return a new, empty, migrated
// store for each call; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"Ping", testPing},
		{"InstanceRoundTrip", testInstanceRoundTrip},
		{"GetInstanceNotFound", testGetInstanceNotFound},
		{"InsertConflict", testInsertConflict},
		{"InvalidInput", testInvalidInput},
		{"Claim", testClaim},
		{"Update", testUpdate},
		{"UpdateConflictRollsBackBatch", testUpdateConflictRollsBack},
		{"History", testHistory},
		{"WriteBatch", testWriteBatch},
		{"Outbox", testOutbox},
		{"OutboxLeaseExpiry", testOutboxLeaseExpiry},
		{"OutboxConcurrentClaimers", testOutboxConcurrentClaimers},
		{"OutboxReclaimOwnLease", testOutboxReclaimOwnLease},
		{"OutboxTraceparent", testOutboxTraceparent},
		{"PublishOutbox", testPublishOutbox},
		{"PublishOutboxExclusive", testPublishOutboxExclusive},
		{"PublishOutboxStalledRelay", testPublishOutboxStalledRelay},
		{"PublishOutboxConcurrentRelays", testPublishOutboxConcurrentRelays},
		{"PurgeInbox", testPurgeInbox},
		{"DueTimers", testDueTimers},
		{"ListInstances", testListInstances},
		{"ListPagination", testListPagination},
		{"CountByState", testCountByState},
		{"DeadLetters", testDeadLetters},
		{"InTxRollback", testInTxRollback},
		{"ConcurrentInTx", testConcurrentInTx},
		{"IdempotencyKeys", testIdempotencyKeys},
		{"IdempotencyKeysConcurrent", testIdempotencyKeysConcurrent},
		{"PurgeFinished", testPurgeFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close store: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// base is a time with nanoseconds in a non-UTC zone: stores keep microseconds.
var base = time.Date(2025, 3, 14, 9, 26, 53, 589793238, time.FixedZone("UTC+3", 3*3600))

func at(d time.Duration) time.Time { return base.Add(d) }

// mustTx runs fn in a transaction and fails the test on error.
func mustTx(t testing.TB, s Store, fn func(ctx context.Context, tx engine.Tx) error) {
	t.Helper()
	if err := s.InTx(context.Background(), fn); err != nil {
		t.Fatalf("InTx: %v", err)
	}
}

func insert(t testing.TB, s Store, insts ...*engine.Instance) {
	t.Helper()
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, insts) })
}

func wantCode(t testing.TB, what string, err error, want engine.Code) {
	t.Helper()
	if got := engine.ErrorCode(err); got != want {
		t.Fatalf("%s: got error %v (code %q), want code %q", what, err, got, want)
	}
}

// fullInstance has every field set.
func fullInstance(id string) *engine.Instance {
	timer := at(90 * time.Second)
	next := at(95 * time.Second)
	elem := 2
	return &engine.Instance{
		ID: id, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 3, State: "DRAFT", Status: engine.StatusRunning,
		Context:   json.RawMessage(`{"deal_context":{"deal_id":"d-1","amount":"12.50","tags":["a","b"],"note":"quote \" and \\ and é"}}`),
		Keys:      map[string]string{"deal_id": "d-1", "portfolio_id": "p-9"},
		CreatedAt: at(0), UpdatedAt: at(time.Second), EnteredAt: at(2 * time.Second),
		Pending: &engine.Message{
			V: engine.EnvelopeVersion, ID: "cmd-" + id, SagaID: id, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 3,
			Kind: engine.KindCommand, Name: "APPROVE_ORDER", Participant: "profile", CausationID: "evt-" + id,
			OccurredAt: at(3 * time.Second), Attempt: 2, Payload: json.RawMessage(`{"deal_context":{"deal_id":"d-1"}}`),
		},
		Attempts: 2, TimerAt: &timer,
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Undo: []engine.UndoEntry{
			{Participant: "deals", Command: "FAIL_DEAL", Done: "DEAL_FAILED", Of: "evt-" + id, OfKind: engine.KindEvent,
				OfName: "REGISTER", OfParticipant: "deals", Status: engine.UndoReplied},
			{Participant: "profile", Command: "REVERT_ORDER", Done: "ORDER_REVERTED", Of: "cmd-" + id, OfKind: engine.KindCommand,
				OfName: "APPROVE_ORDER", OfParticipant: "profile", Status: engine.UndoCompensating, CommandID: "comp-" + id,
				Cause: "evt-fail", Attempts: 3, Sent: 7, ResolvedBy: "", Reason: "quote \" and é"},
			// A branch of a parallel step: its group, branch label, the
			// next re-send of its compensation and the stuck flag.
			{Participant: "deals", Command: "CANCEL_ORDER", Done: "ORDER_CANCELLED", Of: "branch-" + id, OfKind: engine.KindCommand,
				OfName: "PLACE_ORDER", OfParticipant: "deals", Status: engine.UndoCompensating, CommandID: "comp2-" + id,
				Group: "evt-" + id, Branch: "1[2]", NextAt: &next, Stuck: true, Attempts: 1, Sent: 1},
		},
		Deferred: &engine.Message{
			V: engine.EnvelopeVersion, ID: "notify-" + id, SagaID: id, Saga: "MANUAL_CREATE_ORDER", SagaVersion: 3,
			Kind: engine.KindCommand, Name: "NOTIFY_FAILURE", Participant: "notification", CausationID: "evt-fail",
			OccurredAt: at(4 * time.Second), Attempt: 1, Deadline: at(time.Hour),
			Payload: json.RawMessage(`{"notificationDTO":{"user":"u-1","message":"é \"quoted\""}}`),
		},
		Join: &engine.Join{
			Step: 2, Event: "RISK_CHECKED", Cause: "evt-" + id, State: "TRADING", Policy: "at_least", Need: 2,
			Commands: []engine.BranchCommand{
				{ID: "branch-" + id, Branch: 0, Element: &elem, Name: "PLACE_ORDER", Participant: "deals", Status: engine.BranchOK,
					Attempts: 1, Deadline: at(time.Hour), Payload: json.RawMessage(`{"line":{"isin":"DE0001"},"line_no":2}`)},
				{ID: "cash-" + id, Branch: 1, Name: "RESERVE_CASH", Participant: "profile", Status: engine.BranchFailed,
					Why: "CASH_SHORT", Attempts: 3, NextAt: &next},
				{ID: "third-" + id, Branch: 2, Name: "HOLD", Participant: "profile", Status: engine.BranchPending, Attempts: 1},
			},
		},
	}
}

// minimalInstance has only the required fields.
func minimalInstance(id string, created time.Time) *engine.Instance {
	return &engine.Instance{ID: id, Saga: "S", SagaVersion: 1, State: "A", Status: engine.StatusRunning,
		CreatedAt: created, UpdatedAt: created, EnteredAt: created}
}

func clone(in *engine.Instance) *engine.Instance {
	c := *in
	c.Keys = maps.Clone(in.Keys)
	if in.Pending != nil {
		p := *in.Pending
		c.Pending = &p
	}
	if in.TimerAt != nil {
		tm := *in.TimerAt
		c.TimerAt = &tm
	}
	if in.Deferred != nil {
		d := *in.Deferred
		c.Deferred = &d
	}
	c.Undo = slices.Clone(in.Undo)
	if in.Join != nil {
		j := *in.Join
		j.Commands = slices.Clone(in.Join.Commands)
		c.Join = &j
	}
	return &c
}

// jsonOf encodes v for comparisons by meaning.
func jsonOf(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(err.Error())
	}
	return b
}

// jsonEqual compares two JSON documents by meaning; empty equals empty.
func jsonEqual(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}

func timeEqual(a, b time.Time) bool { return a.Equal(b.Truncate(time.Microsecond)) }

func timePtrEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return timeEqual(*a, *b)
}

// diffInstance describes how got differs from want after a round trip
// (times compared at microsecond precision, JSON by meaning).
func diffInstance(got, want *engine.Instance) string {
	var d []string
	add := func(field string, g, w any) { d = append(d, fmt.Sprintf("%s: got %v, want %v", field, g, w)) }
	if got.ID != want.ID || got.Saga != want.Saga || got.SagaVersion != want.SagaVersion || got.State != want.State ||
		got.Status != want.Status || got.Rev != want.Rev || got.Attempts != want.Attempts {
		add("scalars", fmt.Sprintf("%s %s v%d %s %s rev=%d attempts=%d", got.ID, got.Saga, got.SagaVersion, got.State, got.Status, got.Rev, got.Attempts),
			fmt.Sprintf("%s %s v%d %s %s rev=%d attempts=%d", want.ID, want.Saga, want.SagaVersion, want.State, want.Status, want.Rev, want.Attempts))
	}
	if !jsonEqual(got.Context, want.Context) {
		add("Context", string(got.Context), string(want.Context))
	}
	if len(got.Keys) != len(want.Keys) || (len(want.Keys) > 0 && !maps.Equal(got.Keys, want.Keys)) {
		add("Keys", got.Keys, want.Keys)
	}
	if !timeEqual(got.CreatedAt, want.CreatedAt) {
		add("CreatedAt", got.CreatedAt, want.CreatedAt)
	}
	if !timeEqual(got.UpdatedAt, want.UpdatedAt) {
		add("UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	}
	if !timeEqual(got.EnteredAt, want.EnteredAt) {
		add("EnteredAt", got.EnteredAt, want.EnteredAt)
	}
	if !timePtrEqual(got.TimerAt, want.TimerAt) {
		add("TimerAt", got.TimerAt, want.TimerAt)
	}
	if got.Traceparent != want.Traceparent {
		add("Traceparent", got.Traceparent, want.Traceparent)
	}
	if (got.Pending == nil) != (want.Pending == nil) {
		add("Pending", got.Pending, want.Pending)
	} else if got.Pending != nil {
		if diff := diffMessage(*got.Pending, *want.Pending); diff != "" {
			add("Pending", diff, "")
		}
	}
	if (got.Deferred == nil) != (want.Deferred == nil) {
		add("Deferred", got.Deferred, want.Deferred)
	} else if got.Deferred != nil {
		if diff := diffMessage(*got.Deferred, *want.Deferred); diff != "" {
			add("Deferred", diff, "")
		}
	}
	// Undo entries and the parallel step hold times (next_at): compared as
	// JSON, so that the same instant in another zone is equal.
	if len(got.Undo) != len(want.Undo) || (len(want.Undo) > 0 && !jsonEqual(jsonOf(got.Undo), jsonOf(want.Undo))) {
		add("Undo", string(jsonOf(got.Undo)), string(jsonOf(want.Undo)))
	}
	if (got.Join == nil) != (want.Join == nil) || (want.Join != nil && !jsonEqual(jsonOf(got.Join), jsonOf(want.Join))) {
		add("Join", string(jsonOf(got.Join)), string(jsonOf(want.Join)))
	}
	return strings.Join(d, "; ")
}

func diffMessage(got, want engine.Message) string {
	if !got.OccurredAt.Equal(want.OccurredAt) {
		return fmt.Sprintf("OccurredAt %v, want %v", got.OccurredAt, want.OccurredAt)
	}
	if !got.Deadline.Equal(want.Deadline) {
		return fmt.Sprintf("Deadline %v, want %v", got.Deadline, want.Deadline)
	}
	got.Deadline, want.Deadline = time.Time{}, time.Time{}
	if !jsonEqual(got.Payload, want.Payload) {
		return fmt.Sprintf("Payload %s, want %s", got.Payload, want.Payload)
	}
	got.OccurredAt, want.OccurredAt, got.Payload, want.Payload = time.Time{}, time.Time{}, nil, nil
	if !reflect.DeepEqual(got, want) {
		return fmt.Sprintf("%+v, want %+v", got, want)
	}
	return ""
}

func testPing(t *testing.T, s Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testInstanceRoundTrip(t *testing.T, s Store) {
	ctx := context.Background()
	utcTimer := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	tests := []struct {
		name string
		in   *engine.Instance
	}{
		{"every field", fullInstance("rt-full")},
		{"required fields only", minimalInstance("rt-min", at(0))},
		{"empty keys map and empty context object", func() *engine.Instance {
			in := minimalInstance("rt-empty", at(time.Hour))
			in.Keys, in.Context = map[string]string{}, json.RawMessage(`{}`)
			return in
		}()},
		{"finished, timer in UTC, zero-valued pending", func() *engine.Instance {
			in := minimalInstance("rt-done", at(-time.Hour))
			in.Status, in.State, in.TimerAt, in.Pending = engine.StatusCompleted, "NOTIFICATION", &utcTimer, &engine.Message{}
			return in
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := clone(tc.in)
			want.Rev = 1
			in := clone(tc.in)
			in.Rev = 42 // Insert sets Rev 1 whatever the caller says
			insert(t, s, in)
			if in.Rev != 1 {
				t.Errorf("Rev after Insert: got %d, want 1", in.Rev)
			}
			got, err := s.GetInstance(ctx, tc.in.ID)
			if err != nil {
				t.Fatalf("GetInstance: %v", err)
			}
			if diff := diffInstance(&got, want); diff != "" {
				t.Errorf("GetInstance round trip: %s", diff)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt location: got %v, want UTC", got.CreatedAt.Location())
			}
			mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
				m, err := tx.Load(ctx, []string{tc.in.ID, "absent"})
				if err != nil {
					return err
				}
				if len(m) != 1 || m[tc.in.ID] == nil {
					t.Fatalf("Load: got %d instances %v, want only %s", len(m), slices.Collect(maps.Keys(m)), tc.in.ID)
				}
				if diff := diffInstance(m[tc.in.ID], want); diff != "" {
					t.Errorf("Load round trip: %s", diff)
				}
				return nil
			})
		})
	}
}

func testGetInstanceNotFound(t *testing.T, s Store) {
	_, err := s.GetInstance(context.Background(), "nope")
	wantCode(t, "GetInstance of a missing saga", err, engine.CodeNotFound)
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		m, err := tx.Load(ctx, []string{"nope"})
		if err != nil {
			return err
		}
		if len(m) != 0 {
			t.Errorf("Load of a missing saga: got %d instances, want 0", len(m))
		}
		m, err = tx.Load(ctx, nil)
		if err != nil {
			return err
		}
		if len(m) != 0 {
			t.Errorf("Load of nothing: got %d instances, want 0", len(m))
		}
		return nil
	})
}

func testInsertConflict(t *testing.T, s Store) {
	ctx := context.Background()
	first := fullInstance("dup")
	insert(t, s, first)
	again := minimalInstance("dup", at(time.Hour))
	other := minimalInstance("other", at(time.Hour))
	err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, []*engine.Instance{other, again}) })
	wantCode(t, "Insert of an existing id", err, engine.CodeConflict)
	got, err := s.GetInstance(ctx, "dup")
	if err != nil {
		t.Fatalf("GetInstance: %v", err)
	}
	if diff := diffInstance(&got, first); diff != "" {
		t.Errorf("existing saga changed by a failed Insert: %s", diff)
	}
	_, err = s.GetInstance(ctx, "other")
	wantCode(t, "GetInstance of a saga whose Insert rolled back", err, engine.CodeNotFound)
}

func testInvalidInput(t *testing.T, s Store) {
	ctx := context.Background()
	badJSON := minimalInstance("bad-json", at(0))
	badJSON.Context = json.RawMessage(`{"a":`)
	twice := minimalInstance("twice", at(0))
	tests := []struct {
		name string
		fn   func(ctx context.Context, tx engine.Tx) error
	}{
		{"insert nil instance", func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, []*engine.Instance{nil}) }},
		{"insert without id", func(ctx context.Context, tx engine.Tx) error {
			return tx.Insert(ctx, []*engine.Instance{minimalInstance("", at(0))})
		}},
		{"insert invalid context JSON", func(ctx context.Context, tx engine.Tx) error { return tx.Insert(ctx, []*engine.Instance{badJSON}) }},
		{"insert the same id twice in a batch", func(ctx context.Context, tx engine.Tx) error {
			return tx.Insert(ctx, []*engine.Instance{twice, clone(twice)})
		}},
		{"claim an empty id", func(ctx context.Context, tx engine.Tx) error { _, err := tx.Claim(ctx, []string{"a", ""}); return err }},
		{"history entry without saga id", func(ctx context.Context, tx engine.Tx) error {
			return tx.AppendHistory(ctx, []engine.HistoryEntry{{Kind: engine.EntryEvent, At: at(0)}})
		}},
		{"outbox record without topic", func(ctx context.Context, tx engine.Tx) error {
			return tx.Enqueue(ctx, []engine.OutboxRecord{{Key: "k"}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, s.InTx(ctx, tc.fn), engine.CodeInvalid)
		})
	}
	_, err := s.ListInstances(ctx, engine.SagaFilter{Cursor: "not a cursor!"})
	wantCode(t, "ListInstances with a bad cursor", err, engine.CodeInvalid)
	_, err = s.ListInstances(ctx, engine.SagaFilter{KeyValue: "v"})
	wantCode(t, "ListInstances with a key value but no key name", err, engine.CodeInvalid)
	_, err = s.ListInstances(ctx, engine.SagaFilter{Saga: "S", Version: -1})
	wantCode(t, "ListInstances with a negative version", err, engine.CodeInvalid)
	_, err = s.ClaimOutbox(ctx, "relay", 0, time.Minute)
	wantCode(t, "ClaimOutbox with limit 0", err, engine.CodeInvalid)
}

func testClaim(t *testing.T, s Store) {
	steps := []struct {
		name string
		ids  []string
		want []string // fresh
	}{
		{"all fresh", []string{"m1", "m2", "m3"}, []string{"m1", "m2", "m3"}},
		{"all duplicates", []string{"m2", "m1"}, nil},
		{"mixed", []string{"m3", "m4", "m1", "m5"}, []string{"m4", "m5"}},
		{"duplicates within one call", []string{"m6", "m6", "m2", "m6"}, []string{"m6"}},
		{"empty", nil, nil},
	}
	for _, st := range steps {
		var fresh map[string]bool
		mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
			var err error
			fresh, err = tx.Claim(ctx, st.ids)
			return err
		})
		got := slices.Sorted(maps.Keys(fresh))
		for id, ok := range fresh {
			if !ok {
				t.Errorf("%s: fresh[%s] = false; the map should hold only fresh ids", st.name, id)
			}
		}
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: Claim(%v) fresh = %v, want %v", st.name, st.ids, got, st.want)
		}
	}
	// A claim in a transaction that rolls back is forgotten.
	errBoom := errors.New("boom")
	err := s.InTx(context.Background(), func(ctx context.Context, tx engine.Tx) error {
		if _, err := tx.Claim(ctx, []string{"m7"}); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("InTx: got %v, want %v", err, errBoom)
	}
	// Unclaim makes an id fresh again.
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		if err := tx.Unclaim(ctx, "m1"); err != nil {
			return err
		}
		return tx.Unclaim(ctx, "never-claimed")
	})
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		fresh, err := tx.Claim(ctx, []string{"m1", "m2", "m7"})
		if err != nil {
			return err
		}
		if got, want := slices.Sorted(maps.Keys(fresh)), []string{"m1", "m7"}; !slices.Equal(got, want) {
			t.Errorf("Claim after Unclaim and rollback: fresh = %v, want %v", got, want)
		}
		return nil
	})
}

func testUpdate(t *testing.T, s Store) {
	ctx := context.Background()
	a, b := fullInstance("u-a"), minimalInstance("u-b", at(0))
	b.Keys = map[string]string{"k1": "v1", "k2": "v2"}
	insert(t, s, a, b)

	// Change every mutable field; drop a key, change a key, add a key.
	a2 := clone(a)
	a2.State, a2.Status, a2.SagaVersion = "APPROVED", engine.StatusRunning, 4
	a2.Context = json.RawMessage(`{"deal_context":{"deal_id":"d-1","approved":true}}`)
	a2.UpdatedAt, a2.EnteredAt = at(time.Minute), at(time.Minute)
	a2.Pending, a2.Attempts, a2.TimerAt, a2.Deferred = nil, 0, nil, nil
	a2.Undo[1].Status, a2.Undo[1].Attempts = engine.UndoCompensated, 4
	a2.Keys = map[string]string{"deal_id": "d-1", "order_id": "o-7"}
	b2 := clone(b)
	b2.Keys = map[string]string{"k1": "changed"}
	timer := at(time.Hour)
	b2.TimerAt, b2.Attempts = &timer, 1
	b2.Pending = &engine.Message{V: 1, ID: "c2", Kind: engine.KindCommand, Name: "X", OccurredAt: at(0)}
	b2.Status = engine.StatusCompensationFailed
	b2.Undo = []engine.UndoEntry{{Participant: "p", Command: "UNDO", Done: "UNDONE", Of: "c1", OfKind: engine.KindCommand,
		OfName: "DO", OfParticipant: "p", Status: engine.UndoOpen}}
	b2.Deferred = &engine.Message{V: 1, ID: "c3", Kind: engine.KindCommand, Name: "TELL", OccurredAt: at(0), Compensates: "x"}
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		m, err := tx.Load(ctx, []string{"u-a", "u-b"})
		if err != nil {
			return err
		}
		a2.Rev, b2.Rev = m["u-a"].Rev, m["u-b"].Rev
		return tx.Update(ctx, []*engine.Instance{b2, a2})
	})
	if a2.Rev != 2 || b2.Rev != 2 {
		t.Errorf("Rev after Update: got %d and %d, want 2 and 2", a2.Rev, b2.Rev)
	}
	for _, want := range []*engine.Instance{a2, b2} {
		got, err := s.GetInstance(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetInstance: %v", err)
		}
		if diff := diffInstance(&got, want); diff != "" {
			t.Errorf("after Update %s: %s", want.ID, diff)
		}
	}
	// Keys are searchable as replaced.
	for _, tc := range []struct {
		name, value string
		want        []string
	}{{"order_id", "o-7", []string{"u-a"}}, {"k1", "changed", []string{"u-b"}}, {"k1", "v1", nil}, {"k2", "v2", nil}, {"portfolio_id", "p-9", nil}} {
		page, err := s.ListInstances(ctx, engine.SagaFilter{KeyName: tc.name, KeyValue: tc.value})
		if err != nil {
			t.Fatalf("ListInstances: %v", err)
		}
		if got := ids(page.Sagas); !slices.Equal(got, tc.want) {
			t.Errorf("sagas with key %s=%s: got %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}

	// A stale Rev is a conflict, and a missing saga too.
	stale := clone(a2)
	stale.Rev = 1
	err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Update(ctx, []*engine.Instance{stale}) })
	wantCode(t, "Update with a stale Rev", err, engine.CodeConflict)
	if stale.Rev != 1 {
		t.Errorf("Rev after a conflicting Update: got %d, want 1 (unchanged)", stale.Rev)
	}
	missing := minimalInstance("u-missing", at(0))
	missing.Rev = 1
	err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error { return tx.Update(ctx, []*engine.Instance{missing}) })
	wantCode(t, "Update of a missing saga", err, engine.CodeConflict)

	// Two updates in one transaction each bump Rev.
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		if err := tx.Update(ctx, []*engine.Instance{a2}); err != nil {
			return err
		}
		return tx.Update(ctx, []*engine.Instance{a2})
	})
	if got, err := s.GetInstance(ctx, "u-a"); err != nil || got.Rev != 4 || a2.Rev != 4 {
		t.Errorf("Rev after two updates: stored %d (err %v), in memory %d, want 4", got.Rev, err, a2.Rev)
	}
}

func testUpdateConflictRollsBack(t *testing.T, s Store) {
	ctx := context.Background()
	var batch []*engine.Instance
	for i := range 10 {
		batch = append(batch, minimalInstance(fmt.Sprintf("rb-%02d", i), at(time.Duration(i)*time.Second)))
	}
	insert(t, s, batch...)
	changed := make([]*engine.Instance, len(batch))
	for i, in := range batch {
		changed[i] = clone(in)
		changed[i].State = "B"
	}
	changed[7].Rev = 99 // one stale instance in the batch
	err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		if _, err := tx.Claim(ctx, []string{"rb-msg"}); err != nil {
			return err
		}
		if err := tx.AppendHistory(ctx, []engine.HistoryEntry{{SagaID: "rb-00", At: at(0), Kind: engine.EntryEvent}}); err != nil {
			return err
		}
		return tx.Update(ctx, changed)
	})
	wantCode(t, "Update of a batch with one stale Rev", err, engine.CodeConflict)
	if !strings.Contains(err.Error(), "rb-07") {
		t.Errorf("conflict error %q does not name the stale saga rb-07", err)
	}
	for _, in := range batch {
		got, err := s.GetInstance(ctx, in.ID)
		if err != nil {
			t.Fatalf("GetInstance: %v", err)
		}
		if got.State != "A" || got.Rev != 1 {
			t.Errorf("%s after a rolled-back batch: state %s rev %d, want A rev 1", in.ID, got.State, got.Rev)
		}
	}
	h, err := s.History(ctx, "rb-00")
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	if len(h) != 0 {
		t.Errorf("history after a rolled-back batch: got %d entries, want 0", len(h))
	}
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		fresh, err := tx.Claim(ctx, []string{"rb-msg"})
		if err == nil && !fresh["rb-msg"] {
			t.Errorf("claim of a rolled-back batch was kept")
		}
		return err
	})
}

func testHistory(t *testing.T, s Store) {
	ctx := context.Background()
	entries := []engine.HistoryEntry{
		{SagaID: "h-1", At: at(0), Kind: engine.EntryEvent, MessageID: "e1", Event: "REGISTER", By: "deals",
			ToState: "DRAFT", Commands: []engine.CommandRef{{ID: "c1", Name: "APPROVE_ORDER", Participant: "profile", Attempt: 1}}},
		{SagaID: "h-2", At: at(time.Second), Kind: engine.EntryEvent, MessageID: "x1", Event: "REGISTER", By: "deals", ToState: "DRAFT"},
		{SagaID: "h-1", At: at(2 * time.Second), Kind: engine.EntryRefused, MessageID: "e2", Event: "DEAL_UPDATED",
			By: "deals", FromState: "DRAFT", Code: engine.CodeIllegal, Reason: "not allowed in DRAFT"},
	}
	more := []engine.HistoryEntry{
		{SagaID: "h-1", At: at(3 * time.Second), Kind: engine.EntryRetry,
			Commands: []engine.CommandRef{{ID: "c1", Name: "APPROVE_ORDER", Participant: "profile", Attempt: 2}, {ID: "c9", Name: "NOTIFY", Participant: "notification", Attempt: 1},
				{ID: "c10", Name: "PLACE_ORDER", Participant: "deals", Attempt: 1, Branch: "1[12]"}, {ID: "c11", Name: "RESERVE_CASH", Participant: "profile", Attempt: 3, Branch: "2"}}},
		{SagaID: "h-1", At: at(4 * time.Second), Kind: engine.EntryOperator, FromState: "DRAFT", ToState: "FAILED",
			Reason: "customer called", Actor: "alice@example.com"},
	}
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.AppendHistory(ctx, entries) })
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.AppendHistory(ctx, more) })
	got, err := s.History(ctx, "h-1")
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	want := []engine.HistoryEntry{entries[0], entries[2], more[0], more[1]}
	if len(got) != len(want) {
		t.Fatalf("History: got %d entries, want %d", len(got), len(want))
	}
	for i := range want {
		if i > 0 && got[i].Seq <= got[i-1].Seq {
			t.Errorf("entry %d: Seq %d not after %d", i, got[i].Seq, got[i-1].Seq)
		}
		g, w := got[i], want[i]
		if !timeEqual(g.At, w.At) {
			t.Errorf("entry %d At: got %v, want %v", i, g.At, w.At)
		}
		g.Seq, g.At, w.At = 0, time.Time{}, time.Time{}
		if len(w.Commands) == 0 {
			w.Commands = nil
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	if h, err := s.History(ctx, "h-none"); err != nil || len(h) != 0 {
		t.Errorf("History of an unknown saga: got %d entries, err %v; want none", len(h), err)
	}
	// SentCommand finds a command in its saga's timeline only, with its
	// latest reference.
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		for _, tc := range []struct {
			saga, id string
			want     engine.CommandRef
			found    bool
		}{
			{"h-1", "c1", engine.CommandRef{ID: "c1", Name: "APPROVE_ORDER", Participant: "profile", Attempt: 2}, true},
			{"h-1", "c9", engine.CommandRef{ID: "c9", Name: "NOTIFY", Participant: "notification", Attempt: 1}, true},
			{"h-2", "c1", engine.CommandRef{}, false}, // another saga's command
			{"h-1", "c", engine.CommandRef{}, false},  // a prefix of an id is not the id
			{"h-1", "", engine.CommandRef{}, false},
			{"h-none", "c1", engine.CommandRef{}, false},
		} {
			got, found, err := tx.SentCommand(ctx, tc.saga, tc.id)
			if err != nil {
				return err
			}
			if found != tc.found || got != tc.want {
				t.Errorf("SentCommand(%s, %q) = %+v, %v; want %+v, %v", tc.saga, tc.id, got, found, tc.want, tc.found)
			}
		}
		return nil
	})
}

func outboxRecords(n int, prefix string) []engine.OutboxRecord {
	recs := make([]engine.OutboxRecord, n)
	for i := range recs {
		recs[i] = engine.OutboxRecord{Topic: "DEALS_TOPIC", Key: fmt.Sprintf("saga-%d", i%3), Message: engine.Message{
			V: 1, ID: fmt.Sprintf("%s-%03d", prefix, i), SagaID: fmt.Sprintf("saga-%d", i%3), Saga: "S", Kind: engine.KindCommand,
			Name: "APPROVE_DEAL", Participant: "deals", OccurredAt: at(time.Duration(i) * time.Millisecond),
			Payload: json.RawMessage(`{"n":` + fmt.Sprint(i) + `}`)}}
	}
	return recs
}

func msgIDs(recs []engine.OutboxRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Message.ID
	}
	return out
}

func seqs(recs []engine.OutboxRecord) []int64 {
	out := make([]int64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func testOutbox(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(5, "o")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 5 {
		t.Fatalf("OutboxBacklog: got %d, %v; want 5", n, err)
	}
	a, err := s.ClaimOutbox(ctx, "relay-a", 3, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox a: %v", err)
	}
	if got, want := msgIDs(a), msgIDs(recs[:3]); !slices.Equal(got, want) {
		t.Fatalf("relay-a claimed %v, want the oldest %v", got, want)
	}
	for i, r := range a {
		w := recs[i]
		if r.Topic != w.Topic || r.Key != w.Key || r.Seq == 0 {
			t.Errorf("record %d: got topic %q key %q seq %d, want %q %q and a seq", i, r.Topic, r.Key, r.Seq, w.Topic, w.Key)
		}
		if diff := diffMessage(r.Message, w.Message); diff != "" {
			t.Errorf("record %d message: %s", i, diff)
		}
	}
	b, err := s.ClaimOutbox(ctx, "relay-b", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox b: %v", err)
	}
	if got, want := msgIDs(b), msgIDs(recs[3:]); !slices.Equal(got, want) {
		t.Errorf("relay-b claimed %v, want the rest %v", got, want)
	}
	c, err := s.ClaimOutbox(ctx, "relay-c", 10, time.Hour)
	if err != nil || len(c) != 0 {
		t.Errorf("relay-c claimed %v (err %v) while every lease runs; want nothing", msgIDs(c), err)
	}
	if err := s.DeleteOutbox(ctx, seqs(a)); err != nil {
		t.Fatalf("DeleteOutbox: %v", err)
	}
	if err := s.DeleteOutbox(ctx, nil); err != nil {
		t.Fatalf("DeleteOutbox of nothing: %v", err)
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 2 {
		t.Errorf("OutboxBacklog after delete: got %d, %v; want 2", n, err)
	}
	// Records enqueued later come after, with larger seqs.
	later := outboxRecords(2, "late")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, later) })
	d, err := s.ClaimOutbox(ctx, "relay-d", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox d: %v", err)
	}
	if got, want := msgIDs(d), msgIDs(later); !slices.Equal(got, want) {
		t.Errorf("relay-d claimed %v, want %v", got, want)
	}
	if len(d) == 2 && (d[0].Seq <= b[len(b)-1].Seq || d[1].Seq <= d[0].Seq) {
		t.Errorf("seqs %v after %v are not increasing", seqs(d), seqs(b))
	}
}

func testOutboxLeaseExpiry(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(2, "lease")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	first, err := s.ClaimOutbox(ctx, "crashed-relay", 1, time.Millisecond)
	if err != nil || len(first) != 1 {
		t.Fatalf("ClaimOutbox: got %d records, %v; want 1", len(first), err)
	}
	time.Sleep(20 * time.Millisecond) // let the 1ms lease run out
	again, err := s.ClaimOutbox(ctx, "relay-b", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox after the lease ran out: %v", err)
	}
	if got, want := msgIDs(again), msgIDs(recs); !slices.Equal(got, want) {
		t.Errorf("after the lease ran out relay-b claimed %v, want %v", got, want)
	}
}

func testOutboxConcurrentClaimers(t *testing.T, s Store) {
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, outboxRecords(300, "cc")) })
	relaysShareOutbox(t, 300, "claimed", func(ctx context.Context, owner string, took func([]engine.OutboxRecord)) (int, error) {
		recs, err := s.ClaimOutbox(ctx, owner, 7, time.Hour)
		if err != nil || len(recs) == 0 {
			return 0, err
		}
		took(recs)
		// Published: a relay deletes what it leased (it would lease its own
		// records again otherwise).
		return len(recs), s.DeleteOutbox(ctx, seqs(recs))
	})
}

// relaysShareOutbox runs two relays ("relay-1", "relay-2") concurrently, each
// calling round until it takes nothing, and checks that together they took
// all n records and no record twice. round reports the records it took
// (verb: what taking means, for messages) through took.
func relaysShareOutbox(t *testing.T, n int, verb string, round func(ctx context.Context, owner string, took func([]engine.OutboxRecord)) (int, error)) {
	t.Helper()
	ctx := context.Background()
	var (
		mu     sync.Mutex
		owners = map[int64]string{}
		dups   []string
		wg     sync.WaitGroup
		errs   = make(chan error, 2)
	)
	for _, owner := range []string{"relay-1", "relay-2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took := func(recs []engine.OutboxRecord) {
				mu.Lock()
				defer mu.Unlock()
				for _, r := range recs {
					if prev, ok := owners[r.Seq]; ok {
						dups = append(dups, fmt.Sprintf("record %d %s by %s and %s", r.Seq, verb, prev, owner))
					}
					owners[r.Seq] = owner
				}
			}
			for {
				got, err := round(ctx, owner, took)
				if err != nil {
					errs <- err
					return
				}
				if got == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(dups) > 0 {
		t.Errorf("%d records %s twice, e.g. %s", len(dups), verb, dups[0])
	}
	if len(owners) != n {
		t.Errorf("%s %d distinct records, want %d", verb, len(owners), n)
	}
}

// A relay that gave up on a publish leases its own records again at once;
// other relays still skip them until the lease runs out.
func testOutboxReclaimOwnLease(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(4, "own")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	first, err := s.ClaimOutbox(ctx, "relay-a", 3, time.Hour)
	if err != nil {
		t.Fatalf("first ClaimOutbox: %v", err)
	}
	if got, want := msgIDs(first), msgIDs(recs[:3]); !slices.Equal(got, want) {
		t.Fatalf("relay-a claimed %v, want %v", got, want)
	}
	other, err := s.ClaimOutbox(ctx, "relay-b", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox by another relay: %v", err)
	}
	if got, want := msgIDs(other), msgIDs(recs[3:]); !slices.Equal(got, want) {
		t.Errorf("relay-b claimed %v while relay-a's lease runs, want only the free %v", got, want)
	}
	again, err := s.ClaimOutbox(ctx, "relay-a", 10, time.Hour)
	if err != nil {
		t.Fatalf("second ClaimOutbox by the same relay: %v", err)
	}
	if got, want := seqs(again), seqs(first); !slices.Equal(got, want) {
		t.Errorf("relay-a claimed %v again, want its own leased records %v at once", got, want)
	}
	for i, r := range again {
		if diff := diffMessage(r.Message, recs[i].Message); diff != "" {
			t.Errorf("reclaimed record %d: %s", i, diff)
		}
	}
}

// The trace context of a command survives the outbox; none stays none.
func testOutboxTraceparent(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(3, "trace")
	recs[0].Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	recs[2].Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	got, err := s.ClaimOutbox(ctx, "relay", 10, time.Hour)
	if err != nil {
		t.Fatalf("ClaimOutbox: %v", err)
	}
	if len(got) != len(recs) {
		t.Fatalf("claimed %d records, want %d", len(got), len(recs))
	}
	for i, r := range got {
		if r.Traceparent != recs[i].Traceparent {
			t.Errorf("record %d: Traceparent %q, want %q", i, r.Traceparent, recs[i].Traceparent)
		}
	}
}

// PurgeInbox forgets the message ids processed before the cut-off, and only
// those: they are fresh again, the later ones are still duplicates.
func testPurgeInbox(t *testing.T, s Store) {
	ctx := context.Background()
	claim := func(ids ...string) []string {
		t.Helper()
		var fresh map[string]bool
		mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
			var err error
			fresh, err = tx.Claim(ctx, ids)
			return err
		})
		return slices.Sorted(maps.Keys(fresh))
	}
	if _, err := s.PurgeInbox(ctx, time.Time{}); engine.ErrorCode(err) != engine.CodeInvalid {
		t.Errorf("PurgeInbox(zero time): got %v, want code %q", err, engine.CodeInvalid)
	}
	claim("old-1", "old-2", "old-3")
	// Stores keep microseconds; step the wall clock past the cut-off.
	cut := time.Now().Add(time.Millisecond)
	for !time.Now().After(cut.Add(time.Millisecond)) {
		time.Sleep(time.Millisecond)
	}
	claim("new-1", "new-2")
	n, err := s.PurgeInbox(ctx, cut.Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("PurgeInbox an hour before everything: got %d, %v; want 0", n, err)
	}
	n, err = s.PurgeInbox(ctx, cut)
	if err != nil {
		t.Fatalf("PurgeInbox: %v", err)
	}
	if n != 3 {
		t.Errorf("PurgeInbox removed %d records, want the 3 older than the cut-off", n)
	}
	if got, want := claim("old-1", "old-2", "old-3", "new-1", "new-2"), []string{"old-1", "old-2", "old-3"}; !slices.Equal(got, want) {
		t.Errorf("after the purge fresh = %v, want the purged %v", got, want)
	}
}

func testDueTimers(t *testing.T, s Store) {
	ctx := context.Background()
	var insts []*engine.Instance
	for i, off := range []time.Duration{5 * time.Second, -time.Hour, 0, 2 * time.Second, time.Hour, -time.Minute} {
		in := minimalInstance(fmt.Sprintf("t-%d", i), at(0))
		tm := at(off)
		in.TimerAt = &tm
		insts = append(insts, in)
	}
	insts = append(insts, minimalInstance("t-none", at(0)))
	insert(t, s, insts...)
	now := at(5 * time.Second)
	tests := []struct {
		name  string
		now   time.Time
		limit int
		want  []string
	}{
		{"all due, earliest first", now, 10, []string{"t-1", "t-5", "t-2", "t-3", "t-0"}},
		{"limit", now, 2, []string{"t-1", "t-5"}},
		{"none due", at(-2 * time.Hour), 10, nil},
		{"inclusive of now", at(0), 10, []string{"t-1", "t-5", "t-2"}},
	}
	for _, tc := range tests {
		got, err := s.DueTimers(ctx, tc.now, tc.limit)
		if err != nil {
			t.Fatalf("%s: DueTimers: %v", tc.name, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: DueTimers = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Disarming a timer takes the saga off the list.
	upd := clone(insts[1])
	upd.Rev, upd.TimerAt = 1, nil
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Update(ctx, []*engine.Instance{upd}) })
	got, err := s.DueTimers(ctx, now, 1)
	if err != nil || !slices.Equal(got, []string{"t-5"}) {
		t.Errorf("DueTimers after disarming t-1: got %v, %v; want [t-5]", got, err)
	}
}

func ids(insts []engine.Instance) []string {
	var out []string
	for _, in := range insts {
		out = append(out, in.ID)
	}
	return out
}

// fixture inserts a varied population of sagas and returns them.
func fixture(t *testing.T, s Store, n int) []*engine.Instance {
	t.Helper()
	states := []struct {
		saga, state string
		status      engine.Status
	}{
		{"ORDER", "DRAFT", engine.StatusRunning}, {"ORDER", "APPROVED", engine.StatusRunning},
		{"ORDER", "NOTIFICATION", engine.StatusCompleted}, {"REFUND", "OPEN", engine.StatusRunning},
		{"REFUND", "FAILED", engine.StatusFailed}, {"REFUND", "FAILED", engine.StatusCompensationFailed},
	}
	var insts []*engine.Instance
	for i := range n {
		st := states[i%len(states)]
		// Pairs share a creation time, so the id breaks ties.
		in := minimalInstance(fmt.Sprintf("l-%03d", i), at(time.Duration(i/2)*time.Minute))
		in.Saga, in.State, in.Status = st.saga, st.state, st.status
		in.SagaVersion = 1 + i%2
		in.Keys = map[string]string{"deal_id": fmt.Sprintf("d-%d", i%4)}
		if i%3 == 0 {
			in.Keys["vip"] = "yes"
		}
		insts = append(insts, in)
	}
	// Insert in several transactions and out of order.
	for start := 0; start < n; start += 10 {
		batch := slices.Clone(insts[start:min(start+10, n)])
		slices.Reverse(batch)
		insert(t, s, batch...)
	}
	return insts
}

// expect returns the ids of insts matching keep, newest first.
func expect(insts []*engine.Instance, keep func(*engine.Instance) bool) []string {
	var sel []*engine.Instance
	for _, in := range insts {
		if keep(in) {
			sel = append(sel, in)
		}
	}
	sort.Slice(sel, func(i, j int) bool {
		if !sel[i].CreatedAt.Equal(sel[j].CreatedAt) {
			return sel[i].CreatedAt.After(sel[j].CreatedAt)
		}
		return sel[i].ID > sel[j].ID
	})
	var out []string
	for _, in := range sel {
		out = append(out, in.ID)
	}
	return out
}

// listAll follows Next through every page of f.
func listAll(t *testing.T, s Store, f engine.SagaFilter) (all []string, pages int) {
	t.Helper()
	for {
		page, err := s.ListInstances(context.Background(), f)
		if err != nil {
			t.Fatalf("ListInstances(%+v): %v", f, err)
		}
		pages++
		if f.Limit > 0 && len(page.Sagas) > f.Limit {
			t.Fatalf("page of %d sagas, limit %d", len(page.Sagas), f.Limit)
		}
		all = append(all, ids(page.Sagas)...)
		if page.Next == "" {
			return all, pages
		}
		if pages > 1000 {
			t.Fatal("ListInstances does not stop paging")
		}
		f.Cursor = page.Next
	}
}

func testListInstances(t *testing.T, s Store) {
	insts := fixture(t, s, 40)
	tests := []struct {
		name string
		f    engine.SagaFilter
		keep func(*engine.Instance) bool
	}{
		{"everything", engine.SagaFilter{}, func(*engine.Instance) bool { return true }},
		{"saga", engine.SagaFilter{Saga: "REFUND"}, func(in *engine.Instance) bool { return in.Saga == "REFUND" }},
		{"saga and state", engine.SagaFilter{Saga: "ORDER", State: "APPROVED"}, func(in *engine.Instance) bool {
			return in.Saga == "ORDER" && in.State == "APPROVED"
		}},
		{"saga and version", engine.SagaFilter{Saga: "ORDER", Version: 2}, func(in *engine.Instance) bool {
			return in.Saga == "ORDER" && in.SagaVersion == 2
		}},
		{"version, running", engine.SagaFilter{Version: 1, Status: engine.StatusRunning}, func(in *engine.Instance) bool {
			return in.SagaVersion == 1 && in.Status == engine.StatusRunning
		}},
		{"status", engine.SagaFilter{Status: engine.StatusRunning}, func(in *engine.Instance) bool { return in.Status == engine.StatusRunning }},
		{"status compensation_failed", engine.SagaFilter{Status: engine.StatusCompensationFailed}, func(in *engine.Instance) bool {
			return in.Status == engine.StatusCompensationFailed
		}},
		{"time range", engine.SagaFilter{From: at(5 * time.Minute), To: at(12 * time.Minute)}, func(in *engine.Instance) bool {
			return !in.CreatedAt.Before(at(5*time.Minute)) && in.CreatedAt.Before(at(12*time.Minute))
		}},
		{"key name and value", engine.SagaFilter{KeyName: "deal_id", KeyValue: "d-2"}, func(in *engine.Instance) bool { return in.Keys["deal_id"] == "d-2" }},
		{"key name only", engine.SagaFilter{KeyName: "vip"}, func(in *engine.Instance) bool { _, ok := in.Keys["vip"]; return ok }},
		{"everything combined", engine.SagaFilter{Saga: "ORDER", Status: engine.StatusRunning, KeyName: "vip", KeyValue: "yes", From: at(3 * time.Minute)},
			func(in *engine.Instance) bool {
				return in.Saga == "ORDER" && in.Status == engine.StatusRunning && in.Keys["vip"] == "yes" && !in.CreatedAt.Before(at(3*time.Minute))
			}},
		{"nothing matches", engine.SagaFilter{Saga: "NONE"}, func(*engine.Instance) bool { return false }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := expect(insts, tc.keep)
			got, _ := listAll(t, s, tc.f)
			if !slices.Equal(got, want) {
				t.Errorf("got %v,\nwant %v", got, want)
			}
			f := tc.f
			f.Limit = 3
			paged, pages := listAll(t, s, f)
			if !slices.Equal(paged, want) {
				t.Errorf("by pages of 3: got %v,\nwant %v", paged, want)
			}
			if wantPages := max(1, (len(want)+2)/3); pages != wantPages && pages != wantPages+1 {
				t.Errorf("pages of 3 for %d sagas: got %d, want %d", len(want), pages, wantPages)
			}
		})
	}
	page, err := s.ListInstances(context.Background(), engine.SagaFilter{})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if len(page.Sagas) == 0 || len(page.Sagas[0].Keys) == 0 {
		t.Errorf("listed sagas carry no keys")
	}
}

func testListPagination(t *testing.T, s Store) {
	insts := fixture(t, s, 120)
	want := expect(insts, func(*engine.Instance) bool { return true })
	for _, limit := range []int{1, 7, 50, 119, 120, 121} {
		got, pages := listAll(t, s, engine.SagaFilter{Limit: limit})
		seen := map[string]bool{}
		for _, id := range got {
			if seen[id] {
				t.Errorf("limit %d: %s listed twice", limit, id)
			}
			seen[id] = true
		}
		if !slices.Equal(got, want) {
			t.Errorf("limit %d: got %d sagas %v, want %d", limit, len(got), got, len(want))
		}
		if min := (len(want) + limit - 1) / limit; pages < min || pages > min+1 {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, min)
		}
	}
	// The default limit is 50.
	page, err := s.ListInstances(context.Background(), engine.SagaFilter{})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if len(page.Sagas) != 50 || page.Next == "" {
		t.Errorf("default page: got %d sagas, next %q; want 50 and a cursor", len(page.Sagas), page.Next)
	}
	// Sagas created after a cursor was issued do not shift the next page.
	insert(t, s, minimalInstance("l-new", at(24*time.Hour)))
	next, err := s.ListInstances(context.Background(), engine.SagaFilter{Cursor: page.Next, Limit: 10})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if got := ids(next.Sagas); !slices.Equal(got, want[50:60]) {
		t.Errorf("page after cursor: got %v, want %v", got, want[50:60])
	}
}

func testCountByState(t *testing.T, s Store) {
	insts := fixture(t, s, 23)
	counts := map[engine.StateCount]int64{}
	for _, in := range insts {
		counts[engine.StateCount{Saga: in.Saga, SagaVersion: in.SagaVersion, State: in.State, Status: in.Status}]++
	}
	got, err := s.CountByState(context.Background())
	if err != nil {
		t.Fatalf("CountByState: %v", err)
	}
	gotMap := map[engine.StateCount]int64{}
	for _, c := range got {
		n := c.Count
		c.Count = 0
		if _, dup := gotMap[c]; dup {
			t.Errorf("CountByState lists %+v twice", c)
		}
		gotMap[c] = n
	}
	if !maps.Equal(gotMap, counts) {
		t.Errorf("CountByState: got %v, want %v", gotMap, counts)
	}
}

func testDeadLetters(t *testing.T, s Store) {
	ctx := context.Background()
	raw := []byte{0, 1, 2, 0xff, '{', '"'}
	dls := []engine.DeadLetter{
		{MessageID: "dl-1", SagaID: "s-1", Topic: "SAGA_SERVER_TOPIC", Partition: 3, Offset: 1 << 40, Raw: raw,
			Code: engine.CodeIllegal, Reason: "ORDER_APPROVED not allowed in NOTIFICATION", CreatedAt: at(0)},
		{Topic: "SAGA_SERVER_TOPIC", Partition: 0, Offset: 7, Raw: []byte("not json"), Code: engine.CodeInvalid,
			Reason: "cannot decode", CreatedAt: at(time.Second)},
		{MessageID: "dl-3", Topic: "SAGA_SERVER_TOPIC", Raw: nil, Code: engine.CodeUnknownSaga, Reason: "no such saga", CreatedAt: at(2 * time.Second)},
	}
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.AddDeadLetters(ctx, dls) })
	// The same message again (also twice in one call) is skipped; a second
	// undecodable message is kept.
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		return tx.AddDeadLetters(ctx, []engine.DeadLetter{
			{MessageID: "dl-1", Topic: "T", Code: engine.CodeIllegal, Reason: "again", CreatedAt: at(time.Hour)},
			{MessageID: "dl-4", Topic: "T", Code: engine.CodeIllegal, Reason: "first", CreatedAt: at(time.Hour)},
			{MessageID: "dl-4", Topic: "T", Code: engine.CodeIllegal, Reason: "dup in batch", CreatedAt: at(time.Hour)},
			{Topic: "T", Raw: []byte("junk"), Code: engine.CodeInvalid, Reason: "cannot decode either"},
		})
	})
	list, err := s.DeadLetters(ctx, 100, false)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	var reasons []string
	for _, dl := range list {
		reasons = append(reasons, dl.Reason)
	}
	if want := []string{"cannot decode either", "first", "no such saga", "cannot decode", dls[0].Reason}; !slices.Equal(reasons, want) {
		t.Fatalf("DeadLetters newest first: got %q, want %q", reasons, want)
	}
	if list[0].CreatedAt.IsZero() {
		t.Errorf("dead letter without CreatedAt: got zero, want the time it was added")
	}
	first := list[len(list)-1]
	got, err := s.GetDeadLetter(ctx, first.ID)
	if err != nil {
		t.Fatalf("GetDeadLetter: %v", err)
	}
	w := dls[0]
	if got.ID != first.ID || got.MessageID != w.MessageID || got.SagaID != w.SagaID || got.Topic != w.Topic ||
		got.Partition != w.Partition || got.Offset != w.Offset || !bytes.Equal(got.Raw, w.Raw) || got.Code != w.Code ||
		got.Reason != w.Reason || !timeEqual(got.CreatedAt, w.CreatedAt) || got.ReplayedAt != nil || got.ReplayedBy != "" {
		t.Errorf("GetDeadLetter round trip:\n got %+v\nwant %+v", got, w)
	}
	if nr := list[2]; nr.MessageID != "dl-3" || len(nr.Raw) != 0 {
		t.Errorf("dead letter with nil raw: got message %q raw %v", nr.MessageID, nr.Raw)
	}
	_, err = s.GetDeadLetter(ctx, first.ID+1000)
	wantCode(t, "GetDeadLetter of a missing id", err, engine.CodeNotFound)
	if l, err := s.DeadLetters(ctx, 2, false); err != nil || len(l) != 2 {
		t.Errorf("DeadLetters limit 2: got %d, %v", len(l), err)
	}

	// Replay.
	replayedAt := at(time.Hour)
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		return tx.MarkReplayed(ctx, first.ID, "bob", replayedAt)
	})
	got, err = s.GetDeadLetter(ctx, first.ID)
	if err != nil {
		t.Fatalf("GetDeadLetter: %v", err)
	}
	if got.ReplayedAt == nil || !timeEqual(*got.ReplayedAt, replayedAt) || got.ReplayedBy != "bob" {
		t.Errorf("after MarkReplayed: replayed at %v by %q, want %v by bob", got.ReplayedAt, got.ReplayedBy, replayedAt)
	}
	err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		return tx.MarkReplayed(ctx, first.ID, "bob", replayedAt)
	})
	wantCode(t, "MarkReplayed twice", err, engine.CodeConflict)
	err = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		return tx.MarkReplayed(ctx, first.ID+1000, "bob", replayedAt)
	})
	wantCode(t, "MarkReplayed of a missing id", err, engine.CodeNotFound)
	open, err := s.DeadLetters(ctx, 100, false)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	all, err := s.DeadLetters(ctx, 100, true)
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	if len(open) != 4 || len(all) != 5 {
		t.Errorf("after one replay: %d open and %d in all, want 4 and 5", len(open), len(all))
	}
	// A replayed message can be parked again.
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		return tx.AddDeadLetters(ctx, []engine.DeadLetter{{MessageID: "dl-1", Topic: "T", Code: engine.CodeIllegal, Reason: "failed again"}})
	})
	if open, err := s.DeadLetters(ctx, 1, false); err != nil || len(open) != 1 || open[0].Reason != "failed again" {
		t.Errorf("re-parked dead letter: got %+v, %v", open, err)
	}
}

func testInTxRollback(t *testing.T, s Store) {
	ctx := context.Background()
	errBoom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
		if _, err := tx.Claim(ctx, []string{"rb"}); err != nil {
			return err
		}
		if err := tx.Insert(ctx, []*engine.Instance{fullInstance("rb-saga")}); err != nil {
			return err
		}
		if err := tx.AppendHistory(ctx, []engine.HistoryEntry{{SagaID: "rb-saga", At: at(0), Kind: engine.EntryEvent}}); err != nil {
			return err
		}
		if err := tx.Enqueue(ctx, outboxRecords(3, "rb")); err != nil {
			return err
		}
		if err := tx.AddDeadLetters(ctx, []engine.DeadLetter{{MessageID: "x", Topic: "T", Code: engine.CodeInvalid}}); err != nil {
			return err
		}
		return errBoom
	})
	if err != errBoom {
		t.Fatalf("InTx: got %v, want fn's error unchanged", err)
	}
	_, err = s.GetInstance(ctx, "rb-saga")
	wantCode(t, "GetInstance after rollback", err, engine.CodeNotFound)
	if h, err := s.History(ctx, "rb-saga"); err != nil || len(h) != 0 {
		t.Errorf("History after rollback: %d entries, %v", len(h), err)
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 0 {
		t.Errorf("OutboxBacklog after rollback: %d, %v", n, err)
	}
	if dl, err := s.DeadLetters(ctx, 10, true); err != nil || len(dl) != 0 {
		t.Errorf("DeadLetters after rollback: %d, %v", len(dl), err)
	}
	// A panic rolls back too and the store stays usable.
	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Errorf("recovered %v, want the panic value", r)
			}
		}()
		_ = s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
			if _, err := tx.Claim(ctx, []string{"panicked"}); err != nil {
				return err
			}
			panic("kaboom")
		})
	}()
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error {
		fresh, err := tx.Claim(ctx, []string{"rb", "panicked"})
		if err == nil && (!fresh["rb"] || !fresh["panicked"]) {
			t.Errorf("claims of rolled-back transactions were kept: fresh = %v", fresh)
		}
		return err
	})
}

// testConcurrentInTx runs transactions from several goroutines that claim,
// insert and update overlapping sagas, retrying conflicts the way the
// orchestrator does. Every successful update must be counted exactly once.
func testConcurrentInTx(t *testing.T, s Store) {
	ctx := context.Background()
	const workers, rounds = 4, 15
	shared := []*engine.Instance{minimalInstance("c-a", at(0)), minimalInstance("c-b", at(0)), minimalInstance("c-c", at(0))}
	insert(t, s, shared...)
	var (
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := []string{"c-a", "c-b", "c-c"}
			if w%2 == 1 {
				slices.Reverse(order)
			}
			for r := range rounds {
				for attempt := 0; ; attempt++ {
					err := s.InTx(ctx, func(ctx context.Context, tx engine.Tx) error {
						if _, err := tx.Claim(ctx, []string{fmt.Sprintf("c-msg-%d-%d", w, r)}); err != nil {
							return err
						}
						m, err := tx.Load(ctx, order)
						if err != nil {
							return err
						}
						var upd []*engine.Instance
						for _, id := range order {
							in := m[id]
							in.Attempts++
							upd = append(upd, in)
						}
						if err := tx.Update(ctx, upd); err != nil {
							return err
						}
						own := minimalInstance(fmt.Sprintf("c-own-%d-%d", w, r), at(time.Duration(r)*time.Second))
						if err := tx.Insert(ctx, []*engine.Instance{own}); err != nil {
							return err
						}
						return tx.AppendHistory(ctx, []engine.HistoryEntry{{SagaID: own.ID, At: at(0), Kind: engine.EntryEvent}})
					})
					if err == nil {
						break
					}
					if engine.ErrorCode(err) != engine.CodeConflict || attempt > 1000 {
						errs <- fmt.Errorf("worker %d round %d: %w", w, r, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, id := range []string{"c-a", "c-b", "c-c"} {
		got, err := s.GetInstance(ctx, id)
		if err != nil {
			t.Fatalf("GetInstance: %v", err)
		}
		if got.Attempts != workers*rounds || got.Rev != int64(1+workers*rounds) {
			t.Errorf("%s: attempts %d rev %d, want %d and %d (no lost update)", id, got.Attempts, got.Rev, workers*rounds, 1+workers*rounds)
		}
	}
	page, err := s.ListInstances(ctx, engine.SagaFilter{Limit: 500})
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if got, want := len(page.Sagas), 3+workers*rounds; got != want {
		t.Errorf("sagas after the concurrent run: got %d, want %d", got, want)
	}
}

// publishAll returns a publish function that appends what it is given to
// *got.
func publishAll(got *[]engine.OutboxRecord) func(context.Context, []engine.OutboxRecord) error {
	return func(_ context.Context, recs []engine.OutboxRecord) error {
		*got = append(*got, recs...)
		return nil
	}
}

func testPublishOutbox(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(6, "p")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })

	// A record another relay leased with ClaimOutbox is skipped.
	leased, err := s.ClaimOutbox(ctx, "lease-relay", 1, time.Hour)
	if err != nil || len(leased) != 1 {
		t.Fatalf("ClaimOutbox: got %d records, %v; want 1", len(leased), err)
	}

	var got []engine.OutboxRecord
	n, err := s.PublishOutbox(ctx, "relay-a", 3, time.Minute, publishAll(&got))
	if err != nil || n != 3 {
		t.Fatalf("PublishOutbox: got %d, %v; want 3", n, err)
	}
	if got, want := msgIDs(got), msgIDs(recs[1:4]); !slices.Equal(got, want) {
		t.Fatalf("published %v, want the oldest free %v", got, want)
	}
	for i, r := range got {
		if diff := diffMessage(r.Message, recs[1+i].Message); diff != "" || r.Topic != recs[1+i].Topic || r.Key != recs[1+i].Key {
			t.Errorf("record %d: topic %q key %q, message %s", i, r.Topic, r.Key, diff)
		}
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 3 {
		t.Errorf("OutboxBacklog after publishing 3 of 6: got %d, %v; want 3", n, err)
	}

	// A failed publish keeps the records and releases them at once.
	boom := errors.New("broker down")
	n, err = s.PublishOutbox(ctx, "relay-a", 10, time.Hour, func(context.Context, []engine.OutboxRecord) error { return boom })
	if !errors.Is(err, boom) || n != 0 {
		t.Fatalf("PublishOutbox with a failing publish: got %d, %v; want 0 and the publish error", n, err)
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 3 {
		t.Errorf("OutboxBacklog after a failed publish: got %d, %v; want 3", n, err)
	}
	got = nil
	n, err = s.PublishOutbox(ctx, "relay-b", 10, time.Hour, publishAll(&got))
	if err != nil || n != 2 {
		t.Fatalf("PublishOutbox by another relay after a failed publish: got %d, %v; want 2", n, err)
	}
	if got, want := msgIDs(got), msgIDs(recs[4:]); !slices.Equal(got, want) {
		t.Errorf("relay-b published %v, want %v", got, want)
	}
	// Nothing left but the record leased to someone else.
	n, err = s.PublishOutbox(ctx, "relay-b", 10, time.Hour, func(context.Context, []engine.OutboxRecord) error {
		t.Error("publish called with nothing to publish")
		return nil
	})
	if err != nil || n != 0 {
		t.Errorf("PublishOutbox with nothing free: got %d, %v; want 0, nil", n, err)
	}

	for _, tc := range []struct {
		name    string
		owner   string
		limit   int
		lease   time.Duration
		publish func(context.Context, []engine.OutboxRecord) error
	}{
		{"no owner", "", 1, time.Minute, publishAll(&got)},
		{"limit 0", "r", 0, time.Minute, publishAll(&got)},
		{"lease 0", "r", 1, 0, publishAll(&got)},
		{"no publish", "r", 1, time.Minute, nil},
	} {
		_, err := s.PublishOutbox(ctx, tc.owner, tc.limit, tc.lease, tc.publish)
		wantCode(t, "PublishOutbox with "+tc.name, err, engine.CodeInvalid)
	}
}

// While one relay publishes, another gets only the other records.
func testPublishOutboxExclusive(t *testing.T, s Store) {
	ctx := context.Background()
	recs := outboxRecords(5, "x")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	var a, b []engine.OutboxRecord
	n, err := s.PublishOutbox(ctx, "relay-a", 3, time.Minute, func(ctx context.Context, recs []engine.OutboxRecord) error {
		a = recs
		m, err := s.PublishOutbox(ctx, "relay-b", 10, time.Minute, publishAll(&b))
		if err != nil || m != 2 {
			t.Errorf("relay-b's PublishOutbox while relay-a publishes: got %d, %v; want 2", m, err)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("relay-a's PublishOutbox: got %d, %v; want 3", n, err)
	}
	if got, want := msgIDs(a), msgIDs(recs[:3]); !slices.Equal(got, want) {
		t.Errorf("relay-a published %v, want %v", got, want)
	}
	if got, want := msgIDs(b), msgIDs(recs[3:]); !slices.Equal(got, want) {
		t.Errorf("relay-b published %v while relay-a held %v, want only %v", got, msgIDs(a), want)
	}
	if n, err := s.OutboxBacklog(ctx); err != nil || n != 0 {
		t.Errorf("OutboxBacklog: got %d, %v; want 0", n, err)
	}
}

// A relay that stalls in publish longer than its lease loses the records to
// another relay (at-least-once: both may publish them).
func testPublishOutboxStalledRelay(t *testing.T, s Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recs := outboxRecords(2, "stall")
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, recs) })
	const lease = 200 * time.Millisecond
	var taken []engine.OutboxRecord
	// The stalled relay's result is not checked: on PostgreSQL its session
	// is ended, on SQLite it deletes what the other relay published.
	_, _ = s.PublishOutbox(ctx, "stalled-relay", 10, lease, func(context.Context, []engine.OutboxRecord) error {
		for len(taken) == 0 && ctx.Err() == nil {
			if _, err := s.PublishOutbox(ctx, "relay-b", 10, time.Minute, publishAll(&taken)); err != nil {
				t.Errorf("relay-b's PublishOutbox: %v", err)
				return nil
			}
			time.Sleep(lease / 4)
		}
		return nil
	})
	if got, want := msgIDs(taken), msgIDs(recs); !slices.Equal(got, want) {
		t.Errorf("relay-b published %v after the stalled relay's lease, want %v", got, want)
	}
}

func testPublishOutboxConcurrentRelays(t *testing.T, s Store) {
	mustTx(t, s, func(ctx context.Context, tx engine.Tx) error { return tx.Enqueue(ctx, outboxRecords(300, "pc")) })
	relaysShareOutbox(t, 300, "published", func(ctx context.Context, owner string, took func([]engine.OutboxRecord)) (int, error) {
		return s.PublishOutbox(ctx, owner, 7, time.Minute, func(_ context.Context, recs []engine.OutboxRecord) error {
			took(recs)
			return nil
		})
	})
}
