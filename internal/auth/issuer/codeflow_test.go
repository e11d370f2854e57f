package issuer_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portfolio-counselor/sagamachine/internal/auth"
	"github.com/portfolio-counselor/sagamachine/internal/auth/issuer"
)

// The console's registration in these tests.
const (
	clientID    = "saga-console"
	consoleURL  = "http://127.0.0.1:18080"
	redirectURI = consoleURL + "/console/"
	signedOut   = consoleURL + "/console/signed-out.html"
)

// flowIssuer starts an issuer with the console registered and three
// accounts: olga (saga-operator), vera (saga-viewer), gus (no role).
func flowIssuer(t *testing.T) *issuer.Issuer {
	t.Helper()
	iss := start(t)
	if err := iss.RegisterClient(issuer.Client{
		ID: clientID, RedirectURIs: []string{redirectURI}, PostLogoutRedirectURIs: []string{signedOut},
		WebOrigins: []string{consoleURL},
	}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []issuer.User{
		{Username: "olga", Password: "olga-secret", Name: "Olga Operator", Email: "olga@example.test", Roles: []string{auth.RoleOperator}},
		{Username: "vera", Password: "vera-secret", Roles: []string{auth.RoleViewer}},
		{Username: "gus", Password: "gus-secret"},
	} {
		if err := iss.AddUser(u); err != nil {
			t.Fatal(err)
		}
	}
	return iss
}

// browser is an HTTP client with cookies that does not follow redirects.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// pkce returns a verifier and its S256 challenge.
func pkce(seed string) (verifier, challenge string) {
	verifier = strings.Repeat(seed, 43/len(seed)+1)[:43]
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authParams are a valid authorization request with challenge.
func authParams(challenge string) url.Values {
	return url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirectURI},
		"scope": {"openid"}, "state": {"st-1"}, "nonce": {"n-1"},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
}

type page struct {
	status int
	header http.Header
	body   string
}

func do(t *testing.T, c *http.Client, req *http.Request) page {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return page{resp.StatusCode, resp.Header, string(b)}
}

func get(t *testing.T, c *http.Client, u string) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

// post sends a form as the login page's own form would (Origin = issuer).
func post(t *testing.T, c *http.Client, u, origin string, form url.Values) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	return do(t, c, req)
}

var hiddenField = regexp.MustCompile(`name="(request|csrf)" value="([^"]*)"`)

// loginForm reads the hidden fields of a login page.
func loginForm(t *testing.T, p page) url.Values {
	t.Helper()
	if p.status != http.StatusOK || !strings.Contains(p.body, `id="login-form"`) {
		t.Fatalf("want the login page, got %d:\n%s", p.status, p.body)
	}
	f := url.Values{}
	for _, m := range hiddenField.FindAllStringSubmatch(p.body, -1) {
		f.Set(m[1], html.UnescapeString(m[2]))
	}
	if f.Get("request") == "" || f.Get("csrf") == "" {
		t.Fatalf("login page lacks request or csrf:\n%s", p.body)
	}
	return f
}

// callback checks a redirect to the console and returns its query.
func callback(t *testing.T, p page) url.Values {
	t.Helper()
	loc := p.header.Get("Location")
	if (p.status != http.StatusFound && p.status != http.StatusSeeOther) || !strings.HasPrefix(loc, redirectURI+"?") {
		t.Fatalf("want a redirect to %s, got %d Location %q:\n%s", redirectURI, p.status, loc, p.body)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// signIn runs authorize + login for user and returns the code.
func signIn(t *testing.T, iss *issuer.Issuer, c *http.Client, user, password, challenge string) string {
	t.Helper()
	f := loginForm(t, get(t, c, iss.URL()+"/authorize?"+authParams(challenge).Encode()))
	f.Set("username", user)
	f.Set("password", password)
	q := callback(t, post(t, c, iss.URL()+"/login", iss.URL(), f))
	if q.Get("code") == "" || q.Get("state") != "st-1" || q.Get("iss") != iss.URL() {
		t.Fatalf("callback query = %v, want code, state st-1 and iss %s", q, iss.URL())
	}
	return q.Get("code")
}

type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
}

// exchange posts a token request from the console's origin.
func exchange(t *testing.T, iss *issuer.Issuer, origin string, form url.Values) (int, tokenAnswer, http.Header) {
	t.Helper()
	p := post(t, http.DefaultClient, iss.URL()+"/token", origin, form)
	var a tokenAnswer
	if err := json.Unmarshal([]byte(p.body), &a); err != nil {
		t.Fatalf("token answer %d is not JSON: %s", p.status, p.body)
	}
	return p.status, a, p.header
}

func codeForm(code, verifier string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI},
		"client_id": {clientID}, "code_verifier": {verifier}}
}

