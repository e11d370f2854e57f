package issuer_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// start serves a fresh issuer on loopback for the test's lifetime.
func start(t testing.TB) *issuer.Issuer {
	t.Helper()
	iss, stop, err := issuer.Start("")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(stop)
	return iss
}

// verifier returns an Authenticator that trusts iss for audience aud.
func verifier(t testing.TB, issuerURL, aud string) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(context.Background(), auth.Config{
		Issuer: issuerURL, Audience: aud,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("auth.New(%s): %v", issuerURL, err)
	}
	return a
}

func TestNewRejectsBadURL(t *testing.T) {
	tests := []string{"", "realms/dev", "ftp://host/x", "http://", "http://host/x?q=1", "http://host/x#f", "http://a b"}
	for _, u := range tests {
		t.Run(u, func(t *testing.T) {
			if _, err := issuer.New(u); err == nil {
				t.Errorf("New(%q) error = nil, want an error", u)
			}
		})
	}
}

func TestNewTrimsTrailingSlash(t *testing.T) {
	iss, err := issuer.New("http://127.0.0.1:1/realms/dev/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := iss.URL(), "http://127.0.0.1:1/realms/dev"; got != want {
		t.Errorf("URL() = %q, want %q", got, want)
	}
}

// tokenResponse is the /token success or error body.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func postToken(t testing.TB, iss *issuer.Issuer, form url.Values) (int, tokenResponse) {
	t.Helper()
	resp, err := http.PostForm(iss.URL()+"/token", form)
	if err != nil {
		t.Fatalf("POST /token: %v", err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatalf("decoding /token response: %v", err)
	}
	return resp.StatusCode, tr
}

func TestTokenEndpoint(t *testing.T) {
	iss := start(t)
	tests := []struct {
		name      string
		form      url.Values
		aud       string // audience the verifier expects
		wantErr   string // OAuth error code; "" = success
		wantName  string
		wantRoles []string
		wantTTL   int
	}{
		{"sub only", url.Values{"sub": {"alice"}}, issuer.DefaultAudience, "", "alice", []string{}, 3600},
		{"roles repeated and comma-separated", url.Values{"sub": {"op"}, "roles": {"saga-operator, viewer", "x"}, "grant_type": {"client_credentials"}},
			issuer.DefaultAudience, "", "op", []string{"saga-operator", "viewer", "x"}, 3600},
		{"client_id as audience, name, ttl", url.Values{"sub": {"u1"}, "client_id": {"deals"}, "name": {"Ann"}, "email": {"a@x"}, "ttl": {"90s"}},
			"deals", "", "Ann", []string{}, 90},
		{"audience wins over client_id", url.Values{"sub": {"u1"}, "client_id": {"deals"}, "audience": {"profile"}}, "profile", "", "u1", []string{}, 3600},
		{"missing sub", url.Values{"roles": {"a"}}, "", "invalid_request", "", nil, 0},
		{"blank sub", url.Values{"sub": {"  "}}, "", "invalid_request", "", nil, 0},
		{"empty role", url.Values{"sub": {"a"}, "roles": {"a,,b"}}, "", "invalid_request", "", nil, 0},
		{"bad ttl", url.Values{"sub": {"a"}, "ttl": {"soon"}}, "", "invalid_request", "", nil, 0},
		{"negative ttl", url.Values{"sub": {"a"}, "ttl": {"-1h"}}, "", "invalid_request", "", nil, 0},
		{"password grant", url.Values{"sub": {"a"}, "grant_type": {"password"}}, "", "unsupported_grant_type", "", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, tr := postToken(t, iss, tt.form)
			if tt.wantErr != "" {
				if status != http.StatusBadRequest || tr.Error != tt.wantErr || tr.Description == "" {
					t.Errorf("status, error = %d, %q (%q), want 400, %q with a description", status, tr.Error, tr.Description, tt.wantErr)
				}
				return
			}
			if status != http.StatusOK {
				t.Fatalf("status = %d (%s: %s), want 200", status, tr.Error, tr.Description)
			}
			if tr.TokenType != "Bearer" || tr.ExpiresIn != tt.wantTTL {
				t.Errorf("token_type, expires_in = %q, %d, want Bearer, %d", tr.TokenType, tr.ExpiresIn, tt.wantTTL)
			}
			u, err := verifier(t, iss.URL(), tt.aud).Verify(context.Background(), tr.AccessToken)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if u.Subject != tt.form.Get("sub") || u.Name != tt.wantName || !slices.Equal(u.Roles, tt.wantRoles) {
				t.Errorf("user = %+v, want subject %q, name %q, roles %q", u, tt.form.Get("sub"), tt.wantName, tt.wantRoles)
			}
		})
	}
}

