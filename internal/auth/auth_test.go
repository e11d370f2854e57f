package auth_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

const audience = "deals"

// quietLogger discards the authenticator's log lines.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startIssuer serves a fresh issuer on loopback for the test's lifetime.
func startIssuer(t testing.TB) *issuer.Issuer {
	t.Helper()
	iss, stop, err := issuer.Start("")
	if err != nil {
		t.Fatalf("issuer.Start: %v", err)
	}
	t.Cleanup(stop)
	return iss
}

// newAuth builds an Authenticator for iss with the test audience.
func newAuth(t testing.TB, cfg auth.Config) *auth.Authenticator {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	a, err := auth.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("auth.New(%+v): %v", cfg, err)
	}
	return a
}

// mustToken mints a token or fails the test.
func mustToken(t testing.TB, iss *issuer.Issuer, sub string, opts issuer.TokenOptions) string {
	t.Helper()
	tok, err := iss.Token(sub, opts)
	if err != nil {
		t.Fatalf("Token(%q): %v", sub, err)
	}
	return tok
}

// mustSign signs claims built by Claims and altered by edit.
func mustSign(t testing.TB, iss *issuer.Issuer, edit func(map[string]any)) string {
	t.Helper()
	c, err := iss.Claims("alice", issuer.TokenOptions{Audience: audience}, time.Now())
	if err != nil {
		t.Fatalf("Claims: %v", err)
	}
	edit(c)
	tok, err := iss.Sign(c)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

// echoUser answers 200 with the context's user as JSON.
var echoUser = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	u, ok := auth.UserFrom(r.Context())
	if !ok {
		http.Error(w, "no user in context", http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(u)
})

// response is what a test reads back from a handler.
type response struct {
	status  int
	header  http.Header
	user    auth.User
	problem auth.Problem
}

// serve runs h on a GET with the given headers and decodes the body.
func serve(t testing.TB, h http.Handler, headers map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/deals", nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header()}
	var err error
	if rec.Code == http.StatusOK {
		err = json.Unmarshal(rec.Body.Bytes(), &res.user)
	} else {
		if got, want := rec.Header().Get("Content-Type"), "application/problem+json"; got != want {
			t.Fatalf("Content-Type = %q, want %q (body %s)", got, want, rec.Body)
		}
		err = json.Unmarshal(rec.Body.Bytes(), &res.problem)
	}
	if err != nil {
		t.Fatalf("decoding body %q: %v", rec.Body, err)
	}
	return res
}

// checkRefused asserts a 401/403 response's status, challenge and problem.
func checkRefused(t testing.TB, res response, status int, code string) {
	t.Helper()
	if res.status != status {
		t.Fatalf("status = %d, want %d (problem %+v)", res.status, status, res.problem)
	}
	if got, want := res.problem.Status, status; got != want {
		t.Errorf("problem.status = %d, want %d", got, want)
	}
	if got, want := res.problem.Code, code; got != want {
		t.Errorf("problem.code = %q, want %q (detail %q)", got, want, res.problem.Detail)
	}
	if res.problem.Type != "about:blank" || res.problem.Title != http.StatusText(status) || res.problem.Detail == "" {
		t.Errorf("problem = %+v, want type about:blank, title %q and a detail", res.problem, http.StatusText(status))
	}
	wa := res.header.Get("WWW-Authenticate")
	if !strings.HasPrefix(wa, "Bearer") {
		t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", wa)
	}
	if code != "" && !strings.Contains(wa, `error="`+code+`"`) {
		t.Errorf("WWW-Authenticate = %q, want error=%q", wa, code)
	}
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// unsigned builds a compact JWS with the given header and claims and sig.
func unsigned(t testing.TB, header, claims map[string]any) (string, string) {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h), enc(c)
}

func TestMiddlewareValidToken(t *testing.T) {
	iss := startIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	tok := mustToken(t, iss, "u-123", issuer.TokenOptions{
		Audience: audience, Name: "alice", Email: "alice@example.com",
		Roles: []string{auth.RoleOperator, "viewer"},
	})
	res := serve(t, a.Middleware(echoUser), bearer(tok))
	if res.status != http.StatusOK {
		t.Fatalf("status = %d, want 200 (problem %+v)", res.status, res.problem)
	}
	want := auth.User{Subject: "u-123", Name: "alice", Email: "alice@example.com", Roles: []string{auth.RoleOperator, "viewer"}}
	if got := res.user; got.Subject != want.Subject || got.Name != want.Name || got.Email != want.Email || !slices.Equal(got.Roles, want.Roles) {
		t.Errorf("user = %+v, want %+v", got, want)
	}
	if got := res.header.Get(auth.HeaderAuthMode); got != "" {
		t.Errorf("%s = %q for a token-authenticated request, want none", auth.HeaderAuthMode, got)
	}
}

func TestVerifyClaimsMapping(t *testing.T) {
	iss := startIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	tests := []struct {
		name      string
		edit      func(map[string]any)
		wantName  string
		wantRoles []string
	}{
		{
			name: "keycloak realm, client and flat roles, deduplicated",
			edit: func(c map[string]any) {
				c["realm_access"] = map[string]any{"roles": []string{"offline_access", "viewer"}}
				c["resource_access"] = map[string]any{
					audience:  map[string]any{"roles": []string{auth.RoleOperator, "viewer"}},
					"account": map[string]any{"roles": []string{"manage-account"}},
				}
				c["roles"] = []string{"flat"}
				c["preferred_username"] = "alice"
			},
			wantName:  "alice",
			wantRoles: []string{"offline_access", "viewer", auth.RoleOperator, "flat"},
		},
		{
			name: "name claim when no preferred_username, no roles",
			edit: func(c map[string]any) {
				delete(c, "realm_access")
				c["name"] = "Alice A."
			},
			wantName:  "Alice A.",
			wantRoles: []string{},
		},
		{
			name: "aud as an array containing the audience",
			edit: func(c map[string]any) {
				c["aud"] = []string{"account", audience}
				c["realm_access"] = map[string]any{"roles": []string{"r"}}
			},
			wantRoles: []string{"r"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := a.Verify(context.Background(), mustSign(t, iss, tt.edit))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got, want := u.Name, tt.wantName; got != want {
				t.Errorf("Name = %q, want %q", got, want)
			}
			if got, want := u.Roles, tt.wantRoles; !slices.Equal(got, want) {
				t.Errorf("Roles = %q, want %q", got, want)
			}
		})
	}
}

func TestMiddlewareRefuses(t *testing.T) {
	iss := startIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	// Same issuer URL, another key: only the signature is wrong.
	impostor, err := issuer.New(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	other := startIssuer(t)
	valid := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience})
	parts := strings.Split(valid, ".")

	claims, err := iss.Claims("alice", issuer.TokenOptions{Audience: audience}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	noneH, noneC := unsigned(t, map[string]any{"alg": "none", "typ": "JWT", "kid": iss.KeyID()}, claims)
	hsH, hsC := unsigned(t, map[string]any{"alg": "HS256", "typ": "JWT", "kid": iss.KeyID()}, claims)
	mac := hmac.New(sha256.New, []byte(iss.KeyID()))
	mac.Write([]byte(hsH + "." + hsC))
	hs256 := hsH + "." + hsC + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	tampered := func() string {
		c := map[string]any{}
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		_ = json.Unmarshal(raw, &c)
		c["sub"] = "mallory"
		b, _ := json.Marshal(c)
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}()

	tests := []struct {
		name    string
		headers map[string]string
		code    string
		detail  string
	}{
		{"missing header", nil, "", "no Authorization"},
		{"dev headers ignored when dev mode is off", map[string]string{auth.HeaderDevUser: "alice", auth.HeaderDevRoles: auth.RoleOperator}, "", "no Authorization"},
		{"basic scheme", map[string]string{"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "invalid_request", "not of the form"},
		{"bearer without token", map[string]string{"Authorization": "Bearer"}, "invalid_request", "not of the form"},
		{"bearer with two words", map[string]string{"Authorization": "Bearer a b"}, "invalid_request", "not of the form"},
		{"token without scheme", map[string]string{"Authorization": valid}, "invalid_request", "not of the form"},
		{"not a jwt", bearer("not-a-jwt"), "invalid_token", "malformed jwt"},
		{"expired", bearer(mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience, TTL: -time.Hour})), "invalid_token", "expired at"},
		{"wrong issuer claim, right key", bearer(mustSign(t, iss, func(c map[string]any) { c["iss"] = "https://evil.example/realms/x" })), "invalid_token", "different provider"},
		{"token of another issuer", bearer(mustToken(t, other, "alice", issuer.TokenOptions{Audience: audience})), "invalid_token", "signature"},
		{"wrong audience", bearer(mustToken(t, iss, "alice", issuer.TokenOptions{Audience: "profile"})), "invalid_token", "expected audience"},
		{"bad signature (same iss, another key)", bearer(mustToken(t, impostor, "alice", issuer.TokenOptions{Audience: audience})), "invalid_token", "signature"},
		{"tampered payload", bearer(tampered), "invalid_token", "signature"},
		{"alg none", bearer(noneH + "." + noneC + "."), "invalid_token", "\"none\""},
		{"alg HS256", bearer(hs256), "invalid_token", "\"HS256\""},
		{"keycloak ID token used as bearer", bearer(mustSign(t, iss, func(c map[string]any) { c["typ"] = "ID" })), "invalid_token", "not an access token"},
		{"no subject", bearer(mustSign(t, iss, func(c map[string]any) { delete(c, "sub") })), "invalid_token", "no subject"},
		{"no expiry", bearer(mustSign(t, iss, func(c map[string]any) { delete(c, "exp") })), "invalid_token", "no expiry"},
		{"not yet valid", bearer(mustSign(t, iss, func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), "invalid_token", "nbf"},
		{"roles claim of the wrong type", bearer(mustSign(t, iss, func(c map[string]any) { c["roles"] = "saga-operator" })), "invalid_token", "roles"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(t, a.Middleware(echoUser), tt.headers)
			checkRefused(t, res, http.StatusUnauthorized, tt.code)
			if !strings.Contains(res.problem.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", res.problem.Detail, tt.detail)
			}
		})
	}
}

func TestRequireRole(t *testing.T) {
	iss := startIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	operator := mustToken(t, iss, "op", issuer.TokenOptions{Audience: audience, Roles: []string{auth.RoleOperator}})
	viewer := mustToken(t, iss, "viewer", issuer.TokenOptions{Audience: audience, Roles: []string{"viewer"}})
	chains := map[string]http.Handler{
		"behind Middleware": a.Middleware(a.RequireRole(auth.RoleOperator, echoUser)),
		"alone":             a.RequireRole(auth.RoleOperator, echoUser),
	}
	tests := []struct {
		name    string
		headers map[string]string
		status  int
		code    string
	}{
		{"operator", bearer(operator), http.StatusOK, ""},
		{"lacks role", bearer(viewer), http.StatusForbidden, "insufficient_scope"},
		{"no token", nil, http.StatusUnauthorized, ""},
		{"bad token", bearer("x.y.z"), http.StatusUnauthorized, "invalid_token"},
	}
	for chain, h := range chains {
		for _, tt := range tests {
			t.Run(chain+"/"+tt.name, func(t *testing.T) {
				res := serve(t, h, tt.headers)
				if tt.status == http.StatusOK {
					if res.status != http.StatusOK || res.user.Subject != "op" {
						t.Fatalf("status, subject = %d, %q, want 200, %q (problem %+v)", res.status, res.user.Subject, "op", res.problem)
					}
					return
				}
				checkRefused(t, res, tt.status, tt.code)
			})
		}
	}
}

func TestRequireRoleUsesContextUser(t *testing.T) {
	a := newAuth(t, auth.Config{DevHeader: true})
	h := a.RequireRole(auth.RoleOperator, echoUser)
	tests := []struct {
		name string
		user auth.User
		want int
	}{
		{"operator", auth.User{Subject: "op", Roles: []string{"x", auth.RoleOperator}}, http.StatusOK},
		{"role differs in case", auth.User{Subject: "op", Roles: []string{"SAGA-OPERATOR"}}, http.StatusForbidden},
		{"no roles", auth.User{Subject: "op"}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/sagas/x/retry", nil)
			req = req.WithContext(auth.WithUser(req.Context(), tt.user))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got, want := rec.Code, tt.want; got != want {
				t.Errorf("status = %d, want %d (body %s)", got, want, rec.Body)
			}
		})
	}
}

