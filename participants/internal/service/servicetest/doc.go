// Package servicetest helps test the participant services: a real
// in-process OIDC issuer and authenticator, HTTP calls with problem+json
// decoding, the OpenAPI-versus-router check, and running a test on every
// database (SQLite and, through internal/testenv, real PostgreSQL).
package servicetest
