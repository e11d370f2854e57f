package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// cachedAuth is an Authenticator for iss whose verifier and token cache
// read clk.
func cachedAuth(t *testing.T, iss *issuer.Issuer, ttl time.Duration, clk *fakeClock) *auth.Authenticator {
	t.Helper()
	a := newAuth(t, auth.Config{Issuer: iss.URL(), Audience: audience, TokenCacheTTL: ttl})
	auth.SetClock(a, clk.Now)
	return a
}

// nowClock is a fakeClock at the real time (tokens are minted with it).
func nowClock() *fakeClock {
	c := newFakeClock()
	c.t.Store(time.Now().UnixNano())
	return c
}

func TestTokenCacheAnswersASessionsToken(t *testing.T) {
	iss := startIssuer(t)
	a := cachedAuth(t, iss, 0, nowClock())
	h := a.Middleware(echoUser)
	tok := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience, Roles: []string{auth.RoleOperator}})
	for i := range 3 {
		res := serve(t, h, bearer(tok))
		if res.status != http.StatusOK || res.user.Subject != "alice" || !res.user.HasRole(auth.RoleOperator) {
			t.Fatalf("request %d: status %d, user %+v, want 200 alice with %s", i, res.status, res.user, auth.RoleOperator)
		}
	}
	if got := auth.TokenCacheLen(a); got != 1 {
		t.Errorf("cached tokens after three requests with one token = %d, want 1", got)
	}
}

// TestTokenCacheAttacks sends, after a valid token was verified and cached,
// the tokens an attacker would build from it: each is refused as it is
// without a cache, and none enters the cache.
func TestTokenCacheAttacks(t *testing.T) {
	iss := startIssuer(t)
	impostor, err := issuer.New(iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	a := cachedAuth(t, iss, 0, nowClock())
	h := a.Middleware(echoUser)
	valid := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience})
	if res := serve(t, h, bearer(valid)); res.status != http.StatusOK {
		t.Fatalf("valid token: status %d, want 200", res.status)
	}
	parts := strings.Split(valid, ".")
	withClaims := func(edit func(map[string]any)) string {
		raw, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		c := map[string]any{}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		edit(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
	}
	sig := []byte(parts[2])
	sig[len(sig)/2] ^= 1
	attacks := []struct{ name, token string }{
		{"cached token's signature on another subject", withClaims(func(c map[string]any) { c["sub"] = "mallory" })},
		{"cached token's signature with an operator role", withClaims(func(c map[string]any) { c["roles"] = []string{auth.RoleOperator} })},
		{"cached token with a flipped signature byte", parts[0] + "." + parts[1] + "." + string(sig)},
		{"cached token with trailing bytes", valid + "x"},
		{"same claims signed by another key", mustToken(t, impostor, "alice", issuer.TokenOptions{Audience: audience})},
	}
	for _, at := range attacks {
		t.Run(at.name, func(t *testing.T) {
			res := serve(t, h, bearer(at.token))
			checkRefused(t, res, http.StatusUnauthorized, "invalid_token")
		})
	}
	if got := auth.TokenCacheLen(a); got != 1 {
		t.Errorf("cached tokens after %d refused ones = %d, want 1 (only the valid token)", len(attacks), got)
	}
}

// TestTokenCacheNeverOutlivesTheToken: a token cached with a TTL longer
// than its life is refused once it expires.
func TestTokenCacheNeverOutlivesTheToken(t *testing.T) {
	iss := startIssuer(t)
	clk := nowClock()
	a := cachedAuth(t, iss, time.Hour, clk)
	h := a.Middleware(echoUser)
	tok := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience, TTL: time.Minute})
	if res := serve(t, h, bearer(tok)); res.status != http.StatusOK {
		t.Fatalf("fresh token: status %d, want 200", res.status)
	}
	clk.Advance(2 * time.Minute)
	res := serve(t, h, bearer(tok))
	checkRefused(t, res, http.StatusUnauthorized, "invalid_token")
	if !strings.Contains(res.problem.Detail, "expired at") {
		t.Errorf("detail = %q, want it to say the token expired", res.problem.Detail)
	}
}