// countingIssuer serves iss's handler, counting JWKS requests.
func countingIssuer(t testing.TB) (*issuer.Issuer, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New("http://" + ln.Addr().String() + "/realms/rotation")
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int64
	inner := iss.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/jwks") {
			fetches.Add(1)
		}
		inner.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return iss, &fetches
}

// fakeClock is a settable clock for the JWKS refetch limit.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.t.Add(int64(d)) }

func TestKeyRotation(t *testing.T) {
	iss, fetches := countingIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	clk := newFakeClock()
	auth.SetJWKSClock(a, clk.Now)
	h := a.Middleware(echoUser)
	ok := func(tok, sub string) {
		t.Helper()
		res := serve(t, h, bearer(tok))
		if res.status != http.StatusOK || res.user.Subject != sub {
			t.Fatalf("status, subject = %d, %q, want 200, %q (problem %+v)", res.status, res.user.Subject, sub, res.problem)
		}
	}
	before := mustToken(t, iss, "before", issuer.TokenOptions{Audience: audience})
	ok(before, "before")
	ok(before, "before")
	if got, want := fetches.Load(), int64(1); got != want {
		t.Fatalf("JWKS fetches after two verifications = %d, want %d (keys cached)", got, want)
	}
	oldKid := iss.KeyID()
	newKid, err := iss.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if newKid == oldKid {
		t.Fatalf("Rotate kept key id %q", oldKid)
	}
	after := mustToken(t, iss, "after", issuer.TokenOptions{Audience: audience})
	clk.Advance(auth.DefaultJWKSRefetchInterval) // the last fetch is old enough
	ok(after, "after")
	if got, want := fetches.Load(), int64(2); got != want {
		t.Errorf("JWKS fetches after rotation = %d, want %d (one refetch for the new kid)", got, want)
	}
	ok(before, "before") // the retired key is still published and cached
	iss.DropRetiredKeys()
	if got, want := len(iss.JWKS().Keys), 1; got != want {
		t.Errorf("JWKS keys after DropRetiredKeys = %d, want %d", got, want)
	}
}

