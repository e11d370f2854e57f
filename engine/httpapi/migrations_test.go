package httpapi_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// orderMigrate is a test saga with compensations on both versions (the
// shipped MANUAL_CREATE_ORDER v2 renamed, sagas/manual_create_order.v2.yaml), so that a saga of its version 1
// can be compensating when someone tries to migrate it.
const orderMigrate = "ORDER_MIGRATE"

// migrationCatalog is testCatalog with ORDER_MIGRATE v1 and v2 and the
// shipped migrations (sagas/migrations) plus ORDER_MIGRATE 1 → 2.
func migrationCatalog(tb testing.TB) *engine.Catalog {
	tb.Helper()
	src, err := fs.ReadFile(sagas.FS, "manual_create_order.v2.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	head := "saga: MANUAL_CREATE_ORDER\nversion: 2\n"
	if !strings.Contains(string(src), head) {
		tb.Fatalf("manual_create_order.v2.yaml does not start with %q", head)
	}
	version := func(v string) []byte {
		return []byte(strings.Replace(string(src), head, "saga: "+orderMigrate+"\nversion: "+v+"\n", 1))
	}
	defs, problems := definition.LoadDir(fstest.MapFS{
		"order_migrate.v1.yaml": {Data: version("1")},
		"order_migrate.yaml":    {Data: version("2")},
	})
	if len(problems) > 0 {
		tb.Fatalf("ORDER_MIGRATE: %v", problems)
	}
	base := testCatalog(tb)
	var all []*definition.Definition
	for _, m := range base.List() {
		all = append(all, m.Definition())
	}
	all = append(all, defs...)
	cat, err := engine.NewCatalog(all...)
	if err != nil {
		tb.Fatal(err)
	}
	shipped, problems := definition.LoadMigrations(sagas.Migrations(), all)
	if len(problems) > 0 {
		tb.Fatalf("shipped migrations: %v", problems)
	}
	own, problems := definition.LoadMigrations(fstest.MapFS{"order_migrate.1-2.yaml": {Data: []byte(
		"migration: ORDER_MIGRATE\nfrom: 1\nto: 2\nstates:\n  DRAFT: DRAFT\n  APPROVED: APPROVED\n  REJECTED: REJECTED\n")}}, all)
	if len(problems) > 0 {
		tb.Fatalf("ORDER_MIGRATE migration: %v", problems)
	}
	if cat, err = cat.WithMigrations(append(shipped, own...)...); err != nil {
		tb.Fatalf("WithMigrations: %v", err)
	}
	return cat
}

// startOn starts a saga of saga at version for deal.
func (e *env) startOn(tb testing.TB, saga string, version int, deal string) engine.Instance {
	tb.Helper()
	inst, _, err := e.orch.Start(context.Background(), engine.StartRequest{
		Saga: saga, Version: version,
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"` + deal + `","user_id":"u-` + deal + `","amount":"100.00"}}`),
	})
	if err != nil {
		tb.Fatalf("start %s v%d for deal %s: %v", saga, version, deal, err)
	}
	return inst
}

// sendTo delivers participant by's event name to a saga of saga.
func (e *env) sendTo(tb testing.TB, saga, sagaID, name, by string) {
	tb.Helper()
	e.handle(tb, engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: sagaID, Saga: saga,
		Kind: engine.KindEvent, Name: name, Participant: by, OccurredAt: time.Now().UTC()})
}

// stored is a saga as the database holds it: the instance and its
// timeline's operator entries.
type stored struct {
	inst     engine.Instance
	timeline []engine.HistoryEntry
	migrates int // MIGRATE entries
}

func (e *env) stored(tb testing.TB, id string) stored {
	tb.Helper()
	inst, err := e.store.GetInstance(context.Background(), id)
	if err != nil {
		tb.Fatalf("read saga %s: %v", id, err)
	}
	h, err := e.store.History(context.Background(), id)
	if err != nil {
		tb.Fatalf("read timeline of %s: %v", id, err)
	}
	s := stored{inst: inst, timeline: h}
	for _, x := range h {
		if x.Event == engine.EventMigrate {
			s.migrates++
		}
	}
	return s
}

// unchanged fails unless the saga is stored as before.
func unchanged(tb testing.TB, before, after stored) {
	tb.Helper()
	if after.inst.Rev != before.inst.Rev || after.inst.SagaVersion != before.inst.SagaVersion ||
		after.inst.State != before.inst.State || after.inst.Status != before.inst.Status || len(after.timeline) != len(before.timeline) {
		tb.Errorf("saga moved: before v%d %s %s rev %d (%d entries), after v%d %s %s rev %d (%d entries)",
			before.inst.SagaVersion, before.inst.State, before.inst.Status, before.inst.Rev, len(before.timeline),
			after.inst.SagaVersion, after.inst.State, after.inst.Status, after.inst.Rev, len(after.timeline))
	}
}

// TestMigrate runs the migration of a running saga over the API on SQLite
// and PostgreSQL: a dry run (the default) changes nothing, an apply moves
// the saga and records it in its timeline, a repeated apply is refused and
// the saga goes on on its new version.
func TestMigrate(t *testing.T) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"sqlite", func(testing.TB) string { return "" }},
		{"postgres", testenv.Postgres},
	} {
		t.Run(db.name, func(t *testing.T) {
			e := newEnv(t, db.url(t), envOptions{catalog: migrationCatalog(t)})
			inst := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "M-1")
			target := "/api/v1/sagas/" + inst.ID + "/migrations"
			before := e.stored(t, inst.ID)

			dry := decode[httpapi.MigrateResult](t, e.do(t, "POST", target, `{"to":2}`), 200)
			if !dry.DryRun || dry.Applied || dry.Before.SagaVersion != 1 || dry.After.SagaVersion != 2 || dry.After.State != "DRAFT" ||
				dry.Migration != "manual_create_order.1-2.yaml" || dry.Entry.Event != engine.EventMigrate {
				t.Errorf("dry run = %+v", dry)
			}
			unchanged(t, before, e.stored(t, inst.ID))

			res := decode[httpapi.MigrateResult](t, e.do(t, "POST", target, `{"to":2,"from":1,"dry_run":false,"reason":"move to v2 for compensation"}`), 200)
			if res.DryRun || !res.Applied || res.After.SagaVersion != 2 || res.After.Rev != before.inst.Rev+1 {
				t.Errorf("apply = %+v", res)
			}
			after := e.stored(t, inst.ID)
			if after.inst.SagaVersion != 2 || after.inst.State != "DRAFT" || after.inst.Status != engine.StatusRunning || after.migrates != 1 {
				t.Fatalf("after apply: v%d %s %s with %d MIGRATE entries, want v2 DRAFT running with 1", after.inst.SagaVersion, after.inst.State, after.inst.Status, after.migrates)
			}
			if after.inst.Pending == nil || after.inst.Pending.ID != before.inst.Pending.ID {
				t.Errorf("pending command after apply: %+v, want the same APPROVE_ORDER %+v", after.inst.Pending, before.inst.Pending)
			}
			last := after.timeline[len(after.timeline)-1]
			if last.Kind != engine.EntryOperator || last.Event != engine.EventMigrate || last.Actor == "" || last.FromState != "DRAFT" || last.ToState != "DRAFT" ||
				!strings.Contains(last.Reason, "from version 1 to 2") || !strings.Contains(last.Reason, "DRAFT → DRAFT") || !strings.Contains(last.Reason, "move to v2 for compensation") {
				t.Errorf("timeline entry = %+v", last)
			}

			// The same apply again (a retry, a double click) is refused and
			// changes nothing, with or without from.
			for _, body := range []string{`{"to":2,"from":1,"dry_run":false,"reason":"again"}`, `{"to":2,"dry_run":false,"reason":"again"}`} {
				p := problemOf(t, e.do(t, "POST", target, body), 409, engine.CodeConflict)
				if !strings.Contains(p.Detail, "version") {
					t.Errorf("repeated apply: detail %q does not say why", p.Detail)
				}
			}
			unchanged(t, after, e.stored(t, inst.ID))

			// The saga goes on on version 2: a failure now compensates
			// the REVERT_ORDER step version 2 records.
			e.sendTo(t, "MANUAL_CREATE_ORDER", inst.ID, "ORDER_APPROVED", "profile")
			if got := e.stored(t, inst.ID).inst; got.SagaVersion != 2 || got.State != "APPROVED" || len(got.Undo) == 0 {
				t.Errorf("after ORDER_APPROVED: v%d %s undo %+v, want v2 APPROVED with the approval's undo", got.SagaVersion, got.State, got.Undo)
			}
		})
	}
}

// TestMigrateRefusals performs what an attacker or a careless operator
// would: a viewer, a caller without roles, a foreign origin, an unknown
// saga or migration, bad bodies, a finished saga and a compensating one.
// Each is refused and the saga stays as stored.
func TestMigrateRefusals(t *testing.T) {
	e := newEnv(t, "", envOptions{catalog: migrationCatalog(t), auth: devAuth(t)})
	op := as("olga", "saga-operator")
	running := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "R-1")
	finished := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "R-2")
	e.sendTo(t, "MANUAL_CREATE_ORDER", finished.ID, "ORDER_REJECTED", "profile")
	e.sendTo(t, "MANUAL_CREATE_ORDER", finished.ID, "DEAL_UPDATED", "deals")
	compensating := e.startOn(t, orderMigrate, 1, "R-3")
	if rec := e.do(t, "POST", "/api/v1/sagas/"+compensating.ID+"/abort", `{"reason":"make it compensate"}`, op...); rec.Code != 200 {
		t.Fatalf("abort: %d %s", rec.Code, rec.Body)
	}
	if got := e.stored(t, compensating.ID).inst; got.Status != engine.StatusCompensating {
		t.Fatalf("aborted ORDER_MIGRATE v1: %s, want compensating", got.Status)
	}
	if got := e.stored(t, finished.ID).inst; got.Status != engine.StatusCompleted {
		t.Fatalf("finished saga: %s, want completed", got.Status)
	}
	apply := `{"to":2,"dry_run":false,"reason":"attack"}`
	for _, tc := range []struct {
		name   string
		saga   string
		body   string
		hdr    []string
		status int
		code   engine.Code
	}{
		{"viewer", running.ID, apply, as("vera", "saga-viewer"), 403, engine.CodeForbidden},
		{"viewer's dry run", running.ID, `{"to":2}`, as("vera", "saga-viewer"), 403, engine.CodeForbidden},
		{"no role", running.ID, apply, as("mallory"), 403, engine.CodeForbidden},
		{"role of a definition", running.ID, apply, as("sam", "support-lead"), 403, engine.CodeForbidden},
		{"foreign origin", running.ID, apply, append(op, "Origin", "https://evil.example"), 403, httpapi.CodeCrossOrigin},
		{"cross-site fetch", running.ID, apply, append(op, "Sec-Fetch-Site", "cross-site"), 403, httpapi.CodeCrossOrigin},
		{"unknown saga", "no-such-saga", apply, op, 404, engine.CodeNotFound},
		{"unknown migration", running.ID, `{"to":9,"dry_run":false,"reason":"x"}`, op, 422, httpapi.CodeUnknownMigration},
		{"unknown migration, dry run", running.ID, `{"to":3}`, op, 422, httpapi.CodeUnknownMigration},
		{"expected another version", running.ID, `{"to":2,"from":2,"dry_run":false,"reason":"x"}`, op, 409, engine.CodeConflict},
		{"same version", running.ID, `{"to":1,"dry_run":false,"reason":"x"}`, op, 409, engine.CodeConflict},
		{"no target", running.ID, `{"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"negative target", running.ID, `{"to":-2}`, op, 400, engine.CodeInvalid},
		{"target not a number", running.ID, `{"to":"2"}`, op, 400, engine.CodeInvalid},
		{"unknown field", running.ID, `{"to":2,"dry_run":false,"reason":"x","state":"NOTIFICATION"}`, op, 400, engine.CodeInvalid},
		{"apply without reason", running.ID, `{"to":2,"dry_run":false,"reason":"  "}`, op, 400, engine.CodeInvalid},
		{"not JSON", running.ID, `to=2`, op, 400, engine.CodeInvalid},
		{"oversized", running.ID, `{"to":2,"reason":"` + strings.Repeat("a", httpapi.MaxJSONBody) + `"}`, op, 413, httpapi.CodeTooLarge},
		{"finished saga", finished.ID, apply, op, 409, engine.CodeConflict},
		{"compensating saga", compensating.ID, apply, op, 409, engine.CodeConflict},
		{"compensating saga, dry run", compensating.ID, `{"to":2}`, op, 409, engine.CodeConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before stored
			if tc.saga != "no-such-saga" {
				before = e.stored(t, tc.saga)
			}
			p := problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+tc.saga+"/migrations", tc.body, tc.hdr...), tc.status, tc.code)
			if p.Detail == "" {
				t.Errorf("problem without detail: %+v", p)
			}
			if tc.saga != "no-such-saga" {
				unchanged(t, before, e.stored(t, tc.saga))
			}
		})
	}
	p := problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+compensating.ID+"/migrations", apply, op...), 409, engine.CodeConflict)
	if !strings.Contains(p.Detail, "compensating") {
		t.Errorf("compensating saga: detail %q does not say it is compensating", p.Detail)
	}
	p = problemOf(t, e.do(t, "POST", "/api/v1/sagas/"+running.ID+"/migrations", `{"to":3}`, op...), 422, httpapi.CodeUnknownMigration)
	if !strings.Contains(p.Detail, "manual_create_order.1-2.yaml") {
		t.Errorf("unknown migration: detail %q does not name the loaded ones", p.Detail)
	}
	// The operator still migrates it.
	if rec := e.do(t, "POST", "/api/v1/sagas/"+running.ID+"/migrations", apply, op...); rec.Code != 200 {
		t.Errorf("operator's apply: %d %s", rec.Code, rec.Body)
	}
	if got := e.stored(t, running.ID); got.inst.SagaVersion != 2 || got.migrates != 1 || got.timeline[len(got.timeline)-1].Actor != "olga" {
		t.Errorf("after the operator's apply: v%d, %d MIGRATE entries, last %+v", got.inst.SagaVersion, got.migrates, got.timeline[len(got.timeline)-1])
	}
}

