// Package schema embeds the project's machine-readable contracts: database
// migrations per service and dialect, JSON Schemas (saga definitions, the
// message envelope) and OpenAPI specifications, so that every binary carries
// the exact schema it was built with.
package schema