func TestDevHeaderMode(t *testing.T) {
	iss := startIssuer(t)
	tok := mustToken(t, iss, "token-user", issuer.TokenOptions{Audience: audience, Roles: []string{"r"}})
	withIssuer := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience, DevHeader: true})
	noIssuer := newAuth(t, auth.Config{DevHeader: true})
	tests := []struct {
		name      string
		a         *auth.Authenticator
		headers   map[string]string
		status    int
		code      string
		wantSub   string
		wantRoles []string
		wantMode  string
	}{
		{"header user with roles", noIssuer, map[string]string{auth.HeaderDevUser: "alice", auth.HeaderDevRoles: " saga-operator , viewer,viewer"}, http.StatusOK, "", "alice", []string{auth.RoleOperator, "viewer"}, "dev-header"},
		{"header user without roles", noIssuer, map[string]string{auth.HeaderDevUser: "bob"}, http.StatusOK, "", "bob", []string{}, "dev-header"},
		{"no headers at all", noIssuer, nil, http.StatusUnauthorized, "", "", nil, ""},
		{"empty role name", noIssuer, map[string]string{auth.HeaderDevUser: "alice", auth.HeaderDevRoles: "a,,b"}, http.StatusUnauthorized, "invalid_request", "", nil, ""},
		{"token without issuer configured", noIssuer, bearer(tok), http.StatusUnauthorized, "invalid_token", "", nil, ""},
		{"token still verified with issuer", withIssuer, bearer(tok), http.StatusOK, "", "token-user", []string{"r"}, ""},
		{"bad token is not rescued by dev header", withIssuer, map[string]string{"Authorization": "Bearer x.y.z", auth.HeaderDevUser: "alice"}, http.StatusUnauthorized, "invalid_token", "", nil, ""},
		{"header user with issuer configured", withIssuer, map[string]string{auth.HeaderDevUser: "carol"}, http.StatusOK, "", "carol", []string{}, "dev-header"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := serve(t, tt.a.Middleware(echoUser), tt.headers)
			if tt.status != http.StatusOK {
				checkRefused(t, res, tt.status, tt.code)
				return
			}
			if res.status != http.StatusOK {
				t.Fatalf("status = %d, want 200 (problem %+v)", res.status, res.problem)
			}
			if got, want := res.user.Subject, tt.wantSub; got != want {
				t.Errorf("Subject = %q, want %q", got, want)
			}
			if got, want := res.user.Roles, tt.wantRoles; !slices.Equal(got, want) {
				t.Errorf("Roles = %q, want %q", got, want)
			}
			if got, want := res.header.Get(auth.HeaderAuthMode), tt.wantMode; got != want {
				t.Errorf("%s = %q, want %q", auth.HeaderAuthMode, got, want)
			}
		})
	}
}

