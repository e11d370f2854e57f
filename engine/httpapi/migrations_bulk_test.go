package httpapi_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
)

// storedAll reads every saga of ids as stored, by id.
func (e *env) storedAll(tb testing.TB, ids ...string) map[string]stored {
	tb.Helper()
	out := make(map[string]stored, len(ids))
	for _, id := range ids {
		out[id] = e.stored(tb, id)
	}
	return out
}

// allUnchanged fails unless every saga of before is stored as it was.
func (e *env) allUnchanged(tb testing.TB, before map[string]stored) {
	tb.Helper()
	for id, b := range before {
		unchanged(tb, b, e.stored(tb, id))
	}
}

// lines indexes a bulk answer's results by saga id, failing on a repeated id.
func lines(tb testing.TB, res httpapi.MigrateSagasResult) map[string]httpapi.MigrateSagaLine {
	tb.Helper()
	out := make(map[string]httpapi.MigrateSagaLine, len(res.Results))
	for _, l := range res.Results {
		if _, dup := out[l.ID]; dup {
			tb.Errorf("saga %s is reported twice", l.ID)
		}
		out[l.ID] = l
	}
	return out
}

// checkTotals fails unless the totals count the results.
func checkTotals(tb testing.TB, res httpapi.MigrateSagasResult) {
	tb.Helper()
	var got httpapi.MigrateTotals
	got.Selected = len(res.Results)
	for _, l := range res.Results {
		switch l.Outcome {
		case engine.OutcomeApplied:
			got.Applied++
		case engine.OutcomeWouldApply:
			got.WouldApply++
		case engine.OutcomeRefused:
			got.Refused++
		case engine.OutcomeFailed:
			got.Failed++
		}
	}
	if got != res.Totals {
		tb.Errorf("totals = %+v, the results count %+v", res.Totals, got)
	}
}

// migratedOnce fails unless the saga is stored on version to in state
// with exactly one MIGRATE entry by actor, one revision after before.
func migratedOnce(tb testing.TB, before, after stored, to int, state, actor string) {
	tb.Helper()
	if after.inst.SagaVersion != to || after.inst.State != state || after.inst.Status != engine.StatusRunning ||
		after.inst.Rev != before.inst.Rev+1 || after.migrates != 1 || len(after.timeline) != len(before.timeline)+1 {
		tb.Errorf("saga %s: v%d %s %s rev %d, %d MIGRATE of %d entries; want v%d %s running rev %d, 1 MIGRATE of %d",
			after.inst.ID, after.inst.SagaVersion, after.inst.State, after.inst.Status, after.inst.Rev, after.migrates, len(after.timeline),
			to, state, before.inst.Rev+1, len(before.timeline)+1)
		return
	}
	last := after.timeline[len(after.timeline)-1]
	if last.Kind != engine.EntryOperator || last.Event != engine.EventMigrate || last.Actor != actor ||
		!strings.Contains(last.Reason, fmt.Sprintf("from version %d to %d", before.inst.SagaVersion, to)) {
		tb.Errorf("saga %s: last timeline entry %+v, want MIGRATE by %s", after.inst.ID, last, actor)
	}
}

