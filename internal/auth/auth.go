package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// RoleOperator is the role that saga-machine's operator endpoints require
// (retry, cancel, dead letters). In Keycloak it is a realm role, or a client
// role of the saga-machine client.
const RoleOperator = "saga-operator"

// RoleViewer is the read-only role of saga-machine's API: it may list and
// read sagas, timelines and dead letters, but not act on them.
const RoleViewer = "saga-viewer"

// RoleFundingOperator is the role that may deposit cash into a client's
// portfolio (POST /portfolios/{id}/deposits on the profile service) and read
// any portfolio's deposits. Owners of portfolios do not need it to read
// their own deposits, and it never lets its holder fund her own portfolio.
const RoleFundingOperator = "funding-operator"

// Headers trusted in dev header mode (Config.DevHeader) only.
const (
	HeaderDevUser  = "X-Dev-User"  // subject of the request's user
	HeaderDevRoles = "X-Dev-Roles" // comma-separated roles
	// HeaderAuthMode is set to "dev-header" on every response to a request
	// that was authenticated by dev headers, so the mode is visible to clients.
	HeaderAuthMode = "X-Auth-Mode"
)

// defaultHTTPTimeout bounds discovery and JWKS requests when Config.HTTPClient
// is nil (http.DefaultClient has no timeout).
const defaultHTTPTimeout = 10 * time.Second

// User is the authenticated caller.
type User struct {
	Subject string   // sub claim (Keycloak user id) or X-Dev-User
	Name    string   // preferred_username, else name
	Email   string   // email
	Roles   []string // realm, client (resource_access.<audience>) and flat roles, deduplicated
}

// HasRole reports whether u has role (exact, case-sensitive match).
func (u User) HasRole(role string) bool { return slices.Contains(u.Roles, role) }

// Config configures an Authenticator. The zero value is invalid: an issuer
// (or, explicitly, DevHeader) is required.
type Config struct {
	// Issuer is the OIDC issuer URL exactly as it appears in the iss claim,
	// e.g. https://keycloak.example/auth/realms/portfolio. Discovery is at
	// Issuer + "/.well-known/openid-configuration". May be "" only with
	// DevHeader, in which case bearer tokens are always refused.
	Issuer string
	// Audience is the expected aud claim (the Keycloak client id of this
	// service). "" is accepted only with SkipAudience set explicitly.
	Audience string
	// SkipAudience disables the audience check. Prefer setting Audience.
	SkipAudience bool
	// DevHeader is the EXPLICIT dev mode: requests without an Authorization
	// header are trusted on X-Dev-User / X-Dev-Roles. Never the default;
	// New logs a loud warning. Bearer tokens are still verified normally.
	DevHeader bool
	// HTTPClient talks to the issuer (discovery, JWKS). nil means a client
	// with a 10s timeout.
	HTTPClient *http.Client
	// Logger receives the dev-mode warning and one line per refused token.
	// nil means slog.Default().
	Logger *slog.Logger
	// JWKSRefetchInterval is the least time between two fetches of the
	// issuer's JWKS caused by tokens signed with a key id not in the cached
	// set (key rotation). A bad signature under a known key id never
	// causes a fetch. 0 means DefaultJWKSRefetchInterval.
	JWKSRefetchInterval time.Duration
	// TokenCacheTTL is how long a token that verified is answered from
	// memory when it is sent again, never past its expiry (see
	// DefaultTokenCacheTTL). 0 means DefaultTokenCacheTTL; negative
	// verifies every request's token in full.
	TokenCacheTTL time.Duration
}

// Authenticator verifies requests. It is safe for concurrent use.
type Authenticator struct {
	cfg      Config
	log      *slog.Logger
	verifier *oidc.IDTokenVerifier // nil only in dev header mode without issuer
	keys     *keySet               // the verifier's; nil without issuer
	cache    *tokenCache           // verified tokens; nil when disabled or without issuer
	now      func() time.Time      // the verifier's and the cache's clock
}