// claims decodes a JWT's payload (the signature is checked elsewhere).
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCodeFlow signs in through the login page, redeems the code with the
// PKCE verifier from the console's origin, checks that the services accept
// the access token, that a second authorization is silent (session), that
// prompt=login asks again, and that refresh tokens rotate.
func TestCodeFlow(t *testing.T) {
	iss := flowIssuer(t)
	c := browser(t)
	verifier, challenge := pkce("abc")

	first := get(t, c, iss.URL()+"/authorize?"+authParams(challenge).Encode())
	loginForm(t, first)
	csp := first.header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self' " + consoleURL} {
		if !strings.Contains(csp, want) {
			t.Errorf("login page CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "script-src") || strings.Contains(first.body, "<script") {
		t.Errorf("the login page allows or has scripts: CSP %q", csp)
	}
	if first.header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("X-Frame-Options = %q, want DENY", first.header.Get("X-Frame-Options"))
	}
	binding := findCookie(first.header, issuer.LoginCookie)
	if binding == nil || !binding.HttpOnly || binding.SameSite != http.SameSiteStrictMode {
		t.Errorf("login binding cookie = %+v, want HttpOnly SameSite=Strict", binding)
	}

	f := loginForm(t, first)
	f.Set("username", "olga")
	f.Set("password", "olga-secret")
	answer := post(t, c, iss.URL()+"/login", iss.URL(), f)
	q := callback(t, answer)
	sess := findCookie(answer.header, issuer.SessionCookie)
	if sess == nil || !sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode {
		t.Errorf("session cookie = %+v, want HttpOnly SameSite=Lax", sess)
	}
	if q.Get("state") != "st-1" || q.Get("iss") != iss.URL() || q.Get("code") == "" {
		t.Fatalf("callback = %v", q)
	}

	status, tok, h := exchange(t, iss, consoleURL, codeForm(q.Get("code"), verifier))
	if status != http.StatusOK || tok.TokenType != "Bearer" || tok.AccessToken == "" || tok.IDToken == "" || tok.RefreshToken == "" {
		t.Fatalf("exchange = %d %+v", status, tok)
	}
	if got := h.Get("Access-Control-Allow-Origin"); got != consoleURL {
		t.Errorf("Access-Control-Allow-Origin = %q, want %s", got, consoleURL)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("token answer Cache-Control = %q, want no-store", h.Get("Cache-Control"))
	}
	if tok.ExpiresIn != int(issuer.DefaultCodeFlowTTL/time.Second) {
		t.Errorf("expires_in = %d, want %d", tok.ExpiresIn, int(issuer.DefaultCodeFlowTTL/time.Second))
	}
	// The services accept the access token as any Keycloak token.
	u, err := verifier0(t, iss).Verify(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatalf("the access token is refused: %v", err)
	}
	if u.Subject != "olga" || u.Name != "olga" || u.Email != "olga@example.test" || !u.HasRole(auth.RoleOperator) {
		t.Errorf("user = %+v, want olga with saga-operator", u)
	}
	at := claims(t, tok.AccessToken)
	if at["azp"] != clientID || at["aud"] != issuer.DefaultAudience || at["typ"] != "Bearer" {
		t.Errorf("access token azp/aud/typ = %v/%v/%v", at["azp"], at["aud"], at["typ"])
	}
	id := claims(t, tok.IDToken)
	if id["nonce"] != "n-1" || id["aud"] != clientID || id["typ"] != "ID" || id["sub"] != "olga" || id["sid"] == "" {
		t.Errorf("ID token = %v, want nonce n-1, aud %s, typ ID, sub olga, a sid", id, clientID)
	}
	// The ID token is no access token for the services.
	if _, err := verifier0(t, iss).Verify(context.Background(), tok.IDToken); err == nil {
		t.Errorf("the ID token was accepted as an access token")
	}

	// Silent sign-in through the session; prompt=login asks again.
	if q := callback(t, get(t, c, iss.URL()+"/authorize?"+authParams(challenge).Encode())); q.Get("code") == "" {
		t.Errorf("a second authorization with a session gave %v, want a code", q)
	}
	p := authParams(challenge)
	p.Set("prompt", "login")
	loginForm(t, get(t, c, iss.URL()+"/authorize?"+p.Encode()))

	// Refresh tokens rotate; the new access token is accepted.
	rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {clientID}}
	status, r1, _ := exchange(t, iss, consoleURL, rf)
	if status != http.StatusOK || r1.AccessToken == "" || r1.RefreshToken == "" || r1.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh = %d %+v, want new access and refresh tokens", status, r1)
	}
	if _, err := verifier0(t, iss).Verify(context.Background(), r1.AccessToken); err != nil {
		t.Errorf("the refreshed access token is refused: %v", err)
	}
	if iss.Sessions() != 1 {
		t.Errorf("sessions = %d, want 1", iss.Sessions())
	}
}