func TestTokenEndpointRejectsGET(t *testing.T) {
	iss := start(t)
	resp, err := http.Get(iss.URL() + "/token?sub=alice")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusMethodNotAllowed; got != want {
		t.Errorf("GET /token status = %d, want %d", got, want)
	}
}

// TestMountedUnderPath serves an issuer with a Keycloak-like path from a
// shared mux, as the one-command dev run does.
func TestMountedUnderPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	iss, err := issuer.New(base + "/auth/realms/dev")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/auth/realms/dev/", iss.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "app", http.StatusTeapot) })
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	resp, err := http.Get(iss.URL() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKS    string   `json:"jwks_uri"`
		Token   string   `json:"token_endpoint"`
		Signing []string `json:"id_token_signing_alg_values_supported"`
	}
	err = json.NewDecoder(resp.Body).Decode(&disc)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("decoding discovery: %v", err)
	}
	if disc.Issuer != iss.URL() || disc.JWKS != iss.URL()+"/jwks" || disc.Token != iss.URL()+"/token" || !slices.Equal(disc.Signing, []string{"RS256"}) {
		t.Errorf("discovery = %+v, want issuer %s with /jwks, /token and RS256", disc, iss.URL())
	}
	tok, err := iss.Token("alice", issuer.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifier(t, iss.URL(), issuer.DefaultAudience).Verify(context.Background(), tok); err != nil {
		t.Errorf("Verify against a path-mounted issuer: %v", err)
	}
	for _, p := range []string{"/.well-known/openid-configuration", "/jwks"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.StatusCode, http.StatusTeapot; got != want {
			t.Errorf("GET %s (outside the issuer path) status = %d, want %d (served by the app)", p, got, want)
		}
	}
}

func TestRotateAndJWKS(t *testing.T) {
	iss, err := issuer.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	kids := func() []string {
		var ids []string
		for _, k := range iss.JWKS().Keys {
			if k.Algorithm != "RS256" || k.Use != "sig" || !k.IsPublic() {
				t.Errorf("JWKS key %q: alg %q use %q public %v, want RS256 sig public", k.KeyID, k.Algorithm, k.Use, k.IsPublic())
			}
			ids = append(ids, k.KeyID)
		}
		return ids
	}
	first := iss.KeyID()
	if got, want := kids(), []string{first}; !slices.Equal(got, want) {
		t.Fatalf("kids = %q, want %q", got, want)
	}
	second, err := iss.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := kids(), []string{second, first}; !slices.Equal(got, want) {
		t.Errorf("kids after Rotate = %q, want %q (current first)", got, want)
	}
	iss.DropRetiredKeys()
	if got, want := kids(), []string{second}; !slices.Equal(got, want) {
		t.Errorf("kids after DropRetiredKeys = %q, want %q", got, want)
	}
}