// New validates cfg, discovers the issuer and returns an Authenticator whose
// verifier fetches the issuer's JWKS on the first token and refetches it
// only for a key id it does not know, at most once per
// Config.JWKSRefetchInterval. ctx bounds the discovery request only.
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Issuer == "" && !cfg.DevHeader {
		return nil, errors.New("auth: Config.Issuer is required (the OIDC issuer URL, e.g. https://keycloak.example/auth/realms/portfolio)")
	}
	if cfg.Audience != "" && cfg.SkipAudience {
		return nil, errors.New("auth: Config.Audience and Config.SkipAudience are both set; choose one")
	}
	if cfg.Issuer != "" && cfg.Audience == "" && !cfg.SkipAudience {
		return nil, errors.New("auth: Config.Audience is required (the client id tokens are issued for); set SkipAudience explicitly to skip the check")
	}
	a := &Authenticator{cfg: cfg, log: log, now: time.Now}
	if cfg.DevHeader {
		log.Warn("AUTH DEV HEADER MODE IS ON: requests without a token are trusted on the X-Dev-User and X-Dev-Roles headers; " +
			"anyone who can reach this service can act as any user with any role. Never enable this in a deployment.")
	}
	if cfg.Issuer == "" {
		return a, nil
	}
	if u, err := url.Parse(cfg.Issuer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("auth: Config.Issuer %q must be an absolute http(s) URL", cfg.Issuer)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: defaultHTTPTimeout}
	}
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, client), cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("auth: discovering OIDC issuer %s: %w", cfg.Issuer, err)
	}
	var disc struct {
		JWKSURL    string   `json:"jwks_uri"`
		Algorithms []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&disc); err != nil {
		return nil, fmt.Errorf("auth: reading the discovery document of %s: %w", cfg.Issuer, err)
	}
	if u, err := url.Parse(disc.JWKSURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("auth: the discovery document of %s has no usable jwks_uri (%q)", cfg.Issuer, disc.JWKSURL)
	}
	interval := cfg.JWKSRefetchInterval
	if interval < 0 {
		return nil, fmt.Errorf("auth: Config.JWKSRefetchInterval %s is negative", interval)
	}
	if interval == 0 {
		interval = DefaultJWKSRefetchInterval
	}
	a.keys = &keySet{url: disc.JWKSURL, client: client, interval: interval, log: log, now: time.Now}
	a.verifier = oidc.NewVerifier(cfg.Issuer, a.keys, &oidc.Config{
		ClientID:             cfg.Audience,
		SkipClientIDCheck:    cfg.SkipAudience,
		SupportedSigningAlgs: supportedAlgs(disc.Algorithms),
		Now:                  func() time.Time { return a.now() },
	})
	switch ttl := cfg.TokenCacheTTL; {
	case ttl == 0:
		a.cache = newTokenCache(DefaultTokenCacheTTL, DefaultTokenCacheSize, func() time.Time { return a.now() })
	case ttl > 0:
		a.cache = newTokenCache(ttl, DefaultTokenCacheSize, func() time.Time { return a.now() })
	}
	return a, nil
}

// supportedAlgs keeps the asymmetric algorithms the issuer advertises
// (RS256 when it advertises none), as go-oidc's Provider.Verifier does.
func supportedAlgs(advertised []string) []string {
	var out []string
	for _, a := range advertised {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{string(jose.RS256)}
	}
	return out
}

// tokenClaims are the claims read beyond what go-oidc verifies.
type tokenClaims struct {
	Typ               string `json:"typ"`
	Azp               string `json:"azp"`
	PreferredUsername string `json:"preferred_username"`
	Name              string `json:"name"`
	Email             string `json:"email"`
	RealmAccess       struct {
		Roles []string `json:"roles"`
	} `json:"realm_access"`
	ResourceAccess map[string]struct {
		Roles []string `json:"roles"`
	} `json:"resource_access"`
	Roles []string `json:"roles"`
}