// verifier0 is a services' Authenticator for iss (audience saga-machine).
func verifier0(t *testing.T, iss *issuer.Issuer) *auth.Authenticator {
	t.Helper()
	return verifier(t, iss.URL(), issuer.DefaultAudience)
}

func findCookie(h http.Header, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// TestAuthorizeRefusesForeignRedirect: an unknown client or a redirect URI
// that is not registered exactly is answered with an error page at the
// issuer, never by redirecting (the attacker's URI would get the code).
func TestAuthorizeRefusesForeignRedirect(t *testing.T) {
	iss := flowIssuer(t)
	_, challenge := pkce("xyz")
	tests := []struct{ name, client, redirect string }{
		{"attacker's site", clientID, "http://evil.example/console/"},
		{"path appended", clientID, redirectURI + "evil"},
		{"sub-path", clientID, redirectURI + "../evil/"},
		{"query added", clientID, redirectURI + "?next=http://evil.example"},
		{"other port", clientID, "http://127.0.0.1:18081/console/"},
		{"localhost instead of 127.0.0.1", clientID, "http://localhost:18080/console/"},
		{"https instead of http", clientID, "https://127.0.0.1:18080/console/"},
		{"no slash", clientID, consoleURL + "/console"},
		{"missing", clientID, ""},
		{"unknown client", "evil-client", redirectURI},
		{"no client", "", redirectURI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authParams(challenge)
			p.Set("client_id", tt.client)
			p.Set("redirect_uri", tt.redirect)
			got := get(t, browser(t), iss.URL()+"/authorize?"+p.Encode())
			if got.status != http.StatusBadRequest || got.header.Get("Location") != "" {
				t.Errorf("status %d Location %q, want 400 and no redirect", got.status, got.header.Get("Location"))
			}
			if strings.Contains(got.body, "login-form") {
				t.Errorf("the login page was shown for a bad client or redirect URI")
			}
		})
	}
	// A repeated parameter is refused too (which one would count?).
	dup := authParams(challenge).Encode() + "&redirect_uri=" + url.QueryEscape("http://evil.example/")
	if got := get(t, browser(t), iss.URL()+"/authorize?"+dup); got.status != http.StatusBadRequest || got.header.Get("Location") != "" {
		t.Errorf("repeated redirect_uri: %d Location %q, want 400 without redirect", got.status, got.header.Get("Location"))
	}
}

