package system_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/program"
	"github.com/portfolio-counselor/sagamachine/internal/system"
)

// TestForeignHostRefused performs DNS rebinding against the one-process
// system: a web page on evil.example, whose name the attacker makes resolve
// to 127.0.0.1, reaches every server's socket with Host: evil.example. It
// tries to mint an operator token, create a portfolio, place a deal and
// list sagas with a valid token. Every request is refused with 421
// problem+json before a handler runs, and nothing was created.
func TestForeignHostRefused(t *testing.T) {
	sys := start(t, system.Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	tok, err := sys.Token("alice", auth.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	alice := system.NewClient(sys.URLs, tok, nil)
	if _, err := alice.Login(ctx); err != nil {
		t.Fatal(err)
	}
	pf, err := alice.CreatePortfolio(ctx, "Main", "USD")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, url, ctype, body string
	}{
		{"issuer /token", "POST", sys.URLs.Issuer + "/token", "application/x-www-form-urlencoded", "sub=mallory&roles=saga-operator,funding-operator"},
		{"issuer discovery", "GET", sys.URLs.Issuer + "/.well-known/openid-configuration", "", ""},
		{"profile create", "POST", sys.URLs.Profile + "/portfolios", "application/json", `{"name":"Evil","currency":"USD"}`},
		{"profile deposit", "POST", sys.URLs.Profile + "/portfolios/" + pf.ID + "/deposits", "application/json", `{"amount":"100","currency":"USD","reason":"x"}`},
		{"profile read", "GET", sys.URLs.Profile + "/portfolios", "", ""},
		{"deals create", "POST", sys.URLs.Deals + "/deals", "application/json",
			`{"portfolio_id":"` + pf.ID + `","side":"buy","instrument":"ACME","quantity":"1","price":"1","currency":"USD"}`},
		{"notification read", "GET", sys.URLs.Notification + "/notifications", "", ""},
		{"saga-machine list", "GET", sys.URLs.SagaMachine + "/api/v1/sagas", "", ""},
		{"saga-machine console", "GET", sys.URLs.SagaMachine + "/console/", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tt.method, tt.url, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "evil.example:" + req.URL.Port() // the browser's Host after rebinding
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Idempotency-Key", "rebinding")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body) // checked below
			resp.Body.Close()
			if resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get("Content-Type") != "application/problem+json" ||
				!strings.Contains(string(body), program.ProblemMisdirected) {
				t.Errorf("Host %s: got %d %s %s, want 421 misdirected problem", req.Host, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if strings.Contains(string(body), "access_token") {
				t.Errorf("a token was minted for a foreign Host: %s", body)
			}
		})
	}
	pfs, err := alice.Portfolios(ctx)
	if err != nil || len(pfs) != 1 || !pfs[0].Cash.IsZero() {
		t.Errorf("alice's portfolios after the attack: got %+v (err %v), want only Main with no cash", pfs, err)
	}
	deps, err := alice.Deposits(ctx, pf.ID)
	if err != nil || len(deps) != 0 {
		t.Errorf("deposits after the attack: got %d (err %v), want 0", len(deps), err)
	}
	page, err := alice.Deals(ctx)
	if err != nil || len(page) != 0 {
		t.Errorf("alice's deals after the attack: got %d (err %v), want 0", len(page), err)
	}
}

// TestSQLiteFilesPrivate: the one-process system's SQLite files (every
// service's and saga-machine's), their WAL and shared-memory files, the
// data directory and the embedded broker's data are the owner's only.
func TestSQLiteFilesPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	sys := start(t, system.Config{DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	if _, err := sys.RunDemo(ctx); err != nil { // every database written
		t.Fatalf("RunDemo: %v", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "kafka")} {
		checkPerm(t, d, 0o700)
	}
	for _, name := range []string{system.Saga, system.Deals, system.Profile, system.Notification} {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			checkPerm(t, filepath.Join(dir, name+".db"+suffix), 0o600)
		}
	}
}

func checkPerm(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("stat %s: %v", path, err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("mode of %s: got %o, want %o", filepath.Base(path), got, want)
	}
}

// TestStartRefusesNonLoopback: the system trusts its in-process issuer, so
// it refuses to listen anywhere but loopback.
func TestStartRefusesNonLoopback(t *testing.T) {
	for _, cfg := range []system.Config{
		{DataDir: t.TempDir(), Listen: "0.0.0.0:0", EphemeralPorts: true},
		{DataDir: t.TempDir(), DealsListen: ":0", EphemeralPorts: true},
		{DataDir: t.TempDir(), IssuerListen: "[::]:0", EphemeralPorts: true},
	} {
		sys, err := system.Start(context.Background(), cfg)
		if err == nil {
			sys.Close()
			t.Errorf("Start with %+v: got no error, want a refusal", cfg)
			continue
		}
		if !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("Start: got %v, want it to say the address is not loopback", err)
		}
	}
}