// Verify checks a raw bearer token (signature against the issuer's JWKS,
// issuer, audience, expiry) and returns its user. It is what Middleware
// calls; use it for tokens that arrive other than in an HTTP header. A
// token that verified is answered from memory when it comes again, until
// it expires or Config.TokenCacheTTL passes (tokencache.go).
func (a *Authenticator) Verify(ctx context.Context, rawToken string) (User, error) {
	if a.verifier == nil {
		return User{}, errors.New("auth: no issuer configured (dev header mode only), bearer tokens cannot be verified")
	}
	if a.cache != nil {
		if u, ok := a.cache.get(rawToken); ok {
			return u, nil
		}
	}
	u, exp, err := a.verify(ctx, rawToken)
	if err != nil {
		return User{}, err
	}
	if a.cache != nil {
		a.cache.put(rawToken, u, exp)
	}
	return u, nil
}

// verify is Verify without the cache: it also returns the token's expiry.
func (a *Authenticator) verify(ctx context.Context, rawToken string) (User, time.Time, error) {
	tok, err := a.verifier.Verify(ctx, rawToken)
	if err != nil {
		return User{}, time.Time{}, fmt.Errorf("auth: verifying token: %w", err)
	}
	var c tokenClaims
	if err := tok.Claims(&c); err != nil {
		return User{}, time.Time{}, fmt.Errorf("auth: reading token claims: %w", err)
	}
	// Keycloak marks its tokens: "Bearer" (access), "ID", "Refresh". Only
	// access tokens may be used as bearer tokens.
	if c.Typ != "" && !strings.EqualFold(c.Typ, "Bearer") {
		return User{}, time.Time{}, fmt.Errorf("auth: token type %q is not an access token", c.Typ)
	}
	if tok.Subject == "" {
		return User{}, time.Time{}, errors.New("auth: token has no subject (sub)")
	}
	u := User{Subject: tok.Subject, Name: c.PreferredUsername, Email: c.Email}
	if u.Name == "" {
		u.Name = c.Name
	}
	client := a.cfg.Audience
	if client == "" {
		client = c.Azp
	}
	roles := slices.Clone(c.RealmAccess.Roles)
	if ra, ok := c.ResourceAccess[client]; ok && client != "" {
		roles = append(roles, ra.Roles...)
	}
	roles = append(roles, c.Roles...)
	u.Roles = dedupe(roles)
	return u, tok.Expiry, nil
}

// dedupe removes empty and repeated roles, keeping first occurrences in order.
func dedupe(roles []string) []string {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// failure is why a request was refused.
type failure struct {
	status int
	code   string // RFC 6750 error code; "" when no credentials were sent
	detail string
}

// authenticate finds and checks the request's credentials.
func (a *Authenticator) authenticate(r *http.Request) (User, bool, *failure) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		if a.cfg.DevHeader {
			if u, ok, f := devUser(r); ok || f != nil {
				return u, true, f
			}
			return User{}, false, &failure{status: http.StatusUnauthorized,
				detail: "no Authorization: Bearer header and no " + HeaderDevUser + " header (dev header mode)"}
		}
		return User{}, false, &failure{status: http.StatusUnauthorized, detail: "the request has no Authorization: Bearer header"}
	}
	if len(values) > 1 {
		return User{}, false, &failure{status: http.StatusUnauthorized, code: "invalid_request", detail: "the request has more than one Authorization header"}
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || strings.ContainsAny(token, " \t") {
		return User{}, false, &failure{status: http.StatusUnauthorized, code: "invalid_request", detail: `the Authorization header is not of the form "Bearer <token>"`}
	}
	u, err := a.Verify(r.Context(), token)
	if err != nil {
		a.log.Info("auth: refused bearer token", "method", r.Method, "path", r.URL.Path, "error", err)
		detail := "the access token is invalid: " + err.Error()
		var expired *oidc.TokenExpiredError
		switch {
		case errors.As(err, &expired) && expired.Expiry.IsZero():
			detail = "the access token has no expiry (exp claim)"
		case errors.As(err, &expired):
			detail = "the access token expired at " + expired.Expiry.UTC().Format(time.RFC3339)
		}
		return User{}, false, &failure{status: http.StatusUnauthorized, code: "invalid_token", detail: detail}
	}
	return u, false, nil
}