// TestAuthorizeRequiresPKCES256 sends requests that a registered client
// could be tricked into (or an attacker could craft): each is answered on
// the registered redirect URI with an error and no code; plain PKCE, no
// PKCE, no state and an implicit-flow response_type are refused.
func TestAuthorizeRequiresPKCES256(t *testing.T) {
	iss := flowIssuer(t)
	_, challenge := pkce("xyz")
	tests := []struct {
		name      string
		set       map[string]string
		wantError string
	}{
		{"plain PKCE", map[string]string{"code_challenge_method": "plain", "code_challenge": strings.Repeat("a", 43)}, "invalid_request"},
		{"no method (defaults to plain)", map[string]string{"code_challenge_method": ""}, "invalid_request"},
		{"no challenge", map[string]string{"code_challenge": ""}, "invalid_request"},
		{"short challenge", map[string]string{"code_challenge": "abc"}, "invalid_request"},
		{"challenge with bad characters", map[string]string{"code_challenge": strings.Repeat("+", 43)}, "invalid_request"},
		{"implicit flow", map[string]string{"response_type": "token"}, "unsupported_response_type"},
		{"hybrid flow", map[string]string{"response_type": "code id_token"}, "unsupported_response_type"},
		{"no openid scope", map[string]string{"scope": "profile"}, "invalid_scope"},
		{"no state", map[string]string{"state": ""}, "invalid_request"},
		{"huge state", map[string]string{"state": strings.Repeat("s", 513)}, "invalid_request"},
		{"unknown prompt", map[string]string{"prompt": "consent"}, "invalid_request"},
		{"prompt=none without a session", map[string]string{"prompt": "none"}, "login_required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authParams(challenge)
			for k, v := range tt.set {
				p.Set(k, v)
			}
			got := get(t, browser(t), iss.URL()+"/authorize?"+p.Encode())
			if got.status != http.StatusFound {
				t.Fatalf("status %d, want 302 to the redirect URI:\n%s", got.status, got.body)
			}
			q := callback(t, got)
			if q.Get("error") != tt.wantError || q.Get("code") != "" {
				t.Errorf("callback = %v, want error %s and no code", q, tt.wantError)
			}
			if tt.set["state"] == "" && q.Get("state") != "st-1" && tt.name != "no state" && tt.name != "huge state" {
				t.Errorf("state = %q, want st-1 passed back", q.Get("state"))
			}
		})
	}
	if iss.Sessions() != 0 {
		t.Errorf("sessions = %d after refused requests, want 0", iss.Sessions())
	}
}

