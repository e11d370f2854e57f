package issuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Lifetimes and limits of the authorization code flow.
const (
	// DefaultCodeFlowTTL is the lifetime of access and ID tokens issued
	// through the code flow when Client.TokenTTL is 0 (Keycloak's realm
	// portfolio uses the same 10 minutes).
	DefaultCodeFlowTTL = 10 * time.Minute
	// SessionTTL is how long a login session at the issuer lives (and the
	// refresh tokens bound to it).
	SessionTTL = 8 * time.Hour
	// CodeTTL is how long an authorization code may be redeemed.
	CodeTTL = time.Minute
	// LoginTTL is how long a login page stays valid.
	LoginTTL = 10 * time.Minute
	// MaxLoginFailures is the number of wrong passwords after which a
	// login page is dropped (the client must start again).
	MaxLoginFailures = 5
	// maxPending bounds each of the in-memory tables (login pages, codes,
	// sessions, refresh tokens); a full table refuses new entries.
	maxPending = 1000
)

// Cookie names of the issuer. Cookies are not isolated by port: every
// server on the issuer's host receives them, which is why no server of
// the system accepts cookies as credentials.
const (
	// SessionCookie holds the login session id (HttpOnly, SameSite=Lax:
	// it must come along on the top-level navigation from the client to
	// the authorization endpoint).
	SessionCookie = "saga_dev_issuer_session"
	// LoginCookie binds a login page to the browser that opened it
	// (HttpOnly, SameSite=Strict).
	LoginCookie = "saga_dev_issuer_login"
)

// Client is an OAuth 2.0 client registered for the authorization code
// flow: a public client (no secret), so PKCE with S256 is required.
type Client struct {
	// ID is the client_id.
	ID string
	// RedirectURIs are the allowed redirect_uri values, compared exactly
	// (no prefix, no wildcard, no normalisation).
	RedirectURIs []string
	// PostLogoutRedirectURIs are the allowed post_logout_redirect_uri
	// values of the end-session endpoint, compared exactly.
	PostLogoutRedirectURIs []string
	// WebOrigins are the origins (scheme://host:port) allowed to call the
	// token endpoint from a browser (CORS). A token request carrying
	// another Origin is refused.
	WebOrigins []string
	// Audience is the aud of the access tokens (the API the client
	// calls); "" means DefaultAudience.
	Audience string
	// TokenTTL is the lifetime of access and ID tokens; 0 means
	// DefaultCodeFlowTTL.
	TokenTTL time.Duration
}

// User is an account of the login page.
type User struct {
	// Username is what the person types; it is also the token's sub and
	// preferred_username.
	Username string
	// Password is compared in constant time (only its SHA-256 is kept).
	Password string
	// Name and Email go to the name and email claims when set.
	Name, Email string
	// Roles go to realm_access.roles.
	Roles []string
}

// account is a User with its password digest.
type account struct {
	user   User
	digest [sha256.Size]byte
}

// authRequest is a validated authorization request waiting on the login
// page.
type authRequest struct {
	id, binding, csrf string
	client            Client
	redirectURI       string
	state, nonce      string
	challenge, scope  string
	expires           time.Time
	failures          int
}

// grant is an issued authorization code.
type grant struct {
	client      Client
	redirectURI string
	challenge   string
	nonce       string
	scope       string
	sid         string
	user        User
	authTime    time.Time
	expires     time.Time
	used        bool
}

// session is a login session at the issuer.
type session struct {
	id       string
	user     User
	authTime time.Time
	expires  time.Time
}

// refreshGrant is an issued refresh token (opaque, rotated on each use).
type refreshGrant struct {
	client  Client
	sid     string
	scope   string
	expires time.Time
	used    bool
}

// codeFlow is the issuer's state of the authorization code flow.
type codeFlow struct {
	clients  map[string]Client
	users    map[string]account
	pending  map[string]*authRequest
	codes    map[string]*grant
	sessions map[string]*session
	refresh  map[string]*refreshGrant
}