func TestDevHeaderModeWarnsLoudly(t *testing.T) {
	var buf strings.Builder
	newAuth(t, auth.Config{DevHeader: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "DEV HEADER MODE") {
		t.Errorf("log = %q, want a WARN line about dev header mode", got)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	iss := startIssuer(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String()
	closed.Close()
	tests := []struct {
		name string
		cfg  auth.Config
		want string
	}{
		{"zero config", auth.Config{}, "Issuer is required"},
		{"audience and skip", auth.Config{Issuer: iss.URL(), Audience: "a", SkipAudience: true}, "choose one"},
		{"no audience", auth.Config{Issuer: iss.URL()}, "Audience is required"},
		{"relative issuer", auth.Config{Issuer: "realms/x", Audience: "a"}, "absolute http(s) URL"},
		{"issuer not reachable", auth.Config{Issuer: deadURL, Audience: "a"}, "discovering OIDC issuer"},
		{"issuer URL differs from discovered", auth.Config{Issuer: iss.URL() + "/", Audience: "a"}, "discovering OIDC issuer"},
		{"no discovery document", auth.Config{Issuer: iss.URL() + "/realms/none", Audience: "a"}, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quietLogger()
			_, err := auth.New(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSkipAudience(t *testing.T) {
	iss := startIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), SkipAudience: true})
	tok := mustSign(t, iss, func(c map[string]any) {
		c["aud"] = "anything"
		c["azp"] = "frontend"
		c["resource_access"] = map[string]any{"frontend": map[string]any{"roles": []string{"client-role"}}}
	})
	u, err := a.Verify(context.Background(), tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Without a configured audience, client roles come from the azp client.
	if got, want := u.Roles, []string{"client-role"}; !slices.Equal(got, want) {
		t.Errorf("Roles = %q, want %q", got, want)
	}
}

func TestUserContext(t *testing.T) {
	if _, ok := auth.UserFrom(context.Background()); ok {
		t.Errorf("UserFrom(empty context) ok = true, want false")
	}
	u := auth.User{Subject: "s", Roles: []string{"a"}}
	got, ok := auth.UserFrom(auth.WithUser(context.Background(), u))
	if !ok || got.Subject != "s" || !got.HasRole("a") || got.HasRole("b") {
		t.Errorf("UserFrom(WithUser(%+v)) = %+v, %v", u, got, ok)
	}
}

// TestJWKSRefetchLimited sends what an attacker would: many tokens whose
// signature is wrong under the issuer's real key id, then many signed by
// an impostor's keys (unknown key ids). Each is refused; the first kind
// never makes the service fetch the JWKS again, the second at most once per
// refetch interval. The fetches are counted at the in-process issuer.
func TestJWKSRefetchLimited(t *testing.T) {
	iss, fetches := countingIssuer(t)
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience})
	clk := newFakeClock()
	auth.SetJWKSClock(a, clk.Now)
	h := a.Middleware(echoUser)
	good := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience})
	if res := serve(t, h, bearer(good)); res.status != http.StatusOK {
		t.Fatalf("valid token: got %d %+v, want 200", res.status, res.problem)
	}
	if got, want := fetches.Load(), int64(1); got != want {
		t.Fatalf("JWKS fetches after the first token: got %d, want %d", got, want)
	}

	// 50 tokens under the real kid with a broken signature.
	parts := strings.Split(good, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		bad := append([]byte(nil), sig...)
		bad[i%len(bad)] ^= 0x01
		forged := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(bad)
		checkRefused(t, serve(t, h, bearer(forged)), http.StatusUnauthorized, "invalid_token")
	}
	if got, want := fetches.Load(), int64(1); got != want {
		t.Errorf("JWKS fetches after 50 bad signatures under a known key id: got %d, want %d (no refetch)", got, want)
	}

	// 50 tokens signed by another issuer's keys (same iss claim, unknown kids).
	impostor, err := issuer.New(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	base := strings.Split(mustToken(t, impostor, "mallory", issuer.TokenOptions{Audience: audience, Roles: []string{auth.RoleOperator}}), ".")
	n := 0
	forge := func() string { // the impostor's token under a new unknown kid each time
		n++
		hdr, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": fmt.Sprintf("forged-%d", n)})
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(hdr) + "." + base[1] + "." + base[2]
	}
	checkRefused(t, serve(t, h, bearer(strings.Join(base, "."))), http.StatusUnauthorized, "invalid_token")
	for range 50 {
		checkRefused(t, serve(t, h, bearer(forge())), http.StatusUnauthorized, "invalid_token")
	}
	if got, want := fetches.Load(), int64(1); got != want {
		t.Errorf("JWKS fetches after 50 unknown key ids within the interval: got %d, want %d", got, want)
	}
	clk.Advance(auth.DefaultJWKSRefetchInterval)
	for range 50 {
		checkRefused(t, serve(t, h, bearer(forge())), http.StatusUnauthorized, "invalid_token")
	}
	if got, want := fetches.Load(), int64(2); got != want {
		t.Errorf("JWKS fetches after 50 more unknown key ids once the interval passed: got %d, want %d (one refetch)", got, want)
	}
	// The genuine token still verifies from the cache.
	if res := serve(t, h, bearer(good)); res.status != http.StatusOK {
		t.Errorf("valid token after the attack: got %d %+v, want 200", res.status, res.problem)
	}
	if got, want := fetches.Load(), int64(2); got != want {
		t.Errorf("JWKS fetches after a valid token: got %d, want %d", got, want)
	}
}

func TestNewRefusesNegativeRefetchInterval(t *testing.T) {
	iss := startIssuer(t)
	if _, err := auth.New(context.Background(), auth.Config{Issuer: iss.URL(), Audience: audience, Logger: quietLogger(),
		JWKSRefetchInterval: -time.Second}); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("auth.New with a negative JWKSRefetchInterval: got %v, want an error saying it is negative", err)
	}
}