// TestMigrateSagas migrates many sagas at once over the API on SQLite and
// PostgreSQL: a dry run pages through the selection and changes nothing;
// an apply migrates a page, each saga with its own MIGRATE entry, and the
// cursor continues with the rest; sagas not selected (another state,
// finished, compensating, another version or definition) are not touched;
// ids name sagas explicitly, the ones that cannot migrate are refused
// while the others are applied, and the store is read back after each.
func TestMigrateSagas(t *testing.T) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"sqlite", func(testing.TB) string { return "" }},
		{"postgres", testenv.Postgres},
	} {
		t.Run(db.name, func(t *testing.T) {
			e := newEnv(t, db.url(t), envOptions{catalog: migrationCatalog(t)})
			var drafts []string
			for i := range 5 {
				drafts = append(drafts, e.startOn(t, "MANUAL_CREATE_ORDER", 1, fmt.Sprintf("B-%d", i)).ID)
			}
			approved := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "B-approved").ID
			e.sendTo(t, "MANUAL_CREATE_ORDER", approved, "ORDER_APPROVED", "profile")
			finished := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "B-finished").ID
			e.sendTo(t, "MANUAL_CREATE_ORDER", finished, "ORDER_REJECTED", "profile")
			e.sendTo(t, "MANUAL_CREATE_ORDER", finished, "DEAL_UPDATED", "deals")
			onV2 := e.startOn(t, "MANUAL_CREATE_ORDER", 2, "B-v2").ID
			other := e.startOn(t, orderMigrate, 1, "B-other").ID
			compensating := e.startOn(t, orderMigrate, 1, "B-comp").ID
			if rec := e.do(t, "POST", "/api/v1/sagas/"+compensating+"/abort", `{"reason":"make it compensate"}`); rec.Code != 200 {
				t.Fatalf("abort: %d %s", rec.Code, rec.Body)
			}
			all := append(append([]string{}, drafts...), approved, finished, onV2, other, compensating)
			if got := e.stored(t, finished).inst.Status; got != engine.StatusCompleted {
				t.Fatalf("finished saga: %s, want completed", got)
			}

			// A dry run pages through the DRAFT sagas of v1, newest
			// first, two at a time, and changes nothing.
			before := e.storedAll(t, all...)
			var seen []string
			cursor := ""
			for page := 0; ; page++ {
				body := `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"DRAFT","limit":2`
				if cursor != "" {
					body += `,"cursor":"` + cursor + `"`
				}
				res := decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations", body+"}"), 200)
				checkTotals(t, res)
				if !res.DryRun || res.Migration != "manual_create_order.1-2.yaml" || res.Totals.WouldApply != len(res.Results) {
					t.Errorf("dry run page %d = %+v", page, res)
				}
				for _, l := range res.Results {
					if l.VersionBefore != 1 || l.StateBefore != "DRAFT" || l.VersionAfter != 2 || l.StateAfter != "DRAFT" || l.Rev != 0 {
						t.Errorf("dry run line %+v", l)
					}
					seen = append(seen, l.ID)
				}
				cursor = res.Next
				if cursor == "" {
					break
				}
				if page > 5 {
					t.Fatal("the dry run's cursor does not end")
				}
			}
			if len(seen) != len(drafts) {
				t.Errorf("the dry run's pages hold %v, want the %d DRAFT sagas %v", seen, len(drafts), drafts)
			}
			// Newest first, each saga once (two sagas created in the same
			// instant come in id order: compare creation times only).
			once := map[string]bool{}
			for i, id := range seen {
				if once[id] || !slices.Contains(drafts, id) {
					t.Errorf("dry run line %d: saga %s is repeated or not a DRAFT saga", i, id)
				}
				once[id] = true
				if i > 0 && before[id].inst.CreatedAt.After(before[seen[i-1]].inst.CreatedAt) {
					t.Errorf("dry run line %d: saga %s is newer than the line before it (want newest first)", i, id)
				}
			}
			e.allUnchanged(t, before)

			// Without a state: every running v1 saga, no finished one, no
			// other version or definition.
			res := decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2}`), 200)
			checkTotals(t, res)
			if got := lines(t, res); len(got) != len(drafts)+1 || got[approved].StateAfter != "APPROVED" || res.Next != "" {
				t.Errorf("dry run of every v1 saga = %+v, want the %d DRAFT and the APPROVED one", res, len(drafts))
			}
			e.allUnchanged(t, before)

			// Apply three DRAFT sagas, then the rest with the cursor.
			res = decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations",
				`{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"DRAFT","limit":3,"dry_run":false,"reason":"v2 compensates"}`), 200)
			checkTotals(t, res)
			if res.DryRun || res.Totals.Applied != 3 || res.Next == "" {
				t.Fatalf("apply of 3 = %+v", res)
			}
			applied := map[string]bool{}
			for _, l := range res.Results {
				applied[l.ID] = true
				after := e.stored(t, l.ID)
				migratedOnce(t, before[l.ID], after, 2, "DRAFT", "anonymous")
				if l.Outcome != engine.OutcomeApplied || l.Rev != after.inst.Rev || l.VersionAfter != 2 {
					t.Errorf("apply line %+v, stored rev %d", l, after.inst.Rev)
				}
			}
			for _, id := range all {
				if !applied[id] {
					unchanged(t, before[id], e.stored(t, id))
				}
			}
			res = decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations",
				`{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"DRAFT","limit":3,"cursor":"`+res.Next+`","dry_run":false,"reason":"v2 compensates"}`), 200)
			checkTotals(t, res)
			if res.Totals.Applied != 2 || res.Totals.Selected != 2 || res.Next != "" {
				t.Fatalf("apply of the rest = %+v", res)
			}
			for _, l := range res.Results {
				if applied[l.ID] {
					t.Errorf("saga %s applied twice", l.ID)
				}
				applied[l.ID] = true
			}
			for _, id := range drafts {
				if !applied[id] {
					t.Errorf("DRAFT saga %s was not applied", id)
				}
				migratedOnce(t, before[id], e.stored(t, id), 2, "DRAFT", "anonymous")
			}
			for _, id := range []string{approved, finished, onV2, other, compensating} {
				unchanged(t, before[id], e.stored(t, id))
			}

			// ids: the approved saga migrates; the finished one, one
			// already on v2, a saga of another definition, a compensating
			// one and an unknown id are refused, and nothing of theirs
			// moves; the apply of the approved one stays.
			before = e.storedAll(t, all...)
			ids := []string{finished, approved, onV2, other, compensating, "no-such-saga", drafts[0]}
			b, _ := json.Marshal(map[string]any{"saga": "MANUAL_CREATE_ORDER", "from": 1, "to": 2, "ids": ids, "dry_run": false, "reason": "the rest"})
			res = decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations", string(b)), 200)
			checkTotals(t, res)
			for i, l := range res.Results {
				if l.ID != ids[i] {
					t.Errorf("line %d is saga %s, want %s (the order of ids)", i, l.ID, ids[i])
				}
			}
			got := lines(t, res)
			if l := got[approved]; l.Outcome != engine.OutcomeApplied || l.StateBefore != "APPROVED" || l.StateAfter != "APPROVED" {
				t.Errorf("approved saga: %+v", l)
			}
			migratedOnce(t, before[approved], e.stored(t, approved), 2, "APPROVED", "anonymous")
			for id, want := range map[string]struct {
				code   engine.Code
				detail string
			}{
				finished:       {engine.CodeConflict, "completed"},
				onV2:           {engine.CodeConflict, "version 2"},
				other:          {engine.CodeConflict, orderMigrate},
				compensating:   {engine.CodeConflict, orderMigrate},
				"no-such-saga": {engine.CodeNotFound, "does not exist"},
				drafts[0]:      {engine.CodeConflict, "version 2"},
			} {
				l := got[id]
				if l.Outcome != engine.OutcomeRefused || l.Code != want.code || !strings.Contains(l.Detail, want.detail) || l.VersionAfter != 0 || l.Rev != 0 {
					t.Errorf("saga %s: %+v, want refused %s with %q in the detail", id, l, want.code, want.detail)
				}
				if id != "no-such-saga" {
					unchanged(t, before[id], e.stored(t, id))
				}
			}
			if l := got[finished]; l.VersionBefore != 1 || l.StateBefore != "NOTIFICATION" {
				t.Errorf("finished saga's line does not say where it is: %+v", l)
			}

			// Nothing of v1 runs any more: a selection finds none.
			res = decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":"again"}`), 200)
			if len(res.Results) != 0 || res.Totals != (httpapi.MigrateTotals{}) || res.Next != "" {
				t.Errorf("apply with nothing left = %+v", res)
			}
			unchanged(t, before[finished], e.stored(t, finished))
		})
	}
}

