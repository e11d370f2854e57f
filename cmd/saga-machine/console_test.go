package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

func TestConsoleClientIDFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, console.DefaultClientID},
		{"env", nil, map[string]string{"OIDC_CONSOLE_CLIENT_ID": "ops-console"}, "ops-console"},
		{"flag wins", []string{"--console-client-id", "flag-console"}, map[string]string{"OIDC_CONSOLE_CLIENT_ID": "ops-console"}, "flag-console"},
		{"off", []string{"--console-client-id", ""}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags("saga-machine", tt.args, envMap(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.consoleClient != tt.want {
				t.Errorf("console client = %q, want %q", cfg.consoleClient, tt.want)
			}
		})
	}
	// Hostile values are refused at start: they would end up in URLs and
	// in the console's settings.
	for _, bad := range []string{"saga console", "saga\nconsole", "saga\x00", "konsole-ä", "\tsaga", strings.Repeat("c", 256)} {
		if _, err := parseFlags("saga-machine", []string{"--console-client-id", bad}, envMap(nil), io.Discard); err == nil {
			t.Errorf("--console-client-id %q accepted", bad)
		}
		if _, err := parseFlags("saga-machine", nil, envMap(map[string]string{"OIDC_CONSOLE_CLIENT_ID": bad}), io.Discard); err == nil {
			t.Errorf("OIDC_CONSOLE_CLIENT_ID %q accepted", bad)
		}
	}
}

// startDaemon runs saga-machine with args on an embedded broker and
// returns its base URL; it stops with the test.
func startDaemon(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	base, done, _ := runDaemon(ctx, t, envMap(nil), args...)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run after stop = %v", err)
		}
	})
	return base
}

// TestRunServesConsoleSignIn: with --issuer the console's settings name
// the issuer's endpoints and the client id, and its CSP lets it reach the
// token endpoint; --console-client-id "" turns the sign-in off.
func TestRunServesConsoleSignIn(t *testing.T) {
	iss, stop, err := issuer.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, tt := range []struct {
		name     string
		args     []string
		wantAuth string
		wantCSP  string
	}{
		{"default client", nil, "oidc", "connect-src 'self' " + iss.URL() + ";"},
		{"sign-in off", []string{"--console-client-id", ""}, "none", "connect-src 'self';"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := startDaemon(t, append([]string{"--issuer", iss.URL(), "--audience", issuer.DefaultAudience}, tt.args...)...)
			resp, err := http.Get(base + "/console/config.json")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got struct {
				Auth string        `json:"auth"`
				OIDC *console.OIDC `json:"oidc"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.Auth != tt.wantAuth {
				t.Errorf("auth = %q, want %q", got.Auth, tt.wantAuth)
			}
			if tt.wantAuth == "oidc" {
				want := console.OIDC{Issuer: iss.URL(), ClientID: console.DefaultClientID, Scope: "openid",
					AuthorizationEndpoint: iss.URL() + "/authorize", TokenEndpoint: iss.URL() + "/token", EndSessionEndpoint: iss.URL() + "/logout"}
				if got.OIDC == nil || *got.OIDC != want {
					t.Errorf("oidc = %+v, want %+v", got.OIDC, want)
				}
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, tt.wantCSP) {
				t.Errorf("CSP %q lacks %q", csp, tt.wantCSP)
			}
		})
	}
}