// TestLoginFormAttacks posts the login form the ways an attacker would:
// without the page's browser cookie (login CSRF from another browser or
// page), with a wrong CSRF token, from another origin, for an unknown or
// expired page, and with wrong passwords until the page closes. None
// starts a session or yields a code.
func TestLoginFormAttacks(t *testing.T) {
	iss := flowIssuer(t)
	_, challenge := pkce("xyz")
	open := func(t *testing.T) (*http.Client, url.Values) {
		c := browser(t)
		f := loginForm(t, get(t, c, iss.URL()+"/authorize?"+authParams(challenge).Encode()))
		f.Set("username", "olga")
		f.Set("password", "olga-secret")
		return c, f
	}
	refused := func(t *testing.T, got page, status int) {
		t.Helper()
		if got.status != status || got.header.Get("Location") != "" || findCookie(got.header, issuer.SessionCookie) != nil {
			t.Errorf("status %d Location %q session cookie %v, want %d, no redirect, no session:\n%s",
				got.status, got.header.Get("Location"), findCookie(got.header, issuer.SessionCookie), status, got.body)
		}
		if iss.Sessions() != 0 {
			t.Errorf("sessions = %d, want 0", iss.Sessions())
		}
	}

	t.Run("no browser binding cookie", func(t *testing.T) {
		_, f := open(t)
		refused(t, post(t, browser(t), iss.URL()+"/login", iss.URL(), f), http.StatusForbidden)
	})
	t.Run("wrong CSRF token", func(t *testing.T) {
		c, f := open(t)
		f.Set("csrf", "forged")
		refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusForbidden)
	})
	t.Run("no CSRF token", func(t *testing.T) {
		c, f := open(t)
		f.Del("csrf")
		refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusForbidden)
	})
	t.Run("posted from another origin", func(t *testing.T) {
		c, f := open(t)
		refused(t, post(t, c, iss.URL()+"/login", "http://evil.example", f), http.StatusForbidden)
	})
	t.Run("unknown page", func(t *testing.T) {
		c, f := open(t)
		f.Set("request", "forged")
		refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusBadRequest)
	})
	t.Run("expired page", func(t *testing.T) {
		c, f := open(t)
		issuer.SetNow(iss, func() time.Time { return time.Now().Add(issuer.LoginTTL + time.Minute) })
		defer issuer.SetNow(iss, time.Now)
		refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusBadRequest)
	})
	t.Run("unknown user and wrong password answer alike", func(t *testing.T) {
		c, f := open(t)
		f.Set("password", "wrong")
		wrong := post(t, c, iss.URL()+"/login", iss.URL(), f)
		refused(t, wrong, http.StatusUnauthorized)
		f.Set("username", "nobody")
		unknown := post(t, c, iss.URL()+"/login", iss.URL(), f)
		refused(t, unknown, http.StatusUnauthorized)
		for _, p := range []page{wrong, unknown} {
			if !strings.Contains(p.body, "Invalid username or password.") || !strings.Contains(p.body, `id="login-form"`) {
				t.Errorf("want the login page again with one message for both:\n%s", p.body)
			}
		}
	})
	t.Run("too many wrong passwords close the page", func(t *testing.T) {
		c, f := open(t)
		good := f.Get("password")
		f.Set("password", "wrong")
		for n := 1; n < issuer.MaxLoginFailures; n++ {
			refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusUnauthorized)
		}
		last := post(t, c, iss.URL()+"/login", iss.URL(), f)
		refused(t, last, http.StatusUnauthorized)
		if strings.Contains(last.body, "login-form") {
			t.Errorf("the page is still open after %d failures", issuer.MaxLoginFailures)
		}
		f.Set("password", good)
		refused(t, post(t, c, iss.URL()+"/login", iss.URL(), f), http.StatusBadRequest)
	})
	t.Run("the username is escaped when shown again", func(t *testing.T) {
		c, f := open(t)
		f.Set("username", `"><script>alert(1)</script>`)
		f.Set("password", "x")
		got := post(t, c, iss.URL()+"/login", iss.URL(), f)
		if strings.Contains(got.body, "<script>") || !strings.Contains(got.body, "&lt;script&gt;") {
			t.Errorf("the username is not escaped:\n%s", got.body)
		}
	})
	t.Run("a page is used once", func(t *testing.T) {
		c, f := open(t)
		callback(t, post(t, c, iss.URL()+"/login", iss.URL(), f))
		again := post(t, c, iss.URL()+"/login", iss.URL(), f)
		if again.status != http.StatusBadRequest || again.header.Get("Location") != "" {
			t.Errorf("second post of the same page: %d Location %q, want 400", again.status, again.header.Get("Location"))
		}
	})
}

