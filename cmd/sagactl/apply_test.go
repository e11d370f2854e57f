package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