func newCodeFlow() codeFlow {
	return codeFlow{
		clients: map[string]Client{}, users: map[string]account{},
		pending: map[string]*authRequest{}, codes: map[string]*grant{},
		sessions: map[string]*session{}, refresh: map[string]*refreshGrant{},
	}
}

// RegisterClient registers (or replaces) a client of the authorization code
// flow. Its redirect URIs must be absolute http(s) URLs without fragment;
// web origins must be bare origins.
func (i *Issuer) RegisterClient(c Client) error {
	if c.ID == "" {
		return errors.New("issuer: register client: ID is empty")
	}
	if len(c.RedirectURIs) == 0 {
		return fmt.Errorf("issuer: register client %s: no redirect URI", c.ID)
	}
	for _, u := range append(slices.Clone(c.RedirectURIs), c.PostLogoutRedirectURIs...) {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Fragment != "" || strings.Contains(u, "#") {
			return fmt.Errorf("issuer: register client %s: redirect URI %q must be an absolute http(s) URL without fragment", c.ID, u)
		}
	}
	for _, o := range c.WebOrigins {
		p, err := url.Parse(o)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return fmt.Errorf("issuer: register client %s: web origin %q must be scheme://host[:port]", c.ID, o)
		}
	}
	if c.TokenTTL < 0 {
		return fmt.Errorf("issuer: register client %s: TokenTTL %s is negative", c.ID, c.TokenTTL)
	}
	c.RedirectURIs = slices.Clone(c.RedirectURIs)
	c.PostLogoutRedirectURIs = slices.Clone(c.PostLogoutRedirectURIs)
	c.WebOrigins = slices.Clone(c.WebOrigins)
	for n, o := range c.WebOrigins {
		c.WebOrigins[n] = strings.TrimSuffix(o, "/")
	}
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.flow.clients[c.ID] = c
	return nil
}

// AddUser adds (or replaces) an account of the login page.
func (i *Issuer) AddUser(u User) error {
	if strings.TrimSpace(u.Username) == "" || u.Username != strings.TrimSpace(u.Username) {
		return fmt.Errorf("issuer: add user: username %q is empty or has surrounding spaces", u.Username)
	}
	if u.Password == "" {
		return fmt.Errorf("issuer: add user %s: empty password", u.Username)
	}
	for _, r := range u.Roles {
		if strings.TrimSpace(r) == "" {
			return fmt.Errorf("issuer: add user %s: empty role name", u.Username)
		}
	}
	u.Roles = slices.Clone(u.Roles)
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	i.flow.users[u.Username] = account{user: u, digest: sha256.Sum256([]byte(u.Password))}
	return nil
}