// devUser reads the dev headers. ok is false when X-Dev-User is absent.
func devUser(r *http.Request) (User, bool, *failure) {
	sub := strings.TrimSpace(r.Header.Get(HeaderDevUser))
	if sub == "" {
		return User{}, false, nil
	}
	u := User{Subject: sub, Name: sub, Roles: []string{}}
	if raw := r.Header.Get(HeaderDevRoles); strings.TrimSpace(raw) != "" {
		for _, role := range strings.Split(raw, ",") {
			role = strings.TrimSpace(role)
			if role == "" {
				return User{}, false, &failure{status: http.StatusUnauthorized, code: "invalid_request",
					detail: fmt.Sprintf("%s %q contains an empty role name", HeaderDevRoles, raw)}
			}
			u.Roles = append(u.Roles, role)
		}
		u.Roles = dedupe(u.Roles)
	}
	return u, true, nil
}

// Middleware authenticates every request: the verified User is put in the
// request context for next (see UserFrom); a request without valid
// credentials gets 401, WWW-Authenticate: Bearer and a problem+json body.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, dev, f := a.authenticate(r)
		if f != nil {
			writeFailure(w, f)
			return
		}
		if dev {
			w.Header().Set(HeaderAuthMode, "dev-header")
		}
		next.ServeHTTP(w, r.WithContext(WithUser(r.Context(), u)))
	})
}

// RequireRole lets through only users with role; others get 403 with a
// problem+json body. A request not yet authenticated (RequireRole used
// without Middleware) is authenticated first, answering 401 as Middleware.
func (a *Authenticator) RequireRole(role string, next http.Handler) http.Handler {
	check := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, _ := UserFrom(r.Context())
		if !u.HasRole(role) {
			writeFailure(w, &failure{status: http.StatusForbidden, code: "insufficient_scope",
				detail: fmt.Sprintf("user %q lacks the role %q", u.Subject, role)})
			return
		}
		next.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := UserFrom(r.Context()); ok {
			check.ServeHTTP(w, r)
			return
		}
		a.Middleware(check).ServeHTTP(w, r)
	})
}

// Problem is the RFC 9457 body of 401 and 403 responses.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code is the RFC 6750 error code (invalid_token, invalid_request,
	// insufficient_scope), absent when the request carried no credentials.
	Code string `json:"code,omitempty"`
}

// writeFailure answers with WWW-Authenticate (RFC 6750) and problem+json.
func writeFailure(w http.ResponseWriter, f *failure) {
	challenge := "Bearer"
	if f.code != "" {
		challenge += fmt.Sprintf(` error=%q, error_description=%q`, f.code, quotable(f.detail))
	}
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(f.status)
	_ = json.NewEncoder(w).Encode(Problem{
		Type:   "about:blank",
		Title:  http.StatusText(f.status),
		Status: f.status,
		Detail: f.detail,
		Code:   f.code,
	}) // the client went away; nothing left to do
}

// quotable keeps only the characters RFC 6750 allows in error_description
// (printable ASCII except '"' and '\').
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

type userKey struct{}

// WithUser returns ctx carrying u, as Middleware does (useful in tests).
func WithUser(ctx context.Context, u User) context.Context {
	return context.WithValue(ctx, userKey{}, u)
}

// UserFrom returns the user Middleware put in ctx.
func UserFrom(ctx context.Context) (User, bool) {
	u, ok := ctx.Value(userKey{}).(User)
	return u, ok
}
