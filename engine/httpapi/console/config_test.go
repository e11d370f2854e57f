package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portfolio-counselor/sagamachine/engine/httpapi/console"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

func validOIDC() *console.OIDC {
	return &console.OIDC{
		Issuer: "http://127.0.0.1:8090", ClientID: "saga-console", Scope: "openid",
		AuthorizationEndpoint: "http://127.0.0.1:8090/authorize", TokenEndpoint: "http://127.0.0.1:8090/token",
		EndSessionEndpoint: "http://127.0.0.1:8090/logout",
	}
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// TestConfigJSON: the console's public settings, and the CSP that lets the
// page post the code to the issuer's token endpoint and nowhere else.
func TestConfigJSON(t *testing.T) {
	tests := []struct {
		name     string
		cfg      console.Config
		wantAuth string
		wantCSP  string
	}{
		{"no sign-in", console.Config{}, "none", "connect-src 'self';"},
		{"oidc", console.Config{OIDC: validOIDC()}, "oidc", "connect-src 'self' http://127.0.0.1:8090;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := console.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := get(t, h, "/config.json")
			var got struct {
				Auth string        `json:"auth"`
				OIDC *console.OIDC `json:"oidc"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != 200 {
				t.Fatalf("config.json = %d %s (%v)", rec.Code, rec.Body, err)
			}
			if got.Auth != tt.wantAuth || (tt.cfg.OIDC != nil && *got.OIDC != *tt.cfg.OIDC) {
				t.Errorf("config.json = %+v, want auth %s and %+v", got, tt.wantAuth, tt.cfg.OIDC)
			}
			if rec.Header().Get("Cache-Control") != "no-store" || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
				t.Errorf("config.json headers = %v", rec.Header())
			}
			for _, path := range []string{"/", "/app.js", "/config.json", "/signed-out.html"} {
				csp := get(t, h, path).Header().Get("Content-Security-Policy")
				if !strings.Contains(csp, tt.wantCSP) || !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") {
					t.Errorf("%s: CSP %q, want %q, scripts from self only, no framing", path, csp, tt.wantCSP)
				}
			}
			if strings.Contains(rec.Body.String(), "secret") {
				t.Errorf("config.json mentions a secret: %s", rec.Body)
			}
		})
	}
}

func TestNewRefusesBadOIDC(t *testing.T) {
	tests := map[string]func(*console.OIDC){
		"no client id":              func(o *console.OIDC) { o.ClientID = "" },
		"no openid scope":           func(o *console.OIDC) { o.Scope = "profile" },
		"scope only like openid":    func(o *console.OIDC) { o.Scope = "openidx" },
		"relative token endpoint":   func(o *console.OIDC) { o.TokenEndpoint = "/token" },
		"javascript authorization":  func(o *console.OIDC) { o.AuthorizationEndpoint = "javascript:alert(1)" },
		"no issuer":                 func(o *console.OIDC) { o.Issuer = "" },
		"end session with fragment": func(o *console.OIDC) { o.EndSessionEndpoint = "http://h/logout#x" },
	}
	for name, alter := range tests {
		t.Run(name, func(t *testing.T) {
			o := validOIDC()
			alter(o)
			if _, err := console.New(console.Config{OIDC: o}); err == nil {
				t.Errorf("New accepted %+v", o)
			}
		})
	}
}

// TestDiscover reads the dev issuer's discovery document, and refuses
// documents that name another issuer, lack the endpoints or offer no S256.
func TestDiscover(t *testing.T) {
	iss, stop, err := issuer.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	o, err := console.Discover(context.Background(), nil, iss.URL(), "saga-console", "")
	if err != nil {
		t.Fatal(err)
	}
	want := console.OIDC{Issuer: iss.URL(), ClientID: "saga-console", Scope: "openid",
		AuthorizationEndpoint: iss.URL() + "/authorize", TokenEndpoint: iss.URL() + "/token", EndSessionEndpoint: iss.URL() + "/logout"}
	if *o != want {
		t.Errorf("Discover = %+v, want %+v", *o, want)
	}

	for name, doc := range map[string]func(base string) map[string]any{
		"another issuer": func(base string) map[string]any {
			return map[string]any{"issuer": "http://evil.example", "authorization_endpoint": base + "/a", "token_endpoint": base + "/t"}
		},
		"trailing slash": func(base string) map[string]any {
			return map[string]any{"issuer": base + "/", "authorization_endpoint": base + "/a", "token_endpoint": base + "/t"}
		},
		"no token endpoint": func(base string) map[string]any {
			return map[string]any{"issuer": base, "authorization_endpoint": base + "/a"}
		},
		"plain PKCE only": func(base string) map[string]any {
			return map[string]any{"issuer": base, "authorization_endpoint": base + "/a", "token_endpoint": base + "/t", "code_challenge_methods_supported": []string{"plain"}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(doc(srv.URL))
			}))
			defer srv.Close()
			if o, err := console.Discover(context.Background(), nil, srv.URL, "saga-console", ""); err == nil {
				t.Errorf("Discover = %+v, want an error", o)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if _, err := console.Discover(context.Background(), nil, srv.URL, "saga-console", ""); err == nil {
		t.Errorf("Discover of a 404 = nil error")
	}
}