// checkPassword returns the account of username if password is right. The
// comparison takes the same time whether the user exists or not and
// however much of the password is right: the SHA-256 digests are compared
// with subtle.ConstantTimeCompare.
func (i *Issuer) checkPassword(username, password string) (User, bool) {
	i.flowMu.Lock()
	acc, found := i.flow.users[username]
	i.flowMu.Unlock()
	want := acc.digest
	if !found {
		want = sha256.Sum256([]byte("\x00no such user\x00" + username))
	}
	got := sha256.Sum256([]byte(password))
	ok := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	return acc.user, ok && found
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("issuer: reading random bytes: %v", err)) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// equalSecret compares two secrets in constant time.
func equalSecret(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// pkceChallenge and pkceVerifier are the shapes RFC 7636 allows (S256's
// challenge is a SHA-256 digest: 43 base64url characters).
var (
	pkceChallenge = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	pkceVerifier  = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`)
)

// s256 is the S256 code challenge of verifier.
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// cookiePath is the path of the issuer's cookies.
func (i *Issuer) cookiePath() string { return i.path + "/" }

// origin is scheme://host of a URL.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// single returns the one value of a parameter; a repeated parameter is an
// error (RFC 6749 section 3.1).
func single(v url.Values, names ...string) error {
	for _, n := range names {
		if len(v[n]) > 1 {
			return fmt.Errorf("parameter %s is repeated", n)
		}
	}
	return nil
}

// purge drops expired entries. The caller holds flowMu.
func (f *codeFlow) purge(now time.Time) {
	for k, v := range f.pending {
		if now.After(v.expires) {
			delete(f.pending, k)
		}
	}
	for k, v := range f.codes {
		if now.After(v.expires) {
			delete(f.codes, k)
		}
	}
	for k, v := range f.sessions {
		if now.After(v.expires) {
			delete(f.sessions, k)
		}
	}
	for k, v := range f.refresh {
		if now.After(v.expires) {
			delete(f.refresh, k)
		}
	}
}

// endSession drops a session and its refresh tokens. The caller holds
// flowMu.
func (f *codeFlow) endSession(sid string) {
	delete(f.sessions, sid)
	for k, v := range f.refresh {
		if v.sid == sid {
			delete(f.refresh, k)
		}
	}
}

// errFull is returned when an in-memory table is full.
var errFull = errors.New("too many sign-ins under way at the dev issuer; try again in a few minutes")

// currentSession returns the live session named by the request's cookie.
func (i *Issuer) currentSession(r *http.Request) (*session, bool) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	s, ok := i.flow.sessions[c.Value]
	if !ok || i.now().After(s.expires) {
		return nil, false
	}
	return s, true
}

// serveAuthorize is the authorization endpoint (RFC 6749 4.1.1, RFC 7636):
// response_type=code, client_id, redirect_uri (exact match), scope (with
// openid), state (required), code_challenge + code_challenge_method=S256
// (required; plain is refused), nonce, prompt (none or login). An unknown
// client or redirect URI is answered here with an error page, never by
// redirecting; other errors go back to the client's redirect URI.
func (i *Issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := single(q, "client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method", "prompt"); err != nil {
		i.errorPage(w, http.StatusBadRequest, "Invalid sign-in request", err.Error())
		return
	}
	i.flowMu.Lock()
	client, ok := i.flow.clients[q.Get("client_id")]
	i.flowMu.Unlock()
	if !ok {
		i.errorPage(w, http.StatusBadRequest, "Unknown client", fmt.Sprintf("client_id %q is not registered at this issuer.", q.Get("client_id")))
		return
	}
	redirectURI := q.Get("redirect_uri")
	if !slices.Contains(client.RedirectURIs, redirectURI) {
		i.errorPage(w, http.StatusBadRequest, "Invalid redirect URI",
			fmt.Sprintf("redirect_uri %q is not registered for client %s (the match is exact).", redirectURI, client.ID))
		return
	}
	state := q.Get("state")
	back := func(params url.Values) {
		if state != "" {
			params.Set("state", state)
		}
		params.Set("iss", i.url) // RFC 9207
		sep := "?"
		if strings.Contains(redirectURI, "?") {
			sep = "&"
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, redirectURI+sep+params.Encode(), http.StatusFound)
	}
	fail := func(code, desc string) {
		back(url.Values{"error": {code}, "error_description": {desc}})
	}
	switch {
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "only response_type=code (the authorization code flow) is supported")
		return
	case q.Get("code_challenge_method") != "S256":
		fail("invalid_request", fmt.Sprintf("PKCE with code_challenge_method=S256 is required (got %q; plain is refused)", q.Get("code_challenge_method")))
		return
	case !pkceChallenge.MatchString(q.Get("code_challenge")):
		fail("invalid_request", "code_challenge must be the 43-character base64url SHA-256 of the code verifier")
		return
	case state == "" || len(state) > 512:
		fail("invalid_request", "state is required (at most 512 characters)")
		return
	case len(q.Get("nonce")) > 512:
		fail("invalid_request", "nonce is longer than 512 characters")
		return
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		fail("invalid_scope", "scope must include openid")
		return
	}
	prompt := q.Get("prompt")
	if prompt != "" && prompt != "none" && prompt != "login" {
		fail("invalid_request", fmt.Sprintf("prompt %q is not supported (none or login)", prompt))
		return
	}
	req := &authRequest{
		client: client, redirectURI: redirectURI, state: state, nonce: q.Get("nonce"),
		challenge: q.Get("code_challenge"), scope: q.Get("scope"),
	}
	if s, ok := i.currentSession(r); ok && prompt != "login" {
		code, err := i.issueCode(req, s)
		if err != nil {
			fail("temporarily_unavailable", err.Error())
			return
		}
		back(url.Values{"code": {code}})
		return
	}
	if prompt == "none" {
		fail("login_required", "no login session at the issuer")
		return
	}
	req.id, req.binding, req.csrf = randomToken(), randomToken(), randomToken()
	i.flowMu.Lock()
	now := i.now()
	i.flow.purge(now)
	full := len(i.flow.pending) >= maxPending
	if !full {
		req.expires = now.Add(LoginTTL)
		i.flow.pending[req.id] = req
	}
	i.flowMu.Unlock()
	if full {
		i.errorPage(w, http.StatusServiceUnavailable, "Try again later", errFull.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: LoginCookie, Value: req.binding, Path: i.cookiePath(),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: int(LoginTTL / time.Second)})
	i.loginPage(w, http.StatusOK, req, "", "")
}

// issueCode stores a new authorization code for req in session s.
func (i *Issuer) issueCode(req *authRequest, s *session) (string, error) {
	code := randomToken()
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	now := i.now()
	i.flow.purge(now)
	if len(i.flow.codes) >= maxPending {
		return "", errFull
	}
	i.flow.codes[code] = &grant{
		client: req.client, redirectURI: req.redirectURI, challenge: req.challenge, nonce: req.nonce,
		scope: req.scope, sid: s.id, user: s.user, authTime: s.authTime, expires: now.Add(CodeTTL),
	}
	return code, nil
}

// serveLogin checks the login form: the page's request id, its CSRF token
// and the browser binding cookie (all compared in constant time), then the
// password. Cross-origin posts are refused before this handler
// (http.CrossOriginProtection). On success it starts a session and sends
// the browser back to the client with a code.
func (i *Issuer) serveLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		i.errorPage(w, http.StatusBadRequest, "Invalid sign-in", "The form could not be read: "+err.Error())
		return
	}
	f := r.PostForm
	if err := single(f, "request", "csrf", "username", "password"); err != nil {
		i.errorPage(w, http.StatusBadRequest, "Invalid sign-in", err.Error())
		return
	}
	binding := ""
	if c, err := r.Cookie(LoginCookie); err == nil {
		binding = c.Value
	}
	i.flowMu.Lock()
	req, ok := i.flow.pending[f.Get("request")]
	if ok && i.now().After(req.expires) {
		delete(i.flow.pending, req.id)
		ok = false
	}
	i.flowMu.Unlock()
	if !ok {
		i.errorPage(w, http.StatusBadRequest, "Sign-in expired",
			"This sign-in page is unknown or has expired. Go back to the application and sign in again.")
		return
	}
	if binding == "" || !equalSecret(binding, req.binding) || !equalSecret(f.Get("csrf"), req.csrf) {
		i.errorPage(w, http.StatusForbidden, "Sign-in refused",
			"The form does not belong to this browser's sign-in page (CSRF check). Go back to the application and sign in again.")
		return
	}
	user, ok := i.checkPassword(f.Get("username"), f.Get("password"))
	if !ok {
		i.flowMu.Lock()
		req.failures++
		tooMany := req.failures >= MaxLoginFailures
		if tooMany {
			delete(i.flow.pending, req.id)
		}
		i.flowMu.Unlock()
		if tooMany {
			i.errorPage(w, http.StatusUnauthorized, "Too many failed attempts",
				fmt.Sprintf("%d wrong passwords: this sign-in page is closed. Go back to the application and sign in again.", MaxLoginFailures))
			return
		}
		i.loginPage(w, http.StatusUnauthorized, req, f.Get("username"), "Invalid username or password.")
		return
	}
	s := &session{id: randomToken(), user: user}
	i.flowMu.Lock()
	now := i.now()
	delete(i.flow.pending, req.id) // one login per page
	i.flow.purge(now)
	full := len(i.flow.sessions) >= maxPending
	if !full {
		s.authTime, s.expires = now, now.Add(SessionTTL)
		i.flow.sessions[s.id] = s
	}
	i.flowMu.Unlock()
	if full {
		i.errorPage(w, http.StatusServiceUnavailable, "Try again later", errFull.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: LoginCookie, Value: "", Path: i.cookiePath(), HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.id, Path: i.cookiePath(), HttpOnly: true, SameSite: http.SameSiteLaxMode})
	code, err := i.issueCode(req, s)
	params := url.Values{"state": {req.state}, "iss": {i.url}}
	if err != nil {
		params.Set("error", "temporarily_unavailable")
		params.Set("error_description", err.Error())
	} else {
		params.Set("code", code)
	}
	sep := "?"
	if strings.Contains(req.redirectURI, "?") {
		sep = "&"
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, req.redirectURI+sep+params.Encode(), http.StatusSeeOther)
}

// tokenCORS applies the client's web origins to a token request: an
// allowed Origin gets Access-Control-Allow-Origin; a request from a
// browser on another origin is refused (false) before anything is read or
// consumed. Requests without Origin (curl, servers) pass.
func tokenCORS(w http.ResponseWriter, r *http.Request, c Client) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	w.Header().Add("Vary", "Origin")
	if !slices.Contains(c.WebOrigins, o) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", o)
	return true
}

// serveTokenPreflight answers CORS preflights of the token endpoint for the
// web origins of registered clients.
func (i *Issuer) serveTokenPreflight(w http.ResponseWriter, r *http.Request) {
	o := r.Header.Get("Origin")
	w.Header().Add("Vary", "Origin")
	i.flowMu.Lock()
	allowed := false
	for _, c := range i.flow.clients {
		allowed = allowed || slices.Contains(c.WebOrigins, o)
	}
	i.flowMu.Unlock()
	if allowed {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Access-Control-Allow-Methods", "POST")
		w.Header().Set("Access-Control-Allow-Headers", "Content-Type")
		w.Header().Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
}

// tokenResponse signs the access and ID tokens of a code or refresh grant
// and issues a new refresh token bound to the session.
func (i *Issuer) tokenResponse(c Client, s *session, scope, nonce string) (map[string]any, error) {
	now := i.now()
	ttl := c.TokenTTL
	if ttl == 0 {
		ttl = DefaultCodeFlowTTL
	}
	u := s.user
	at, err := i.Claims(u.Username, TokenOptions{Audience: c.Audience, Email: u.Email, Roles: u.Roles, TTL: ttl}, now)
	if err != nil {
		return nil, err
	}
	at["azp"], at["sid"], at["scope"] = c.ID, s.id, scope
	at["preferred_username"] = u.Username
	if u.Name != "" {
		at["name"] = u.Name
	}
	access, err := i.Sign(at)
	if err != nil {
		return nil, err
	}
	idc := map[string]any{
		"iss": i.url, "sub": u.Username, "aud": c.ID, "azp": c.ID, "typ": "ID",
		"iat": now.Unix(), "exp": now.Add(ttl).Unix(), "auth_time": s.authTime.Unix(), "sid": s.id,
		"preferred_username": u.Username,
	}
	if nonce != "" {
		idc["nonce"] = nonce
	}
	if u.Name != "" {
		idc["name"] = u.Name
	}
	if u.Email != "" {
		idc["email"] = u.Email
	}
	id, err := i.Sign(idc)
	if err != nil {
		return nil, err
	}
	rt := randomToken()
	i.flowMu.Lock()
	i.flow.purge(now)
	full := len(i.flow.refresh) >= maxPending
	if !full {
		i.flow.refresh[rt] = &refreshGrant{client: c, sid: s.id, scope: scope, expires: s.expires}
	}
	i.flowMu.Unlock()
	if full {
		return nil, errFull
	}
	return map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": int(ttl / time.Second),
		"id_token": id, "refresh_token": rt, "refresh_expires_in": int(s.expires.Sub(now) / time.Second),
		"scope": scope,
	}, nil
}

// clientOf finds the client named by the form's client_id.
func (i *Issuer) clientOf(f url.Values) (Client, bool) {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	c, ok := i.flow.clients[f.Get("client_id")]
	return c, ok
}

// serveCodeGrant redeems an authorization code (grant_type
// authorization_code): client_id, redirect_uri and code_verifier must
// match the authorization request. A code is redeemed once: any attempt,
// right or wrong, uses it up (a wrong verifier cannot be retried).
func (i *Issuer) serveCodeGrant(w http.ResponseWriter, r *http.Request, f url.Values) {
	if err := single(f, "code", "redirect_uri", "client_id", "code_verifier"); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	c, ok := i.clientOf(f)
	if !ok {
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("client_id %q is not registered", f.Get("client_id")))
		return
	}
	if !tokenCORS(w, r, c) {
		oauthError(w, http.StatusForbidden, "invalid_request", fmt.Sprintf("origin %q is not a web origin of client %s", r.Header.Get("Origin"), c.ID))
		return
	}
	i.flowMu.Lock()
	g, ok := i.flow.codes[f.Get("code")]
	var s *session
	reason := ""
	switch {
	case !ok || f.Get("code") == "":
		reason = "the authorization code is unknown or has expired"
	case g.used:
		reason = "the authorization code was already used"
	case i.now().After(g.expires):
		reason = "the authorization code has expired"
	default:
		g.used = true // redeemed once, whatever follows
		switch {
		case g.client.ID != c.ID:
			reason = "the authorization code was issued to another client"
		case f.Get("redirect_uri") != g.redirectURI:
			reason = "redirect_uri differs from the authorization request's"
		case !pkceVerifier.MatchString(f.Get("code_verifier")):
			reason = "code_verifier is missing or malformed (43 to 128 characters of A-Z a-z 0-9 - . _ ~)"
		case !equalSecret(s256(f.Get("code_verifier")), g.challenge):
			reason = "code_verifier does not match the code challenge (PKCE S256)"
		default:
			s, ok = i.flow.sessions[g.sid]
			if !ok {
				reason = "the login session has ended"
			}
		}
	}
	i.flowMu.Unlock()
	if reason != "" {
		oauthError(w, http.StatusBadRequest, "invalid_grant", reason)
		return
	}
	resp, err := i.tokenResponse(c, s, g.scope, g.nonce)
	if err != nil {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error())
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// serveRefreshGrant exchanges a refresh token (rotated: each is valid
// once). Presenting a refresh token that was already used ends its login
// session (it was copied: RFC 9700 section 4.14.2).
func (i *Issuer) serveRefreshGrant(w http.ResponseWriter, r *http.Request, f url.Values) {
	if err := single(f, "refresh_token", "client_id"); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	c, ok := i.clientOf(f)
	if !ok {
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("client_id %q is not registered", f.Get("client_id")))
		return
	}
	if !tokenCORS(w, r, c) {
		oauthError(w, http.StatusForbidden, "invalid_request", fmt.Sprintf("origin %q is not a web origin of client %s", r.Header.Get("Origin"), c.ID))
		return
	}
	i.flowMu.Lock()
	rt, ok := i.flow.refresh[f.Get("refresh_token")]
	var s *session
	reason := ""
	switch {
	case !ok || f.Get("refresh_token") == "":
		reason = "the refresh token is unknown or has expired"
	case rt.used:
		reason = "the refresh token was already used: the login session is ended"
		i.flow.endSession(rt.sid)
	case rt.client.ID != c.ID:
		reason = "the refresh token was issued to another client"
	case i.now().After(rt.expires):
		reason = "the refresh token has expired"
	default:
		rt.used = true
		s, ok = i.flow.sessions[rt.sid]
		if !ok {
			reason = "the login session has ended"
		}
	}
	i.flowMu.Unlock()
	if reason != "" {
		oauthError(w, http.StatusBadRequest, "invalid_grant", reason)
		return
	}
	resp, err := i.tokenResponse(c, s, rt.scope, "")
	if err != nil {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", err.Error())
		return
	}
	delete(resp, "id_token") // OIDC allows it; the client keeps the first one for logout
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// idTokenClaims are the claims the end-session endpoint reads from an
// id_token_hint.
type idTokenClaims struct {
	Issuer string           `json:"iss"`
	Sub    string           `json:"sub"`
	Aud    jwt.Audience     `json:"aud"`
	Typ    string           `json:"typ"`
	Sid    string           `json:"sid"`
	Exp    *jwt.NumericDate `json:"exp"`
}

// verifyIDTokenHint checks that raw is an ID token this issuer signed (with
// its current or a retired key). An expired hint is accepted, as OIDC
// RP-Initiated Logout allows.
func (i *Issuer) verifyIDTokenHint(raw string) (idTokenClaims, error) {
	var c idTokenClaims
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return c, fmt.Errorf("id_token_hint is not a signed JWT: %w", err)
	}
	if len(tok.Headers) != 1 {
		return c, errors.New("id_token_hint must have one signature")
	}
	kid := tok.Headers[0].KeyID
	i.mu.RLock()
	var pub any
	for _, k := range append([]signingKey{i.current}, i.retired...) {
		if k.kid == kid {
			pub = &k.priv.PublicKey
		}
	}
	i.mu.RUnlock()
	if pub == nil {
		return c, fmt.Errorf("id_token_hint is signed by an unknown key %q", kid)
	}
	if err := tok.Claims(pub, &c); err != nil {
		return c, fmt.Errorf("id_token_hint: %w", err)
	}
	if c.Issuer != i.url || c.Typ != "ID" || len(c.Aud) != 1 || c.Sid == "" {
		return c, errors.New("id_token_hint is not an ID token of this issuer with a session")
	}
	return c, nil
}

// serveLogout is the end-session endpoint (OpenID Connect RP-Initiated
// Logout): id_token_hint (required: an ID token this issuer signed) names
// the session to end; post_logout_redirect_uri, if given, must be one of
// the hint's client's PostLogoutRedirectURIs (exact match); state is passed
// back. The session cookie is cleared only when it names that session, so
// a foreign page cannot sign a person out with someone else's ID token.
func (i *Issuer) serveLogout(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := single(q, "id_token_hint", "post_logout_redirect_uri", "client_id", "state"); err != nil {
		i.errorPage(w, http.StatusBadRequest, "Invalid sign-out request", err.Error())
		return
	}
	hint, err := i.verifyIDTokenHint(q.Get("id_token_hint"))
	if err != nil {
		i.errorPage(w, http.StatusBadRequest, "Sign-out refused", "Nothing was changed: "+err.Error())
		return
	}
	i.flowMu.Lock()
	c, ok := i.flow.clients[hint.Aud[0]]
	i.flowMu.Unlock()
	if !ok || (q.Get("client_id") != "" && q.Get("client_id") != c.ID) {
		i.errorPage(w, http.StatusBadRequest, "Sign-out refused", "Nothing was changed: the ID token's client does not match client_id or is not registered.")
		return
	}
	post := q.Get("post_logout_redirect_uri")
	if post != "" && !slices.Contains(c.PostLogoutRedirectURIs, post) {
		i.errorPage(w, http.StatusBadRequest, "Sign-out refused",
			fmt.Sprintf("Nothing was changed: post_logout_redirect_uri %q is not registered for client %s (the match is exact).", post, c.ID))
		return
	}
	i.flowMu.Lock()
	i.flow.endSession(hint.Sid)
	i.flowMu.Unlock()
	if ck, err := r.Cookie(SessionCookie); err == nil && ck.Value == hint.Sid {
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: i.cookiePath(), HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	}
	w.Header().Set("Cache-Control", "no-store")
	if post == "" {
		i.errorPage(w, http.StatusOK, "Signed out", "You are signed out of the dev issuer.")
		return
	}
	if st := q.Get("state"); st != "" {
		sep := "?"
		if strings.Contains(post, "?") {
			sep = "&"
		}
		post += sep + url.Values{"state": {st}}.Encode()
	}
	http.Redirect(w, r, post, http.StatusFound)
}

// Sessions returns the number of live login sessions (for tests and
// diagnostics).
func (i *Issuer) Sessions() int {
	i.flowMu.Lock()
	defer i.flowMu.Unlock()
	now := i.now()
	n := 0
	for _, s := range i.flow.sessions {
		if !now.After(s.expires) {
			n++
		}
	}
	return n
}
