package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/engine"
	"github.com/portfolio-counselor/sagamachine/engine/definition"
	"github.com/portfolio-counselor/sagamachine/engine/httpapi"
	"github.com/portfolio-counselor/sagamachine/engine/sqlstore"
	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/sagas"
)

// remoteSetup is a saga-machine API (real orchestrator on SQLite, tokens
// from the dev issuer) with the shipped migrations loaded.
type remoteSetup struct {
	srv   *httptest.Server
	iss   *issuer.Issuer
	store *sqlstore.Store
	orch  *engine.Orchestrator
}

func newRemote(t *testing.T) *remoteSetup {
	t.Helper()
	iss, stop, err := issuer.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	ctx := context.Background()
	a, err := auth.New(ctx, auth.Config{Issuer: iss.URL(), Audience: issuer.DefaultAudience, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defs, problems := definition.LoadDir(sagas.FS)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	migs, problems := definition.LoadMigrations(sagas.Migrations(), defs)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	cat, err := engine.NewCatalog(defs...)
	if err != nil {
		t.Fatal(err)
	}
	if cat, err = cat.WithMigrations(migs...); err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "saga.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	orch, err := engine.New(engine.Config{}, cat, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpapi.New(httpapi.Config{Orchestrator: orch, Auth: a})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &remoteSetup{srv: srv, iss: iss, store: st, orch: orch}
}

// startV1 starts a MANUAL_CREATE_ORDER v1 saga (it waits in DRAFT).
func (r *remoteSetup) startV1(t *testing.T, deal string) string {
	t.Helper()
	inst, _, err := r.orch.Start(context.Background(), engine.StartRequest{Saga: "MANUAL_CREATE_ORDER", Version: 1,
		Payload: json.RawMessage(`{"deal_context":{"deal_id":"` + deal + `","user_id":"u-1"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	return inst.ID
}

// tokenFile writes a token of sub with roles to a file and returns its path.
func (r *remoteSetup) tokenFile(t *testing.T, sub string, roles ...string) string {
	t.Helper()
	tok, err := r.iss.Token(sub, issuer.TokenOptions{Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// version reads a saga's version and the number of its timeline entries.
func (r *remoteSetup) version(t *testing.T, id string) (int, int) {
	t.Helper()
	inst, err := r.store.GetInstance(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := r.store.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return inst.SagaVersion, len(h)
}

// TestMigrateApply runs `sagactl migrate --apply` against saga-machine's
// API: an operator's token migrates two sagas (dry run, then apply), a
// repeated apply is refused, a viewer's token and a missing token are
// refused and move nothing, and the flags are checked before any request.
func TestMigrateApply(t *testing.T) {
	r := newRemote(t)
	a, b := r.startV1(t, "D-1"), r.startV1(t, "D-2")
	op := r.tokenFile(t, "olga", auth.RoleOperator)
	viewer := r.tokenFile(t, "vera", auth.RoleViewer)
	args := func(token string, ids ...string) []string {
		return append([]string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", "--from", "1", "--reason", "v2 compensates", "--token-file", token}, ids...)
	}

	got := runSagactl(t, args(viewer, a)...)
	if got.code != exitUsage || !strings.Contains(got.stderr, "403 forbidden") {
		t.Errorf("viewer: %s", got)
	}
	if v, n := r.version(t, a); v != 1 || n != 1 {
		t.Errorf("after the viewer: saga on v%d with %d entries, want v1 with 1", v, n)
	}
	t.Setenv("SAGA_TOKEN", "")
	got = runSagactl(t, append([]string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", "--reason", "x"}, a)...)
	if got.code != exitUsage || !strings.Contains(got.stderr, "401") {
		t.Errorf("no token: %s", got)
	}

	got = runSagactl(t, args(op, a, b)...)
	if got.code != exitOK {
		t.Fatalf("operator: %s", got)
	}
	for _, id := range []string{a, b} {
		if !strings.Contains(got.stdout, "saga "+id+": dry run: MANUAL_CREATE_ORDER v1 DRAFT → v2 DRAFT") ||
			!strings.Contains(got.stdout, "saga "+id+": applied: MANUAL_CREATE_ORDER v1 DRAFT → v2 DRAFT") {
			t.Errorf("operator: stdout lacks the dry run and apply of %s:\n%s", id, got.stdout)
		}
		if v, n := r.version(t, id); v != 2 || n != 2 {
			t.Errorf("after the operator: saga %s on v%d with %d entries, want v2 with 2 (REGISTER, MIGRATE)", id, v, n)
		}
	}
	// Again: the sagas are on version 2, refused at the dry run.
	got = runSagactl(t, args(op, a)...)
	if got.code != exitInvalid || !strings.Contains(got.stderr, "409 conflict") || strings.Contains(got.stdout, "applied") {
		t.Errorf("repeated apply: %s", got)
	}
	if v, n := r.version(t, a); v != 2 || n != 2 {
		t.Errorf("after the repeated apply: v%d with %d entries, want v2 with 2", v, n)
	}
	got = runSagactl(t, args(op, "no-such-saga")...)
	if got.code != exitInvalid || !strings.Contains(got.stderr, "404 not-found") {
		t.Errorf("unknown saga: %s", got)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"migrate", "--apply", "--to", "2", "--reason", "x", a}, "--url"},
		{"no target", []string{"migrate", "--apply", "--url", r.srv.URL, "--reason", "x", a}, "--to"},
		{"no reason", []string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", a}, "--reason"},
		{"no saga", []string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", "--reason", "x"}, "ids"},
		{"both modes", []string{"migrate", "--apply", "--dry-run", "--url", r.srv.URL, "--to", "2", "--reason", "x", a}, "exclude"},
		{"not a URL", []string{"migrate", "--apply", "--url", "ftp://example", "--to", "2", "--reason", "x", a}, "--url"},
		{"token over plain http", []string{"migrate", "--apply", "--url", "http://saga.example", "--to", "2", "--reason", "x", "--token-file", op, a}, "https"},
		{"missing token file", []string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", "--reason", "x", "--token-file", "/nonexistent/token", a}, "token file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runSagactl(t, tc.args...)
			if got.code != exitUsage || !strings.Contains(got.stderr, tc.want) {
				t.Errorf("exit %d, want %d with %q in stderr\n%s", got.code, exitUsage, tc.want, got)
			}
		})
	}
}

// finish runs a MANUAL_CREATE_ORDER v1 saga to its final state.
func (r *remoteSetup) finish(t *testing.T, id string) {
	t.Helper()
	for _, ev := range [][2]string{{"ORDER_REJECTED", "profile"}, {"DEAL_UPDATED", "deals"}} {
		m := engine.Message{V: engine.EnvelopeVersion, ID: id + "-" + ev[0], SagaID: id, Saga: "MANUAL_CREATE_ORDER",
			Kind: engine.KindEvent, Name: ev[0], Participant: ev[1], OccurredAt: time.Now().UTC()}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.orch.HandleRecords(context.Background(), []engine.Record{{Topic: "SAGA_SERVER_TOPIC", Key: id, Value: b}}); err != nil {
			t.Fatal(err)
		}
	}
	if inst, err := r.store.GetInstance(context.Background(), id); err != nil || inst.Status != engine.StatusCompleted {
		t.Fatalf("saga %s: %+v %v, want completed", id, inst.Status, err)
	}
}

// TestMigrateApplyAll runs `sagactl migrate --all` against saga-machine's
// API: a viewer's token, no token and a request saga-machine refuses move
// nothing; the dry run prints every running saga selected and changes
// nothing; --apply with --state and --limit migrates exactly that many,
// then the rest; the finished saga is never touched; the flags are checked
// before any request.
func TestMigrateApplyAll(t *testing.T) {
	r := newRemote(t)
	drafts := []string{r.startV1(t, "A-1"), r.startV1(t, "A-2"), r.startV1(t, "A-3")}
	done := r.startV1(t, "A-done")
	r.finish(t, done)
	op := r.tokenFile(t, "olga", auth.RoleOperator)
	viewer := r.tokenFile(t, "vera", auth.RoleViewer)
	all := func(token string, more ...string) []string {
		return append([]string{"migrate", "--url", r.srv.URL, "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "2", "--token-file", token}, more...)
	}
	onV1 := func(t *testing.T, ids ...string) {
		t.Helper()
		for _, id := range ids {
			if v, n := r.version(t, id); v != 1 || (id != done && n != 1) || (id == done && n != 3) {
				t.Errorf("saga %s on v%d with %d entries, want v1 untouched", id, v, n)
			}
		}
	}

	got := runSagactl(t, all(viewer, "--apply", "--reason", "x")...)
	if got.code != exitUsage || !strings.Contains(got.stderr, "403 forbidden") || strings.Contains(got.stdout, "applied") {
		t.Errorf("viewer: %s", got)
	}
	onV1(t, append(drafts, done)...)
	t.Setenv("SAGA_TOKEN", "")
	got = runSagactl(t, "migrate", "--apply", "--url", r.srv.URL, "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "2", "--reason", "x")
	if got.code != exitUsage || !strings.Contains(got.stderr, "401") {
		t.Errorf("no token: %s", got)
	}
	got = runSagactl(t, "migrate", "--apply", "--url", r.srv.URL, "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "3", "--reason", "x", "--token-file", op)
	if got.code != exitInvalid || !strings.Contains(got.stderr, "422 unknown-migration") || !strings.Contains(got.stderr, "manual_create_order.1-2.yaml") {
		t.Errorf("no migration 1 → 3: %s", got)
	}
	got = runSagactl(t, "migrate", "--apply", "--url", r.srv.URL, "--all", "--saga", "NO_SUCH_SAGA", "--from", "1", "--to", "2", "--reason", "x", "--token-file", op)
	if got.code != exitInvalid || !strings.Contains(got.stderr, "404 not-found") {
		t.Errorf("unknown saga: %s", got)
	}
	onV1(t, append(drafts, done)...)

	got = runSagactl(t, all(op, "--dry-run")...)
	if got.code != exitOK || strings.Count(got.stdout, ": dry run: MANUAL_CREATE_ORDER v1 DRAFT → v2 DRAFT (manual_create_order.1-2.yaml)") != 3 ||
		!strings.Contains(got.stdout, "3 selected, 3 would migrate, 0 refused, 0 failed; nothing was changed") || strings.Contains(got.stdout, done) {
		t.Errorf("dry run: %s", got)
	}
	onV1(t, append(drafts, done)...)

	got = runSagactl(t, all(op, "--apply", "--state", "DRAFT", "--limit", "2", "--reason", "v2 compensates")...)
	if got.code != exitOK || strings.Count(got.stdout, ": applied: MANUAL_CREATE_ORDER v1 DRAFT → v2 DRAFT (rev 2") != 2 ||
		!strings.Contains(got.stdout, "2 selected, 2 applied, 0 refused, 0 failed") || !strings.Contains(got.stdout, "more sagas match: --limit 2") {
		t.Errorf("apply of 2: %s", got)
	}
	migrated := 0
	for _, id := range drafts {
		if v, n := r.version(t, id); v == 2 && n == 2 {
			migrated++
		} else if v != 1 || n != 1 {
			t.Errorf("saga %s on v%d with %d entries after the apply of 2", id, v, n)
		}
	}
	if migrated != 2 {
		t.Errorf("%d sagas migrated by --limit 2, want 2", migrated)
	}
	got = runSagactl(t, all(op, "--apply", "--reason", "the rest")...)
	if got.code != exitOK || !strings.Contains(got.stdout, "1 selected, 1 applied, 0 refused, 0 failed") || strings.Contains(got.stdout, "more sagas match") {
		t.Errorf("apply of the rest: %s", got)
	}
	for _, id := range drafts {
		if v, n := r.version(t, id); v != 2 || n != 2 {
			t.Errorf("saga %s on v%d with %d entries, want v2 with 2 (REGISTER, MIGRATE)", id, v, n)
		}
	}
	onV1(t, done)
	got = runSagactl(t, all(op, "--apply", "--reason", "again")...)
	if got.code != exitOK || !strings.Contains(got.stdout, "0 selected, 0 applied") {
		t.Errorf("nothing left: %s", got)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"ids with --all", all(op, "--apply", "--reason", "x", drafts[0]), "give no SAGA_ID"},
		{"no mode", all(op), "--all wants --dry-run"},
		{"both modes", all(op, "--apply", "--dry-run"), "exclude"},
		{"no saga", []string{"migrate", "--apply", "--url", r.srv.URL, "--all", "--from", "1", "--to", "2", "--reason", "x"}, "--saga"},
		{"no from", []string{"migrate", "--apply", "--url", r.srv.URL, "--all", "--saga", "MANUAL_CREATE_ORDER", "--to", "2", "--reason", "x"}, "--from"},
		{"no url", []string{"migrate", "--apply", "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "2", "--reason", "x"}, "--url"},
		{"no reason", all(op, "--apply"), "--reason"},
		{"same version", []string{"migrate", "--dry-run", "--url", r.srv.URL, "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "2", "--to", "2"}, "nothing to migrate"},
		{"negative limit", all(op, "--dry-run", "--limit", "-1"), "--limit"},
		{"saga without --all", []string{"migrate", "--apply", "--url", r.srv.URL, "--to", "2", "--reason", "x", "--saga", "MANUAL_CREATE_ORDER", drafts[0]}, "with --all"},
		{"token over plain http", []string{"migrate", "--dry-run", "--url", "http://saga.example", "--all", "--saga", "MANUAL_CREATE_ORDER", "--from", "1", "--to", "2", "--token-file", op}, "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runSagactl(t, tc.args...)
			if got.code != exitUsage || !strings.Contains(got.stderr, tc.want) {
				t.Errorf("exit %d, want %d with %q in stderr\n%s", got.code, exitUsage, tc.want, got)
			}
		})
	}
	onV1(t, done)
}

// TestMigrateAllAppliesWhatTheDryRunShowed: `sagactl migrate --apply --all`
// applies exactly the sagas its dry run found would migrate, by their ids,
// page after page with the dry run's cursor, and reports a refused saga on
// stderr with exit status 1. saga-machine is a recording stand-in here:
// the refusal of one saga in a selection cannot be provoked with the
// shipped definitions (TestMigrateSagas in engine/httpapi covers the
// server side).
func TestMigrateAllAppliesWhatTheDryRunShowed(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body map[string]any
		if req.URL.Path != "/api/v1/migrations" || req.Method != http.MethodPost || json.NewDecoder(req.Body).Decode(&body) != nil {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		line := func(id, outcome string) map[string]any {
			l := map[string]any{"id": id, "outcome": outcome, "version_before": 1, "state_before": "DRAFT"}
			switch outcome {
			case "refused":
				l["code"], l["detail"] = "conflict", "the saga waits for the join of a parallel step"
			default:
				l["version_after"], l["state_after"], l["rev"] = 2, "DRAFT", 4
			}
			return l
		}
		ans := map[string]any{"saga": "S", "from": 1, "to": 2, "migration": "s.1-2.yaml", "totals": map[string]int{}}
		switch {
		case body["dry_run"] == true && body["cursor"] == nil:
			ans["dry_run"], ans["next"] = true, "page-2"
			ans["results"] = []any{line("a", "would-apply"), line("b", "refused"), line("c", "would-apply")}
		case body["dry_run"] == true:
			ans["dry_run"] = true
			ans["results"] = []any{line("d", "would-apply")}
		default:
			ans["dry_run"] = false
			var res []any
			for _, id := range body["ids"].([]any) {
				res = append(res, line(id.(string), "applied"))
			}
			ans["results"] = res
		}
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("SAGA_TOKEN", "")
	got := runSagactl(t, "migrate", "--apply", "--url", srv.URL, "--all", "--saga", "S", "--from", "1", "--to", "2", "--state", "DRAFT", "--reason", "why")
	if got.code != exitInvalid || !strings.Contains(got.stderr, "saga b (v1 DRAFT): refused (conflict): the saga waits for the join") ||
		!strings.Contains(got.stdout, "4 selected, 3 applied, 1 refused, 0 failed") {
		t.Errorf("run: %s", got)
	}
	want := []string{
		`{"dry_run":true,"from":1,"limit":100,"saga":"S","state":"DRAFT","to":2}`,
		`{"dry_run":false,"from":1,"ids":["a","c"],"reason":"why","saga":"S","state":"DRAFT","to":2}`,
		`{"cursor":"page-2","dry_run":true,"from":1,"limit":100,"saga":"S","state":"DRAFT","to":2}`,
		`{"dry_run":false,"from":1,"ids":["d"],"reason":"why","saga":"S","state":"DRAFT","to":2}`,
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != len(want) {
		t.Fatalf("%d requests, want %d: %v", len(bodies), len(want), bodies)
	}
	for i, b := range bodies {
		if g, _ := json.Marshal(b); string(g) != want[i] {
			t.Errorf("request %d = %s, want %s", i, g, want[i])
		}
	}
}
