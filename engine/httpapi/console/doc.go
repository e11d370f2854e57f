// Package console is saga-machine's operator console: a small single-page
// application (plain HTML, CSS and JavaScript, no framework, nothing fetched
// from the internet) embedded in the binary and served by package httpapi
// at /console/. It calls the JSON API under /api/v1.
//
// With Config.OIDC it signs the operator in first: OpenID Connect
// authorization code flow with PKCE (S256) as a public client of the issuer
// (Keycloak, or the dev issuer of make run), whose public settings it reads
// from /console/config.json (Discover builds them from the issuer's
// discovery document). The tokens stay in the page's memory: nothing in
// localStorage or sessionStorage once signed in; a reload signs in again
// through the issuer's session. signed-out.html is where the issuer sends
// the browser after sign-out.
//
// Pages (hash routes): #/definitions (every definition drawn as a diagram
// with the live number of instances per state, refreshed every few
// seconds), #/sagas (search by definition, state, status and business key),
// #/sagas/{id} (one saga's timeline, its parallel step's branches, with
// re-send and abort) and #/dead-letters (with a replay button). See
// docs/console.md.
package console