func TestClaims(t *testing.T) {
	iss, err := issuer.New("http://127.0.0.1:1/realms/x")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name             string
		opts             issuer.TokenOptions
		wantAud          string
		wantIat, wantExp int64
	}{
		{"defaults", issuer.TokenOptions{}, issuer.DefaultAudience, now.Unix(), now.Add(issuer.DefaultTTL).Unix()},
		{"audience and ttl", issuer.TokenOptions{Audience: "deals", TTL: time.Minute}, "deals", now.Unix(), now.Add(time.Minute).Unix()},
		{"expired", issuer.TokenOptions{TTL: -time.Minute}, issuer.DefaultAudience, now.Add(-2 * time.Minute).Unix(), now.Add(-time.Minute).Unix()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := iss.Claims("alice", tt.opts, now)
			if err != nil {
				t.Fatal(err)
			}
			if c["iss"] != iss.URL() || c["sub"] != "alice" || c["aud"] != tt.wantAud || c["azp"] != tt.wantAud || c["typ"] != "Bearer" {
				t.Errorf("claims = %v, want iss %s, sub alice, aud/azp %s, typ Bearer", c, iss.URL(), tt.wantAud)
			}
			if c["iat"] != tt.wantIat || c["exp"] != tt.wantExp {
				t.Errorf("iat, exp = %v, %v, want %d, %d", c["iat"], c["exp"], tt.wantIat, tt.wantExp)
			}
		})
	}
	if _, err := iss.Claims("", issuer.TokenOptions{}, now); err == nil {
		t.Errorf("Claims with empty subject: error = nil, want one")
	}
	a, _ := iss.Claims("a", issuer.TokenOptions{}, now)
	b, _ := iss.Claims("a", issuer.TokenOptions{}, now)
	if a["jti"] == b["jti"] {
		t.Errorf("two tokens share jti %v", a["jti"])
	}
}

func TestStartStop(t *testing.T) {
	iss, stop, err := issuer.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(iss.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q, want http://127.0.0.1:<port>", iss.URL())
	}
	stop()
	stop() // idempotent
	if resp, err := http.Get(iss.URL() + "/jwks"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /jwks after stop succeeded with %d, want a connection error", resp.StatusCode)
	}
	if _, _, err := issuer.Start("256.0.0.1:0"); err == nil {
		t.Errorf("Start on a bad address: error = nil, want one")
	}
}

// TestForeignHostRefused performs the DNS-rebinding attack on a running
// issuer: a page on evil.example, whose name resolves to 127.0.0.1, posts
// to /token asking for an operator token. The request reaches the issuer's
// socket with Host: evil.example and must be refused before a token is
// minted; the same request to the loopback name succeeds.
func TestForeignHostRefused(t *testing.T) {
	iss := start(t)
	post := func(host string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, iss.URL()+"/token", strings.NewReader("sub=mallory&roles=saga-operator,funding-operator"))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	for _, host := range []string{"evil.example", "evil.example:" + strings.TrimPrefix(iss.URL(), "http://127.0.0.1:"), "localhost.evil.example"} {
		resp, body := post(host)
		if resp.StatusCode != http.StatusMisdirectedRequest || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("POST /token with Host %q: got %d %s, want 421 problem+json", host, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "access_token") || strings.Contains(string(body), "eyJ") {
			t.Errorf("POST /token with Host %q minted a token: %s", host, body)
		}
	}
	for _, path := range []string{"/jwks", "/.well-known/openid-configuration"} {
		req, _ := http.NewRequest(http.MethodGet, iss.URL()+path, nil)
		req.Host = "evil.example"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with a foreign Host: got %d, want 421", path, resp.StatusCode)
		}
	}
	resp, body := post(strings.TrimPrefix(iss.URL(), "http://"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "access_token") {
		t.Errorf("POST /token to the loopback address: got %d %s, want 200 with a token", resp.StatusCode, body)
	}
}

func TestStartRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0"} {
		if _, stop, err := issuer.Start(addr); err == nil {
			stop()
			t.Errorf("Start(%q): got no error, want a refusal (not loopback)", addr)
		} else if !strings.Contains(err.Error(), "not loopback") {
			t.Errorf("Start(%q): got %v, want it to say the address is not loopback", addr, err)
		}
	}
}