// TestMigrateSagasRefusals performs what an attacker or a careless
// operator would against POST /migrations: no token, a viewer, no role,
// another application's role, a foreign origin, an unknown saga or
// version, a migration that is not loaded, a limit over the maximum, bad
// and oversized bodies. Each is refused as a whole and every saga is read
// back unchanged.
func TestMigrateSagasRefusals(t *testing.T) {
	e := newEnv(t, "", envOptions{catalog: migrationCatalog(t), auth: devAuth(t)})
	op := as("olga", "saga-operator")
	a := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "X-1").ID
	b := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "X-2").ID
	done := e.startOn(t, "MANUAL_CREATE_ORDER", 1, "X-3").ID
	e.sendTo(t, "MANUAL_CREATE_ORDER", done, "ORDER_REJECTED", "profile")
	e.sendTo(t, "MANUAL_CREATE_ORDER", done, "DEAL_UPDATED", "deals")
	before := e.storedAll(t, a, b, done)

	apply := `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":"attack"}`
	manyIDs := make([]string, engine.MaxMigrateLimit+1)
	for i := range manyIDs {
		manyIDs[i] = fmt.Sprintf("id-%d", i)
	}
	tooMany, _ := json.Marshal(map[string]any{"saga": "MANUAL_CREATE_ORDER", "from": 1, "to": 2, "ids": manyIDs})
	for _, tc := range []struct {
		name   string
		body   string
		hdr    []string
		status int
		code   engine.Code
	}{
		{"no token", apply, nil, 401, ""},
		{"viewer", apply, as("vera", "saga-viewer"), 403, engine.CodeForbidden},
		{"viewer's dry run", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2}`, as("vera", "saga-viewer"), 403, engine.CodeForbidden},
		{"no role", apply, as("mallory"), 403, engine.CodeForbidden},
		{"role of a definition", apply, as("sam", "support-lead"), 403, engine.CodeForbidden},
		{"foreign origin", apply, append(op, "Origin", "https://evil.example"), 403, httpapi.CodeCrossOrigin},
		{"cross-site fetch", apply, append(op, "Sec-Fetch-Site", "cross-site"), 403, httpapi.CodeCrossOrigin},
		{"limit over the maximum", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":1001,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"limit 0", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":0,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"negative limit", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":-1}`, op, 400, engine.CodeInvalid},
		{"huge limit", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":99999999999999999999}`, op, 400, engine.CodeInvalid},
		{"null limit", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":null,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"null dry_run", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":null,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"unknown saga", `{"saga":"NO_SUCH_SAGA","from":1,"to":2,"dry_run":false,"reason":"x"}`, op, 404, engine.CodeNotFound},
		{"unknown from version", `{"saga":"MANUAL_CREATE_ORDER","from":9,"to":2,"dry_run":false,"reason":"x"}`, op, 422, httpapi.CodeUnknownMigration},
		{"unknown to version", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":9,"dry_run":false,"reason":"x"}`, op, 422, httpapi.CodeUnknownMigration},
		{"no migration file 1 → 3", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":3,"dry_run":false,"reason":"x"}`, op, 422, httpapi.CodeUnknownMigration},
		{"no migration file, dry run", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":3}`, op, 422, httpapi.CodeUnknownMigration},
		{"backwards", `{"saga":"MANUAL_CREATE_ORDER","from":2,"to":1,"dry_run":false,"reason":"x"}`, op, 422, httpapi.CodeUnknownMigration},
		{"same version", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":1,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"no saga", `{"from":1,"to":2,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"no from", `{"saga":"MANUAL_CREATE_ORDER","to":2,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"no to", `{"saga":"MANUAL_CREATE_ORDER","from":1,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"final state", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"NOTIFICATION","dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"unknown state", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"DRAFTT","dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"reason over 1000 characters", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":"` + strings.Repeat("é", engine.MaxMigrateReason+1) + `"}`, op, 400, engine.CodeInvalid},
		{"apply without reason", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":" "}`, op, 400, engine.CodeInvalid},
		{"ids with limit", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"ids":["` + a + `"],"limit":5,"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"ids with cursor", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"ids":["` + a + `"],"cursor":"x","dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"an id twice", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"ids":["` + a + `","` + a + `"],"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"empty ids", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"ids":[],"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"empty id", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"ids":["` + a + `",""],"dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"too many ids", string(tooMany), op, 400, engine.CodeInvalid},
		{"forged cursor", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"cursor":"not-a-cursor","dry_run":false,"reason":"x"}`, op, 400, engine.CodeInvalid},
		{"bad state with a cursor", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"NOPE","cursor":"not-a-cursor"}`, op, 400, engine.CodeInvalid},
		{"unknown field", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"dry_run":false,"reason":"x","actor":"someone-else"}`, op, 400, engine.CodeInvalid},
		{"version as text", `{"saga":"MANUAL_CREATE_ORDER","from":"1","to":2}`, op, 400, engine.CodeInvalid},
		{"not JSON", `saga=MANUAL_CREATE_ORDER`, op, 400, engine.CodeInvalid},
		{"query parameter", "", op, 400, engine.CodeInvalid},
		{"oversized", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"reason":"` + strings.Repeat("a", httpapi.MaxJSONBody) + `"}`, op, 413, httpapi.CodeTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, body := "/api/v1/migrations", tc.body
			if tc.name == "query parameter" {
				target, body = "/api/v1/migrations?dry_run=false", apply
			}
			rec := e.do(t, "POST", target, body, tc.hdr...)
			if tc.status == 401 {
				if rec.Code != 401 {
					t.Errorf("status %d, want 401: %s", rec.Code, rec.Body)
				}
			} else if p := problemOf(t, rec, tc.status, tc.code); p.Detail == "" {
				t.Errorf("problem without detail: %+v", p)
			}
			if strings.Contains(rec.Body.String(), a) && tc.status >= 401 && tc.status <= 403 {
				t.Errorf("the refusal shows a saga id: %s", rec.Body)
			}
			e.allUnchanged(t, before)
		})
	}
	p := problemOf(t, e.do(t, "POST", "/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"cursor":"not-a-cursor"}`, op...), 400, engine.CodeInvalid)
	if !strings.Contains(p.Detail, `cursor "not-a-cursor" is not one this API returned`) {
		t.Errorf("forged cursor: detail %q does not say so", p.Detail)
	}
	p = problemOf(t, e.do(t, "POST", "/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"state":"NOPE","cursor":"not-a-cursor"}`, op...), 400, engine.CodeInvalid)
	if strings.Contains(p.Detail, "cursor") || !strings.Contains(p.Detail, "NOPE") {
		t.Errorf("bad state with a cursor: detail %q, want the state named, not the cursor", p.Detail)
	}
	p = problemOf(t, e.do(t, "POST", "/api/v1/migrations", `{"saga":"MANUAL_CREATE_ORDER","from":1,"to":3}`, op...), 422, httpapi.CodeUnknownMigration)
	if !strings.Contains(p.Detail, "manual_create_order.1-2.yaml") {
		t.Errorf("unknown migration: detail %q does not name the loaded ones", p.Detail)
	}

	// The operator migrates both running sagas, named in the timeline;
	// the finished one is not selected.
	res := decode[httpapi.MigrateSagasResult](t, e.do(t, "POST", "/api/v1/migrations", apply, op...), 200)
	if res.Totals.Applied != 2 || res.Totals.Selected != 2 {
		t.Errorf("operator's apply = %+v", res)
	}
	for _, id := range []string{a, b} {
		migratedOnce(t, before[id], e.stored(t, id), 2, "DRAFT", "olga")
	}
	unchanged(t, before[done], e.stored(t, done))
}

// BenchmarkMigrateSagas measures POST /api/v1/migrations on a page of the
// maximum size (1000 sagas), dry run and apply, on SQLite and PostgreSQL:
// one request must finish well within the server's WriteTimeout (60s,
// internal/program). Run: go test ./engine/httpapi -run '^$' -bench
// MigrateSagas -benchtime 1x.
func BenchmarkMigrateSagas(b *testing.B) {
	for _, db := range []struct {
		name string
		url  func(testing.TB) string
	}{
		{"sqlite", func(testing.TB) string { return "" }},
		{"postgres", testenv.Postgres},
	} {
		for _, dryRun := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/dry_run=%v", db.name, dryRun), func(b *testing.B) {
				e := newEnv(b, db.url(b), envOptions{catalog: migrationCatalog(b)})
				body := fmt.Sprintf(`{"saga":"MANUAL_CREATE_ORDER","from":1,"to":2,"limit":%d,"dry_run":%v,"reason":"bench"}`, engine.MaxMigrateLimit, dryRun)
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					for j := range engine.MaxMigrateLimit {
						e.startOn(b, "MANUAL_CREATE_ORDER", 1, fmt.Sprintf("bench-%d-%d", i, j))
					}
					b.StartTimer()
					res := decode[httpapi.MigrateSagasResult](b, e.do(b, "POST", "/api/v1/migrations", body), 200)
					if res.Totals.Selected != engine.MaxMigrateLimit || res.Totals.Refused+res.Totals.Failed != 0 {
						b.Fatalf("totals %+v", res.Totals)
					}
					if dryRun {
						b.StopTimer()
						// Clear the selection for the next round.
						e.do(b, "POST", "/api/v1/migrations", strings.Replace(body, `"dry_run":true`, `"dry_run":false`, 1))
						b.StartTimer()
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/request")
			})
		}
	}
}
