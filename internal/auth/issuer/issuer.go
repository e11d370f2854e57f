package issuer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/portfolio-counselor/sagamachine/internal/program"
)

// DefaultAudience is the audience (aud and azp) of tokens minted without an
// explicit one. Services of the dev run expect it as their auth.Config.Audience.
const DefaultAudience = "saga-machine"

// DefaultTTL is the lifetime of tokens minted with a zero TTL.
const DefaultTTL = time.Hour

// keyBits is the RSA modulus size of generated signing keys.
const keyBits = 2048

// TokenOptions shape a token minted by Issuer.Token.
type TokenOptions struct {
	// Audience is the aud (and azp) claim; "" means DefaultAudience.
	Audience string
	// Name is the preferred_username and name claims; "" omits them.
	Name string
	// Email is the email claim; "" omits it.
	Email string
	// Roles go to realm_access.roles, the way Keycloak puts realm roles.
	Roles []string
	// TTL is the token lifetime; 0 means DefaultTTL. A negative TTL mints a
	// token that has already expired (for tests of expiry handling).
	TTL time.Duration
}

// signingKey is one RSA key with its key id.
type signingKey struct {
	kid  string
	priv *rsa.PrivateKey
}

// Issuer is an in-memory OpenID Connect issuer. It is safe for concurrent use.
type Issuer struct {
	url  string // issuer identifier, exactly as put in iss
	path string // URL path of the issuer, without trailing slash ("" for root)

	mu      sync.RWMutex
	current signingKey
	retired []signingKey // still published in the JWKS until DropRetiredKeys

	flowMu sync.Mutex
	flow   codeFlow         // clients, users, login pages, codes, sessions, refresh tokens
	now    func() time.Time // the code flow's clock (tests move it)
}

// New returns an issuer whose identifier (iss claim, discovery base) is
// issuerURL, with a freshly generated RS256 signing key.
func New(issuerURL string) (*Issuer, error) {
	u, err := url.Parse(issuerURL)
	if err != nil {
		return nil, fmt.Errorf("issuer: parsing issuer URL %q: %w", issuerURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("issuer: issuer URL %q must be an absolute http(s) URL without query or fragment", issuerURL)
	}
	issuerURL = strings.TrimSuffix(issuerURL, "/")
	key, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	return &Issuer{
		url:     issuerURL,
		path:    strings.TrimSuffix(u.Path, "/"),
		current: key,
		flow:    newCodeFlow(),
		now:     time.Now,
	}, nil
}

func newSigningKey() (signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: generating RSA key: %w", err)
	}
	// The key id is the RFC 7638 thumbprint of the public key.
	tp, err := (&jose.JSONWebKey{Key: &priv.PublicKey}).Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("issuer: computing key thumbprint: %w", err)
	}
	return signingKey{kid: base64.RawURLEncoding.EncodeToString(tp), priv: priv}, nil
}

// URL returns the issuer identifier (no trailing slash).
func (i *Issuer) URL() string { return i.url }

// KeyID returns the key id (kid) of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.current.kid
}

// Rotate generates a new signing key and signs every later token with it. The
// previous key stays published in the JWKS (so tokens it signed keep
// verifying) until DropRetiredKeys. It returns the new key id.
func (i *Issuer) Rotate() (string, error) {
	key, err := newSigningKey()
	if err != nil {
		return "", fmt.Errorf("issuer: rotating key: %w", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.retired = append(i.retired, i.current)
	i.current = key
	return key.kid, nil
}

// DropRetiredKeys stops publishing every key but the current one.
func (i *Issuer) DropRetiredKeys() {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.retired = nil
}

// JWKS returns the public key set: the current key first, then retired keys.
func (i *Issuer) JWKS() jose.JSONWebKeySet {
	i.mu.RLock()
	defer i.mu.RUnlock()
	set := jose.JSONWebKeySet{}
	for _, k := range append([]signingKey{i.current}, i.retired...) {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key:       &k.priv.PublicKey,
			KeyID:     k.kid,
			Algorithm: string(jose.RS256),
			Use:       "sig",
		})
	}
	return set
}

