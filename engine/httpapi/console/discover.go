package console

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// DefaultClientID is the console's usual client id at the issuer (the
// realm portfolio's public client saga-console; the dev issuer of make run
// registers the same name).
const DefaultClientID = "saga-console"

// DefaultScope is the scope the console asks for.
const DefaultScope = "openid"

// maxDiscovery bounds the discovery document read by Discover.
const maxDiscovery = 1 << 20

// Discover reads the OpenID Connect discovery document of issuer
// ({issuer}/.well-known/openid-configuration) and returns the console's
// settings for clientID and scope ("" means DefaultScope). It fails if the
// document names another issuer (even by a trailing slash), lacks the
// authorization or token endpoint, or lists code challenge methods without
// S256. client nil means a client with a 10 s timeout.
func Discover(ctx context.Context, client *http.Client, issuer, clientID, scope string) (*OIDC, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	if scope == "" {
		scope = DefaultScope
	}
	wellKnown := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wellKnown, nil)
	if err != nil {
		return nil, fmt.Errorf("console: discovering %s: %w", issuer, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("console: discovering %s: %w", issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("console: discovering %s: GET %s answered %s", issuer, wellKnown, resp.Status)
	}
	var doc struct {
		Issuer                string   `json:"issuer"`
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		TokenEndpoint         string   `json:"token_endpoint"`
		EndSessionEndpoint    string   `json:"end_session_endpoint"`
		ChallengeMethods      []string `json:"code_challenge_methods_supported"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxDiscovery)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("console: discovering %s: reading the document: %w", issuer, err)
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("console: discovering %s: the document names issuer %q", issuer, doc.Issuer)
	}
	if len(doc.ChallengeMethods) > 0 && !slices.Contains(doc.ChallengeMethods, "S256") {
		return nil, fmt.Errorf("console: issuer %s does not support PKCE S256 (code_challenge_methods_supported: %v)", issuer, doc.ChallengeMethods)
	}
	o := &OIDC{
		Issuer: issuer, ClientID: clientID, Scope: scope,
		AuthorizationEndpoint: doc.AuthorizationEndpoint, TokenEndpoint: doc.TokenEndpoint, EndSessionEndpoint: doc.EndSessionEndpoint,
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("console: discovering %s: %w", issuer, err)
	}
	return o, nil
}
