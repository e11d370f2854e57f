// Package service is the plumbing shared by the participant services (deals,
// profile, notification): RFC 9457 problem+json errors with a stable type per
// error, strict JSON request decoding, /healthz and /readyz, cursor
// pagination, database opening and goose migrations per service, and Main,
// the command-line runner of one service as its own process.
//
// It holds no business logic; each service package owns its storage, its
// command handlers and its HTTP handlers.
package service
