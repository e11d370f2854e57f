package servicetest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
	"github.com/portfolio-counselor/sagamachine/internal/testenv"
	"github.com/portfolio-counselor/sagamachine/participants/internal/service"
	"github.com/portfolio-counselor/sagamachine/participants/sdk"
)

// Issuer is a running in-process OIDC issuer with an Authenticator that
// trusts it.
type Issuer struct {
	*issuer.Issuer
	Auth *auth.Authenticator
}

// NewIssuer starts an issuer on loopback (stopped when the test ends) and
// an Authenticator for its default audience.
func NewIssuer(tb testing.TB) *Issuer {
	tb.Helper()
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("start issuer: %v", err)
	}
	tb.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := auth.New(ctx, auth.Config{Issuer: iss.URL(), Audience: issuer.DefaultAudience,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		tb.Fatalf("new authenticator: %v", err)
	}
	return &Issuer{Issuer: iss, Auth: a}
}

// Token mints an access token for sub (name and email derived from it).
func (i *Issuer) Token(tb testing.TB, sub string) string {
	tb.Helper()
	tok, err := i.Issuer.Token(sub, issuer.TokenOptions{Name: sub, Email: sub + "@example.com"})
	if err != nil {
		tb.Fatalf("mint token for %s: %v", sub, err)
	}
	return tok
}

// TokenWithRoles mints an access token for sub carrying roles (as realm
// roles, the way Keycloak puts them).
func (i *Issuer) TokenWithRoles(tb testing.TB, sub string, roles ...string) string {
	tb.Helper()
	tok, err := i.Issuer.Token(sub, issuer.TokenOptions{Name: sub, Email: sub + "@example.com", Roles: roles})
	if err != nil {
		tb.Fatalf("mint token for %s: %v", sub, err)
	}
	return tok
}

// Response is a recorded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the body into v, failing the test on error.
func (r Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode response %d %s into %T: %v", r.Status, r.Body, v, err)
	}
}

// Problem decodes a problem+json body, failing the test if the content
// type is not application/problem+json.
func (r Response) Problem(tb testing.TB) service.Problem {
	tb.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		tb.Fatalf("Content-Type of %d response: got %q, want application/problem+json (body %s)", r.Status, ct, r.Body)
	}
	var p service.Problem
	r.Decode(tb, &p)
	if p.Status != r.Status {
		tb.Errorf("problem status: got %d, want the response status %d", p.Status, r.Status)
	}
	return p
}

// Call sends one request to h. body is JSON-encoded unless it is a string
// (sent as is) or nil; token, when not empty, goes in Authorization: Bearer.
// headers are name, value pairs.
func Call(tb testing.TB, h http.Handler, method, path, token string, body any, headers ...string) Response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			tb.Fatalf("encode request body: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return Response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

// SQLite opens a migrated SQLite database in a temporary directory with
// service.OpenDB (as the services do), with the SDK tables and the
// service's tables (migrate).
func SQLite(tb testing.TB, migrate func(context.Context, *sqlx.DB) error) *sqlx.DB {
	tb.Helper()
	db, err := service.OpenDB(context.Background(), filepath.Join(tb.TempDir(), "service.db"))
	if err != nil {
		tb.Fatalf("open sqlite: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	migrateAll(tb, db, migrate)
	return db
}

// Postgres opens a fresh, migrated database on the test PostgreSQL server
// (testenv.Postgres: skipped locally, failed under CI, when unreachable).
func Postgres(tb testing.TB, migrate func(context.Context, *sqlx.DB) error) *sqlx.DB {
	tb.Helper()
	db, err := service.OpenDB(context.Background(), testenv.Postgres(tb))
	if err != nil {
		tb.Fatalf("open postgres: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	migrateAll(tb, db, migrate)
	return db
}

func migrateAll(tb testing.TB, db *sqlx.DB, migrate func(context.Context, *sqlx.DB) error) {
	tb.Helper()
	ctx := context.Background()
	if err := sdk.Migrate(ctx, db); err != nil {
		tb.Fatalf("migrate sdk tables: %v", err)
	}
	if migrate != nil {
		if err := migrate(ctx, db); err != nil {
			tb.Fatalf("migrate service tables: %v", err)
		}
		// Migrating twice is a no-op.
		if err := migrate(ctx, db); err != nil {
			tb.Fatalf("migrate service tables again: %v", err)
		}
	}
}

// EachDB runs test once per database, as subtests "sqlite" and "postgres".
func EachDB(t *testing.T, migrate func(context.Context, *sqlx.DB) error, test func(t *testing.T, db *sqlx.DB)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, SQLite(t, migrate)) })
	t.Run("postgres", func(t *testing.T) { test(t, Postgres(t, migrate)) })
}