// TestTokenCacheTTL: a token signed by a key the issuer withdrew stays
// accepted from the cache until its entry's TTL passes (the delay the
// cache adds), then it is verified again and refused.
func TestTokenCacheTTL(t *testing.T) {
	iss := startIssuer(t)
	clk := nowClock()
	a := cachedAuth(t, iss, 30*time.Second, clk)
	auth.SetJWKSClock(a, clk.Now)
	h := a.Middleware(echoUser)
	old := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience, TTL: time.Hour})
	if res := serve(t, h, bearer(old)); res.status != http.StatusOK {
		t.Fatalf("token of the current key: status %d, want 200", res.status)
	}
	if _, err := iss.Rotate(); err != nil {
		t.Fatal(err)
	}
	iss.DropRetiredKeys() // the old key is withdrawn from the JWKS
	clk.Advance(auth.DefaultJWKSRefetchInterval)
	if res := serve(t, h, bearer(mustToken(t, iss, "bob", issuer.TokenOptions{Audience: audience, TTL: time.Hour}))); res.status != http.StatusOK {
		t.Fatalf("token of the new key: status %d, want 200 (JWKS refetched)", res.status)
	}
	if res := serve(t, h, bearer(old)); res.status != http.StatusOK || res.user.Subject != "alice" {
		t.Fatalf("withdrawn key's token within the TTL: status %d, user %+v, want 200 alice from the cache", res.status, res.user)
	}
	clk.Advance(25 * time.Second) // 35 s after alice's token was verified
	checkRefused(t, serve(t, h, bearer(old)), http.StatusUnauthorized, "invalid_token")
}

func TestTokenCacheIsBounded(t *testing.T) {
	iss := startIssuer(t)
	a := cachedAuth(t, iss, 0, nowClock())
	auth.SetTokenCacheSize(a, 4)
	h := a.Middleware(echoUser)
	for i := range 10 {
		sub := fmt.Sprintf("user-%d", i)
		if res := serve(t, h, bearer(mustToken(t, iss, sub, issuer.TokenOptions{Audience: audience}))); res.status != http.StatusOK || res.user.Subject != sub {
			t.Fatalf("%s: status %d, user %+v", sub, res.status, res.user)
		}
		if got := auth.TokenCacheLen(a); got > 4 {
			t.Fatalf("cached tokens = %d, want at most 4", got)
		}
	}
}

func TestTokenCacheDisabled(t *testing.T) {
	iss := startIssuer(t)
	a := cachedAuth(t, iss, -1, nowClock())
	tok := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience})
	if res := serve(t, a.Middleware(echoUser), bearer(tok)); res.status != http.StatusOK {
		t.Fatalf("status %d, want 200", res.status)
	}
	if got := auth.TokenCacheLen(a); got != -1 {
		t.Errorf("TokenCacheLen = %d, want -1 (no cache)", got)
	}
}

// TestTokenCacheCopiesRoles: a caller changing the roles it got cannot
// change what the next request with the token gets.
func TestTokenCacheCopiesRoles(t *testing.T) {
	iss := startIssuer(t)
	a := cachedAuth(t, iss, 0, nowClock())
	tok := mustToken(t, iss, "alice", issuer.TokenOptions{Audience: audience, Roles: []string{auth.RoleViewer}})
	u, err := a.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	u.Roles[0] = auth.RoleOperator
	u2, err := a.Verify(t.Context(), tok) // from the cache
	if err != nil {
		t.Fatal(err)
	}
	u2.Roles = append(u2.Roles, auth.RoleFundingOperator)
	u3, err := a.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{auth.RoleViewer}; !slices.Equal(u3.Roles, want) {
		t.Errorf("roles = %v, want %v", u3.Roles, want)
	}
}
