// Package tracing records OpenTelemetry spans for saga-machine and its
// participant services, and turns the W3C traceparent that travels with
// every message (HTTP header, Kafka record header, outbox column) into the
// parent of the next span, so that one trace covers a saga across all
// services:
//
//	POST /deals (server) → outbox REGISTER → publish <topic> (producer)
//	  → receive <topic> (consumer) → handle REGISTER (saga-machine)
//	  → outbox APPROVE_ORDER → publish → receive → handle APPROVE_ORDER (profile)
//	  → outbox ORDER_APPROVED (the reply) → publish → receive → …
//	  → handle NOTIFY (notification)
//
// Tracing is off unless Setup is given an OTLP endpoint (--otlp-endpoint,
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT).
// Off, every hook costs one atomic load (Enabled) and the traceparent is
// forwarded exactly as before. On, spans are exported over OTLP/HTTP in
// batches.
//
// Every traceparent read from outside (an HTTP request, a Kafka record) is
// parsed and checked (Parse): a malformed, oversized or all-zero one
// starts a new trace, and what is sent on is always the traceparent of a
// span of this process, never the received text.
package tracing
