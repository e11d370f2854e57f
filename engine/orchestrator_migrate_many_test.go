package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// failingStore fails the InTx calls whose numbers (from 1) are in fail.
type failingStore struct {
	*testStore
	mu    sync.Mutex
	calls int
	fail  map[int]error
}

func (s *failingStore) InTx(ctx context.Context, fn func(ctx context.Context, tx engine.Tx) error) error {
	s.mu.Lock()
	s.calls++
	err := s.fail[s.calls]
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.testStore.InTx(ctx, fn)
}

// shippedWithMigrations is the catalog of sagas/ with sagas/migrations.
func shippedWithMigrations(tb testing.TB) *engine.Catalog {
	tb.Helper()
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		tb.Fatal(problems)
	}
	migs, problems := definition.LoadMigrations(sagas.Migrations(), defs)
	if len(problems) > 0 {
		tb.Fatal(problems)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		tb.Fatal(err)
	}
	if cat, err = cat.WithMigrations(migs...); err != nil {
		tb.Fatal(err)
	}
	return cat
}

// TestMigrateManyOneFailureUndoesNoOther: when the database fails the
// transaction of one saga in the middle of an apply, that saga is reported
// failed and stays as stored, and the sagas before and after it are
// migrated, each in its own transaction.
func TestMigrateManyOneFailureUndoesNoOther(t *testing.T) {
	ts := openTestStore(t, time.Now)
	st := &failingStore{testStore: ts}
	o, err := engine.New(engine.Config{}, shippedWithMigrations(t), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ids []string
	for i := range 3 {
		inst, _, err := o.Start(ctx, engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Version: 1,
			Payload: json.RawMessage(fmt.Sprintf(`{"deal_context":{"deal_id":"F-%d","user_id":"U-1"}}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inst.ID)
	}
	st.mu.Lock()
	st.fail = map[int]error{st.calls + 2: errors.New("connection reset by peer")}
	st.mu.Unlock()

	res, err := o.MigrateMany(ctx, ts, engine.MigrateManyRequest{Saga: "MANUAL_CREATE_ORDER", From: 1, To: 2, IDs: ids, Apply: true, Actor: "olga", Reason: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	want := []engine.MigrateOutcome{engine.OutcomeApplied, engine.OutcomeFailed, engine.OutcomeApplied}
	for i, it := range res.Items {
		if it.SagaID != ids[i] || it.Outcome != want[i] {
			t.Errorf("item %d: saga %s %s (%v), want saga %s %s", i, it.SagaID, it.Outcome, it.Err, ids[i], want[i])
		}
	}
	if res.Count(engine.OutcomeApplied) != 2 || res.Count(engine.OutcomeFailed) != 1 {
		t.Errorf("counts: %d applied, %d failed; want 2 and 1", res.Count(engine.OutcomeApplied), res.Count(engine.OutcomeFailed))
	}
	for i, id := range ids {
		inst, err := ts.GetInstance(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		h, err := ts.History(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		wantVersion, wantEntries := 2, 2
		if want[i] == engine.OutcomeFailed {
			wantVersion, wantEntries = 1, 1
		}
		if inst.SagaVersion != wantVersion || len(h) != wantEntries {
			t.Errorf("saga %d stored on v%d with %d entries, want v%d with %d", i, inst.SagaVersion, len(h), wantVersion, wantEntries)
		}
	}

	// The failed one goes on the next time: the selection finds only it.
	res, err = o.MigrateMany(ctx, ts, engine.MigrateManyRequest{Saga: "MANUAL_CREATE_ORDER", From: 1, To: 2, Apply: true, Actor: "olga", Reason: "v2 again"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 1 || res.Items[0].SagaID != ids[1] || res.Items[0].Outcome != engine.OutcomeApplied {
		t.Errorf("second run: %+v, want saga %s applied", res.Items, ids[1])
	}
}

// TestMigrateManyRefusesBadRequests: each bad request is refused with its
// code before any saga is read (no transaction runs).
func TestMigrateManyRefusesBadRequests(t *testing.T) {
	ts := openTestStore(t, time.Now)
	o, err := engine.New(engine.Config{}, shippedWithMigrations(t), ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := engine.MigrateManyRequest{Saga: "MANUAL_CREATE_ORDER", From: 1, To: 2}
	for _, tc := range []struct {
		name string
		edit func(*engine.MigrateManyRequest)
		code engine.Code
	}{
		{"no saga", func(r *engine.MigrateManyRequest) { r.Saga = " " }, engine.CodeInvalid},
		{"no from", func(r *engine.MigrateManyRequest) { r.From = 0 }, engine.CodeInvalid},
		{"no to", func(r *engine.MigrateManyRequest) { r.To = 0 }, engine.CodeInvalid},
		{"same version", func(r *engine.MigrateManyRequest) { r.To = 1 }, engine.CodeInvalid},
		{"limit over the maximum", func(r *engine.MigrateManyRequest) { r.Limit = engine.MaxMigrateLimit + 1 }, engine.CodeInvalid},
		{"negative limit", func(r *engine.MigrateManyRequest) { r.Limit = -1 }, engine.CodeInvalid},
		{"ids and limit", func(r *engine.MigrateManyRequest) { r.IDs, r.Limit = []string{"a"}, 1 }, engine.CodeInvalid},
		{"ids and cursor", func(r *engine.MigrateManyRequest) { r.IDs, r.Cursor = []string{"a"}, "c" }, engine.CodeInvalid},
		{"an id twice", func(r *engine.MigrateManyRequest) { r.IDs = []string{"a", "a"} }, engine.CodeInvalid},
		{"an empty id", func(r *engine.MigrateManyRequest) { r.IDs = []string{""} }, engine.CodeInvalid},
		{"too many ids", func(r *engine.MigrateManyRequest) { r.IDs = make([]string, engine.MaxMigrateLimit+1) }, engine.CodeInvalid},
		{"reason too long", func(r *engine.MigrateManyRequest) { r.Reason = strings.Repeat("x", engine.MaxMigrateReason+1) }, engine.CodeInvalid},
		{"apply without actor", func(r *engine.MigrateManyRequest) { r.Apply = true }, engine.CodeInvalid},
		{"unknown saga", func(r *engine.MigrateManyRequest) { r.Saga = "NO_SUCH_SAGA" }, engine.CodeNotFound},
		{"no migration 1 → 3", func(r *engine.MigrateManyRequest) { r.To = 3 }, engine.CodeUnknownSaga},
		{"unknown version", func(r *engine.MigrateManyRequest) { r.From = 7 }, engine.CodeUnknownSaga},
		{"final state", func(r *engine.MigrateManyRequest) { r.State = "NOTIFICATION" }, engine.CodeInvalid},
		{"unknown state", func(r *engine.MigrateManyRequest) { r.State = "NOPE" }, engine.CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok
			tc.edit(&req)
			before, _ := ts.counts()
			_, err := o.MigrateMany(context.Background(), ts, req)
			if got := engine.ErrorCode(err); got != tc.code {
				t.Errorf("code %q (%v), want %q", got, err, tc.code)
			}
			if tc.code == engine.CodeUnknownSaga && !errors.Is(err, engine.ErrNoMigration) {
				t.Errorf("%v is not ErrNoMigration", err)
			}
			if after, _ := ts.counts(); after != before {
				t.Errorf("%d transactions ran for a refused request", after-before)
			}
		})
	}
}

// ExampleOrchestrator_MigrateMany moves every running MANUAL_CREATE_ORDER
// v2 saga to version 3: a dry run, then the apply, each saga in its own
// transaction; a finished saga is not selected.
func ExampleOrchestrator_MigrateMany() {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	defs, _ := definition.LoadDir(sagas.FS)
	migs, _ := definition.LoadMigrations(sagas.Migrations(), defs)
	cat, _ := engine.NewCatalog(defs...)
	if cat, err = cat.WithMigrations(migs...); err != nil {
		fmt.Println(err)
		return
	}
	o, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, deal := range []string{"D-1", "D-2"} {
		if _, _, err := o.Start(ctx, engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Version: 2,
			Payload: json.RawMessage(`{"deal_context":{"deal_id":"` + deal + `","user_id":"U-7"}}`)}); err != nil {
			fmt.Println(err)
			return
		}
	}
	req := engine.MigrateManyRequest{Saga: "MANUAL_CREATE_ORDER", From: 2, To: 3, State: "DRAFT", Actor: "olga", Reason: "let clients cancel"}
	dry, _ := o.MigrateMany(ctx, st, req)
	fmt.Println("dry run:", dry.Migration, len(dry.Items), "would apply:", dry.Count(engine.OutcomeWouldApply))

	req.Apply = true
	res, _ := o.MigrateMany(ctx, st, req)
	fmt.Println("applied:", res.Count(engine.OutcomeApplied), "refused:", res.Count(engine.OutcomeRefused))
	for _, it := range res.Items {
		stored, _ := st.GetInstance(ctx, it.SagaID)
		fmt.Println(it.Outcome, stored.SagaVersion, stored.State)
	}
	again, _ := o.MigrateMany(ctx, st, req)
	fmt.Println("left on version 2:", len(again.Items))
	// Output:
	// dry run: manual_create_order.2-3.yaml 2 would apply: 2
	// applied: 2 refused: 0
	// applied 3 DRAFT
	// applied 3 DRAFT
	// left on version 2: 0
}
