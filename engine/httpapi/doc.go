// Package httpapi is saga-machine's HTTP interface: the JSON API under
// /api/v1 (definitions, sagas, operator actions, dead letters), the health
// endpoints /healthz and /readyz, Prometheus metrics at /metrics and the
// operator console (package console) at / and /console/.
//
// New builds the whole handler from a Config. Routes use gorilla/mux; the
// OpenAPI 3 document schema/openapi/saga-machine.yaml describes every route
// under /api/v1 plus the health and metrics endpoints, and a test checks
// that the router and the document list the same paths and methods, and
// that each route asks for the roles of its operation's x-roles.
//
// Every error is an RFC 9457 application/problem+json body whose type is a
// stable URI per engine.Code (see ProblemType and the table in problem.go).
// JSON request bodies are limited in size and decoded strictly: unknown
// fields, trailing data and wrong types are refused with a message that
// names the field.
//
// With Config.Auth set, every /api/v1 route needs an authenticated user;
// reading the orchestrator (definitions with their counts, sagas,
// timelines, dead letters) needs saga-viewer or saga-operator and the
// operator actions (re-send, abort, replay, compensation retry and resolve,
// migrations of one saga or of many) need saga-operator; anyone else gets 403 forbidden. GET /me and validating a
// definition need only a login. POST /sagas fires only a starting
// transition the definition opens to the API (`by: api`) for a caller with
// one of its roles (engine.Caller); Idempotency-Keys are the caller's own.
// The user's subject is recorded in the saga's timeline as the actor. A
// nil Auth (tests and the explicit dev mode only) allows every call as
// "anonymous", except starts the definition keeps for a participant.
//
// Metrics come from two sources: NewMetrics returns an engine.Observer whose
// counters and histograms the orchestrator updates (pass it in
// engine.Config.Observer; it also counts compensations, expired commands
// and late replies), and New registers a collector that reads the number of
// instances per state and per status and the outbox backlog from the store
// at scrape time.
package httpapi