// TestCodeExchangeAttacks redeems codes the ways a thief of the code
// would: without or with a wrong PKCE verifier, for another redirect URI
// or client, twice, late, or from a browser page on another origin. Each
// is refused; a refused attempt uses the code up (the thief cannot try
// verifiers), except the foreign origin, refused before the code is read.
func TestCodeExchangeAttacks(t *testing.T) {
	iss := flowIssuer(t)
	if err := iss.RegisterClient(issuer.Client{ID: "other", RedirectURIs: []string{"http://127.0.0.1:18099/cb"}}); err != nil {
		t.Fatal(err)
	}
	verifier, challenge := pkce("v3r")
	tests := []struct {
		name       string
		origin     string
		alter      func(url.Values)
		wantStatus int
		wantError  string
		burned     bool
	}{
		{"no verifier", consoleURL, func(f url.Values) { f.Del("code_verifier") }, 400, "invalid_grant", true},
		{"wrong verifier", consoleURL, func(f url.Values) { f.Set("code_verifier", strings.Repeat("w", 43)) }, 400, "invalid_grant", true},
		{"the challenge as verifier (plain)", consoleURL, func(f url.Values) { f.Set("code_verifier", challenge) }, 400, "invalid_grant", true},
		{"other redirect URI", consoleURL, func(f url.Values) { f.Set("redirect_uri", "http://evil.example/cb") }, 400, "invalid_grant", true},
		{"other client", "", func(f url.Values) { f.Set("client_id", "other") }, 400, "invalid_grant", true},
		{"unknown client", "", func(f url.Values) { f.Set("client_id", "evil") }, 401, "invalid_client", false},
		{"page on another origin", "http://evil.example", func(url.Values) {}, 403, "invalid_request", false},
		{"forged code", consoleURL, func(f url.Values) { f.Set("code", "forged") }, 400, "invalid_grant", false},
		{"repeated code parameter", consoleURL, func(f url.Values) { f.Add("code", "x") }, 400, "invalid_request", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := signIn(t, iss, browser(t), "olga", "olga-secret", challenge)
			f := codeForm(code, verifier)
			tt.alter(f)
			status, got, h := exchange(t, iss, tt.origin, f)
			if status != tt.wantStatus || got.Error != tt.wantError || got.AccessToken != "" {
				t.Errorf("attack = %d %+v, want %d %s and no token", status, got, tt.wantStatus, tt.wantError)
			}
			if tt.origin == "http://evil.example" && h.Get("Access-Control-Allow-Origin") != "" {
				t.Errorf("a foreign origin was allowed to read the answer: %q", h.Get("Access-Control-Allow-Origin"))
			}
			status, got, _ = exchange(t, iss, consoleURL, codeForm(code, verifier))
			if tt.burned && (status != 400 || got.Error != "invalid_grant" || got.AccessToken != "") {
				t.Errorf("the code still works after the attack: %d %+v", status, got)
			}
			if !tt.burned && (status != 200 || got.AccessToken == "") {
				t.Errorf("the rightful exchange after the refused attempt: %d %+v, want a token", status, got)
			}
		})
	}

	t.Run("replayed code", func(t *testing.T) {
		code := signIn(t, iss, browser(t), "olga", "olga-secret", challenge)
		if status, got, _ := exchange(t, iss, consoleURL, codeForm(code, verifier)); status != 200 || got.AccessToken == "" {
			t.Fatalf("first exchange = %d %+v", status, got)
		}
		status, got, _ := exchange(t, iss, consoleURL, codeForm(code, verifier))
		if status != 400 || got.Error != "invalid_grant" || !strings.Contains(got.Description, "already used") {
			t.Errorf("replay = %d %+v, want invalid_grant already used", status, got)
		}
	})
	t.Run("late code", func(t *testing.T) {
		code := signIn(t, iss, browser(t), "olga", "olga-secret", challenge)
		issuer.SetNow(iss, func() time.Time { return time.Now().Add(issuer.CodeTTL + time.Second) })
		defer issuer.SetNow(iss, time.Now)
		status, got, _ := exchange(t, iss, consoleURL, codeForm(code, verifier))
		if status != 400 || got.Error != "invalid_grant" {
			t.Errorf("late exchange = %d %+v, want invalid_grant", status, got)
		}
	})
}

// TestRefreshTokenReuseEndsSession replays a rotated refresh token (it was
// copied): the issuer refuses it and ends the session, so the rightful
// holder's newer refresh token stops working too and the next
// authorization asks for the password again.
func TestRefreshTokenReuseEndsSession(t *testing.T) {
	iss := flowIssuer(t)
	verifier, challenge := pkce("rfr")
	c := browser(t)
	_, tok, _ := exchange(t, iss, consoleURL, codeForm(signIn(t, iss, c, "olga", "olga-secret", challenge), verifier))
	rf := func(rt string) (int, tokenAnswer) {
		status, a, _ := exchange(t, iss, consoleURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}})
		return status, a
	}
	status, next := rf(tok.RefreshToken)
	if status != 200 {
		t.Fatalf("first refresh = %d %+v", status, next)
	}
	if status, got := rf(tok.RefreshToken); status != 400 || got.Error != "invalid_grant" || got.AccessToken != "" {
		t.Errorf("reused refresh token = %d %+v, want invalid_grant", status, got)
	}
	if status, got := rf(next.RefreshToken); status != 400 || got.AccessToken != "" {
		t.Errorf("the newer refresh token after the reuse = %d %+v, want refused (session ended)", status, got)
	}
	if iss.Sessions() != 0 {
		t.Errorf("sessions = %d, want 0", iss.Sessions())
	}
	loginForm(t, get(t, c, iss.URL()+"/authorize?"+authParams(challenge).Encode()))
	if status, got := rf("forged"); status != 400 || got.Error != "invalid_grant" {
		t.Errorf("forged refresh token = %d %+v, want invalid_grant", status, got)
	}
}

