package console

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
)

//go:embed assets
var assets embed.FS

// ContentSecurityPolicy is sent with every console asset when the console
// has no sign-in (OIDC nil): scripts, styles and API calls from the same
// origin only. Inline styles are allowed for the <style> element inside the
// server-rendered SVG diagrams. With sign-in, connect-src also names the
// issuer's token endpoint origin (see Config.ContentSecurityPolicy).
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// OIDC is how the console signs operators in: an OpenID Connect public
// client (no secret) using the authorization code flow with PKCE (S256).
// The values are public; GET /console/config.json serves them.
type OIDC struct {
	// Issuer is the issuer identifier (the iss of its tokens).
	Issuer string `json:"issuer"`
	// ClientID is the console's client id at the issuer (e.g. saga-console).
	ClientID string `json:"client_id"`
	// Scope is the space-separated scope the console asks for; it must
	// include openid.
	Scope string `json:"scope"`
	// AuthorizationEndpoint, TokenEndpoint and EndSessionEndpoint are the
	// issuer's, from its discovery document. EndSessionEndpoint may be ""
	// (sign-out then only forgets the tokens).
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	EndSessionEndpoint    string `json:"end_session_endpoint,omitempty"`
}

// Config configures the console. Its zero value is a console without
// sign-in: it calls the API without a token (the API must then run without
// authentication).
type Config struct {
	// OIDC, when set, makes the console sign in with the authorization
	// code flow and PKCE before anything else.
	OIDC *OIDC
}

// Validate checks an OIDC configuration: a client id, an openid scope and
// absolute http(s) endpoints.
func (o *OIDC) Validate() error {
	if o.ClientID == "" {
		return errors.New("console: OIDC.ClientID is empty")
	}
	if !strings.Contains(" "+o.Scope+" ", " openid ") {
		return fmt.Errorf("console: OIDC.Scope %q must include openid", o.Scope)
	}
	for _, e := range []struct{ name, url string }{
		{"Issuer", o.Issuer}, {"AuthorizationEndpoint", o.AuthorizationEndpoint}, {"TokenEndpoint", o.TokenEndpoint}, {"EndSessionEndpoint", o.EndSessionEndpoint},
	} {
		if e.url == "" && e.name == "EndSessionEndpoint" {
			continue
		}
		u, err := url.Parse(e.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			return fmt.Errorf("console: OIDC.%s %q must be an absolute http(s) URL", e.name, e.url)
		}
	}
	return nil
}

// ContentSecurityPolicy is the policy the console is served with: that of
// the package constant, with the origin of the issuer's token endpoint
// added to connect-src when it is another origin than the console's (the
// console posts the authorization code there).
func (c Config) ContentSecurityPolicy() string {
	if c.OIDC == nil {
		return ContentSecurityPolicy
	}
	u, err := url.Parse(c.OIDC.TokenEndpoint)
	if err != nil {
		return ContentSecurityPolicy
	}
	return strings.Replace(ContentSecurityPolicy, "connect-src 'self'", "connect-src 'self' "+u.Scheme+"://"+u.Host, 1)
}

// Assets returns the console's files (index.html, app.js, app.css,
// signed-out.html).
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // "assets" is embedded above; fs.Sub fails only on an invalid name
	}
	return sub
}

// Handler serves the console without sign-in; see New.
func Handler() http.Handler {
	h, err := New(Config{})
	if err != nil {
		panic(err) // the zero Config is valid
	}
	return h
}

// New serves the console's files at the root of the path it is given
// (mount it with http.StripPrefix), and config.json: the sign-in settings
// ({"auth":"oidc","oidc":{...}} or {"auth":"none"}). Every response
// carries the Content-Security-Policy of cfg and asks browsers to
// revalidate, so a new binary's console is picked up at once.
func New(cfg Config) (http.Handler, error) {
	settings := map[string]any{"auth": "none"}
	if cfg.OIDC != nil {
		if err := cfg.OIDC.Validate(); err != nil {
			return nil, err
		}
		settings = map[string]any{"auth": "oidc", "oidc": cfg.OIDC}
	}
	configJSON, err := json.Marshal(settings)
	if err != nil {
		return nil, fmt.Errorf("console: encoding config.json: %w", err)
	}
	csp := cfg.ContentSecurityPolicy()
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/config.json" {
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			_, _ = w.Write(configJSON) // the client went away: nothing left to do
			return
		}
		files.ServeHTTP(w, r)
	}), nil
}