// Sign signs arbitrary claims with the current key (RS256, kid set) and
// returns the compact JWT. Token is the usual way to mint tokens; Sign exists
// for tests that need claims Token does not produce (another iss, no exp...).
func (i *Issuer) Sign(claims any) (string, error) {
	i.mu.RLock()
	key := i.current
	i.mu.RUnlock()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key.priv, KeyID: key.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("issuer: creating signer: %w", err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("issuer: signing token: %w", err)
	}
	return raw, nil
}

// Claims returns the claims Token would sign for sub and opts at time now.
// Tests may alter them and pass them to Sign.
func (i *Issuer) Claims(sub string, opts TokenOptions, now time.Time) (map[string]any, error) {
	if sub == "" {
		return nil, errors.New("issuer: subject must not be empty")
	}
	aud := opts.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return nil, fmt.Errorf("issuer: generating token id: %w", err)
	}
	roles := opts.Roles
	if roles == nil {
		roles = []string{}
	}
	iat := now
	if ttl < 0 {
		// An already-expired token was also issued in the past.
		iat = now.Add(2 * ttl)
	}
	c := map[string]any{
		"iss":          i.url,
		"sub":          sub,
		"aud":          aud,
		"azp":          aud,
		"typ":          "Bearer",
		"jti":          base64.RawURLEncoding.EncodeToString(jti),
		"iat":          iat.Unix(),
		"nbf":          iat.Unix(),
		"exp":          now.Add(ttl).Unix(),
		"realm_access": map[string]any{"roles": roles},
	}
	if opts.Name != "" {
		c["preferred_username"] = opts.Name
		c["name"] = opts.Name
	}
	if opts.Email != "" {
		c["email"] = opts.Email
	}
	return c, nil
}

// Token mints a signed access token for subject sub.
func (i *Issuer) Token(sub string, opts TokenOptions) (string, error) {
	c, err := i.Claims(sub, opts, time.Now())
	if err != nil {
		return "", err
	}
	return i.Sign(c)
}

// Handler serves the discovery document, the JWKS, the token endpoint
// (dev grant, authorization code and refresh token grants), the
// authorization endpoint with its login page, and the end-session endpoint
// under the issuer URL's path (the full request path is matched, so mount
// it unstripped, e.g. mux.PathPrefix(path + "/").Handler(iss.Handler())).
//
// Every endpoint answers only requests whose Host is localhost or a
// loopback IP address (program.LoopbackHostOnly, 421 otherwise): /token
// signs any identity with any role for anyone, so a web page must not reach
// it through DNS rebinding (a foreign name made to resolve to 127.0.0.1).
// The login form also refuses cross-origin posts
// (http.CrossOriginProtection) besides its CSRF token.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+i.path+"/.well-known/openid-configuration", i.serveDiscovery)
	mux.HandleFunc("GET "+i.path+"/jwks", i.serveJWKS)
	mux.HandleFunc("POST "+i.path+"/token", i.serveToken)
	mux.HandleFunc("OPTIONS "+i.path+"/token", i.serveTokenPreflight)
	mux.HandleFunc("GET "+i.path+"/authorize", i.serveAuthorize)
	login := http.NewCrossOriginProtection()
	login.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		i.errorPage(w, http.StatusForbidden, "Sign-in refused", "The login form was posted from another origin.")
	}))
	mux.Handle("POST "+i.path+"/login", login.Handler(http.HandlerFunc(i.serveLogin)))
	mux.HandleFunc("GET "+i.path+"/logout", i.serveLogout)
	return program.LoopbackHostOnly("the dev OIDC issuer", mux)
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                           i.url,
		"jwks_uri":                         i.url + "/jwks",
		"token_endpoint":                   i.url + "/token",
		"authorization_endpoint":           i.url + "/authorize",
		"end_session_endpoint":             i.url + "/logout",
		"grant_types_supported":            []string{"authorization_code", "refresh_token", "client_credentials"},
		"response_types_supported":         []string{"code"},
		"response_modes_supported":         []string{"query"},
		"code_challenge_methods_supported": []string{"S256"},
		"scopes_supported":                 []string{"openid", "profile", "email"},
		"authorization_response_iss_parameter_supported": true,
		"subject_types_supported":                        []string{"public"},
		"id_token_signing_alg_values_supported":          []string{string(jose.RS256)},
		"token_endpoint_auth_methods_supported":          []string{"none"},
		"claims_supported": []string{
			"iss", "sub", "aud", "azp", "exp", "iat", "nbf", "jti", "typ",
			"preferred_username", "name", "email", "realm_access", "sid", "nonce", "auth_time",
		},
	})
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, i.JWKS())
}