// TestLogout ends a session with the console's ID token and refuses the
// sign-outs an attacker could attempt: without an ID token, with one the
// issuer did not sign, to an unregistered post-logout URI; another
// person's ID token ends her session but not the cookie of this browser.
func TestLogout(t *testing.T) {
	iss := flowIssuer(t)
	verifier, challenge := pkce("lgo")
	olga := browser(t)
	_, tok, _ := exchange(t, iss, consoleURL, codeForm(signIn(t, iss, olga, "olga", "olga-secret", challenge), verifier))
	logout := func(c *http.Client, v url.Values) page { return get(t, c, iss.URL()+"/logout?"+v.Encode()) }

	other, stop, err := issuer.Start("")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	forged, err := other.Sign(claims(t, tok.IDToken)) // same claims, another key
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		v    url.Values
	}{
		{"no id_token_hint", url.Values{"post_logout_redirect_uri": {signedOut}}},
		{"forged id_token_hint", url.Values{"id_token_hint": {forged}, "post_logout_redirect_uri": {signedOut}}},
		{"access token as hint", url.Values{"id_token_hint": {tok.AccessToken}, "post_logout_redirect_uri": {signedOut}}},
		{"attacker's post-logout URI", url.Values{"id_token_hint": {tok.IDToken}, "post_logout_redirect_uri": {"http://evil.example/"}}},
		{"other client_id", url.Values{"id_token_hint": {tok.IDToken}, "client_id": {"evil"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := logout(olga, tt.v)
			if got.status != http.StatusBadRequest || got.header.Get("Location") != "" || iss.Sessions() != 1 {
				t.Errorf("status %d Location %q sessions %d, want 400, no redirect, the session kept", got.status, got.header.Get("Location"), iss.Sessions())
			}
		})
	}

	// Vera's ID token, used from olga's browser, ends Vera's session only.
	vera := browser(t)
	_, vtok, _ := exchange(t, iss, consoleURL, codeForm(signIn(t, iss, vera, "vera", "vera-secret", challenge), verifier))
	got := logout(olga, url.Values{"id_token_hint": {vtok.IDToken}})
	if got.status != http.StatusOK || findCookie(got.header, issuer.SessionCookie) != nil || iss.Sessions() != 1 {
		t.Errorf("someone else's hint: %d, cookie %v, sessions %d; want 200, olga's cookie kept, olga's session only", got.status, findCookie(got.header, issuer.SessionCookie), iss.Sessions())
	}
	if q := callback(t, get(t, olga, iss.URL()+"/authorize?"+authParams(challenge).Encode())); q.Get("code") == "" {
		t.Errorf("olga's session did not survive: %v", q)
	}

	got = logout(olga, url.Values{"id_token_hint": {tok.IDToken}, "post_logout_redirect_uri": {signedOut}, "state": {"bye"}})
	if got.status != http.StatusFound || got.header.Get("Location") != signedOut+"?state=bye" {
		t.Errorf("logout = %d Location %q, want 302 to %s?state=bye", got.status, got.header.Get("Location"), signedOut)
	}
	if ck := findCookie(got.header, issuer.SessionCookie); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("session cookie after logout = %+v, want it deleted", ck)
	}
	if iss.Sessions() != 0 {
		t.Errorf("sessions = %d after logout, want 0", iss.Sessions())
	}
	loginForm(t, get(t, olga, iss.URL()+"/authorize?"+authParams(challenge).Encode()))
	rf := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {clientID}}
	if status, a, _ := exchange(t, iss, consoleURL, rf); status != 400 || a.AccessToken != "" {
		t.Errorf("refresh after logout = %d %+v, want refused", status, a)
	}
}

