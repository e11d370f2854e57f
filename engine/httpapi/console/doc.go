// Package console is saga-machine's operator console: a small single-page
// application (plain HTML, CSS and JavaScript, no framework, nothing fetched
// from the internet) embedded in the binary and served by package httpapi
// at /console/. It calls the JSON API under /api/v1 with the bearer token
// the operator pastes into the header (kept in localStorage).
//
// Pages (hash routes): #/definitions (every definition drawn as a diagram
// with the live number of instances per state, refreshed every few
// seconds), #/sagas (search by definition, state, status and business key),
// #/sagas/{id} (one saga's timeline, with re-send and abort) and
// #/dead-letters (with a replay button). See docs/console.md.
package console
