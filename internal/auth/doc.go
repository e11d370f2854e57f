// Package auth authenticates HTTP requests of saga-machine and its
// participant services with OpenID Connect bearer tokens.
//
// New discovers the issuer (Keycloak in deployment, package issuer in the
// dev run and tests) at {Issuer}/.well-known/openid-configuration and builds
// a go-oidc verifier over the issuer's JWKS: signature (asymmetric
// algorithms only, so "none" and HMAC are refused), issuer, audience, expiry
// and not-before are checked. The JWKS is cached; only a token naming a key
// id that is not in the cache makes the verifier refetch it (key rotation),
// at most once per Config.JWKSRefetchInterval (10 s by default). A bad
// signature under a known key id is refused from the cache, so forged
// tokens cannot turn into a flood of requests to the identity provider.
//
// Authenticator.Middleware puts the verified User in the request context
// (UserFrom) or answers 401 with WWW-Authenticate: Bearer and an RFC 9457
// application/problem+json body; Authenticator.RequireRole answers 403 when
// the user lacks a role. Roles are read the way Keycloak writes them:
// realm_access.roles, resource_access.<audience>.roles, and a flat roles
// claim.
//
// Config.DevHeader is an explicit, loudly logged development mode that
// trusts X-Dev-User and X-Dev-Roles headers instead of tokens. It is never
// the default and must never be enabled in a deployment: anyone who can
// reach the service could claim any identity and role. See docs/auth.md.
package auth