// TestCodeFlowLoopbackOnly sends the login endpoints a foreign Host (DNS
// rebinding): 421 before any handler runs, no login page, no session.
func TestCodeFlowLoopbackOnly(t *testing.T) {
	iss := flowIssuer(t)
	_, challenge := pkce("dns")
	for _, tt := range []struct{ method, path, body string }{
		{http.MethodGet, "/authorize?" + authParams(challenge).Encode(), ""},
		{http.MethodPost, "/login", "request=x&csrf=y&username=olga&password=olga-secret"},
		{http.MethodGet, "/logout?id_token_hint=x", ""},
		{http.MethodPost, "/token", "grant_type=authorization_code&code=x"},
	} {
		t.Run(tt.method+" "+strings.SplitN(tt.path, "?", 2)[0], func(t *testing.T) {
			req, err := http.NewRequest(tt.method, iss.URL()+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "evil.example"
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			got := do(t, browser(t), req)
			if got.status != http.StatusMisdirectedRequest || strings.Contains(got.body, "login-form") {
				t.Errorf("status %d, want 421:\n%s", got.status, got.body)
			}
		})
	}
}

func TestRegisterClientAndAddUserRefuseBadInput(t *testing.T) {
	iss, err := issuer.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []issuer.Client{
		{},
		{ID: "x"},
		{ID: "x", RedirectURIs: []string{"/relative"}},
		{ID: "x", RedirectURIs: []string{"http://h/cb#frag"}},
		{ID: "x", RedirectURIs: []string{"javascript:alert(1)"}},
		{ID: "x", RedirectURIs: []string{"http://h/cb"}, PostLogoutRedirectURIs: []string{"ftp://h/"}},
		{ID: "x", RedirectURIs: []string{"http://h/cb"}, WebOrigins: []string{"http://h/path"}},
		{ID: "x", RedirectURIs: []string{"http://h/cb"}, TokenTTL: -time.Second},
	} {
		if err := iss.RegisterClient(c); err == nil {
			t.Errorf("RegisterClient(%+v) = nil, want an error", c)
		}
	}
	for _, u := range []issuer.User{
		{}, {Username: " olga", Password: "p"}, {Username: "olga"}, {Username: "olga", Password: "p", Roles: []string{""}},
	} {
		if err := iss.AddUser(u); err == nil {
			t.Errorf("AddUser(%+v) = nil, want an error", u)
		}
	}
}

// TestDiscoveryAdvertisesCodeFlow checks what a client (the console,
// console.Discover) reads: the endpoints and S256 as the only PKCE method.
func TestDiscoveryAdvertisesCodeFlow(t *testing.T) {
	iss := start(t)
	var doc struct {
		Authorization string   `json:"authorization_endpoint"`
		EndSession    string   `json:"end_session_endpoint"`
		Methods       []string `json:"code_challenge_methods_supported"`
		ResponseTypes []string `json:"response_types_supported"`
	}
	p := get(t, http.DefaultClient, iss.URL()+"/.well-known/openid-configuration")
	if err := json.Unmarshal([]byte(p.body), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Authorization != iss.URL()+"/authorize" || doc.EndSession != iss.URL()+"/logout" ||
		strings.Join(doc.Methods, ",") != "S256" || strings.Join(doc.ResponseTypes, ",") != "code" {
		t.Errorf("discovery = %+v", doc)
	}
}

// TestConcurrentSignIns runs sign-ins in parallel (the race detector
// watches the issuer's tables).
func TestConcurrentSignIns(t *testing.T) {
	iss := flowIssuer(t)
	verifier, challenge := pkce("par")
	var wg sync.WaitGroup
	for n := 0; n < 8; n++ {
		wg.Go(func() {
			c := browser(t)
			code := signIn(t, iss, c, "vera", "vera-secret", challenge)
			if status, a, _ := exchange(t, iss, consoleURL, codeForm(code, verifier)); status != 200 || a.AccessToken == "" {
				t.Errorf("exchange = %d %+v", status, a)
			}
		})
	}
	wg.Wait()
	if iss.Sessions() != 8 {
		t.Errorf("sessions = %d, want 8", iss.Sessions())
	}
}
