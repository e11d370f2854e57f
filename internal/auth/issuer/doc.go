// Package issuer is a small in-process OpenID Connect issuer: the embedded
// stand-in for Keycloak in the one-command dev run, and the token source of
// tests.
//
// It holds RSA (RS256) signing keys in memory only and serves, relative to
// the path of its issuer URL:
//
//	GET  {issuer}/.well-known/openid-configuration   OIDC discovery document
//	GET  {issuer}/jwks                               JSON Web Key Set (public keys)
//	POST {issuer}/token                              dev grant (form fields sub, roles, ...);
//	                                                 authorization_code and refresh_token grants
//	GET  {issuer}/authorize                          authorization endpoint (code + PKCE S256)
//	POST {issuer}/login                              its login page's form
//	GET  {issuer}/logout                             end-session endpoint (id_token_hint)
//
// Tokens it mints are Keycloak-shaped access tokens (realm_access.roles,
// preferred_username, azp, typ=Bearer), so services verify them with exactly
// the code path that verifies Keycloak's tokens (package auth, go-oidc).
//
// The authorization code flow serves the operator console: clients are
// registered with RegisterClient (exact redirect URIs, PKCE S256 required,
// web origins for CORS), people with AddUser (passwords compared in
// constant time); login pages, codes (single use), sessions and rotating
// refresh tokens live in memory.
//
// The /token dev grant hands a signed token to anyone who asks for any
// subject and roles. It exists for demos and local development only and must
// never be reachable in a deployment; production uses Keycloak. Start
// therefore listens on loopback only, and every endpoint refuses (421
// Misdirected Request) a request whose Host is not localhost or a loopback
// address, so that a web page cannot mint tokens or reach the login page
// through DNS rebinding.
package issuer