// serveToken is the token endpoint. grant_type authorization_code and
// refresh_token serve the code flow's clients (serveCodeGrant,
// serveRefreshGrant); without grant_type or with client_credentials it is
// the dev grant: form fields sub (required), roles (repeatable and/or
// comma-separated), audience or client_id, name, email, ttl (Go duration).
func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "parsing form: "+err.Error())
		return
	}
	f := r.PostForm
	if len(f["grant_type"]) > 1 {
		oauthError(w, http.StatusBadRequest, "invalid_request", "parameter grant_type is repeated")
		return
	}
	switch gt := f.Get("grant_type"); gt {
	case "authorization_code":
		i.serveCodeGrant(w, r, f)
		return
	case "refresh_token":
		i.serveRefreshGrant(w, r, f)
		return
	case "", "client_credentials":
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q is not supported; use authorization_code, refresh_token, or client_credentials (or none) for the dev grant", gt))
		return
	}
	sub := strings.TrimSpace(f.Get("sub"))
	if sub == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "form field sub (the subject) is required")
		return
	}
	opts := TokenOptions{
		Audience: f.Get("audience"),
		Name:     f.Get("name"),
		Email:    f.Get("email"),
	}
	if opts.Audience == "" {
		opts.Audience = f.Get("client_id")
	}
	if opts.Name == "" {
		opts.Name = sub
	}
	roles, err := parseRoles(f["roles"])
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	opts.Roles = roles
	if s := f.Get("ttl"); s != "" {
		ttl, err := time.ParseDuration(s)
		if err != nil || ttl <= 0 {
			oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("ttl %q must be a positive Go duration such as 15m", s))
			return
		}
		opts.TTL = ttl
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	tok, err := i.Token(sub, opts)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int(ttl / time.Second),
	})
}

// parseRoles splits repeated and comma-separated role values, rejecting
// empty names (a typo such as "a,,b" must not silently grant less).
func parseRoles(values []string) ([]string, error) {
	var roles []string
	for _, v := range values {
		for _, r := range strings.Split(v, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				return nil, fmt.Errorf("roles %q contains an empty role name", v)
			}
			roles = append(roles, r)
		}
	}
	return roles, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing left to do
}

// oauthError writes an RFC 6749 section 5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// Start listens on addr (host:port on loopback; "" means 127.0.0.1:0),
// serves a new issuer whose URL is http://<listen address> there, and
// returns it with a function that stops the server. An address that is not
// loopback is refused: the issuer mints any token for anyone.
func Start(addr string) (*Issuer, func(), error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if !program.IsLoopbackAddr(addr) {
		return nil, nil, fmt.Errorf("issuer: listen address %q is not loopback: the dev issuer signs any token for anyone and listens on 127.0.0.1, ::1 or localhost only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("issuer: listening on %s: %w", addr, err)
	}
	iss, err := New("http://" + ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	srv := program.NewServer(iss.Handler())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after stop
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
			<-done
		})
	}
	return iss, stop, nil
}