// TestMigrateConcurrentEvents applies a migration while the saga's events
// arrive, on PostgreSQL: they take turns (the row lock and the Rev check),
// so the saga ends on version 2 with both the migration and every event in
// its timeline, whatever the order.
func TestMigrateConcurrentEvents(t *testing.T) {
	e := newEnv(t, testenv.Postgres(t), envOptions{catalog: migrationCatalog(t)})
	const n = 8
	ids := make([]string, n)
	for i := range ids {
		ids[i] = e.startOn(t, "MANUAL_CREATE_ORDER", 1, "C-"+string(rune('a'+i))).ID
	}
	var wg sync.WaitGroup
	errs := make(chan string, 2*n)
	for _, id := range ids {
		wg.Go(func() {
			req := httptest.NewRequest("POST", "/api/v1/sagas/"+id+"/migrations", strings.NewReader(`{"to":2,"dry_run":false,"reason":"race"}`))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			e.handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				errs <- "migrate " + id + ": " + rec.Body.String()
			}
		})
		wg.Go(func() {
			m := engine.Message{V: engine.EnvelopeVersion, ID: uuid.NewString(), SagaID: id, Saga: "MANUAL_CREATE_ORDER",
				Kind: engine.KindEvent, Name: "ORDER_APPROVED", Participant: "profile", OccurredAt: time.Now().UTC()}
			b, _ := json.Marshal(m)
			if err := e.orch.HandleRecords(context.Background(), []engine.Record{{Topic: "SAGA_SERVER_TOPIC", Key: id, Value: b}}); err != nil {
				errs <- "event for " + id + ": " + err.Error()
			}
		})
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	for _, id := range ids {
		s := e.stored(t, id)
		events := 0
		for _, h := range s.timeline {
			if h.Event == "ORDER_APPROVED" && h.Kind == engine.EntryEvent {
				events++
			}
		}
		if s.inst.SagaVersion != 2 || s.inst.State != "APPROVED" || s.migrates != 1 || events != 1 {
			t.Errorf("saga %s: v%d %s, %d MIGRATE and %d ORDER_APPROVED entries; want v2 APPROVED with one of each", id, s.inst.SagaVersion, s.inst.State, s.migrates, events)
		}
	}
}
